// The plan document (host/domain plan.rs), which the API takes as YAML or
// JSON and answers as a plain object: its shape mirrors the Rust type field
// for field, and the end-to-end tests read and write it through a real
// host, so a change there fails them. Everything else the UI reads is
// typed from the OpenAPI document (schema.gen.ts); the reports are
// re-exported here under their short names.
import type { Schemas } from "./client";

export type Phase = Schemas["Phase"];
export type Workflow = Schemas["Workflow"];
export type Compliance = Schemas["Compliance"];
export type StepTiming = Schemas["StepTiming"];
export type RunReport = Schemas["RunReport"];
export type PlannedStep = Schemas["PlannedStep"];
export type Forecast = Schemas["Forecast"];

export type HealthGate =
  | { check: "powered_on"; timeout: string }
  | { check: "tcp"; port: number; timeout: string }
  | { check: "http"; port: number; path: string; expect_status: number; timeout: string };

export interface WorkloadEntry {
  id: string;
  depends_on?: string[];
  health_gate?: HealthGate;
  consistency?: "crash" | "application";
}

export interface PhaseObjectives {
  rto: string;
  rpo: string;
}

export type RedirectTarget =
  | { kind: "dns_record"; zone: string; name: string; record_type: string; ttl: number }
  | { kind: "load_balancer_pool"; pool: string }
  | { kind: "floating_ip"; address: string }
  | { kind: "route"; route: string };

export interface PlanDocument {
  name: string;
  description?: string;
  source: string;
  target: string;
  workloads: WorkloadEntry[];
  replication: { mode: "native" | "data_mover"; interval: string; retention?: number };
  objectives: { failover: PhaseObjectives; failback: PhaseObjectives };
  network_mapping?: { source: string; target: string; keep_addresses?: boolean }[];
  redirect?: { target: RedirectTarget; canary?: number[]; gate?: string };
  trigger?: {
    mode?: "manual" | "automatic";
    detection?: { probe_interval: string; consecutive_failures: number; witnesses: number };
  };
  approvals?: { failover?: boolean; failback?: boolean; migration?: boolean };
  drills?: { round_trip?: boolean; every?: string };
  hooks?: Hook[];
}

/** A call the host makes at a point of the plan's runs. */
export interface Hook {
  name: string;
  at: "before_snapshot" | "after_snapshot" | "before_fence" | "after_recovery" | "after_cutover";
  workflows?: string[];
  url: string;
  timeout?: string;
  on_failure?: "fail" | "continue";
}

