// Sign-in with an OIDC issuer: the authorization code flow with PKCE
// (RFC 7636) for a public client. `beginSignIn` keeps a fresh state and
// code verifier for this tab and sends the browser to the issuer; when the
// issuer sends it back (`?code=…&state=…` on the UI's own URL),
// `completeSignIn` checks the state and has the host redeem the code with
// the verifier (POST /api/v1/auth/oidc), which answers the access token
// it accepts. The verifier never leaves this tab but for the host.
// Signing out ends the issuer's session too where it has an end-session
// endpoint (OpenID RP-initiated logout): `endProviderSession` sends the
// browser there with the ID token as the hint, and the issuer sends it
// back to the UI. Where the issuer gives a refresh token, `refreshSignIn`
// has the host trade it for a new access token before the one held
// expires (lib/renewal.ts says when), so the session lasts as long as the
// issuer's; it is kept for this tab only, like the access token.
import { api, call, type Schemas } from "../api/client";

const PENDING_KEY = "rebound.oidc";
const SESSION_KEY = "rebound.oidc.session";

interface Pending {
  issuer: string;
  client_id: string;
  end_session_endpoint: string | null;
  state: string;
  verifier: string;
  redirect_uri: string;
  /** Where the user was (the hash route), to return to. */
  hash: string;
}

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(bytes: number): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function pkceChallenge(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** The UI's own URL without query or hash: the redirect URI to register. */
export function redirectUri(): string {
  return `${location.origin}${location.pathname}`;
}

/** Send the browser to `provider` to sign in. */
export async function beginSignIn(provider: Schemas["SignInProvider"]): Promise<void> {
  const pending: Pending = {
    issuer: provider.issuer,
    client_id: provider.client_id,
    end_session_endpoint: provider.end_session_endpoint ?? null,
    state: random(16),
    verifier: random(32),
    redirect_uri: redirectUri(),
    hash: location.hash,
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(provider.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: provider.client_id,
    redirect_uri: pending.redirect_uri,
    scope: provider.scope,
    state: pending.state,
    code_challenge: await pkceChallenge(pending.verifier),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/** Whether this page load is the issuer sending the browser back. */
export function isSignInCallback(): boolean {
  const q = new URLSearchParams(location.search);
  return q.has("state") && (q.has("code") || q.has("error"));
}

/**
 * Finish a sign-in the issuer sent the browser back from: the host's
 * answer (its access token), or an Error saying what went wrong. The
 * query is removed from the address bar either way.
 */
export async function completeSignIn(): Promise<Schemas["IssuedToken"]> {
  const q = new URLSearchParams(location.search);
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  const pending: Pending | null = raw ? JSON.parse(raw) : null;
  history.replaceState(null, "", `${location.pathname}${pending?.hash ?? ""}`);
  if (!pending || q.get("state") !== pending.state) {
    throw new Error("This sign-in was not started from this tab (its state does not match); sign in again.");
  }
  const error = q.get("error");
  if (error) {
    const description = q.get("error_description");
    throw new Error(`The identity provider refused the sign-in: ${error}${description ? ` (${description})` : ""}.`);
  }
  const iss = q.get("iss");
  if (iss && iss !== pending.issuer) {
    throw new Error(`The answer came from ${iss}, not ${pending.issuer}, where the sign-in began; sign in again.`);
  }
  const issued = await call(
    api.POST("/api/v1/auth/oidc", {
      body: {
        issuer: pending.issuer,
        code: q.get("code") ?? "",
        code_verifier: pending.verifier,
        redirect_uri: pending.redirect_uri,
      },
    }),
  );
  keep({
    issuer: pending.issuer,
    end_session_endpoint: pending.end_session_endpoint,
    client_id: pending.client_id,
    id_token: issued.id_token ?? null,
    refresh_token: issued.refresh_token ?? null,
  });
  return issued;
}

/** A sign-in at an issuer, for renewing and ending it. */
interface ProviderSession {
  issuer: string;
  end_session_endpoint: string | null;
  client_id: string;
  id_token: string | null;
  refresh_token: string | null;
}

function kept(): ProviderSession | null {
  const raw = sessionStorage.getItem(SESSION_KEY);
  return raw ? (JSON.parse(raw) as ProviderSession) : null;
}

function keep(session: ProviderSession) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

/** Whether the session began at an issuer (it is renewed there, if at all). */
export function isProviderSession(): boolean {
  return kept() !== null;
}

/** Whether the issuer gave a refresh token to renew the session with. */
export function canRefresh(): boolean {
  return kept()?.refresh_token != null;
}

let renewing: Promise<Schemas["IssuedToken"]> | null = null;

/**
 * Have the host trade the sign-in's refresh token for a new access token
 * (POST /api/v1/auth/oidc/refresh); null when there is no refresh token.
 * Callers at the same moment share one request: the issuer rotates
 * refresh tokens, and would refuse the old one a second time.
 */
export function refreshSignIn(): Promise<Schemas["IssuedToken"]> | null {
  if (renewing) return renewing;
  const session = kept();
  if (!session?.refresh_token) return null;
  renewing = call(
    api.POST("/api/v1/auth/oidc/refresh", {
      body: { issuer: session.issuer, refresh_token: session.refresh_token },
    }),
  )
    .then((issued) => {
      keep({
        ...session,
        id_token: issued.id_token ?? session.id_token,
        refresh_token: issued.refresh_token ?? session.refresh_token,
      });
      return issued;
    })
    .finally(() => {
      renewing = null;
    });
  return renewing;
}

/**
 * After signing out of Rebound: when the session came from an issuer that
 * can end its own, send the browser there (it comes back to the UI's
 * sign-in page) and answer true; otherwise forget it and answer false.
 */
export function endProviderSession(): boolean {
  const session = kept();
  sessionStorage.removeItem(SESSION_KEY);
  if (!session?.end_session_endpoint) return false;
  const url = new URL(session.end_session_endpoint);
  const params = new URLSearchParams({ client_id: session.client_id, post_logout_redirect_uri: redirectUri() });
  if (session.id_token) params.set("id_token_hint", session.id_token);
  url.search = params.toString();
  location.assign(url.toString());
  return true;
}

/** Forget the issuer's session without ending it (it expired, say). */
export function forgetProviderSession(): void {
  sessionStorage.removeItem(SESSION_KEY);
}
