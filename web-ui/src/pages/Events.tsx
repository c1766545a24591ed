// The engine's events (objectives breached or met, replication scheduled,
// automatic failovers, standby workloads a failed run and drill remains a
// failed teardown left for the operator), newest first, by plan and kind.
import { useState } from "react";
import { api, call, type Schemas } from "../api/client";
import { listPlans } from "../api/queries";
import { Badge, ErrorBox, Link, Loading } from "../components/common";
import { SelectInput } from "../components/fields";
import { formatMs, formatTime } from "../lib/duration";
import { navigate, query } from "../lib/router";
import { useLoad } from "../lib/use";

const KINDS = ["rpo.breach", "rpo.met", "rto.breach", "rto.met", "replication.scheduled", "failover.triggered", "standbys.kept", "drill.leftovers", "drill.leftovers.removed"];

/** How an event kind reads: a breach is bad, what needs the operator a warning. */
function tone(kind: string): string {
  if (kind.endsWith(".breach")) return "bad";
  if (kind.endsWith(".met") || kind === "drill.leftovers.removed") return "ok";
  return kind === "standbys.kept" || kind === "drill.leftovers" ? "warn" : "muted";
}

export function Events({ path }: { path: string }) {
  const q = query(path);
  const plan = q.get("plan") ?? "";
  const [kind, setKind] = useState("");
  const [pages, setPages] = useState(1);
  const plans = useLoad(listPlans, []);
  const events = useLoad(
    async () => {
      const items: Schemas["EventView"][] = [];
      let after: string | undefined;
      let next: string | null | undefined;
      for (let i = 0; i < pages; i++) {
        const p = await call(api.GET("/api/v1/events", { params: { query: { plan: plan || undefined, limit: 200, after } } }));
        items.push(...p.items);
        next = p.next;
        if (!next) break;
        after = next;
      }
      return { items, more: !!next };
    },
    [plan, pages],
    10_000,
  );
  const shown = (events.data?.items ?? []).filter((e) => !kind || e.kind === kind);
  return (
    <>
      <h1 tabIndex={-1}>Events</h1>
      <div className="toolbar">
        <SelectInput
          label="Plan"
          value={plan}
          options={[{ value: "", label: "every plan" }, ...(plans.data ?? []).map((p) => ({ value: p.name, label: p.name }))]}
          onChange={(v) => navigate(v ? `/events?plan=${encodeURIComponent(v)}` : "/events")}
        />
        <SelectInput label="Kind" value={kind} options={[{ value: "", label: "every kind" }, ...KINDS.map((k) => ({ value: k, label: k }))]} onChange={setKind} />
      </div>
      <ErrorBox error={events.error} />
      {!events.data && !events.error && <Loading what="events" />}
      {events.data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Plan</th>
              <th scope="col">Event</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.id} className={e.kind.endsWith(".breach") ? "breach" : undefined}>
                <td>{formatTime(e.at_ms)}</td>
                <td>
                  <Link to={`/plans/${encodeURIComponent(e.plan)}`}>{e.plan}</Link>
                </td>
                <td>
                  <Badge value={e.kind} tone={tone(e.kind)} />
                </td>
                <td>
                  <EventDetail detail={e.detail as Record<string, unknown>} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {events.data && shown.length === 0 && <p className="muted">No events.</p>}
      {events.data?.more && (
        <button type="button" onClick={() => setPages((n) => n + 1)}>
          Load more
        </button>
      )}
    </>
  );
}

function EventDetail({ detail }: { detail: Record<string, unknown> }) {
  return (
    <span className="small">
      {Object.entries(detail)
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => (
          <span key={k} className="kv">
            {k.replace(/_ms$/, "")}: {k.endsWith("_ms") && typeof v === "number" ? formatMs(v) : k === "run" ? <Link to={`/runs/${String(v)}`}>{String(v)}</Link> : typeof v === "object" ? JSON.stringify(v) : String(v)}
          </span>
        ))}
    </span>
  );
}
