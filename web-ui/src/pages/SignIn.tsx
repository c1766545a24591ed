// Sign in as a local user (POST /api/v1/auth/login), or with a bearer
// token: an API token (rbt_…) or an access token from an OIDC issuer the
// host trusts.
import { useState, type FormEvent } from "react";
import { api, call, setToken, type Schemas } from "../api/client";
import { ErrorBox } from "../components/common";

export function SignIn({ notice, onSignedIn }: { notice: string | null; onSignedIn: (p: Schemas["Principal"]) => void }) {
  const [mode, setMode] = useState<"password" | "token">("password");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [bearer, setBearer] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "password") {
        const issued = await call(api.POST("/api/v1/auth/login", { body: { username, password } }));
        setToken(issued.access_token);
      } else {
        setToken(bearer.trim());
      }
      onSignedIn(await call(api.GET("/api/v1/auth/whoami")));
    } catch (err) {
      setToken(null);
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin" id="main">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in to Rebound</h1>
        {notice && (
          <p className="notice" role="status">
            {notice}
          </p>
        )}
        <div className="tabs" role="radiogroup" aria-label="How to sign in">
          <label>
            <input type="radio" name="mode" checked={mode === "password"} onChange={() => setMode("password")} /> Local user
          </label>
          <label>
            <input type="radio" name="mode" checked={mode === "token"} onChange={() => setMode("token")} /> Token (API or OIDC)
          </label>
        </div>
        {mode === "password" ? (
          <>
            <label>
              Username
              <input name="username" autoComplete="username" required value={username} onChange={(e) => setUsername(e.target.value)} autoFocus />
            </label>
            <label>
              Password
              <input name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
            </label>
          </>
        ) : (
          <label>
            Bearer token
            <textarea name="token" required rows={4} value={bearer} onChange={(e) => setBearer(e.target.value)} spellCheck={false} />
            <span className="hint">An API token (rbt_…) or an access token from an OIDC issuer this host trusts.</span>
          </label>
        )}
        <ErrorBox error={error} title="Sign-in refused" />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
