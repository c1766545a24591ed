// Access (admins): API tokens for automation — listed with who made them,
// created with a role (the secret shown this once), revoked at once — and
// local users: listed with their roles, created or given a new password and
// role, removed (their sign-ins end at once). OIDC users are the identity
// provider's to manage.
import { useState, type FormEvent } from "react";
import { api, call, type Role, type Schemas } from "../api/client";
import { Badge, ConfirmDialog, ErrorBox, Loading } from "../components/common";
import { SelectInput, TextInput } from "../components/fields";
import { formatTime } from "../lib/duration";
import { useLoad } from "../lib/use";

const ROLES: { value: Role; label: string }[] = [
  { value: "viewer", label: "viewer — reads" },
  { value: "operator", label: "operator — runs, approvals" },
  { value: "plugin-publisher", label: "plugin-publisher — publishes plugins" },
  { value: "admin", label: "admin — everything" },
];

async function listTokens(): Promise<Schemas["TokenView"][]> {
  return (await call(api.GET("/api/v1/tokens"))).items;
}

async function listUsers(): Promise<Schemas["UserView"][]> {
  return (await call(api.GET("/api/v1/users"))).items;
}

export function Access() {
  const tokens = useLoad(listTokens, []);
  const [revoke, setRevoke] = useState<Schemas["TokenView"] | null>(null);
  const [revokeError, setRevokeError] = useState<unknown>(null);
  return (
    <>
      <h1 tabIndex={-1}>Access</h1>
      <section className="panel" aria-labelledby="tokens-title">
        <h2 id="tokens-title">API tokens</h2>
        <ErrorBox error={tokens.error} />
        {!tokens.data && !tokens.error && <Loading what="API tokens" />}
        {tokens.data && tokens.data.length === 0 && <p className="muted">No API tokens yet.</p>}
        {tokens.data && tokens.data.length > 0 && (
          <table className="grid">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tokens.data.map((t) => (
                <tr key={t.id} data-token={t.name}>
                  <th scope="row">
                    {t.name} <span className="muted small">{t.id}</span>
                  </th>
                  <td>{t.role}</td>
                  <td>
                    {formatTime(t.created_at_ms)} <span className="muted small">by {t.created_by}</span>
                  </td>
                  <td>{t.revoked_at_ms != null ? <Badge value={`revoked ${formatTime(t.revoked_at_ms)}`} tone="bad" /> : <Badge value="active" tone="ok" />}</td>
                  <td>
                    {t.revoked_at_ms == null && (
                      <button type="button" className="link danger" aria-label={`Revoke the token ${t.name}`} onClick={() => { setRevokeError(null); setRevoke(t); }}>
                        Revoke…
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <NewToken onDone={tokens.reload} />
      </section>
      <Users />
      <ConfirmDialog
        open={revoke !== null}
        title={`Revoke the token ${revoke?.name}?`}
        confirm="Revoke the token"
        danger
        onCancel={() => setRevoke(null)}
        onConfirm={async () => {
          try {
            await call(api.DELETE("/api/v1/tokens/{id}", { params: { path: { id: revoke!.id } } }));
            setRevoke(null);
            tokens.reload();
          } catch (e) {
            setRevokeError(e);
          }
        }}
      >
        <p>Every call with it is refused from now on; this cannot be undone.</p>
        <ErrorBox error={revokeError} />
      </ConfirmDialog>
    </>
  );
}

function NewToken({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("operator");
  const [created, setCreated] = useState<Schemas["CreatedToken"] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setCreated(null);
    try {
      setCreated(await call(api.POST("/api/v1/tokens", { body: { name: name.trim(), role } })));
      setName("");
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} autoComplete="off" aria-labelledby="new-token-title">
      <h3 id="new-token-title">Create a token</h3>
      <div className="row inline">
        <TextInput label="Token name" value={name} onChange={setName} required hint="what it is for, e.g. ci-pipeline" />
        <SelectInput label="Token role" value={role} options={ROLES} onChange={(v) => setRole(v as Role)} />
      </div>
      <ErrorBox error={error} title="The host refused the token" />
      {created && (
        <div className="notice ok" role="status">
          <p>
            Token {created.name} ({created.role}) created. Copy it now: it is shown this once, and the host keeps only its digest.
          </p>
          <input className="code" readOnly value={created.token} aria-label="The new token's secret" onFocus={(e) => e.currentTarget.select()} />
        </div>
      )}
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create token"}
        </button>
      </div>
    </form>
  );
}

function Users() {
  const users = useLoad(listUsers, []);
  const [remove, setRemove] = useState<Schemas["UserView"] | null>(null);
  const [removeError, setRemoveError] = useState<unknown>(null);
  return (
    <section className="panel" aria-labelledby="user-title">
      <h2 id="user-title">Local users</h2>
      <ErrorBox error={users.error} />
      {!users.data && !users.error && <Loading what="users" />}
      {users.data && (
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Role</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {users.data.map((u) => (
              <tr key={u.name} data-user={u.name}>
                <th scope="row">{u.name}</th>
                <td>{u.role}</td>
                <td>{formatTime(u.created_at_ms)}</td>
                <td>
                  <button type="button" className="link danger" aria-label={`Remove the user ${u.name}`} onClick={() => { setRemoveError(null); setRemove(u); }}>
                    Remove…
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <SetUser onDone={users.reload} />
      <ConfirmDialog
        open={remove !== null}
        title={`Remove the user ${remove?.name}?`}
        confirm="Remove the user"
        danger
        onCancel={() => setRemove(null)}
        onConfirm={async () => {
          try {
            await call(api.DELETE("/api/v1/users/{name}", { params: { path: { name: remove!.name } } }));
            setRemove(null);
            users.reload();
          } catch (e) {
            setRemoveError(e);
          }
        }}
      >
        <p>They can no longer sign in, and every session they have ends now. The only admin cannot be removed.</p>
        <ErrorBox error={removeError} title="The host kept the user" />
      </ConfirmDialog>
    </section>
  );
}

function SetUser({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [done, setDone] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const user = name.trim();
      await call(api.PUT("/api/v1/users/{name}", { params: { path: { name: user } }, body: { password, role } }));
      setPassword("");
      setDone(`User ${user} saved as ${role}; they sign in with that password.`);
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} autoComplete="off" aria-labelledby="set-user-title">
      <h3 id="set-user-title">Add a user or change one</h3>
      <p className="hint">Create a user, or set an existing one's password and role. Users of an OIDC issuer are managed there.</p>
      <div className="row inline">
        <TextInput label="User name" value={name} onChange={setName} required />
        <TextInput label="New password" type="password" value={password} onChange={setPassword} required hint="at least 12 characters" />
        <SelectInput label="User role" value={role} options={ROLES} onChange={(v) => setRole(v as Role)} />
      </div>
      <ErrorBox error={error} title="The host refused the user" />
      {done && (
        <p className="notice ok" role="status">
          {done}
        </p>
      )}
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Saving…" : "Save user"}
        </button>
      </div>
    </form>
  );
}
