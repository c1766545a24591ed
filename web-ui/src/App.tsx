// The shell: sign-in until the host accepts a token, then the navigation
// the role may use and the page of the current route.
import { useCallback, useEffect, useMemo, useState } from "react";
import { api, call, currentToken, errorText, onSessionExpired, setToken, type Schemas } from "./api/client";
import { Link, Loading } from "./components/common";
import { Access } from "./pages/Access";
import { Audit } from "./pages/Audit";
import { Dashboard } from "./pages/Dashboard";
import { Events } from "./pages/Events";
import { PlanEditor } from "./pages/PlanEditor";
import { Plans } from "./pages/Plans";
import { Plugins } from "./pages/Plugins";
import { RunDetail } from "./pages/RunDetail";
import { Runs } from "./pages/Runs";
import { SignIn } from "./pages/SignIn";
import { Sites } from "./pages/Sites";
import { completeSignIn, endProviderSession, forgetProviderSession, isSignInCallback } from "./lib/oidc";
import { renewalDelay, renewSession } from "./lib/renewal";
import { match, useHashPath } from "./lib/router";
import { permissions, SessionContext, type Session } from "./session";

export function App() {
  const [principal, setPrincipal] = useState<Schemas["Principal"] | null>(null);
  const [checking, setChecking] = useState(currentToken() !== null || isSignInCallback());
  const [notice, setNotice] = useState<string | null>(null);
  const [signInError, setSignInError] = useState<unknown>(null);

  const signOut = useCallback((message?: string) => {
    setToken(null);
    setPrincipal(null);
    setNotice(message ?? null);
  }, []);

  // Renewals of the session's token, counted so that each schedules the next.
  const [renewals, setRenewals] = useState(0);
  const renew = useCallback(
    (renewing: Promise<Schemas["IssuedToken"]>) =>
      renewing
        .then((issued) => {
          setToken(issued.access_token, issued.expires_in);
          setRenewals((n) => n + 1);
        })
        .catch((err) => {
          forgetProviderSession();
          signOut(`Your sign-in could not be renewed: ${errorText(err)}`);
        }),
    [signOut],
  );

  useEffect(() => {
    // Renew the session before its token expires.
    if (!principal) return;
    const delay = renewalDelay();
    if (delay === null) return;
    const timer = setTimeout(() => {
      const renewing = renewSession();
      if (renewing) renew(renewing);
    }, delay);
    return () => clearTimeout(timer);
  }, [principal, renewals, renew]);

  useEffect(() => {
    // A 401: renew once if the sign-in can be (the tab slept past the
    // token's expiry, say); otherwise, or right after a renewal, sign out.
    let lastRenewal = 0;
    return onSessionExpired(() => {
      const renewing = Date.now() - lastRenewal > 10_000 ? renewSession() : null;
      if (renewing) {
        lastRenewal = Date.now();
        renew(renewing);
        return;
      }
      forgetProviderSession();
      signOut("Your session expired or was revoked; sign in again.");
    });
  }, [signOut, renew]);

  useEffect(() => {
    // Back from an OIDC issuer: redeem its code, then carry on signed in.
    // A stale stored token just shows the form; a failed sign-in says why.
    const callback = isSignInCallback();
    const pending = callback
      ? completeSignIn().then((issued) => setToken(issued.access_token, issued.expires_in))
      : Promise.resolve();
    pending
      .then(() => (currentToken() ? call(api.GET("/api/v1/auth/whoami")).then(setPrincipal) : undefined))
      .catch((err) => {
        setToken(null);
        if (callback) setSignInError(err);
      })
      .finally(() => setChecking(false));
  }, []);

  const session: Session | null = useMemo(
    () =>
      principal
        ? {
            principal,
            can: permissions(principal.role),
            // Signed in through an issuer: end its session too.
            signOut: () => {
              signOut();
              endProviderSession();
            },
          }
        : null,
    [principal, signOut],
  );

  if (checking) return <Loading what="your session" />;
  if (!session)
    return (
      <SignIn
        notice={notice}
        error={signInError}
        onSignedIn={(p) => {
          setNotice(null);
          setSignInError(null);
          setPrincipal(p);
        }}
      />
    );
  return (
    <SessionContext.Provider value={session}>
      <Shell session={session} />
    </SessionContext.Provider>
  );
}

const NAV: { to: string; label: string; show?: (s: Session) => boolean }[] = [
  { to: "/", label: "Dashboard" },
  { to: "/plans", label: "Plans" },
  { to: "/runs", label: "Runs" },
  { to: "/sites", label: "Sites" },
  { to: "/plugins", label: "Plugins" },
  { to: "/events", label: "Events" },
  { to: "/access", label: "Access", show: (s) => s.can.administer },
  { to: "/audit", label: "Audit", show: (s) => s.can.administer },
];

function Shell({ session }: { session: Session }) {
  const path = useHashPath();
  const section = "/" + (path.split(/[/?]/)[1] ?? "");
  useEffect(() => {
    // Move focus to the new page's heading, as a screen reader expects.
    document.querySelector<HTMLElement>("main h1")?.focus();
  }, [path]);
  return (
    <div className="shell">
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">Rebound</span>
        <span className="who">
          Signed in as <strong>{session.principal.name}</strong> <span className="role">({session.principal.role})</span>
        </span>
        <button type="button" onClick={session.signOut}>
          Sign out
        </button>
      </header>
      <nav aria-label="Main">
        <ul>
          {NAV.filter((n) => !n.show || n.show(session)).map((n) => (
            <li key={n.to}>
              <Link to={n.to} className={section === n.to ? "active" : undefined}>
                {n.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        <Page path={path} session={session} />
      </main>
    </div>
  );
}

function Page({ path, session }: { path: string; session: Session }) {
  let m;
  if (match("/", path)) return <Dashboard />;
  if (match("/plans", path)) return <Plans />;
  if (match("/plans/new", path)) return <PlanEditor key="new" name={null} />;
  if ((m = match("/plans/:name", path))) return <PlanEditor key={m.name} name={m.name!} />;
  if (match("/runs", path)) return <Runs path={path} />;
  if ((m = match("/runs/:id", path))) return <RunDetail key={m.id} id={m.id!} />;
  if (match("/sites", path)) return <Sites />;
  if (match("/plugins", path)) return <Plugins />;
  if (match("/events", path)) return <Events path={path} />;
  if (match("/access", path) && session.can.administer) return <Access />;
  if (match("/audit", path) && session.can.administer) return <Audit />;
  return (
    <>
      <h1 tabIndex={-1}>Not found</h1>
      <p>
        Nothing is at <code>{path}</code>. <Link to="/">Back to the dashboard</Link>.
      </p>
    </>
  );
}

