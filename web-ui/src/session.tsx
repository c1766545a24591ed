// Who is signed in and what their role lets them do. The UI shows only
// the controls a role can use; the host enforces the same rules (a 403
// changes nothing), so this is for clarity, not security.
import { createContext, useContext } from "react";
import type { Role, Schemas } from "./api/client";

export interface Permissions {
  /** Start runs, approve, cancel. */
  operate: boolean;
  /** Plans, sites, tokens, plugin quarantine and enablement, the audit log. */
  administer: boolean;
  /** Publish plugin packages. */
  publish: boolean;
}

export function permissions(role: Role): Permissions {
  return {
    operate: role === "operator" || role === "admin",
    administer: role === "admin",
    publish: role === "plugin-publisher" || role === "admin",
  };
}

export interface Session {
  principal: Schemas["Principal"];
  can: Permissions;
  signOut: () => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in page");
  return s;
}
