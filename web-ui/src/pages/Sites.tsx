// Sites: each bound to a plugin with its settings, the egress granted to
// it and the names (never the values) of its credentials; its health on
// demand; a lost site's plans failed over at once (operators);
// registration and removal for admins.
import { useState, type FormEvent } from "react";
import { api, call, type Schemas } from "../api/client";
import { listPlans, listPlugins, listSites, type PlanView } from "../api/queries";
import { Badge, ConfirmDialog, ErrorBox, Link, Loading, Verdict } from "../components/common";
import { SelectInput, TextInput } from "../components/fields";
import { formatMs, formatTime } from "../lib/duration";
import { useLoad } from "../lib/use";
import { useSession } from "../session";

export function Sites() {
  const { can } = useSession();
  const sites = useLoad(listSites, []);
  const plans = useLoad(listPlans, []);
  const [remove, setRemove] = useState<string | null>(null);
  const [removeError, setRemoveError] = useState<unknown>(null);
  const [failover, setFailover] = useState<string | null>(null);
  const [failed, setFailed] = useState<Schemas["SiteFailover"] | null>(null);
  return (
    <>
      <h1 tabIndex={-1}>Sites</h1>
      <ErrorBox error={sites.error} />
      {!sites.data && !sites.error && <Loading what="sites" />}
      {sites.data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">Site</th>
              <th scope="col">Plugin</th>
              <th scope="col">Settings</th>
              <th scope="col">Egress granted</th>
              <th scope="col">Credentials</th>
              <th scope="col">Plans</th>
              <th scope="col">Health</th>
              {can.operate && <th scope="col"><span className="sr-only">Actions</span></th>}
            </tr>
          </thead>
          <tbody>
            {sites.data.map((s) => (
              <tr key={s.name} data-site={s.name}>
                <th scope="row">
                  {s.name}
                  <div className="muted small">
                    {s.source === "file" ? "from the sites file" : `registered by ${s.updated_by ?? "?"}, ${formatTime(s.updated_at_ms)} (revision ${s.revision})`}
                  </div>
                </th>
                <td>{s.plugin}</td>
                <td>
                  {Object.entries(s.config).map(([k, v]) => (
                    <div key={k}>
                      <code>{k}</code> = {v}
                    </div>
                  ))}
                  {s.ca && <div className="small">own CA bundle</div>}
                  {s.max_calls != null && <div className="small">at most {s.max_calls} calls at once</div>}
                </td>
                <td>
                  {s.egress.map((e) => (
                    <div key={e}>
                      <code>{e}</code>
                    </div>
                  ))}
                </td>
                <td>
                  {s.secrets.length ? (
                    s.secrets.map((k) => (
                      <div key={k}>
                        <code>{k}</code> <span className="muted small">(set, write-only)</span>
                      </div>
                    ))
                  ) : (
                    <span className="muted">none</span>
                  )}
                </td>
                <td>
                  <SitePlans site={s.name} plans={plans.data} />
                </td>
                <td>
                  <Health site={s.name} />
                </td>
                {can.operate && (
                  <td>
                    <button type="button" className="link danger" onClick={() => setFailover(s.name)} aria-label={`Fail over every plan ${s.name} serves`}>
                      Fail over its plans…
                    </button>
                    {can.administer && s.source === "api" && (
                      <button type="button" className="link danger" onClick={() => { setRemoveError(null); setRemove(s.name); }}>
                        Delete…
                      </button>
                    )}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {sites.data?.length === 0 && <p className="muted">No sites yet.</p>}
      {failed && <FailoverResult result={failed} />}
      {failover && (
        <FailOverSite
          site={failover}
          onCancel={() => setFailover(null)}
          onDone={(result) => {
            setFailover(null);
            setFailed(result);
            plans.reload();
          }}
        />
      )}
      {can.administer && <Register onDone={sites.reload} existing={(sites.data ?? []).map((s) => s.name)} />}
      <ConfirmDialog
        open={remove !== null}
        title={`Delete site ${remove}?`}
        confirm="Delete the site"
        danger
        onCancel={() => setRemove(null)}
        onConfirm={async () => {
          try {
            await call(api.DELETE("/api/v1/sites/{name}", { params: { path: { name: remove! } } }));
            setRemove(null);
            sites.reload();
          } catch (e) {
            setRemoveError(e);
          }
        }}
      >
        <p>Its plugin binding and sealed credentials are removed. The host refuses while a plan names the site.</p>
        <ErrorBox error={removeError} />
      </ConfirmDialog>
    </>
  );
}

/** Which plans the site serves (primary) and holds copies for (standby). */
function SitePlans({ site, plans }: { site: string; plans: PlanView[] | undefined }) {
  if (!plans) return null;
  const names = (role: "primary" | "standby") => plans.filter((p) => p.lifecycle[role] === site).map((p) => p.name);
  const [serves, standby] = [names("primary"), names("standby")];
  if (!serves.length && !standby.length) return <span className="muted">none</span>;
  return (
    <>
      {serves.length > 0 && <div>serves {serves.join(", ")}</div>}
      {standby.length > 0 && <div className="small">standby for {standby.join(", ")}</div>}
    </>
  );
}

/** The plans a lost site serves, failed over in one request, each in a run
 * of its own; a plan that cannot fail over now is left and named. The
 * host's preview lists them first, each with its failover's forecast. */
function FailOverSite({ site, onCancel, onDone }: { site: string; onCancel: () => void; onDone: (r: Schemas["SiteFailover"]) => void }) {
  const preview = useLoad(() => call(api.GET("/api/v1/sites/{name}/failover/dry-run", { params: { path: { name: site } } })), [site]);
  // One key per confirmation: a double submit starts each failover once.
  const [key] = useState(() => crypto.randomUUID());
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const served = preview.data?.plans ?? [];
  return (
    <ConfirmDialog
      open
      title={`Fail over every plan ${site} serves?`}
      confirm="Fail over the plans"
      danger
      busy={busy}
      disabled={!served.some((p) => p.forecast)}
      onCancel={onCancel}
      onConfirm={async () => {
        setBusy(true);
        setError(null);
        try {
          onDone(await call(api.POST("/api/v1/sites/{name}/failover", { params: { path: { name: site }, header: { "Idempotency-Key": key } } })));
        } catch (e) {
          setError(e);
        } finally {
          setBusy(false);
        }
      }}
    >
      <p>
        For a site that is lost. Each plan fails over in a run of its own: its workloads on {site} fenced where {site} still answers, recovered on the plan&apos;s standby tier by tier, traffic moved. A plan that
        cannot fail over now is left as it is.
      </p>
      <ErrorBox error={preview.error} />
      {!preview.data && !preview.error && <Loading what="the plans" />}
      {preview.data && served.length === 0 && <p className="muted">{site} serves no plan.</p>}
      {served.length > 0 && (
        <ul aria-label={`Plans ${site} serves`}>
          {served.map((p) => (
            <li key={p.plan}>
              {p.plan} → {p.standby}
              {p.forecast ? (
                <div className="small">
                  expected outage {formatMs(p.forecast.rto_ms)} against its RTO objective of {formatMs(p.forecast.objective_rto_ms)} <Verdict met={p.forecast.within_objective} />
                </div>
              ) : (
                <div className="small bad">cannot fail over now: {p.refusal}</div>
              )}
            </li>
          ))}
        </ul>
      )}
      <ErrorBox error={error} title="Nothing was failed over" />
    </ConfirmDialog>
  );
}

function FailoverResult({ result }: { result: Schemas["SiteFailover"] }) {
  return (
    <section className="panel" role="status" aria-labelledby="failover-title">
      <h2 id="failover-title">
        {result.site}: {result.started.length} failover{result.started.length === 1 ? "" : "s"} started
      </h2>
      <ul>
        {result.started.map((p) => (
          <li key={p.plan}>
            <Link to={`/plans/${encodeURIComponent(p.plan)}`}>{p.plan}</Link>: run <Link to={`/runs/${p.run}`}>{p.run}</Link>
            {p.replayed && <span className="muted small"> (started before)</span>}
          </li>
        ))}
        {result.skipped.map((p) => (
          <li key={p.plan}>
            <Link to={`/plans/${encodeURIComponent(p.plan)}`}>{p.plan}</Link> left as it is: <span className="small">{p.reason}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Health({ site }: { site: string }) {
  const [health, setHealth] = useState<Schemas["SiteHealth"] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <div className="health">
      <button
        type="button"
        onClick={async () => {
          setBusy(true);
          setError(null);
          try {
            setHealth(await call(api.GET("/api/v1/sites/{name}/health", { params: { path: { name: site } } })));
          } catch (e) {
            setError(e);
          } finally {
            setBusy(false);
          }
        }}
        aria-label={`Check the health of ${site}`}
        disabled={busy}
      >
        {busy ? "Checking…" : "Check"}
      </button>
      <span aria-live="polite">
        {health && (
          <>
            <Badge value={health.serving ? "serving" : "not serving"} tone={health.serving ? "ok" : "bad"} /> <span className="small">{health.detail}</span>
          </>
        )}
        {error ? <span className="bad small">{(error as Error).message}</span> : null}
      </span>
    </div>
  );
}

interface Pair {
  key: string;
  value: string;
}

function Pairs({ legend, pairs, onChange, secret }: { legend: string; pairs: Pair[]; onChange: (p: Pair[]) => void; secret?: boolean }) {
  return (
    <fieldset className="pairs">
      <legend>{legend}</legend>
      {pairs.map((p, i) => (
        <div className="row inline" key={i}>
          <TextInput label="Name" value={p.key} onChange={(key) => onChange(pairs.map((q, j) => (i === j ? { ...q, key } : q)))} />
          <TextInput label="Value" type={secret ? "password" : "text"} value={p.value} onChange={(value) => onChange(pairs.map((q, j) => (i === j ? { ...q, value } : q)))} />
          <button type="button" className="link" onClick={() => onChange(pairs.filter((_, j) => j !== i))}>
            Remove
          </button>
        </div>
      ))}
      <button type="button" onClick={() => onChange([...pairs, { key: "", value: "" }])}>
        Add
      </button>
    </fieldset>
  );
}

function Register({ onDone, existing }: { onDone: () => void; existing: string[] }) {
  const plugins = useLoad(listPlugins, []);
  const [name, setName] = useState("");
  const [plugin, setPlugin] = useState("");
  const [config, setConfig] = useState<Pair[]>([{ key: "endpoint", value: "" }]);
  const [secrets, setSecrets] = useState<Pair[]>([{ key: "token", value: "" }]);
  const [egress, setEgress] = useState("");
  const [ca, setCa] = useState("");
  const [maxCalls, setMaxCalls] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const chosenPlugin = plugin || plugins.data?.[0]?.name || "";

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setDone(null);
    const toMap = (pairs: Pair[]) => Object.fromEntries(pairs.filter((p) => p.key.trim()).map((p) => [p.key.trim(), p.value]));
    const keptSecrets = secrets.filter((p) => p.key.trim());
    try {
      const site = await call(
        api.PUT("/api/v1/sites/{name}", {
          params: { path: { name: name.trim() } },
          body: {
            plugin: chosenPlugin,
            config: toMap(config),
            egress: egress.split(/\s+/).filter(Boolean),
            // Absent keeps the stored credentials on an update.
            secrets: keptSecrets.length ? toMap(keptSecrets) : null,
            ca_pem: ca.trim() ? ca : null,
            max_calls: maxCalls.trim() ? Number(maxCalls) : null,
          },
        }),
      );
      // Credentials leave the page once the host has them.
      setSecrets(secrets.map((p) => ({ ...p, value: "" })));
      setDone(`Site ${site.name} ${existing.includes(site.name) ? "updated" : "registered"} (revision ${site.revision}).`);
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="panel" aria-labelledby="register-title">
      <h2 id="register-title">Register a site</h2>
      <form onSubmit={submit} autoComplete="off">
        <div className="row inline">
          <TextInput label="Site name" value={name} onChange={setName} required />
          <SelectInput label="Plugin" value={chosenPlugin} options={(plugins.data ?? []).map((p) => ({ value: p.name, label: `${p.name} ${p.version} (${p.platform})` }))} onChange={setPlugin} />
        </div>
        <Pairs legend="Settings (the plugin's config)" pairs={config} onChange={setConfig} />
        <Pairs legend="Credentials (write-only: sealed by the host, never shown again)" pairs={secrets} onChange={setSecrets} secret />
        <TextInput label="Egress granted (URLs, space-separated)" value={egress} onChange={setEgress} hint="scheme, host and port the plugin may reach for this site; nothing else is reachable" />
        <TextInput label="Calls at once (optional)" type="number" value={maxCalls} onChange={setMaxCalls} hint="the most calls of the site's plugin in flight at once, across its runs and every host of the store; empty: the default (16)" />
        <div className="field">
          <label htmlFor="site-ca">CA certificates (PEM, optional)</label>
          <textarea id="site-ca" className="code" rows={3} value={ca} onChange={(e) => setCa(e.target.value)} spellCheck={false} />
        </div>
        <ErrorBox error={error} title="The host refused the site" />
        {done && (
          <p className="notice ok" role="status">
            {done}
          </p>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !chosenPlugin}>
            {busy ? "Registering…" : "Register site"}
          </button>
        </div>
      </form>
    </section>
  );
}
