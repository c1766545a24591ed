// The plan editor: workloads picked from the source site's inventory, the
// target site, replication, failover and failback objectives side by
// side, recovery order as a graph, network mapping, redirect with canary
// steps, trigger and approvals — and the same document as YAML. The host
// validates on save; its messages appear at the fields they name. A
// dry-run previews the step plan and the RTO forecast.
import { useEffect, useMemo, useState, type ReactNode } from "react";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { api, ApiError, call, type FieldProblem, type Schemas } from "../api/client";
import { listSites, type PlanView } from "../api/queries";
import type { Forecast, HealthGate, Hook, PlanDocument, RedirectTarget, WorkloadEntry, Workflow } from "../api/shapes";
import { Badge, ConfirmDialog, download, ErrorBox, Link, Loading, Verdict } from "../components/common";
import { DagView } from "../components/DagView";
import { NumberInput, SelectInput, SpanInput, TextInput } from "../components/fields";
import { formatMs } from "../lib/duration";
import { navigate } from "../lib/router";
import { useLoad } from "../lib/use";
import { useSession } from "../session";

function blankPlan(): PlanDocument {
  return {
    name: "",
    source: "",
    target: "",
    workloads: [],
    replication: { mode: "native", interval: "5m", retention: 3 },
    objectives: { failover: { rto: "30m", rpo: "15m" }, failback: { rto: "2h", rpo: "0s" } },
    trigger: { mode: "manual" },
    approvals: { failover: false, failback: true, migration: true },
  };
}

const KEY_ORDER: (keyof PlanDocument)[] = ["name", "description", "source", "target", "workloads", "replication", "objectives", "network_mapping", "redirect", "trigger", "approvals", "drills", "hooks"];

/** The document as the host takes it (empty optional parts left out), its
 * keys in the order plans are written in (docs/examples/plan.yaml). */
function clean(doc: PlanDocument): PlanDocument {
  const ordered = Object.fromEntries(
    [...KEY_ORDER, ...Object.keys(doc).filter((k) => !KEY_ORDER.includes(k as keyof PlanDocument))]
      .filter((k) => k in doc)
      .map((k) => [k, doc[k as keyof PlanDocument]]),
  ) as unknown as PlanDocument;
  const phase = (p: PlanDocument["objectives"]["failover"] | undefined) => p && { rto: p.rto, rpo: p.rpo };
  const out: PlanDocument = {
    ...ordered,
    objectives: doc.objectives && { failover: phase(doc.objectives.failover)!, failback: phase(doc.objectives.failback)! },
    workloads: doc.workloads.map((w) => {
      const e: WorkloadEntry = { id: w.id };
      if (w.depends_on?.length) e.depends_on = w.depends_on;
      if (w.health_gate) e.health_gate = w.health_gate;
      if (w.consistency === "application") e.consistency = w.consistency;
      return e;
    }),
  };
  if (!out.description) delete out.description;
  if (!out.network_mapping?.length) delete out.network_mapping;
  if (!out.redirect) delete out.redirect;
  else if (!out.redirect.gate) out.redirect = { target: out.redirect.target, canary: out.redirect.canary };
  if (out.trigger?.mode !== "automatic") out.trigger = { mode: "manual" };
  return out;
}

// A new plan's editor gives way to the saved plan's: its notice goes along.
let flash: string | null = null;

const WORKFLOWS: Workflow[] = ["failover", "drill", "migration", "reprotect", "failback", "permanent_failover", "commit_migration", "rollback_migration", "replication", "unprotect"];

export function PlanEditor({ name }: { name: string | null }) {
  const { can } = useSession();
  const readOnly = !can.administer;
  const [stored, setStored] = useState<PlanView | null>(null);
  const [doc, setDoc] = useState<PlanDocument | null>(name ? null : blankPlan());
  const [loadError, setLoadError] = useState<unknown>(null);
  const [view, setView] = useState<"form" | "yaml">("form");
  const [yamlText, setYamlText] = useState("");
  const [yamlError, setYamlError] = useState<string | null>(null);
  const [saveError, setSaveError] = useState<unknown>(null);
  const [saved, setSaved] = useState<string | null>(() => {
    const f = flash;
    flash = null;
    return f;
  });
  const [saving, setSaving] = useState(false);
  const sites = useLoad(listSites, []);

  useEffect(() => {
    if (!name) return;
    call(api.GET("/api/v1/plans/{name}", { params: { path: { name } } })).then(
      (p) => {
        setStored(p as PlanView);
        setDoc(structuredClone((p as PlanView).document));
      },
      setLoadError,
    );
  }, [name]);

  const fieldErrors: FieldProblem[] = saveError instanceof ApiError ? saveError.fieldErrors : [];
  const errs = (field: string) => fieldErrors.filter((f) => f.field === field).map((f) => f.reason);
  const dirty = useMemo(() => !stored || !doc || JSON.stringify(clean(doc)) !== JSON.stringify(clean(stored.document)), [doc, stored]);

  if (loadError) return (<><h1 tabIndex={-1}>Plan {name}</h1><ErrorBox error={loadError} /></>);
  if (!doc) return <Loading what={`plan ${name}`} />;

  const update = (patch: Partial<PlanDocument>) => {
    setSaved(null);
    setDoc({ ...doc, ...patch });
  };

  function switchView(next: "form" | "yaml") {
    if (next === view || !doc) return;
    if (next === "yaml") {
      setYamlText(toYaml(clean(doc)));
      setYamlError(null);
      setView("yaml");
      return;
    }
    try {
      const parsed = parseYaml(yamlText) as PlanDocument;
      if (!parsed || typeof parsed !== "object") throw new Error("the YAML is not a plan document (a mapping)");
      setDoc({ ...blankPlan(), ...parsed, workloads: parsed.workloads ?? [] });
      setYamlError(null);
      setView("form");
    } catch (e) {
      setYamlError(e instanceof Error ? e.message : String(e));
    }
  }

  async function save() {
    if (!doc) return;
    setSaving(true);
    setSaveError(null);
    setSaved(null);
    try {
      let planName = doc.name;
      let result;
      if (view === "yaml") {
        const parsed = parseYaml(yamlText) as Partial<PlanDocument> | null;
        planName = parsed?.name ?? "";
        result = await call(
          api.PUT("/api/v1/plans/{name}", {
            params: { path: { name: planName } },
            body: yamlText,
            bodySerializer: (b: unknown) => b as string,
            headers: { "Content-Type": "application/yaml" },
          }),
        );
      } else {
        result = await call(
          api.PUT("/api/v1/plans/{name}", {
            params: { path: { name: planName } },
            body: clean(doc) as unknown as Record<string, never>,
          }),
        );
      }
      const p = result as PlanView;
      setStored(p);
      setDoc(structuredClone(p.document));
      if (view === "yaml") setYamlText(toYaml(p.document));
      const notice = `Plan ${p.name} saved (revision ${p.revision}).`;
      setSaved(notice);
      if (!name || name !== p.name) {
        flash = notice;
        navigate(`/plans/${encodeURIComponent(p.name)}`);
      }
    } catch (e) {
      setSaveError(e);
    } finally {
      setSaving(false);
    }
  }

  // What the dry-run previews: the document as edited (the YAML view's
  // text when that is shown), or the saved plan when nothing changed.
  function previewed(): Preview {
    if (view === "yaml") {
      const parsed = parseYaml(yamlText) as PlanDocument | null;
      if (!parsed || typeof parsed !== "object") throw new Error("the YAML is not a plan document (a mapping)");
      return { name: parsed.name ?? "", plan: parsed };
    }
    return { name: doc!.name, plan: dirty ? clean(doc!) : null };
  }

  const siteOptions = [{ value: "", label: "— choose a site —" }, ...(sites.data ?? []).map((s) => ({ value: s.name, label: `${s.name} (${s.plugin})` }))];

  return (
    <>
      <h1 tabIndex={-1}>{name ? `Plan ${name}` : "New plan"}</h1>
      {stored && (
        <div className="muted">
          Revision {stored.revision} · <Badge value={stored.lifecycle.state} /> · primary {stored.lifecycle.primary}, standby {stored.lifecycle.standby}, fencing epoch {stored.lifecycle.epoch}
          {" · "}
          <Link to={`/runs?plan=${encodeURIComponent(stored.name)}`}>Runs of this plan</Link>
          {" · "}
          <RunbookButton name={stored.name} />
        </div>
      )}
      {readOnly && <p className="notice">Read only: editing plans needs the admin role.</p>}
      {stored?.lifecycle.state === "unprotected" && (
        <div className="notice" role="note">
          <p>
            Unprotected: no copy of these workloads exists and nothing runs.{!readOnly && " Saving the plan protects it again; its next replication cycle makes a full copy."}
          </p>
          {!readOnly && <DeletePlan name={stored.name} />}
        </div>
      )}

      <div className="tabs" role="tablist" aria-label="Plan views">
        <button type="button" role="tab" aria-selected={view === "form"} onClick={() => switchView("form")}>
          Form
        </button>
        <button type="button" role="tab" aria-selected={view === "yaml"} onClick={() => switchView("yaml")}>
          YAML
        </button>
      </div>

      <form
        className="plan-form"
        onSubmit={(e) => {
          e.preventDefault();
          void save();
        }}
        aria-label="Plan document"
      >
        {view === "yaml" ? (
          <section className="panel">
            <label htmlFor="plan-yaml">The plan document (YAML, as <code>rebound apply -f</code> takes it)</label>
            <textarea id="plan-yaml" className="code" rows={30} spellCheck={false} value={yamlText} readOnly={readOnly} onChange={(e) => { setYamlText(e.target.value); setSaved(null); }} />
            {yamlError && <p className="field-error" role="alert">The YAML does not parse: {yamlError}</p>}
          </section>
        ) : (
          <fieldset disabled={readOnly} className="bare">
            <Section title="Plan">
              <div className="row">
                <TextInput label="Name" value={doc.name} onChange={(v) => update({ name: v })} errors={errs("name")} required hint="a-z, 0-9 and '-'" />
                <TextInput label="Description" value={doc.description ?? ""} onChange={(v) => update({ description: v })} errors={errs("description")} />
              </div>
              <div className="row">
                <SelectInput label="Source site" value={doc.source} options={siteOptions} onChange={(v) => update({ source: v })} errors={errs("source")} />
                <SelectInput label="Target site" value={doc.target} options={siteOptions} onChange={(v) => update({ target: v })} errors={errs("target")} />
              </div>
            </Section>

            <Section title="Objectives per phase">
              <p className="hint">Failover and failback are different numbers: a failback is planned, so it may take longer but can lose nothing.</p>
              <div className="objectives">
                {(["failover", "failback"] as const).map((phase) => (
                  <fieldset key={phase} className="phase">
                    <legend>{phase === "failover" ? "Failover" : "Failback"}</legend>
                    <SpanInput
                      label={`${phase === "failover" ? "Failover" : "Failback"} RTO`}
                      hint="longest time from trigger to service restored"
                      value={doc.objectives[phase].rto}
                      errors={errs(`objectives.${phase}.rto`)}
                      onChange={(v) => update({ objectives: { ...doc.objectives, [phase]: { ...doc.objectives[phase], rto: v } } })}
                    />
                    <SpanInput
                      label={`${phase === "failover" ? "Failover" : "Failback"} RPO`}
                      hint="most data, as time, the phase may lose"
                      value={doc.objectives[phase].rpo}
                      errors={errs(`objectives.${phase}.rpo`)}
                      onChange={(v) => update({ objectives: { ...doc.objectives, [phase]: { ...doc.objectives[phase], rpo: v } } })}
                    />
                  </fieldset>
                ))}
              </div>
            </Section>

            <Section title="Replication">
              <div className="row">
                <SelectInput
                  label="Mode"
                  value={doc.replication.mode}
                  options={[
                    { value: "native", label: "native (the platform copies between its sites)" },
                    { value: "data_mover", label: "data mover (the host copies disks, any platform to any)" },
                  ]}
                  onChange={(v) => update({ replication: { ...doc.replication, mode: v as "native" | "data_mover" } })}
                  errors={errs("replication.mode")}
                />
                <SpanInput label="Interval" value={doc.replication.interval} errors={errs("replication.interval")} onChange={(v) => update({ replication: { ...doc.replication, interval: v } })} />
                <NumberInput label="Recovery points kept" min={1} value={doc.replication.retention} errors={errs("replication.retention")} onChange={(v) => update({ replication: { ...doc.replication, retention: v } })} />
              </div>
            </Section>

            <Workloads doc={doc} update={update} errs={errs} fieldErrors={fieldErrors} />

            <Section title="Recovery order">
              <DagView workloads={doc.workloads} />
            </Section>

            <NetworkMapping doc={doc} update={update} errs={errs} />
            <RedirectSection doc={doc} update={update} errs={errs} />
            <TriggerSection doc={doc} update={update} errs={errs} />
            <HooksSection doc={doc} update={update} errs={errs} />
          </fieldset>
        )}

        <ErrorBox error={saveError} title="The host refused the plan" />
        {saved && (
          <p className="notice ok" role="status">
            {saved}
          </p>
        )}
        {!readOnly && (
          <div className="actions sticky">
            <button type="submit" className="primary" disabled={saving}>
              {saving ? "Saving…" : name ? "Save plan" : "Create plan"}
            </button>
            {stored && dirty && <span className="muted">Unsaved changes</span>}
          </div>
        )}
      </form>

      {(stored || doc.name) && <DryRun edit={previewed} />}
    </>
  );
}

function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section className="panel">
      <h2>{title}</h2>
      {children}
    </section>
  );
}

interface PartProps {
  doc: PlanDocument;
  update: (patch: Partial<PlanDocument>) => void;
  errs: (field: string) => string[];
}

function Workloads({ doc, update, errs, fieldErrors }: PartProps & { fieldErrors: FieldProblem[] }) {
  const inventory = useLoad<Schemas["WorkloadView"][] | null>(
    async () => (doc.source ? (await call(api.GET("/api/v1/sites/{name}/workloads", { params: { path: { name: doc.source } } }))).items : null),
    [doc.source],
  );
  const [extra, setExtra] = useState("");
  const chosen = new Set(doc.workloads.map((w) => w.id));
  const setWorkloads = (workloads: WorkloadEntry[]) => update({ workloads });
  const toggle = (id: string, on: boolean) => {
    if (on) setWorkloads([...doc.workloads, { id }]);
    else setWorkloads(doc.workloads.filter((w) => w.id !== id).map((w) => ({ ...w, depends_on: (w.depends_on ?? []).filter((d) => d !== id) })));
  };
  const patch = (i: number, p: Partial<WorkloadEntry>) => setWorkloads(doc.workloads.map((w, j) => (i === j ? { ...w, ...p } : w)));
  const rowErrors = (i: number) => fieldErrors.filter((f) => f.field.startsWith(`workloads[${i}]`)).map((f) => `${f.field.slice(`workloads[${i}]`.length + 1) || "entry"}: ${f.reason}`);

  return (
    <section className="panel">
      <h2>Workloads</h2>
      {errs("workloads").map((r) => (
        <p key={r} className="field-error">{r}</p>
      ))}
      <h3>Inventory of {doc.source || "the source site"}</h3>
      {!doc.source && <p className="muted">Choose the source site to pick workloads from its inventory.</p>}
      {inventory.loading && doc.source && <Loading what={`the inventory of ${doc.source}`} />}
      <ErrorBox error={inventory.error} title={`The inventory of ${doc.source} could not be read`} />
      {inventory.data && (
        <table className="grid compact">
          <caption className="sr-only">Workloads discovered on {doc.source}</caption>
          <thead>
            <tr>
              <th scope="col">Protect</th>
              <th scope="col">Id</th>
              <th scope="col">Name</th>
              <th scope="col">CPUs</th>
              <th scope="col">Memory</th>
              <th scope="col">Disks</th>
              <th scope="col">Networks</th>
              <th scope="col">Power</th>
            </tr>
          </thead>
          <tbody>
            {inventory.data.map((w) => (
              <tr key={w.id}>
                <td>
                  <input type="checkbox" aria-label={`Protect ${w.id}`} checked={chosen.has(w.id)} onChange={(e) => toggle(w.id, e.target.checked)} />
                </td>
                <td><code>{w.id}</code></td>
                <td>{w.name}</td>
                <td>{w.cpus}</td>
                <td>{w.memory_mib} MiB</td>
                <td>{w.disks.length}</td>
                <td>{w.networks.join(", ")}</td>
                <td>{w.power}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="row inline">
        <TextInput label="Add a workload by id" value={extra} onChange={setExtra} hint="when the inventory cannot be read" />
        <button
          type="button"
          onClick={() => {
            const id = extra.trim();
            if (id && !chosen.has(id)) toggle(id, true);
            setExtra("");
          }}
        >
          Add
        </button>
      </div>

      <h3>Protected workloads and their order</h3>
      {doc.workloads.length === 0 && <p className="muted">None yet.</p>}
      <ol className="workloads">
        {doc.workloads.map((w, i) => (
          <li key={w.id + i} className={rowErrors(i).length ? "invalid" : undefined}>
            <div className="workload-head">
              <strong><code>{w.id}</code></strong>
              <button type="button" className="link" onClick={() => toggle(w.id, false)} aria-label={`Remove ${w.id}`}>
                Remove
              </button>
            </div>
            <fieldset className="depends">
              <legend>Recovered after</legend>
              {doc.workloads.filter((o) => o.id !== w.id).length === 0 && <span className="muted">no other workload</span>}
              {doc.workloads
                .filter((o) => o.id !== w.id)
                .map((o) => (
                  <label key={o.id} className="check">
                    <input
                      type="checkbox"
                      checked={(w.depends_on ?? []).includes(o.id)}
                      onChange={(e) => patch(i, { depends_on: e.target.checked ? [...(w.depends_on ?? []), o.id] : (w.depends_on ?? []).filter((d) => d !== o.id) })}
                    />{" "}
                    {o.id}
                  </label>
                ))}
            </fieldset>
            <HealthGateEditor gate={w.health_gate} onChange={(g) => patch(i, { health_gate: g })} label={w.id} />
            <label className="check">
              <input type="checkbox" checked={w.consistency === "application"} onChange={(e) => patch(i, { consistency: e.target.checked ? "application" : undefined })} /> Application-consistent snapshots of {w.id} (the guest's file systems frozen first)
            </label>
            {rowErrors(i).map((r) => (
              <p key={r} className="field-error">{r}</p>
            ))}
          </li>
        ))}
      </ol>
    </section>
  );
}

function HealthGateEditor({ gate, onChange, label }: { gate: HealthGate | undefined; onChange: (g: HealthGate | undefined) => void; label: string }) {
  const kind = gate?.check ?? "none";
  const timeout = gate?.timeout ?? "5m";
  return (
    <div className="row inline">
      <SelectInput
        label={`Health gate of ${label}`}
        value={kind}
        options={[
          { value: "none", label: "none" },
          { value: "powered_on", label: "running (platform reports it powered on)" },
          { value: "tcp", label: "TCP port accepts connections" },
          { value: "http", label: "HTTP path answers" },
        ]}
        onChange={(v) => {
          if (v === "none") onChange(undefined);
          else if (v === "powered_on") onChange({ check: "powered_on", timeout });
          else if (v === "tcp") onChange({ check: "tcp", port: 443, timeout });
          else onChange({ check: "http", port: 80, path: "/healthz", expect_status: 200, timeout });
        }}
      />
      {gate && gate.check !== "powered_on" && <NumberInput label="Port" min={1} value={gate.port} onChange={(port) => onChange({ ...gate, port })} />}
      {gate?.check === "http" && (
        <>
          <TextInput label="Path" value={gate.path} onChange={(path) => onChange({ ...gate, path })} />
          <NumberInput label="Expected status" value={gate.expect_status} onChange={(expect_status) => onChange({ ...gate, expect_status })} />
        </>
      )}
      {gate && <SpanInput label="Timeout" value={gate.timeout} onChange={(t) => onChange({ ...gate, timeout: t })} />}
    </div>
  );
}

function NetworkMapping({ doc, update, errs }: PartProps) {
  const rows = doc.network_mapping ?? [];
  const set = (next: typeof rows) => update({ network_mapping: next });
  return (
    <section className="panel">
      <h2>Network mapping</h2>
      {rows.length === 0 && <p className="muted">No mapping: recovered workloads keep their network names.</p>}
      {rows.map((m, i) => (
        <div className="row inline" key={i}>
          <TextInput label="Source network" value={m.source} errors={errs(`network_mapping[${i}].source`)} onChange={(v) => set(rows.map((r, j) => (i === j ? { ...r, source: v } : r)))} />
          <span aria-hidden="true">→</span>
          <TextInput label="Target network" value={m.target} errors={errs(`network_mapping[${i}].target`)} onChange={(v) => set(rows.map((r, j) => (i === j ? { ...r, target: v } : r)))} />
          <label className="check">
            <input type="checkbox" checked={m.keep_addresses ?? false} onChange={(e) => set(rows.map((r, j) => (i === j ? { ...r, keep_addresses: e.target.checked } : r)))} /> Keep IP and MAC addresses
          </label>
          <button type="button" className="link" onClick={() => set(rows.filter((_, j) => j !== i))}>
            Remove
          </button>
        </div>
      ))}
      <button type="button" onClick={() => set([...rows, { source: "", target: "", keep_addresses: false }])}>
        Add a mapping
      </button>
    </section>
  );
}

function RedirectSection({ doc, update, errs }: PartProps) {
  const r = doc.redirect;
  const [canaryText, setCanaryText] = useState((r?.canary ?? [100]).join(", "));
  const setTarget = (target: RedirectTarget) => update({ redirect: { ...(r ?? { canary: [100] }), target } });
  return (
    <section className="panel">
      <h2>Traffic redirect</h2>
      <label className="check">
        <input
          type="checkbox"
          checked={!!r}
          onChange={(e) => update({ redirect: e.target.checked ? { target: { kind: "dns_record", zone: "", name: "", record_type: "A", ttl: 60 }, canary: [100] } : undefined })}
        />{" "}
        Move traffic to the recovered side
      </label>
      {r && (
        <>
          <div className="row inline">
            <SelectInput
              label="Redirect with"
              value={r.target.kind}
              errors={errs("redirect.target")}
              options={[
                { value: "dns_record", label: "DNS record" },
                { value: "load_balancer_pool", label: "load-balancer pool weights" },
                { value: "floating_ip", label: "floating / elastic IP" },
                { value: "route", label: "route / service weights" },
              ]}
              onChange={(kind) => {
                if (kind === "dns_record") setTarget({ kind, zone: "", name: "", record_type: "A", ttl: 60 });
                else if (kind === "load_balancer_pool") setTarget({ kind, pool: "" });
                else if (kind === "floating_ip") setTarget({ kind, address: "" });
                else setTarget({ kind: "route", route: "" });
              }}
            />
            {r.target.kind === "dns_record" && (() => {
              const t = r.target;
              return (
                <>
                  <TextInput label="Zone" value={t.zone} onChange={(zone) => setTarget({ ...t, zone })} placeholder="shop.example.com." />
                  <TextInput label="Record name" value={t.name} onChange={(name) => setTarget({ ...t, name })} />
                  <TextInput label="Record type" value={t.record_type} onChange={(record_type) => setTarget({ ...t, record_type })} />
                  <NumberInput label="TTL (seconds)" value={t.ttl} min={0} onChange={(ttl) => setTarget({ ...t, ttl })} />
                </>
              );
            })()}
            {r.target.kind === "load_balancer_pool" && (() => {
              const t = r.target;
              return <TextInput label="Pool" value={t.pool} onChange={(pool) => setTarget({ ...t, pool })} />;
            })()}
            {r.target.kind === "floating_ip" && (() => {
              const t = r.target;
              return <TextInput label="Address" value={t.address} onChange={(address) => setTarget({ ...t, address })} />;
            })()}
            {r.target.kind === "route" && (() => {
              const t = r.target;
              return <TextInput label="Route" value={t.route} onChange={(route) => setTarget({ ...t, route })} />;
            })()}
          </div>
          <div className="row inline">
            <TextInput
              label="Canary steps (% of traffic, in order)"
              value={canaryText}
              errors={errs("redirect.canary")}
              hint="e.g. 10, 50, 100 — the last must be 100"
              onChange={(v) => {
                setCanaryText(v);
                update({ redirect: { ...r, canary: v.split(/[\s,]+/).filter(Boolean).map(Number) } });
              }}
            />
            <SpanInput label="Gate: healthy for" hint="before the next step" value={r.gate ?? "0s"} errors={errs("redirect.gate")} onChange={(gate) => update({ redirect: { ...r, gate: gate === "0s" ? undefined : gate } })} />
          </div>
        </>
      )}
    </section>
  );
}

function TriggerSection({ doc, update, errs }: PartProps) {
  const t = doc.trigger ?? { mode: "manual" };
  const a = { failover: false, failback: true, migration: true, ...doc.approvals };
  const detection = t.detection ?? { probe_interval: "30s", consecutive_failures: 3, witnesses: 1 };
  const drills = doc.drills ?? {};
  // A drills block with nothing set is left out of the document.
  const setDrills = (change: Partial<NonNullable<PlanDocument["drills"]>>) => {
    const next = { ...drills, ...change };
    if (!next.round_trip) delete next.round_trip;
    if (next.every === undefined) delete next.every;
    update({ drills: Object.keys(next).length > 0 ? next : undefined });
  };
  return (
    <section className="panel">
      <h2>Trigger, approvals and drills</h2>
      <fieldset className="bare">
        <legend className="sr-only">Trigger</legend>
        <label className="check">
          <input type="radio" name="trigger" checked={t.mode !== "automatic"} onChange={() => update({ trigger: { mode: "manual" } })} /> Manual: an operator starts failovers
        </label>
        <label className="check">
          <input type="radio" name="trigger" checked={t.mode === "automatic"} onChange={() => update({ trigger: { mode: "automatic", detection } })} /> Automatic: fail over when witnesses agree the source is down
        </label>
      </fieldset>
      {t.mode === "automatic" && (
        <div className="row inline">
          <SpanInput label="Probe interval" value={detection.probe_interval} errors={errs("trigger.detection.probe_interval")} onChange={(probe_interval) => update({ trigger: { mode: "automatic", detection: { ...detection, probe_interval } } })} />
          <NumberInput label="Consecutive failures" min={1} value={detection.consecutive_failures} errors={errs("trigger.detection.consecutive_failures")} onChange={(consecutive_failures) => update({ trigger: { mode: "automatic", detection: { ...detection, consecutive_failures } } })} />
          <NumberInput label="Witnesses" min={1} value={detection.witnesses} errors={errs("trigger.detection.witnesses")} onChange={(witnesses) => update({ trigger: { mode: "automatic", detection: { ...detection, witnesses } } })} />
        </div>
      )}
      <fieldset className="bare approvals">
        <legend>Wait for an operator's approval before</legend>
        {(["failover", "failback", "migration"] as const).map((w) => (
          <label key={w} className="check">
            <input type="checkbox" checked={a[w]} onChange={(e) => update({ approvals: { ...a, [w]: e.target.checked } })} /> {w}
          </label>
        ))}
      </fieldset>
      <fieldset className="bare">
        <legend>Drills</legend>
        <label className="check">
          <input type="checkbox" checked={drills.round_trip ?? false} onChange={(e) => setDrills({ round_trip: e.target.checked || undefined })} /> Round trip: after the recovery on the target, bring the sandbox back to the source and recover it there too, measuring the way back against the other phase's RTO
        </label>
        <label className="check">
          <input type="checkbox" checked={drills.every !== undefined} onChange={(e) => setDrills({ every: e.target.checked ? "7d" : undefined })} /> On a schedule: the policy runs a drill, and the dashboard flags the plan when none has succeeded in that time
        </label>
        {drills.every !== undefined && (
          <div className="row inline">
            <SpanInput label="Drill every" value={drills.every} errors={errs("drills.every")} hint="at least 1 hour" onChange={(every) => setDrills({ every })} />
          </div>
        )}
      </fieldset>
    </section>
  );
}

/** The plan's runbook as the host writes it (Markdown), downloaded. */
function RunbookButton({ name }: { name: string }) {
  const [error, setError] = useState<unknown>(null);
  async function fetchIt() {
    setError(null);
    try {
      const book = await call(api.GET("/api/v1/plans/{name}/runbook", { params: { path: { name } } }));
      download(`runbook-${name}-r${book.revision}.md`, "text/markdown", book.markdown);
    } catch (e) {
      setError(e);
    }
  }
  return (
    <>
      <button type="button" className="link" onClick={fetchIt}>
        Download runbook (Markdown)
      </button>
      {error !== null && <ErrorBox error={error} title="No runbook now" />}
    </>
  );
}

/** Delete an unprotected plan (admins): it leaves every list; its runs stay. */
function DeletePlan({ name }: { name: string }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function remove() {
    setBusy(true);
    setError(null);
    try {
      await call(api.DELETE("/api/v1/plans/{name}", { params: { path: { name } } }));
      setOpen(false);
      navigate("/plans");
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <>
      <button type="button" className="danger" onClick={() => setOpen(true)}>
        Delete plan…
      </button>
      <ConfirmDialog open={open} title={`Delete the plan ${name}?`} confirm="Delete the plan" danger busy={busy} onCancel={() => setOpen(false)} onConfirm={remove}>
        <p>It leaves every list; its runs, their reports and the audit log keep naming it. Applying its name again makes a new plan.</p>
        <ErrorBox error={error} title="The host kept the plan" />
      </ConfirmDialog>
    </>
  );
}

const HOOK_POINTS = [
  { value: "before_snapshot", label: "before the snapshot" },
  { value: "after_snapshot", label: "after the snapshot" },
  { value: "before_fence", label: "before the fence" },
  { value: "after_recovery", label: "after the recovery" },
  { value: "after_cutover", label: "after the cutover" },
];
const HOOK_WORKFLOWS = ["failover", "failback", "migration", "rollback_migration", "drill"];
/** The workflows that snapshot the serving workloads (the snapshot hooks' points). */
const SNAPSHOT_WORKFLOWS = ["replication", "reprotect", "failback", "migration", "permanent_failover"];
const snapshotPoint = (at: Hook["at"]) => at === "before_snapshot" || at === "after_snapshot";

function HooksSection({ doc, update, errs }: PartProps) {
  const rows = doc.hooks ?? [];
  const set = (next: Hook[]) => update({ hooks: next.length ? next : undefined });
  const change = (i: number, patch: Partial<Hook>) => set(rows.map((h, j) => (i === j ? { ...h, ...patch } : h)));
  return (
    <section className="panel">
      <h2>Hooks</h2>
      <p className="hint">
        The host POSTs the run's context (JSON, signed when the host has a hooks secret) to each URL at its point; only origins the host's <code>hooks.allow</code> lists are called. A failure stops the run unless it may fail.
      </p>
      {rows.length === 0 && <p className="muted">No hooks.</p>}
      {rows.map((h, i) => {
        const workflows = h.workflows ?? ["failover", "failback", "migration"];
        const offered = snapshotPoint(h.at) ? SNAPSHOT_WORKFLOWS : HOOK_WORKFLOWS;
        // A hook moved to or from the snapshots keeps only the workflows
        // that pass its new point (those of the snapshots by default).
        const moveTo = (at: Hook["at"]) => {
          if (!h.workflows && !snapshotPoint(at)) return change(i, { at });
          const fits = workflows.filter((w) => (snapshotPoint(at) ? SNAPSHOT_WORKFLOWS : HOOK_WORKFLOWS).includes(w));
          const kept = snapshotPoint(at) && fits.length === 0 ? ["replication", "reprotect", "failback", "migration"] : fits;
          change(i, { at, workflows: kept.length ? (kept as Hook["workflows"]) : undefined });
        };
        return (
          <fieldset className="hook" key={i}>
            <legend>Hook {h.name || i + 1}</legend>
            <div className="row inline">
              <TextInput label="Hook name" value={h.name} errors={errs(`hooks[${i}].name`)} onChange={(name) => change(i, { name })} />
              <SelectInput label="Called" value={h.at} options={HOOK_POINTS} errors={errs(`hooks[${i}].at`)} onChange={(at) => moveTo(at as Hook["at"])} />
              <TextInput label="URL" type="url" value={h.url} errors={errs(`hooks[${i}].url`)} onChange={(url) => change(i, { url })} />
              <SpanInput label="Timeout" value={h.timeout ?? "30s"} errors={errs(`hooks[${i}].timeout`)} onChange={(timeout) => change(i, { timeout })} />
            </div>
            <div className="row inline">
              <fieldset className="bare">
                <legend>In</legend>
                {offered.map((w) => (
                  <label key={w} className="check">
                    <input
                      type="checkbox"
                      checked={workflows.includes(w)}
                      onChange={(e) => change(i, { workflows: e.target.checked ? [...workflows, w] : workflows.filter((x) => x !== w) })}
                    />{" "}
                    {w.replaceAll("_", " ")}
                  </label>
                ))}
                {errs(`hooks[${i}].workflows`).map((e) => (
                  <span key={e} className="field-error">
                    {e}
                  </span>
                ))}
              </fieldset>
              <label className="check">
                <input type="checkbox" checked={h.on_failure === "continue"} onChange={(e) => change(i, { on_failure: e.target.checked ? "continue" : undefined })} /> May fail (the run goes on)
              </label>
              <button type="button" className="link" onClick={() => set(rows.filter((_, j) => j !== i))}>
                Remove
              </button>
            </div>
          </fieldset>
        );
      })}
      <button type="button" onClick={() => set([...rows, { name: "", at: "after_recovery", url: "https://" }])}>
        Add a hook
      </button>
    </section>
  );
}

/** A plan to preview: its name, and its unsaved document (none: the saved plan). */
interface Preview {
  name: string;
  plan: PlanDocument | null;
}

function DryRun({ edit }: { edit: () => Preview }) {
  const [workflow, setWorkflow] = useState<Workflow>("failover");
  const [forecast, setForecast] = useState<Forecast | null>(null);
  const [unsaved, setUnsaved] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function preview() {
    setBusy(true);
    setError(null);
    setForecast(null);
    try {
      const { name, plan } = edit();
      const body = plan ? { workflow, plan: plan as unknown as Record<string, never> } : { workflow };
      const f = await call(api.POST("/api/v1/plans/{name}/dry-run", { params: { path: { name } }, body }));
      setUnsaved(plan !== null);
      setForecast(f);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="panel" aria-labelledby="dryrun-title">
      <h2 id="dryrun-title">Dry-run preview</h2>
      <p className="hint">The exact steps a workflow would take now and its RTO forecast, of the plan as edited here — saved or not; nothing happens.</p>
      <div className="row inline">
        <SelectInput label="Workflow" value={workflow} options={WORKFLOWS.map((w) => ({ value: w, label: w.replaceAll("_", " ") }))} onChange={(v) => setWorkflow(v as Workflow)} />
        <button type="button" onClick={preview} disabled={busy}>
          {busy ? "Previewing…" : "Preview"}
        </button>
      </div>
      <ErrorBox error={error} title="No preview" />
      {forecast && (
        <>
          <p className="muted small" role="status">
            {unsaved ? "Previewing your unsaved changes." : "Previewing the saved plan."}
          </p>
          <ForecastView forecast={forecast} />
        </>
      )}
    </section>
  );
}

export function ForecastView({ forecast }: { forecast: Forecast }) {
  return (
    <div className="forecast" data-testid="forecast">
      <p>
        <strong>RTO forecast {formatMs(forecast.rto_ms)}</strong> against the {forecast.phase} RTO objective of {formatMs(forecast.objective_rto_ms)}{" "}
        <Verdict met={forecast.within_objective} />
        <span className="muted small">
          {" "}
          — {forecast.basis ? `from measured steps (newest: run ${forecast.basis})` : "from default step durations (nothing measured yet)"}
        </span>
      </p>
      {forecast.return_leg && (
        <p data-testid="forecast-return-leg">
          <strong>The way back {formatMs(forecast.return_leg.rto_ms)}</strong> (steps marked ←) against the {forecast.return_leg.phase} RTO objective of {formatMs(forecast.return_leg.objective_rto_ms)} <Verdict met={forecast.return_leg.rto_met} />
        </p>
      )}
      <table className="grid compact">
        <caption className="sr-only">Steps of the {forecast.workflow}</caption>
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Stage</th>
            <th scope="col">Step</th>
            <th scope="col">Expected</th>
          </tr>
        </thead>
        <tbody>
          {forecast.steps.map((s, i) => (
            <tr key={i}>
              <td>{i + 1}</td>
              <td>{String(s.input.stage ?? "")}</td>
              <td>
                {s.input.leg === "return" && <span title="the way back">← </span>}
                {s.name}
              </td>
              <td title={s.measured_in ? `measured in run ${s.measured_in}` : "the action's default"}>
                {formatMs(s.expected_ms)}
                {!s.measured_in && <span className="muted small"> (default)</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
