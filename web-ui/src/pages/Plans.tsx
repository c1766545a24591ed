import { useState } from "react";
import { listPlans } from "../api/queries";
import { Badge, ErrorBox, Link, Loading } from "../components/common";
import { useLoad } from "../lib/use";
import { useSession } from "../session";

export function Plans() {
  const { can } = useSession();
  const { data, error } = useLoad(listPlans, []);
  const [filter, setFilter] = useState("");
  const shown = (data ?? []).filter((p) => p.name.includes(filter.trim().toLowerCase()));
  return (
    <>
      <h1 tabIndex={-1}>Protection plans</h1>
      <div className="toolbar">
        <label>
          Filter <input type="search" value={filter} onChange={(e) => setFilter(e.target.value)} />
        </label>
        {can.administer && (
          <Link to="/plans/new" className="button primary">
            New plan
          </Link>
        )}
      </div>
      <ErrorBox error={error} />
      {!data && !error && <Loading what="plans" />}
      {data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">Plan</th>
              <th scope="col">Source → target</th>
              <th scope="col">Workloads</th>
              <th scope="col">Failover RTO / RPO</th>
              <th scope="col">Failback RTO / RPO</th>
              <th scope="col">State</th>
              <th scope="col">Revision</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((p) => (
              <tr key={p.name}>
                <th scope="row">
                  <Link to={`/plans/${encodeURIComponent(p.name)}`}>{p.name}</Link>
                  {p.document.description && <div className="muted small">{p.document.description}</div>}
                </th>
                <td>
                  {p.document.source} → {p.document.target}
                </td>
                <td>{p.document.workloads?.length ?? 0}</td>
                <td>
                  {p.document.objectives?.failover?.rto} / {p.document.objectives?.failover?.rpo}
                </td>
                <td>
                  {p.document.objectives?.failback?.rto} / {p.document.objectives?.failback?.rpo}
                </td>
                <td>
                  <Badge value={p.lifecycle.state} />
                </td>
                <td>{p.revision}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && shown.length === 0 && <p className="muted">{data.length ? "No plan matches." : "No plans yet."}</p>}
    </>
  );
}
