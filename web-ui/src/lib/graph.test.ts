import { describe, expect, it } from "vitest";
import { tiers } from "./graph";

describe("recovery order", () => {
  it("puts each workload after what it depends on", () => {
    const t = tiers([
      { id: "web", depends_on: ["app"] },
      { id: "db" },
      { id: "app", depends_on: ["db"] },
      { id: "cache" },
    ]);
    expect(t.tiers).toEqual([["db", "cache"], ["app"], ["web"]]);
    expect(t.cycle).toEqual([]);
  });

  it("names the workloads of a cycle and unknown dependencies", () => {
    const t = tiers([
      { id: "a", depends_on: ["b"] },
      { id: "b", depends_on: ["a"] },
      { id: "c", depends_on: ["nope"] },
    ]);
    expect(t.tiers).toEqual([["c"]]);
    expect(t.cycle).toEqual(["a", "b"]);
    expect(t.unknown).toEqual([{ workload: "c", dependency: "nope" }]);
  });
});
