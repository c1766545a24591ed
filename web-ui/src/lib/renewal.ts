// Renewing the session's token before it expires, so a signed-in admin is
// not sent back to the sign-in page every hour (or every five minutes, with
// Keycloak's default token lifetime): a sign-in at an OIDC issuer is renewed
// with the issuer's refresh token (lib/oidc.ts), a local one with
// POST /api/v1/auth/renew (up to the host's session_max_seconds from the
// sign-in); an API token pasted at sign-in does not expire.
import { api, call, tokenExpiresAt, type Schemas } from "../api/client";
import { canRefresh, isProviderSession, refreshSignIn } from "./oidc";

/**
 * Milliseconds from `now` until a token expiring at `expiresAt` should be
 * renewed: a minute before it expires, or at half its remaining life when
 * that is shorter.
 */
export function delayBefore(expiresAt: number, now: number): number {
  const left = expiresAt - now;
  return Math.max(0, left > 120_000 ? left - 60_000 : left / 2);
}

/** When to renew the token held, or null when it is not renewed. */
export function renewalDelay(): number | null {
  const expires = tokenExpiresAt();
  if (expires === null) return null;
  if (isProviderSession() && !canRefresh()) return null;
  return delayBefore(expires, Date.now());
}

let renewingLocal: Promise<Schemas["IssuedToken"]> | null = null;

/**
 * Renew the session: the new token, or null when it cannot be renewed.
 * Callers at the same moment share one request.
 */
export function renewSession(): Promise<Schemas["IssuedToken"]> | null {
  if (tokenExpiresAt() === null) return null;
  if (isProviderSession()) return refreshSignIn();
  renewingLocal ??= call(api.POST("/api/v1/auth/renew")).finally(() => {
    renewingLocal = null;
  });
  return renewingLocal;
}
