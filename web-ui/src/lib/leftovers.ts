// What a drill that failed or was cancelled left on a site and is still
// there (the API's `left` of a run report): its sandbox, its copies — the
// plan's next replication cycle or drill removes them.
import type { Schemas } from "../api/client";

type Leftover = Schemas["DrillLeftover"];

/** One line for what a drill left on a site. */
export function leftLine(l: Leftover): string {
  const copies = l.copies.length === 1 ? "1 copy" : l.copies.length > 1 ? `${l.copies.length} copies` : "";
  const what = [l.sandbox ? "its sandbox" : "", copies].filter(Boolean);
  return `Left on ${l.site}: ${what.join(" and ")} — the plan's next replication cycle or drill removes it (start a replication cycle on the Runs page to remove it now).`;
}
