// The recovery order of a plan: workloads in tiers, each after everything
// it depends on — what the host computes (PlanDocument::tiers), shown
// before the host is asked.
import type { WorkloadEntry } from "../api/shapes";

export interface Tiers {
  tiers: string[][];
  /** Workloads on (or behind) a dependency cycle: no tier is possible. */
  cycle: string[];
  /** `depends_on` entries naming no workload of the plan. */
  unknown: { workload: string; dependency: string }[];
}

export function tiers(workloads: WorkloadEntry[]): Tiers {
  const ids = [...new Set(workloads.map((w) => w.id))];
  const known = new Set(ids);
  const unknown: Tiers["unknown"] = [];
  const deps = new Map<string, Set<string>>();
  for (const w of workloads) {
    const d = deps.get(w.id) ?? new Set<string>();
    for (const dep of w.depends_on ?? []) {
      if (!known.has(dep)) unknown.push({ workload: w.id, dependency: dep });
      else if (dep !== w.id) d.add(dep);
    }
    deps.set(w.id, d);
  }
  const placed = new Set<string>();
  const out: string[][] = [];
  for (;;) {
    const tier = ids.filter((id) => !placed.has(id) && [...deps.get(id)!].every((d) => placed.has(d)));
    if (tier.length === 0) break;
    tier.forEach((id) => placed.add(id));
    out.push(tier);
  }
  return { tiers: out, cycle: ids.filter((id) => !placed.has(id)), unknown };
}
