// Runs: start a workflow (with a preview and a confirmation), and the runs
// newest first, filtered by plan and status.
import { useState } from "react";
import { api, call, type Schemas } from "../api/client";
import { listPlans, listSites, type PlanView } from "../api/queries";
import type { Forecast, Workflow } from "../api/shapes";
import { Badge, ConfirmDialog, ErrorBox, Link, Loading } from "../components/common";
import { SelectInput } from "../components/fields";
import { formatMs, formatTime } from "../lib/duration";
import { navigate, query } from "../lib/router";
import { useLoad } from "../lib/use";
import { useSession } from "../session";
import { ForecastView } from "./PlanEditor";

const STATUSES = ["pending", "running", "waiting_approval", "succeeded", "failed", "cancelled"];
const TRIGGERABLE: { value: Workflow; label: string }[] = [
  { value: "drill", label: "drill (clone into a sandbox, measure, tear down)" },
  { value: "failover", label: "failover" },
  { value: "reprotect", label: "reprotect (replicate back, deltas only)" },
  { value: "failback", label: "failback" },
  { value: "migration", label: "planned migration" },
  { value: "commit_migration", label: "commit migration" },
  { value: "rollback_migration", label: "roll back migration" },
  { value: "permanent_failover", label: "permanent failover" },
  { value: "replication", label: "replication cycle" },
];
/** Admins only: it removes every recovery point of the plan. */
const UNPROTECT = { value: "unprotect" as Workflow, label: "unprotect (remove every recovery point; the workloads keep running)" };

export function Runs({ path }: { path: string }) {
  const { can } = useSession();
  const q = query(path);
  const plan = q.get("plan") ?? "";
  const status = q.get("status") ?? "";
  const plans = useLoad(listPlans, []);
  const [pages, setPages] = useState(1);
  const runs = useLoad(
    async () => {
      const items: Schemas["RunView"][] = [];
      let after: string | undefined;
      let next: string | null | undefined;
      for (let i = 0; i < pages; i++) {
        const p = await call(api.GET("/api/v1/runs", { params: { query: { plan: plan || undefined, status: status || undefined, limit: 100, after } } }));
        items.push(...p.items);
        next = p.next;
        if (!next) break;
        after = next;
      }
      return { items, more: !!next };
    },
    [plan, status, pages],
    3000,
  );
  const setFilter = (k: string, v: string) => {
    const next = new URLSearchParams(q);
    if (v) next.set(k, v);
    else next.delete(k);
    const s = next.toString();
    navigate(`/runs${s ? `?${s}` : ""}`);
  };
  const planOptions = [{ value: "", label: "every plan" }, ...(plans.data ?? []).map((p) => ({ value: p.name, label: p.name }))];

  return (
    <>
      <h1 tabIndex={-1}>Runs</h1>
      {can.operate && <StartRun plans={plans.data ?? []} initialPlan={plan} />}
      <div className="toolbar">
        <SelectInput label="Plan" value={plan} options={planOptions} onChange={(v) => setFilter("plan", v)} />
        <SelectInput label="Status" value={status} options={[{ value: "", label: "any status" }, ...STATUSES.map((s) => ({ value: s, label: s.replaceAll("_", " ") }))]} onChange={(v) => setFilter("status", v)} />
      </div>
      <ErrorBox error={runs.error} />
      {!runs.data && !runs.error && <Loading what="runs" />}
      {runs.data && (
        <>
          <table className="grid">
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Plan</th>
                <th scope="col">Workflow</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                <th scope="col">Took</th>
              </tr>
            </thead>
            <tbody>
              {runs.data.items.map((r) => (
                <tr key={r.id} data-run={r.id}>
                  <th scope="row">
                    <Link to={`/runs/${r.id}`}>{r.id}</Link>
                  </th>
                  <td>
                    <Link to={`/plans/${encodeURIComponent(r.plan)}`}>{r.plan}</Link>
                  </td>
                  <td>{r.workflow.replaceAll("_", " ")}</td>
                  <td>
                    <Badge value={r.status} />
                  </td>
                  <td>{formatTime(r.created_at_ms)}</td>
                  <td>{r.finished_at_ms ? formatMs(r.finished_at_ms - r.created_at_ms) : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {runs.data.items.length === 0 && <p className="muted">No runs.</p>}
          {runs.data.more && (
            <button type="button" onClick={() => setPages((n) => n + 1)}>
              Load more
            </button>
          )}
        </>
      )}
    </>
  );
}

function StartRun({ plans: planViews, initialPlan }: { plans: PlanView[]; initialPlan: string }) {
  const plans = planViews.map((p) => p.name);
  const { can } = useSession();
  const triggerable = can.administer ? [...TRIGGERABLE, UNPROTECT] : TRIGGERABLE;
  const [plan, setPlan] = useState(initialPlan);
  const [workflow, setWorkflow] = useState<Workflow>("drill");
  const [open, setOpen] = useState(false);
  const [forecast, setForecast] = useState<Forecast | null>(null);
  const [previewError, setPreviewError] = useState<unknown>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [key, setKey] = useState("");
  // A permanent failover may protect onto a new site (the old primary lost
  // for good); empty: back onto the old primary.
  const [newStandby, setNewStandby] = useState("");
  const sites = useLoad(listSites, []);
  const chosen = plan || plans[0] || "";
  // A new standby is neither of the plan's two sites.
  const lifecycle = planViews.find((p) => p.name === chosen)?.lifecycle;
  const newSites = (sites.data ?? []).filter((s) => s.name !== lifecycle?.primary && s.name !== lifecycle?.standby);
  const target = workflow === "permanent_failover" && newStandby ? { new_standby: newStandby } : {};

  async function ask() {
    setOpen(true);
    setForecast(null);
    setPreviewError(null);
    setError(null);
    // One key per confirmation: a double submit starts one run.
    setKey(crypto.randomUUID());
    try {
      setForecast(await call(api.POST("/api/v1/plans/{name}/dry-run", { params: { path: { name: chosen } }, body: { workflow, ...target } })));
    } catch (e) {
      setPreviewError(e);
    }
  }

  async function start() {
    setBusy(true);
    setError(null);
    try {
      const run = await call(
        api.POST("/api/v1/plans/{name}/runs", { params: { path: { name: chosen }, header: { "Idempotency-Key": key } }, body: { workflow, ...target } }),
      );
      setOpen(false);
      navigate(`/runs/${run.id}`);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="panel" aria-labelledby="start-title">
      <h2 id="start-title">Start a run</h2>
      <div className="row inline">
        <SelectInput label="Plan to run" value={chosen} options={plans.map((p) => ({ value: p, label: p }))}
          onChange={(v) => {
            setPlan(v);
            setNewStandby("");
          }}
        />
        <SelectInput label="Workflow to run" value={workflow} options={triggerable} onChange={(v) => setWorkflow(v as Workflow)} />
        {workflow === "permanent_failover" && (
          <SelectInput
            label="New standby"
            value={newStandby}
            options={[{ value: "", label: "the old primary (back onto it)" }, ...newSites.map((s) => ({ value: s.name, label: `${s.name} (a new site: the old primary lost for good)` }))]}
            onChange={setNewStandby}
          />
        )}
        <button type="button" className="primary" onClick={ask} disabled={!chosen}>
          Start…
        </button>
      </div>
      <ConfirmDialog
        open={open}
        title={`Start a ${workflow.replaceAll("_", " ")} of ${chosen}${workflow === "permanent_failover" && newStandby ? ` onto ${newStandby}` : ""}?`}
        confirm={`Start ${workflow.replaceAll("_", " ")}`}
        danger={workflow !== "drill" && workflow !== "replication"}
        busy={busy}
        disabled={!forecast}
        onCancel={() => setOpen(false)}
        onConfirm={start}
      >
        {!forecast && !previewError && <Loading what="the preview" />}
        <ErrorBox error={previewError} title="The host would refuse this run" />
        {forecast && <ForecastView forecast={forecast} />}
        <ErrorBox error={error} title="The run did not start" />
      </ConfirmDialog>
    </section>
  );
}
