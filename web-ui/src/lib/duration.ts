// Durations as plans write them ("90s", "15m", "1h 30m" — the host parses
// them with humantime) and as people read them.

const UNIT_SECONDS: Record<string, number> = {
  s: 1, sec: 1, secs: 1, second: 1, seconds: 1,
  m: 60, min: 60, mins: 60, minute: 60, minutes: 60,
  h: 3600, hr: 3600, hrs: 3600, hour: 3600, hours: 3600,
  d: 86400, day: 86400, days: 86400,
  w: 604800, week: 604800, weeks: 604800,
};

/** Seconds of a plan duration, or null when it is not one. */
export function parseSpan(text: string): number | null {
  const t = text.trim();
  if (t === "") return null;
  const re = /(\d+)\s*([a-zA-Z]+)\s*/y;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t)) !== null) {
    const unit = UNIT_SECONDS[m[2]!];
    if (unit === undefined) return null;
    total += Number(m[1]) * unit;
    matched = re.lastIndex;
  }
  return matched === t.length ? total : null;
}

export type SpanUnit = "s" | "m" | "h" | "d";
export const SPAN_UNITS: { unit: SpanUnit; label: string; seconds: number }[] = [
  { unit: "s", label: "seconds", seconds: 1 },
  { unit: "m", label: "minutes", seconds: 60 },
  { unit: "h", label: "hours", seconds: 3600 },
  { unit: "d", label: "days", seconds: 86400 },
];

/** A duration as an amount and the largest unit that divides it. */
export function splitSpan(text: string): { amount: string; unit: SpanUnit } {
  const secs = parseSpan(text);
  if (secs === null) return { amount: text, unit: "m" };
  if (secs === 0) return { amount: "0", unit: "s" };
  for (const u of [...SPAN_UNITS].reverse()) {
    if (secs % u.seconds === 0) return { amount: String(secs / u.seconds), unit: u.unit };
  }
  return { amount: String(secs), unit: "s" };
}

/** The plan text of an amount in a unit ("30" "m" → "30m"); the amount as typed when it is not a whole number. */
export function joinSpan(amount: string, unit: SpanUnit): string {
  const a = amount.trim();
  return /^\d+$/.test(a) ? `${Number(a)}${unit}` : `${a}${unit}`;
}

/** Milliseconds for people: "850 ms", "42 s", "12 min 5 s", "2 h 10 min". */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  const neg = ms < 0;
  const v = Math.abs(ms);
  let out: string;
  if (v < 1000) out = `${Math.round(v)} ms`;
  else if (v < 59_500) out = `${(v / 1000).toFixed(v < 10_000 ? 1 : 0)} s`;
  else if (v < 3_600_000) {
    // Rounded before it is split: 119.9 s is "2 min", never "1 min 60 s".
    const total = Math.round(v / 1000);
    const [min, s] = [Math.floor(total / 60), total % 60];
    out = s ? `${min} min ${s} s` : `${min} min`;
  } else if (v < 86_400_000) {
    const total = Math.round(v / 60_000);
    const [h, min] = [Math.floor(total / 60), total % 60];
    out = min ? `${h} h ${min} min` : `${h} h`;
  } else {
    const h = Math.round(v / 3_600_000);
    out = h % 24 ? `${Math.floor(h / 24)} d ${h % 24} h` : `${h / 24} d`;
  }
  return neg ? `−${out}` : out;
}

export function formatTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
