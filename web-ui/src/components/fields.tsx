// Form fields that carry the host's validation message for their field
// (problem+json `errors[] {field, reason}`), announced with the control.
import { useId, useState, type ReactNode } from "react";
import { SPAN_UNITS, joinSpan, parseSpan, splitSpan, type SpanUnit } from "../lib/duration";

export interface FieldProps {
  label: ReactNode;
  /** The host's reasons for this field, if it refused it. */
  errors?: string[];
  hint?: ReactNode;
  children: (ids: { id: string; describedBy: string | undefined; invalid: boolean }) => ReactNode;
  className?: string;
}

export function Field({ label, errors, hint, children, className }: FieldProps) {
  const id = useId();
  const errId = `${id}-err`;
  const hintId = `${id}-hint`;
  const invalid = (errors?.length ?? 0) > 0;
  const describedBy = [invalid ? errId : null, hint ? hintId : null].filter(Boolean).join(" ") || undefined;
  return (
    <div className={`field ${invalid ? "invalid" : ""} ${className ?? ""}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, describedBy, invalid })}
      {hint && (
        <span id={hintId} className="hint">
          {hint}
        </span>
      )}
      {invalid && (
        <span id={errId} className="field-error">
          {errors!.join("; ")}
        </span>
      )}
    </div>
  );
}

/** A plan duration as an amount and a unit ("30" minutes → "30m"). The
 * unit is the one last chosen while the amount is a whole number of it,
 * so typing 0 and then 10 in minutes stays in minutes. */
export function SpanInput({
  label,
  value,
  onChange,
  errors,
  disabled,
  hint,
}: {
  label: ReactNode;
  value: string;
  onChange: (v: string) => void;
  errors?: string[];
  disabled?: boolean;
  hint?: ReactNode;
}) {
  const [chosen, setChosen] = useState<SpanUnit>(() => splitSpan(value).unit);
  const seconds = parseSpan(value);
  const per = SPAN_UNITS.find((u) => u.unit === chosen)!.seconds;
  let amount: string;
  let unit: SpanUnit = chosen;
  if (seconds === null) amount = value.replace(/\s*[a-zA-Z]+$/, "");
  else if (seconds % per === 0) amount = String(seconds / per);
  else ({ amount, unit } = splitSpan(value));
  return (
    <Field label={label} errors={errors} hint={hint} className="span-field">
      {({ id, describedBy, invalid }) => (
        <span className="span-input">
          <input
            id={id}
            type="number"
            min={0}
            step={1}
            inputMode="numeric"
            value={amount}
            disabled={disabled}
            aria-invalid={invalid || undefined}
            aria-describedby={describedBy}
            onChange={(e) => onChange(joinSpan(e.target.value, unit))}
          />
          <select
            aria-label={`${typeof label === "string" ? label : "duration"} unit`}
            value={unit}
            disabled={disabled}
            onChange={(e) => {
              const next = e.target.value as SpanUnit;
              setChosen(next);
              onChange(joinSpan(amount, next));
            }}
          >
            {SPAN_UNITS.map((u) => (
              <option key={u.unit} value={u.unit}>
                {u.label}
              </option>
            ))}
          </select>
        </span>
      )}
    </Field>
  );
}

export function TextInput({
  label,
  value,
  onChange,
  errors,
  disabled,
  hint,
  list,
  required,
  placeholder,
  type,
}: {
  label: ReactNode;
  value: string;
  onChange: (v: string) => void;
  errors?: string[];
  disabled?: boolean;
  hint?: ReactNode;
  list?: string;
  required?: boolean;
  placeholder?: string;
  type?: string;
}) {
  return (
    <Field label={label} errors={errors} hint={hint}>
      {({ id, describedBy, invalid }) => (
        <input
          id={id}
          type={type ?? "text"}
          value={value}
          list={list}
          required={required}
          placeholder={placeholder}
          disabled={disabled}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => onChange(e.target.value)}
        />
      )}
    </Field>
  );
}

export function NumberInput({
  label,
  value,
  onChange,
  errors,
  disabled,
  min,
}: {
  label: ReactNode;
  value: number | undefined;
  onChange: (v: number) => void;
  errors?: string[];
  disabled?: boolean;
  min?: number;
}) {
  return (
    <Field label={label} errors={errors}>
      {({ id, describedBy, invalid }) => (
        <input
          id={id}
          type="number"
          min={min}
          step={1}
          value={value ?? ""}
          disabled={disabled}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => onChange(Number(e.target.value))}
        />
      )}
    </Field>
  );
}

export function SelectInput({
  label,
  value,
  onChange,
  options,
  errors,
  disabled,
}: {
  label: ReactNode;
  value: string;
  onChange: (v: string) => void;
  options: { value: string; label: string }[];
  errors?: string[];
  disabled?: boolean;
}) {
  return (
    <Field label={label} errors={errors}>
      {({ id, describedBy, invalid }) => (
        <select id={id} value={value} disabled={disabled} aria-invalid={invalid || undefined} aria-describedby={describedBy} onChange={(e) => onChange(e.target.value)}>
          {options.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
      )}
    </Field>
  );
}
