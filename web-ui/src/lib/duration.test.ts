import { describe, expect, it } from "vitest";
import { formatMs, joinSpan, parseSpan, splitSpan } from "./duration";

describe("plan durations", () => {
  it("parses what the host parses", () => {
    expect(parseSpan("90s")).toBe(90);
    expect(parseSpan("1h 30m")).toBe(5400);
    expect(parseSpan("2days")).toBe(172800);
    expect(parseSpan("0s")).toBe(0);
    expect(parseSpan("soon")).toBeNull();
    expect(parseSpan("15")).toBeNull();
  });

  it("splits into the largest whole unit and joins back", () => {
    expect(splitSpan("1h 30m")).toEqual({ amount: "90", unit: "m" });
    expect(splitSpan("2h")).toEqual({ amount: "2", unit: "h" });
    expect(splitSpan("0s")).toEqual({ amount: "0", unit: "s" });
    expect(joinSpan("030", "m")).toBe("30m");
  });

  it("formats milliseconds for people", () => {
    expect(formatMs(850)).toBe("850 ms");
    expect(formatMs(42_000)).toBe("42 s");
    expect(formatMs(725_000)).toBe("12 min 5 s");
    expect(formatMs(-90_000)).toBe("−1 min 30 s");
    expect(formatMs(null)).toBe("—");
    expect(formatMs(119_999)).toBe("2 min");
    expect(formatMs(1_199_600)).toBe("20 min");
    expect(formatMs(7_199_999)).toBe("2 h");
    expect(formatMs(7 * 86_400_000)).toBe("7 d");
    expect(formatMs(90_000_000)).toBe("1 d 1 h");
  });
});
