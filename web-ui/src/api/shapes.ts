// Shapes the OpenAPI document leaves as plain objects: the plan document
// (host/domain plan.rs), a compliance entry (host/engine policy.rs), a run
// report and a dry-run forecast (host/engine report.rs). They mirror those
// Rust types field for field; the end-to-end tests read every one of them
// from a real host, so a change there fails them.
// TODO(api): type these in the OpenAPI document and use the generated types.

export type Phase = "failover" | "failback";
export type Workflow =
  | "failover"
  | "reprotect"
  | "failback"
  | "migration"
  | "permanent_failover"
  | "commit_migration"
  | "rollback_migration"
  | "drill"
  | "replication";

export type HealthGate =
  | { check: "powered_on"; timeout: string }
  | { check: "tcp"; port: number; timeout: string }
  | { check: "http"; port: number; path: string; expect_status: number; timeout: string };

export interface WorkloadEntry {
  id: string;
  depends_on?: string[];
  health_gate?: HealthGate;
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
}

export interface Compliance {
  plan: string;
  state: string;
  phase: Phase | null;
  rpo_lag_ms: number | null;
  rpo_objective_ms: number;
  rpo_met: boolean | null;
  rpo_worst_workload: string | null;
  rto_forecast_ms: number | null;
  rto_objective_ms: number;
  rto_met: boolean | null;
  rto_basis: string | null;
  replication_due_at_ms: number | null;
}

export interface StepTiming {
  seq: number;
  name: string;
  status: string;
  attempts: number;
  duration_ms: number | null;
  elapsed_ms: number | null;
  budget_left_ms: number | null;
}

export interface RunReport {
  run: string;
  plan: string;
  workflow: Workflow;
  phase: Phase;
  status: string;
  objective_rto_ms: number;
  objective_rpo_ms: number;
  measured_rto_ms: number | null;
  achieved_rpo_ms: number | null;
  rto_met: boolean | null;
  rpo_met: boolean | null;
  steps: StepTiming[];
}

export interface PlannedStep {
  name: string;
  input: Record<string, unknown>;
  expected_ms: number;
}

export interface Forecast {
  workflow: Workflow;
  phase: Phase;
  steps: PlannedStep[];
  rto_ms: number;
  objective_rto_ms: number;
  within_objective: boolean;
  basis: string | null;
}
