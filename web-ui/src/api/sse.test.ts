import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("server-sent events", () => {
  it("parses events split across chunks", () => {
    const p = new SseParser();
    expect(p.push("event: step\ndata: {\"seq\"")).toEqual([]);
    expect(p.push(":1}\n\n: keep-alive\n\nevent: end\r\ndata: a\r\ndata: b\r\n\r\n")).toEqual([
      { event: "step", data: '{"seq":1}' },
      { event: "end", data: "a\nb" },
    ]);
  });
});
