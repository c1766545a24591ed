// One run: its steps as a live timeline (server-sent events), each step's
// time against the phase's RTO budget, approve and cancel, and when it is
// finished its report — measured RTO and achieved RPO against the
// objectives — to read and download. A round-trip drill's way back is
// timed against the other phase's budget, from its own start.
import { useCallback, useEffect, useState } from "react";
import { api, call, errorText, type Schemas } from "../api/client";
import { follow } from "../api/sse";
import { Badge, ConfirmDialog, download, ErrorBox, Link, Loading, Verdict } from "../components/common";
import { formatMs, formatTime } from "../lib/duration";
import { leftLine } from "../lib/leftovers";
import { transferSummary } from "../lib/transfer";
import { useSession } from "../session";

type Detail = Schemas["RunDetail"];
type Step = Schemas["StepView"];
const FINISHED = ["succeeded", "failed", "cancelled"];

export function RunDetail({ id }: { id: string }) {
  const { can } = useSession();
  const [detail, setDetail] = useState<Detail | null>(null);
  const [steps, setSteps] = useState<Step[]>([]);
  const [status, setStatus] = useState<string>("");
  const [error, setError] = useState<unknown>(null);
  const [stream, setStream] = useState<"connecting" | "live" | "ended" | "lost">("connecting");
  const [action, setAction] = useState<"approve" | "cancel" | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [now, setNow] = useState(Date.now());

  const refresh = useCallback(async () => {
    try {
      const d = await call(api.GET("/api/v1/runs/{id}", { params: { path: { id } } }));
      setDetail(d);
      setSteps(d.steps);
      setStatus(d.status);
    } catch (e) {
      setError(e);
    }
  }, [id]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Follow the run's events until its `end`; reconnect after a drop.
  useEffect(() => {
    const abort = new AbortController();
    let stopped = false;
    (async () => {
      for (let attempt = 0; !stopped && attempt < 20; attempt++) {
        try {
          setStream("connecting");
          await follow(
            `/api/v1/runs/${encodeURIComponent(id)}/events`,
            (e) => {
              setStream("live");
              if (e.event === "step") {
                const step = JSON.parse(e.data) as Step;
                setSteps((prev) => {
                  const i = prev.findIndex((s) => s.seq === step.seq);
                  if (i < 0) return [...prev, step].sort((a, b) => a.seq - b.seq);
                  const next = [...prev];
                  next[i] = step;
                  return next;
                });
              } else if (e.event === "run" || e.event === "end") {
                const run = JSON.parse(e.data) as Schemas["RunView"];
                setStatus(run.status);
                void refresh();
                if (e.event === "end") stopped = true;
              }
            },
            abort.signal,
          );
          if (stopped) break;
        } catch (e) {
          if (abort.signal.aborted) return;
          setError(e);
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (!abort.signal.aborted) setStream(stopped ? "ended" : "lost");
    })();
    return () => {
      stopped = true;
      abort.abort();
    };
  }, [id, refresh]);

  const finished = FINISHED.includes(status);
  useEffect(() => {
    if (finished) return;
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [finished]);

  async function act() {
    if (!action) return;
    setBusy(true);
    setActionError(null);
    try {
      const path = action === "approve" ? "/api/v1/runs/{id}/approve" : "/api/v1/runs/{id}/cancel";
      const d = await call(api.POST(path, { params: { path: { id } } }));
      setDetail(d);
      setSteps(d.steps);
      setStatus(d.status);
      setAction(null);
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  }

  if (!detail) {
    return (
      <>
        <h1 tabIndex={-1}>Run {id}</h1>
        {error ? <ErrorBox error={error} /> : <Loading what="the run" />}
      </>
    );
  }
  const report = detail.report;
  const back = report.return_leg ?? null;
  const returning = (s: Step) => (s.input as { leg?: string }).leg === "return";
  const fence = steps.find((s) => (s.input as { action?: string }).action === "fence");
  const windowStart = fence?.started_at_ms ?? steps.find((s) => s.started_at_ms)?.started_at_ms ?? null;
  const backStart = steps.find((s) => returning(s) && s.started_at_ms)?.started_at_ms ?? null;
  const charged = new Map(report.steps.map((s) => [s.seq, s]));

  return (
    <>
      <h1 tabIndex={-1}>
        {detail.workflow.replaceAll("_", " ")} of <Link to={`/plans/${encodeURIComponent(detail.plan)}`}>{detail.plan}</Link>
      </h1>
      <p className="run-head">
        <span>
          Run <code>{detail.id}</code>
        </span>
        <span aria-live="polite" data-testid="run-status">
          <Badge value={status} />
        </span>
        <span className="muted">started {formatTime(detail.created_at_ms)}</span>
        <span className={`stream stream-${stream}`} role="status">
          {stream === "live" ? "● live" : stream === "connecting" ? "connecting…" : stream === "ended" ? "finished" : "event stream lost; reload"}
        </span>
      </p>
      <p className="muted">
        Charged to the <strong>{report.phase}</strong> phase: RTO objective {formatMs(report.objective_rto_ms)}, RPO objective {formatMs(report.objective_rpo_ms)}.
        {back && (
          <>
            {" "}
            A round trip: its way back (marked ←) is charged to the <strong>{back.phase}</strong> phase, RTO objective {formatMs(back.objective_rto_ms)}.
          </>
        )}
      </p>

      {can.operate && !finished && (
        <div className="actions">
          {status === "waiting_approval" && (
            <button type="button" className="primary" onClick={() => setAction("approve")}>
              Approve…
            </button>
          )}
          {(status === "pending" || status === "waiting_approval") && (
            <button type="button" className="danger" onClick={() => setAction("cancel")}>
              Cancel run…
            </button>
          )}
        </div>
      )}
      <ConfirmDialog
        open={action !== null}
        title={action === "approve" ? `Approve the ${detail.workflow.replaceAll("_", " ")} of ${detail.plan}?` : `Cancel this run of ${detail.plan}?`}
        confirm={action === "approve" ? "Approve" : "Cancel the run"}
        danger={action === "cancel"}
        busy={busy}
        onCancel={() => setAction(null)}
        onConfirm={act}
      >
        <p>
          {action === "approve"
            ? "The run goes past its approval gate and acts on the sites."
            : "The run stops; the plan rolls back to where it started."}
        </p>
        <ErrorBox error={actionError} />
      </ConfirmDialog>
      <ErrorBox error={error} title="Following the run" />

      <section className="panel" aria-labelledby="timeline-title">
        <h2 id="timeline-title">Timeline</h2>
        <ol className="timeline" aria-label="Steps">
          {steps.map((s) => {
            const end = s.finished_at_ms ?? (s.started_at_ms && s.status === "running" ? now : null);
            const took = s.started_at_ms && end ? end - s.started_at_ms : null;
            const c = charged.get(s.seq);
            const wayBack = returning(s);
            const from = wayBack ? backStart : windowStart;
            const budget = wayBack && back ? back.objective_rto_ms : report.objective_rto_ms;
            const inWindow = from !== null && s.started_at_ms !== null && s.started_at_ms !== undefined && s.started_at_ms >= from;
            const left = inWindow && budget > 0 ? ((s.started_at_ms! - from!) / budget) * 100 : 0;
            const width = inWindow && took !== null && budget > 0 ? Math.max(0.5, (took / budget) * 100) : 0;
            const waiting = s.status === "pending" && (s.input as { action?: string }).action === "approval" && status === "waiting_approval";
            return (
              <li key={s.seq} className={`step step-${s.status}`} data-step={s.seq}>
                <span className="seq">{s.seq}</span>
                <span className="name">
                  {wayBack && (
                    <span className="leg" title={`The way back, charged to the ${back?.phase ?? "other"} phase`}>
                      ←{" "}
                    </span>
                  )}
                  {s.name}
                </span>
                <Badge value={waiting ? "waiting_approval" : s.status} />
                <span className="took">{took !== null ? formatMs(took) : "—"}</span>
                <span className="budget" title={wayBack ? "Where the step falls in the way back's RTO budget" : "Where the step falls in the phase's RTO budget"}>
                  {inWindow ? (
                    <span className="bar" aria-hidden="true">
                      <span className={`fill ${left + width > 100 ? "over" : ""}`} style={{ left: `${Math.min(left, 100)}%`, width: `${Math.min(width, 100 - Math.min(left, 100))}%` }} />
                    </span>
                  ) : (
                    <span className="muted small">outside the outage window</span>
                  )}
                  {c?.budget_left_ms !== null && c?.budget_left_ms !== undefined && (
                    <span className={`small ${c.budget_left_ms < 0 ? "bad" : "muted"}`}>
                      {c.budget_left_ms < 0 ? `${formatMs(-c.budget_left_ms)} over budget` : `${formatMs(c.budget_left_ms)} of budget left`}
                    </span>
                  )}
                </span>
                {s.transfer && (
                  <span className="step-detail small muted" data-testid="transfer">
                    {transferSummary(s.transfer)}
                  </span>
                )}
                {s.adopted_from && (
                  <span className="step-detail small warn" data-testid="adopted">
                    adopted the incarnation run {s.adopted_from} left serving
                  </span>
                )}
                {s.left && (
                  <span className="step-detail small warn" data-testid="left">
                    left as it was: {s.left}
                  </span>
                )}
                {s.error && <span className="step-error">{s.error}</span>}
              </li>
            );
          })}
        </ol>
        {steps.length === 0 && <p className="muted">No steps yet: the run waits for a host to claim it.</p>}
      </section>

      {finished && <Report detail={detail} />}
    </>
  );
}

function Report({ detail }: { detail: Detail }) {
  const r = detail.report;
  const name = `rebound-${r.workflow}-${r.plan}-${r.run}`;
  return (
    <section className="panel" aria-labelledby="report-title" data-testid="report">
      <h2 id="report-title">Report</h2>
      <table className="grid compact report">
        <thead>
          <tr>
            <th scope="col">{r.phase} phase</th>
            <th scope="col">Measured</th>
            <th scope="col">Objective</th>
            <th scope="col">Verdict</th>
          </tr>
        </thead>
        <tbody>
          <tr>
            <th scope="row">RTO</th>
            <td>{formatMs(r.measured_rto_ms)}</td>
            <td>{formatMs(r.objective_rto_ms)}</td>
            <td>
              <Verdict met={r.rto_met} />
            </td>
          </tr>
          <tr>
            <th scope="row">RPO</th>
            <td>{formatMs(r.achieved_rpo_ms)}</td>
            <td>{formatMs(r.objective_rpo_ms)}</td>
            <td>
              <Verdict met={r.rpo_met} label="nothing recovered" />
            </td>
          </tr>
          {r.return_leg && (
            <tr data-testid="return-leg">
              <th scope="row">RTO of the way back ({r.return_leg.phase} phase)</th>
              <td>{formatMs(r.return_leg.rto_ms)}</td>
              <td>{formatMs(r.return_leg.objective_rto_ms)}</td>
              <td>
                <Verdict met={r.return_leg.rto_met} />
              </td>
            </tr>
          )}
        </tbody>
      </table>
      {plugins(detail) && (
        <p className="small" data-testid="plugins">
          Plugins: {plugins(detail)}
        </p>
      )}
      {r.left.length > 0 && (
        <ul className="left" data-testid="left" aria-label="Left by the drill">
          {r.left.map((l) => (
            <li key={l.site} className="warn">
              {leftLine(l)}
            </li>
          ))}
        </ul>
      )}
      <div className="actions">
        <button type="button" onClick={() => download(`${name}.md`, "text/markdown", markdown(detail))}>
          Download report (Markdown)
        </button>
        <button type="button" onClick={() => download(`${name}.json`, "application/json", JSON.stringify(detail, null, 2))}>
          Download report (JSON)
        </button>
      </div>
    </section>
  );
}

/** The plugin versions the run was pinned to, in one line ("" if none). */
function plugins(d: Detail): string {
  return Object.entries(d.plugins ?? {})
    .map(([name, version]) => `${name} ${version}`)
    .join(", ");
}

function markdown(d: Detail): string {
  const r = d.report;
  const verdict = (m: boolean | null | undefined) => (m == null ? "not measured" : m ? "met" : "**breached**");
  const lines = [
    `# ${r.workflow.replaceAll("_", " ")} of ${r.plan}`,
    "",
    `Run \`${r.run}\`, ${r.status}; started ${formatTime(d.created_at_ms)}, finished ${formatTime(d.finished_at_ms)}.`,
    ...(plugins(d) ? ["", `Plugins: ${plugins(d)}.`] : []),
    "",
    `| ${r.phase} phase | measured | objective | verdict |`,
    "|---|---|---|---|",
    `| RTO | ${formatMs(r.measured_rto_ms)} | ${formatMs(r.objective_rto_ms)} | ${verdict(r.rto_met)} |`,
    `| RPO | ${formatMs(r.achieved_rpo_ms)} | ${formatMs(r.objective_rpo_ms)} | ${verdict(r.rpo_met)} |`,
    ...(r.return_leg
      ? [`| RTO of the way back (${r.return_leg.phase} phase) | ${formatMs(r.return_leg.rto_ms)} | ${formatMs(r.return_leg.objective_rto_ms)} | ${verdict(r.return_leg.rto_met)} |`]
      : []),
    "",
    "## Steps",
    "",
    "| # | step | status | attempts | took | budget left |",
    "|---|---|---|---|---|---|",
    ...r.steps.map((s) => `| ${s.seq} | ${s.name.replaceAll("|", "\\|")} | ${s.status} | ${s.attempts} | ${formatMs(s.duration_ms)} | ${s.budget_left_ms === null ? "—" : formatMs(s.budget_left_ms)} |`),
    "",
  ];
  const moved = d.steps.filter((s) => s.transfer);
  if (moved.length) lines.push("## Data moved", "", ...moved.map((s) => `- step ${s.seq} (${s.name}): ${transferSummary(s.transfer)}`), "");
  const failed = d.steps.filter((s) => s.error);
  if (failed.length) lines.push("## Errors", "", ...failed.map((s) => `- step ${s.seq} (${s.name}): ${errorText(s.error)}`), "");
  if (r.left.length) lines.push("## Left by the drill", "", ...r.left.map((l) => `- ${leftLine(l)}`), "");
  return lines.join("\n");
}
