import { describe, expect, test } from "vitest";
import { leftLine } from "./leftovers";

describe("what a drill left", () => {
  test("says where, what, and what removes it", () => {
    expect(leftLine({ site: "lab-b", sandbox: true, copies: ["snap-1", "snap-2"] })).toBe(
      "Left on lab-b: its sandbox and 2 copies — the plan's next replication cycle or drill removes it (start a replication cycle on the Runs page to remove it now).",
    );
    expect(leftLine({ site: "lab-a", sandbox: false, copies: ["snap-1"] })).toBe(
      "Left on lab-a: 1 copy — the plan's next replication cycle or drill removes it (start a replication cycle on the Runs page to remove it now).",
    );
  });
});
