// Plugins: what each provides (platform, capabilities, the contract version
// it is built against), the egress its manifest asks for, crash and
// quarantine status, its versions; publish a
// signed package, roll back a version, disable or enable, lift a
// quarantine.
import { useState, type FormEvent } from "react";
import { api, call, type Schemas } from "../api/client";
import { listPlugins } from "../api/queries";
import { Badge, ConfirmDialog, ErrorBox, Loading } from "../components/common";
import { Field } from "../components/fields";
import { useLoad } from "../lib/use";
import { useSession } from "../session";

type Plugin = Schemas["PluginView"];

/** The contract version, flagged when it is 0.1 (no removal of a failed run's standbys). */
function Contract({ version }: { version: string }) {
  const old = version.startsWith("0.1.");
  return (
    <span
      className={`chip${old ? " chip-warn" : ""}`}
      title={old ? "Built against the provider contract 0.1: a failed run's standby workloads stay fenced instead of being removed, and abandoned imports are moved on before they are torn down. Rebuild it with the current SDK." : "The provider contract version the plugin is built against"}
    >
      contract {version}
    </span>
  );
}
type Action = { kind: "disable" | "enable" | "release"; plugin: string } | { kind: "activate"; plugin: string; version: string };

export function Plugins() {
  const { can } = useSession();
  const plugins = useLoad(listPlugins, []);
  const [open, setOpen] = useState<string | null>(null);
  const [action, setAction] = useState<Action | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function act() {
    if (!action) return;
    setBusy(true);
    setActionError(null);
    try {
      const path = { params: { path: { name: action.plugin } } };
      if (action.kind === "activate") await call(api.POST("/api/v1/plugins/{name}/versions/{version}/activate", { params: { path: { name: action.plugin, version: action.version } } }));
      else if (action.kind === "disable") await call(api.POST("/api/v1/plugins/{name}/disable", path));
      else if (action.kind === "enable") await call(api.POST("/api/v1/plugins/{name}/enable", path));
      else await call(api.POST("/api/v1/plugins/{name}/release", path));
      setAction(null);
      plugins.reload();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  }

  const ask = (a: Action) => {
    setActionError(null);
    setAction(a);
  };

  return (
    <>
      <h1 tabIndex={-1}>Plugins</h1>
      <ErrorBox error={plugins.error} />
      {!plugins.data && !plugins.error && <Loading what="plugins" />}
      {plugins.data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">Plugin</th>
              <th scope="col">Platform</th>
              <th scope="col">Capabilities</th>
              <th scope="col">Egress requested</th>
              <th scope="col">Status</th>
              <th scope="col"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {plugins.data.map((p) => (
              <PluginRow key={p.name} p={p} open={open === p.name} onToggle={() => setOpen(open === p.name ? null : p.name)} admin={can.administer} ask={ask} />
            ))}
          </tbody>
        </table>
      )}
      {plugins.data?.length === 0 && <p className="muted">No plugins installed.</p>}
      {can.publish && <Publish onDone={plugins.reload} />}
      <ConfirmDialog
        open={action !== null}
        title={
          action?.kind === "activate"
            ? `Roll ${action.plugin} to version ${action.version}?`
            : action?.kind === "release"
              ? `Lift the quarantine of ${action.plugin}?`
              : `${action?.kind === "disable" ? "Disable" : "Enable"} ${action?.plugin}?`
        }
        confirm={action?.kind === "activate" ? "Activate" : action?.kind === "release" ? "Lift quarantine" : action?.kind === "disable" ? "Disable" : "Enable"}
        danger={action?.kind === "disable"}
        busy={busy}
        onCancel={() => setAction(null)}
        onConfirm={act}
      >
        <p>
          {action?.kind === "disable"
            ? "Every call to any version fails at once until it is enabled again: runs on its sites stop making progress."
            : action?.kind === "activate"
              ? "New calls go to that version; calls in flight finish on the current one."
              : action?.kind === "release"
                ? "Calls reach the plugin again; repeated traps quarantine it again."
                : "Calls reach the plugin again."}
        </p>
        <ErrorBox error={actionError} />
      </ConfirmDialog>
    </>
  );
}

function PluginRow({ p, open, onToggle, admin, ask }: { p: Plugin; open: boolean; onToggle: () => void; admin: boolean; ask: (a: Action) => void }) {
  return (
    <>
      <tr data-plugin={p.name}>
        <th scope="row">
          {p.name} <span className="muted">{p.version}</span> <Contract version={p.contract} />
          <div className="muted small mono" title="sha256 of the component">
            {p.sha256.slice(0, 16)}…
          </div>
        </th>
        <td>{p.platform}</td>
        <td>
          {p.capabilities.length ? p.capabilities.map((c) => <span key={c} className="chip">{c}</span>) : <span className="muted">none</span>}
        </td>
        <td>
          {p.egress.map((e) => (
            <div key={e}>
              <code>{e}</code>
            </div>
          ))}
        </td>
        <td>
          {p.quarantined ? <Badge value="quarantined" tone="bad" /> : p.enabled ? <Badge value="enabled" tone="ok" /> : <Badge value="disabled" tone="warn" />}
          <div className="small muted">{p.recent_crashes} recent traps</div>
        </td>
        <td className="row-actions">
          <button type="button" className="link" aria-expanded={open} onClick={onToggle}>
            Versions
          </button>
          {admin && p.quarantined && (
            <button type="button" onClick={() => ask({ kind: "release", plugin: p.name })}>
              Lift quarantine…
            </button>
          )}
          {admin && (
            <button type="button" className={p.enabled ? "danger" : undefined} onClick={() => ask({ kind: p.enabled ? "disable" : "enable", plugin: p.name })}>
              {p.enabled ? "Disable…" : "Enable…"}
            </button>
          )}
        </td>
      </tr>
      {open && (
        <tr>
          <td colSpan={6}>
            <Versions name={p.name} admin={admin} ask={ask} />
          </td>
        </tr>
      )}
    </>
  );
}

function Versions({ name, admin, ask }: { name: string; admin: boolean; ask: (a: Action) => void }) {
  const versions = useLoad(async () => (await call(api.GET("/api/v1/plugins/{name}/versions", { params: { path: { name } } }))).items, [name]);
  if (versions.error) return <ErrorBox error={versions.error} />;
  if (!versions.data) return <Loading what="versions" />;
  return (
    <table className="grid compact">
      <caption>Versions of {name}, newest first</caption>
      <thead>
        <tr>
          <th scope="col">Version</th>
          <th scope="col">sha256</th>
          <th scope="col">Capabilities</th>
          <th scope="col">Contract</th>
          <th scope="col">Active</th>
        </tr>
      </thead>
      <tbody>
        {versions.data.map((v) => (
          <tr key={v.version}>
            <th scope="row">{v.version}</th>
            <td className="mono small">{v.sha256.slice(0, 16)}…</td>
            <td>{v.capabilities.join(", ")}</td>
            <td>
              <Contract version={v.contract} />
            </td>
            <td>
              {v.active ? (
                <Badge value="active" tone="ok" />
              ) : admin ? (
                <button type="button" onClick={() => ask({ kind: "activate", plugin: name, version: v.version })}>
                  Activate…
                </button>
              ) : (
                <span className="muted">loaded</span>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

async function fileText(f: File | undefined): Promise<string | null> {
  return f ? f.text() : null;
}

async function fileBase64(f: File): Promise<string> {
  const bytes = new Uint8Array(await f.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function Publish({ onDone }: { onDone: () => void }) {
  const [manifest, setManifest] = useState<File>();
  const [wasm, setWasm] = useState<File>();
  const [signature, setSignature] = useState<File>();
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!manifest || !wasm) return;
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const p = await call(
        api.POST("/api/v1/plugins", {
          body: { manifest: (await fileText(manifest))!, wasm: await fileBase64(wasm), signature: await fileText(signature) },
        }),
      );
      setDone(`Plugin ${p.name} ${p.version} verified and active.`);
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const file = (label: string, accept: string, set: (f: File | undefined) => void, required: boolean, hint: string) => (
    <Field label={label} hint={hint}>
      {({ id, describedBy }) => <input id={id} type="file" accept={accept} required={required} aria-describedby={describedBy} onChange={(e) => set(e.target.files?.[0])} />}
    </Field>
  );

  return (
    <section className="panel" aria-labelledby="publish-title">
      <h2 id="publish-title">Publish a plugin</h2>
      <p className="hint">The files <code>rebound plugin package</code> writes. The host verifies the digest, the signature against its trusted keys, the contract version and the imports before it swaps the plugin in; a refused package changes nothing.</p>
      <form onSubmit={submit}>
        <div className="row inline">
          {file("Manifest (manifest.toml)", ".toml", setManifest, true, "name, version, capabilities, egress, sha256")}
          {file("Component (plugin.wasm)", ".wasm", setWasm, true, "the WebAssembly component")}
          {file("Signature (manifest.sig)", ".sig", setSignature, false, "absent only where the host allows unsigned plugins")}
        </div>
        <ErrorBox error={error} title="The host refused the package" />
        {done && (
          <p className="notice ok" role="status">
            {done}
          </p>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !manifest || !wasm}>
            {busy ? "Publishing…" : "Publish"}
          </button>
        </div>
      </form>
    </section>
  );
}
