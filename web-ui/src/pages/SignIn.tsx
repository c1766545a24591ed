// Sign in with an OIDC issuer the host offers (GET /api/v1/auth/providers;
// the authorization code flow with PKCE, lib/oidc.ts), as a local user
// (POST /api/v1/auth/login), or with a bearer token: an API token (rbt_…)
// or an access token from an OIDC issuer the host trusts.
import { useEffect, useState, type FormEvent } from "react";
import { api, call, setToken, type Schemas } from "../api/client";
import { ErrorBox } from "../components/common";
import { beginSignIn } from "../lib/oidc";

export function SignIn({
  notice,
  error: initialError = null,
  onSignedIn,
}: {
  notice: string | null;
  /** Why the last sign-in with an issuer failed. */
  error?: unknown;
  onSignedIn: (p: Schemas["Principal"]) => void;
}) {
  const [mode, setMode] = useState<"password" | "token">("password");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [bearer, setBearer] = useState("");
  const [error, setError] = useState<unknown>(initialError);
  const [busy, setBusy] = useState(false);
  const [providers, setProviders] = useState<Schemas["SignInProvider"][]>([]);

  useEffect(() => {
    call(api.GET("/api/v1/auth/providers"))
      .then((r) => setProviders(r.providers))
      .catch(() => setProviders([]));
  }, []);

  async function signInWith(provider: Schemas["SignInProvider"]) {
    setBusy(true);
    setError(null);
    try {
      await beginSignIn(provider);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (mode === "password") {
        const issued = await call(api.POST("/api/v1/auth/login", { body: { username, password } }));
        setToken(issued.access_token, issued.expires_in);
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
        {providers.length > 0 && (
          <div className="providers">
            {providers.map((p) => (
              <button type="button" key={p.issuer} onClick={() => signInWith(p)} disabled={busy}>
                Sign in with {p.name}
              </button>
            ))}
            <p className="hint">or</p>
          </div>
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
