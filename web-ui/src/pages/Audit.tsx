// The audit log (admin): every change with its principal, newest first.
import { useState } from "react";
import { api, call, type Schemas } from "../api/client";
import { ErrorBox, Loading } from "../components/common";
import { formatTime } from "../lib/duration";
import { useLoad } from "../lib/use";

export function Audit() {
  const [pages, setPages] = useState(1);
  const [principal, setPrincipal] = useState("");
  const [text, setText] = useState("");
  const audit = useLoad(
    async () => {
      const items: Schemas["AuditView"][] = [];
      let after: string | undefined;
      let next: string | null | undefined;
      for (let i = 0; i < pages; i++) {
        const p = await call(api.GET("/api/v1/audit", { params: { query: { limit: 200, after } } }));
        items.push(...p.items);
        next = p.next;
        if (!next) break;
        after = next;
      }
      return { items, more: !!next };
    },
    [pages],
  );
  const principals = [...new Set((audit.data?.items ?? []).map((a) => a.principal))].sort();
  const needle = text.trim().toLowerCase();
  const shown = (audit.data?.items ?? []).filter(
    (a) => (!principal || a.principal === principal) && (!needle || `${a.action} ${a.target} ${JSON.stringify(a.detail)}`.toLowerCase().includes(needle)),
  );
  return (
    <>
      <h1 tabIndex={-1}>Audit log</h1>
      <div className="toolbar">
        <label>
          Principal{" "}
          <select value={principal} onChange={(e) => setPrincipal(e.target.value)}>
            <option value="">anyone</option>
            {principals.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
        <label>
          Action, target or detail contains <input type="search" value={text} onChange={(e) => setText(e.target.value)} />
        </label>
      </div>
      <ErrorBox error={audit.error} />
      {!audit.data && !audit.error && <Loading what="the audit log" />}
      {audit.data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Principal</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Detail</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((a) => (
              <tr key={a.id}>
                <td>{formatTime(a.at_ms)}</td>
                <td>
                  <code>{a.principal}</code>
                </td>
                <td>{a.action}</td>
                <td>{a.target}</td>
                <td className="mono small">{JSON.stringify(a.detail)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {audit.data && shown.length === 0 && <p className="muted">No entries.</p>}
      {audit.data?.more && (
        <button type="button" onClick={() => setPages((n) => n + 1)}>
          Load more
        </button>
      )}
    </>
  );
}
