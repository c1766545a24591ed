import { describe, expect, test } from "vitest";
import { formatBytes, transferSummary } from "./transfer";

describe("transfer summaries", () => {
  test("bytes read in binary units", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(4 << 20)).toBe("4 MiB");
    expect(formatBytes(1.5 * (1 << 30))).toBe("1.5 GiB");
    expect(formatBytes(1000)).toBe("1000 B");
  });

  test("a transfer says what it moved, read and hashed, and how", () => {
    const t = {
      bytes_total: 256 << 20,
      bytes_moved: 4 << 20,
      bytes_read: 4 << 20,
      bytes_hashed: 0,
      modes: ["delta by changed ranges", "delta by changed ranges"],
    };
    expect(transferSummary(t)).toBe("moved 4 MiB of 256 MiB, read 4 MiB, delta by changed ranges; every block verified");
    expect(transferSummary({ ...t, bytes_hashed: 20 << 20 })).toContain("hashed 20 MiB of the target");
  });

  test("other steps have none", () => {
    expect(transferSummary(null)).toBeNull();
    expect(transferSummary(undefined)).toBeNull();
  });
});
