// Every plan against its per-phase objectives: lifecycle state, RPO lag
// and RTO forecast against the failover and the failback objectives, the
// last drill, breaches first, and RPO lag over time.
import { useMemo, useState } from "react";
import type { Schemas } from "../api/client";
import { compliance, listPlans, recentEvents, recentRuns, type PlanView } from "../api/queries";
import type { Compliance, Phase } from "../api/shapes";
import { Badge, ErrorBox, Link, Loading, Verdict } from "../components/common";
import { LagChart, type LagPoint } from "../components/LagChart";
import { formatMs, formatTime, parseSpan } from "../lib/duration";
import { useLoad } from "../lib/use";

interface Row {
  plan: PlanView;
  c: Compliance | undefined;
  breach: boolean;
  lastDrill: Schemas["RunView"] | undefined;
  lag: LagPoint[];
}

const objectiveMs = (span: string | undefined) => (parseSpan(span ?? "") ?? 0) * 1000;

export function Dashboard() {
  const { data, error, loading } = useLoad(
    async () => {
      const [plans, comp, runs, events] = await Promise.all([listPlans(), compliance(), recentRuns(), recentEvents()]);
      return { plans, comp, runs, events, at: Date.now() };
    },
    [],
    10_000,
  );
  const [filter, setFilter] = useState("");
  const [onlyBreaches, setOnlyBreaches] = useState(false);
  const [chartPlan, setChartPlan] = useState<string | null>(null);

  const rows: Row[] = useMemo(() => {
    if (!data) return [];
    const byPlan = new Map(data.comp.map((c) => [c.plan, c]));
    const drills = new Map<string, Schemas["RunView"]>();
    for (const r of data.runs) if (r.workflow === "drill" && !drills.has(r.plan)) drills.set(r.plan, r);
    const lags = new Map<string, LagPoint[]>();
    for (const e of data.events) {
      const lag = (e.detail as { lag_ms?: number | null }).lag_ms;
      if (typeof lag === "number") lags.set(e.plan, [...(lags.get(e.plan) ?? []), { at: e.at_ms, lagMs: lag }]);
    }
    return data.plans
      .map((plan) => {
        const c = byPlan.get(plan.name);
        const lag = lags.get(plan.name) ?? [];
        if (c?.rpo_lag_ms !== null && c?.rpo_lag_ms !== undefined) lag.push({ at: data.at, lagMs: c.rpo_lag_ms });
        const breach = c?.rpo_met === false || c?.rto_met === false || c?.drill?.met === false;
        return { plan, c, breach, lastDrill: drills.get(plan.name), lag };
      })
      .sort((a, b) => Number(b.breach) - Number(a.breach) || a.plan.name.localeCompare(b.plan.name));
  }, [data]);

  const shown = rows.filter(
    (r) => (!onlyBreaches || r.breach) && (filter === "" || r.plan.name.includes(filter.trim().toLowerCase())),
  );
  const inFlight = data?.runs.filter((r) => ["pending", "running", "waiting_approval"].includes(r.status)) ?? [];
  const waiting = inFlight.filter((r) => r.status === "waiting_approval");
  const chartRow = rows.find((r) => r.plan.name === chartPlan) ?? rows.find((r) => r.breach) ?? rows[0];

  return (
    <>
      <h1 tabIndex={-1}>Dashboard</h1>
      <ErrorBox error={error} />
      {loading && !data && <Loading what="plans and compliance" />}
      {data && (
        <>
          <section className="cards" aria-label="Summary">
            <div className="card">
              <span className="big">{rows.length}</span> plans
            </div>
            <div className={`card ${rows.some((r) => r.breach) ? "card-bad" : ""}`}>
              <span className="big">{rows.filter((r) => r.breach).length}</span> breaching an objective
            </div>
            <div className="card">
              <Link to="/runs">
                <span className="big">{inFlight.length}</span> runs in flight
              </Link>
            </div>
            <div className={`card ${waiting.length ? "card-wait" : ""}`}>
              <Link to="/runs?status=waiting_approval">
                <span className="big">{waiting.length}</span> waiting for approval
              </Link>
            </div>
          </section>

          <div className="toolbar">
            <label>
              Filter plans <input type="search" value={filter} onChange={(e) => setFilter(e.target.value)} />
            </label>
            <label>
              <input type="checkbox" checked={onlyBreaches} onChange={(e) => setOnlyBreaches(e.target.checked)} /> Only breaches
            </label>
            <span className="muted">Updated {formatTime(data.at)}</span>
          </div>

          <table className="grid dashboard">
            <caption className="sr-only">Plans against their failover and failback objectives</caption>
            <thead>
              <tr>
                <th rowSpan={2} scope="col">Plan</th>
                <th rowSpan={2} scope="col">State</th>
                <th colSpan={2} scope="colgroup">Failover</th>
                <th colSpan={2} scope="colgroup">Failback</th>
                <th rowSpan={2} scope="col">Last drill</th>
                <th rowSpan={2} scope="col">RPO lag</th>
              </tr>
              <tr>
                <th scope="col">RPO lag / objective</th>
                <th scope="col">RTO forecast / objective</th>
                <th scope="col">RPO lag / objective</th>
                <th scope="col">RTO forecast / objective</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r) => (
                <PlanRow key={r.plan.name} row={r} onChart={() => setChartPlan(r.plan.name)} />
              ))}
            </tbody>
          </table>
          {shown.length === 0 && <p className="muted">No plan matches.</p>}

          {chartRow && (
            <section aria-labelledby="lag-title" className="panel">
              <h2 id="lag-title">RPO lag over time: {chartRow.plan.name}</h2>
              <LagChart
                title={`RPO lag of ${chartRow.plan.name}`}
                points={chartRow.lag}
                objectives={[
                  { label: "failover RPO", ms: objectiveMs(chartRow.plan.document.objectives?.failover?.rpo) },
                  { label: "failback RPO", ms: objectiveMs(chartRow.plan.document.objectives?.failback?.rpo) },
                ]}
              />
            </section>
          )}
        </>
      )}
    </>
  );
}

/** A plan's scheduled drills: how often, when the next is due, and
 * whether one succeeded in time. */
function DrillSchedule({ drill }: { drill: NonNullable<Compliance["drill"]> }) {
  return (
    <div className="small">
      {drill.met === false && <Badge value="overdue" tone="bad" />} <span className="muted">every {formatMs(drill.every_ms)}</span>
      {drill.due_at_ms != null && <span className="muted"> · next {formatTime(drill.due_at_ms)}</span>}
    </div>
  );
}

function PlanRow({ row, onChart }: { row: Row; onChart: () => void }) {
  const { plan, c } = row;
  const life = plan.lifecycle;
  const objectives = plan.document.objectives;
  return (
    <tr className={row.breach ? "breach" : undefined} data-plan={plan.name}>
      <th scope="row">
        <Link to={`/plans/${encodeURIComponent(plan.name)}`}>{plan.name}</Link>
        {row.breach && <Badge value="breach" tone="bad" />}
      </th>
      <td>
        <Badge value={life.state} />
        <div className="muted small">
          {life.primary} → {life.standby}
          {life.drilling && " · drilling"}
        </div>
        {life.unfenced && (
          <div className="warn small">fence of {life.unfenced} not confirmed: the reprotect fences it</div>
        )}
      </td>
      {(["failover", "failback"] as Phase[]).map((phase) => {
        // Both phases are forecast; the one in force is marked, and the
        // other is what the plan would face were it in that phase now.
        const p = c?.phases?.find((x) => x.phase === phase);
        const note = p && !p.in_force ? <span className="muted small"> (ahead)</span> : null;
        return [
          <td key={`${phase}-rpo`} className={p && !p.rpo_met ? "cell-bad" : undefined} data-phase={`${phase}-rpo`}>
            {p ? formatMs(c?.rpo_lag_ms) : <span className="muted">—</span>} / {objectives?.[phase]?.rpo ?? "?"}{" "}
            {p ? <Verdict met={c?.rpo_lag_ms == null && !p.rpo_met ? null : p.rpo_met} label="no recovery point yet" /> : null}
            {note}
          </td>,
          <td key={`${phase}-rto`} className={p && !p.rto_met ? "cell-bad" : undefined} data-phase={`${phase}-rto`}>
            {p ? formatMs(p.rto_forecast_ms) : <span className="muted">—</span>} / {objectives?.[phase]?.rto ?? "?"}{" "}
            {p ? <Verdict met={p.rto_met} /> : null}
            {note}
          </td>,
        ];
      })}
      <td className={c?.drill?.met === false ? "cell-bad" : undefined} data-phase="drill">
        {row.lastDrill ? (
          <Link to={`/runs/${row.lastDrill.id}`}>
            <Badge value={row.lastDrill.status} /> <span className="small">{formatTime(row.lastDrill.finished_at_ms ?? row.lastDrill.created_at_ms)}</span>
          </Link>
        ) : (
          <span className="muted">never</span>
        )}
        {c?.drill && <DrillSchedule drill={c.drill} />}
      </td>
      <td>
        <button type="button" className="link" onClick={onChart} aria-label={`Chart the RPO lag of ${plan.name}`}>
          <LagChart
            spark
            width={120}
            height={28}
            title={`RPO lag of ${plan.name}`}
            points={row.lag}
            objectives={c?.phase ? [{ label: `${c.phase} RPO`, ms: c.rpo_objective_ms }] : []}
          />
        </button>
      </td>
    </tr>
  );
}
