import { describe, expect, it } from "vitest";
import { delayBefore } from "./renewal";

describe("delayBefore", () => {
  it("renews an hour-long token a minute before it expires", () => {
    expect(delayBefore(3_600_000, 0)).toBe(3_540_000);
  });
  it("renews a short token at half its remaining life", () => {
    expect(delayBefore(20_000, 0)).toBe(10_000);
    expect(delayBefore(120_000, 0)).toBe(60_000);
  });
  it("renews an expired token at once", () => {
    expect(delayBefore(1_000, 5_000)).toBe(0);
  });
});
