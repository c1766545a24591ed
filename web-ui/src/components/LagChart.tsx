// RPO lag over time as an SVG line, with each objective as a dashed line
// so a breach is where the line crosses it.
import { formatMs, formatTime } from "../lib/duration";

export interface LagPoint {
  at: number;
  lagMs: number;
}

interface Props {
  points: LagPoint[];
  objectives: { label: string; ms: number }[];
  width?: number;
  height?: number;
  /** A small chart without axes, for a table row. */
  spark?: boolean;
  title: string;
}

export function LagChart({ points, objectives, width = 640, height = 200, spark, title }: Props) {
  const pad = spark ? { l: 1, r: 1, t: 2, b: 2 } : { l: 64, r: 12, t: 12, b: 28 };
  const pts = [...points].sort((a, b) => a.at - b.at);
  if (pts.length === 0) {
    return spark ? (
      <span className="muted">no data</span>
    ) : (
      <p className="muted">No RPO lag recorded for this plan yet (the policy engine records it with each verdict and replication it schedules).</p>
    );
  }
  const t0 = pts[0]!.at;
  const t1 = Math.max(pts[pts.length - 1]!.at, t0 + 1);
  const visible = objectives.filter((o) => o.ms > 0);
  const yMax = Math.max(1, ...pts.map((p) => p.lagMs), ...visible.map((o) => o.ms)) * 1.1;
  const x = (t: number) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v: number) => height - pad.b - (v / yMax) * (height - pad.t - pad.b);
  const line = pts.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.lagMs).toFixed(1)}`).join(" ");
  const worst = Math.max(...pts.map((p) => p.lagMs));
  const summary = `${title}: ${pts.length} samples from ${formatTime(t0)} to ${formatTime(t1)}, latest ${formatMs(pts[pts.length - 1]!.lagMs)}, worst ${formatMs(worst)}; ${visible.map((o) => `${o.label} ${formatMs(o.ms)}`).join(", ")}`;
  return (
    <svg className={spark ? "chart spark" : "chart"} width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={summary}>
      <title>{summary}</title>
      {!spark && (
        <>
          <line x1={pad.l} x2={pad.l} y1={pad.t} y2={height - pad.b} className="axis" />
          <line x1={pad.l} x2={width - pad.r} y1={height - pad.b} y2={height - pad.b} className="axis" />
          <text x={pad.l - 6} y={y(yMax / 1.1)} className="tick" textAnchor="end" dominantBaseline="middle">
            {formatMs(yMax / 1.1)}
          </text>
          <text x={pad.l - 6} y={height - pad.b} className="tick" textAnchor="end" dominantBaseline="middle">
            0
          </text>
          <text x={pad.l} y={height - 8} className="tick">
            {formatTime(t0)}
          </text>
          <text x={width - pad.r} y={height - 8} className="tick" textAnchor="end">
            {formatTime(t1)}
          </text>
        </>
      )}
      {visible.map((o, i) => (
        <g key={o.label}>
          <line x1={pad.l} x2={width - pad.r} y1={y(o.ms)} y2={y(o.ms)} className={`objective objective-${i}`} />
          {!spark && (
            <text x={width - pad.r - 4} y={y(o.ms) - 4} className="tick" textAnchor="end">
              {o.label} {formatMs(o.ms)}
            </text>
          )}
        </g>
      ))}
      <path d={line} className="lag" />
      {!spark &&
        pts.map((p, i) => (
          <circle key={i} cx={x(p.at)} cy={y(p.lagMs)} r={3} className={visible.some((o) => p.lagMs > o.ms) ? "dot breach" : "dot"}>
            <title>
              {formatTime(p.at)}: {formatMs(p.lagMs)}
            </title>
          </circle>
        ))}
    </svg>
  );
}
