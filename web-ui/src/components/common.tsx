import { useEffect, useRef, type ReactNode } from "react";
import { ApiError, errorText } from "../api/client";

export function Link({ to, children, className }: { to: string; children: ReactNode; className?: string }) {
  return (
    <a href={`#${to}`} className={className}>
      {children}
    </a>
  );
}

/** A refused request: what happened and what to do, with each field's problem. */
export function ErrorBox({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const fields = error instanceof ApiError ? error.fieldErrors : [];
  return (
    <div className="error-box" role="alert">
      <strong>{title ?? (error instanceof ApiError ? error.problem.title : "Error")}</strong>
      <p>{errorText(error)}</p>
      {fields.length > 0 && (
        <ul>
          {fields.map((f, i) => (
            <li key={i}>
              <code>{f.field}</code>: {f.reason}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

const TONE: Record<string, string> = {
  succeeded: "ok",
  protected: "ok",
  met: "ok",
  serving: "ok",
  running: "busy",
  pending: "busy",
  failing_over: "busy",
  failing_back: "busy",
  reprotecting: "busy",
  migrating: "busy",
  unprotecting: "busy",
  waiting_approval: "wait",
  ready_for_failback: "wait",
  awaiting_commit: "wait",
  failed_over: "warn",
  unprotected: "warn",
  failed: "bad",
  breach: "bad",
  cancelled: "muted",
};

/** A status word with a colour that repeats it (never colour alone). */
export function Badge({ value, tone }: { value: string; tone?: string }) {
  const t = tone ?? TONE[value] ?? "muted";
  return <span className={`badge badge-${t}`}>{value.replaceAll("_", " ")}</span>;
}

/** A modal confirmation (the native <dialog>: focus is kept inside, Escape cancels). */
export function ConfirmDialog({
  open,
  title,
  children,
  confirm,
  onConfirm,
  onCancel,
  busy,
  disabled,
  danger,
}: {
  open: boolean;
  title: string;
  children: ReactNode;
  confirm: string;
  onConfirm: () => void;
  onCancel: () => void;
  busy?: boolean;
  disabled?: boolean;
  danger?: boolean;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog
      ref={ref}
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        onCancel();
      }}
    >
      <h2 id="dialog-title">{title}</h2>
      <div className="dialog-body">{children}</div>
      <div className="actions">
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="button" className={danger ? "danger" : "primary"} onClick={onConfirm} disabled={busy || disabled}>
          {busy ? "Working…" : confirm}
        </button>
      </div>
    </dialog>
  );
}

/** Met / breached / not measured, in words and colour. */
export function Verdict({ met, label }: { met: boolean | null | undefined; label?: string }) {
  if (met === null || met === undefined) return <span className="muted">{label ?? "not measured"}</span>;
  return met ? <Badge value="met" tone="ok" /> : <Badge value="breach" tone="bad" />;
}

export function download(filename: string, type: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
