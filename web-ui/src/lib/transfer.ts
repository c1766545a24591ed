// What a transfer step of the data mover did (the API's `transfer` of a
// step): how much of the disks it moved, and what it read to find that
// out — the part of a failback's resync an operator checks ("only the
// deltas, every block verified").
import type { Schemas } from "../api/client";

type Transfer = Schemas["TransferView"];

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** Bytes in binary units, one decimal where it matters ("4 MiB", "1.5 GiB"). */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  const text = u === 0 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1);
  return `${text} ${UNITS[u]}`;
}

/** One line for a finished transfer step, or null for any other step. */
export function transferSummary(t: Transfer | null | undefined): string | null {
  if (!t) return null;
  const parts = [`moved ${formatBytes(t.bytes_moved)} of ${formatBytes(t.bytes_total)}`, `read ${formatBytes(t.bytes_read)}`];
  if (t.bytes_hashed) parts.push(`hashed ${formatBytes(t.bytes_hashed)} of the target`);
  const modes = [...new Set(t.modes)];
  if (modes.length) parts.push(modes.join("; "));
  return `${parts.join(", ")}; every block verified`;
}
