// The recovery order as a graph: one column per tier, an arrow from each
// workload to those that wait for it.
import type { WorkloadEntry } from "../api/shapes";
import { tiers } from "../lib/graph";

const W = 150;
const H = 30;
const GX = 60;
const GY = 14;

export function DagView({ workloads }: { workloads: WorkloadEntry[] }) {
  const t = tiers(workloads);
  if (workloads.length === 0) return <p className="muted">Pick workloads to see their recovery order.</p>;
  const pos = new Map<string, { x: number; y: number }>();
  t.tiers.forEach((tier, i) => tier.forEach((id, j) => pos.set(id, { x: 10 + i * (W + GX), y: 10 + j * (H + GY) })));
  const width = 20 + Math.max(1, t.tiers.length) * (W + GX) - GX;
  const height = 20 + Math.max(1, ...t.tiers.map((x) => x.length)) * (H + GY) - GY;
  const edges = workloads.flatMap((w) =>
    (w.depends_on ?? []).filter((d) => pos.has(d) && pos.has(w.id)).map((d) => ({ from: pos.get(d)!, to: pos.get(w.id)! })),
  );
  const description = t.tiers.map((tier, i) => `tier ${i + 1}: ${tier.join(", ")}`).join("; ");
  return (
    <div className="dag">
      {t.cycle.length > 0 && (
        <p className="field-error" role="alert">
          The recovery order has a cycle through {t.cycle.join(", ")}: no order can recover them.
        </p>
      )}
      {t.unknown.map((u) => (
        <p key={`${u.workload}-${u.dependency}`} className="field-error">
          {u.workload} depends on {u.dependency}, which is not a workload of this plan.
        </p>
      ))}
      <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`Recovery order: ${description}`}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" className="arrowhead" />
          </marker>
        </defs>
        {edges.map((e, i) => (
          <path
            key={i}
            className="edge"
            markerEnd="url(#arrow)"
            d={`M${e.from.x + W},${e.from.y + H / 2} C${e.from.x + W + GX / 2},${e.from.y + H / 2} ${e.to.x - GX / 2},${e.to.y + H / 2} ${e.to.x},${e.to.y + H / 2}`}
          />
        ))}
        {[...pos.entries()].map(([id, p]) => {
          const gate = workloads.find((w) => w.id === id)?.health_gate;
          return (
            <g key={id} transform={`translate(${p.x},${p.y})`}>
              <rect width={W} height={H} rx={5} className="node" />
              <text x={8} y={H / 2} dominantBaseline="middle" className="node-label">
                {id.length > 16 ? `${id.slice(0, 15)}…` : id}
                {gate ? ` ⛉ ${gate.check}` : ""}
              </text>
              <title>{gate ? `${id}: health gate ${gate.check}` : id}</title>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
