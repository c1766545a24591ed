//! The run verbs: `run WORKFLOW PLAN [--wait]` (or `run failover --site
//! SITE`: every plan a lost site serves) — with `--wait`, each step
//! as it changes (a finished disk transfer with what the data mover did),
//! then the measured RTO and achieved RPO against the phase's objectives
//! and the data the run moved; with `--dry-run`, the steps and the RTO
//! forecast, nothing started — and `approve RUN` / `cancel RUN`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::{Value, json};

use super::{Client, ServerArgs};
use crate::output::{Exit, exit};

#[derive(Args)]
pub struct RunArgs {
    /// failover, failback, reprotect, migration, permanent_failover,
    /// commit_migration, rollback_migration, drill, replication or
    /// unprotect (admin: removes every recovery point of the plan).
    workflow: String,
    #[arg(required_unless_present = "site")]
    plan: Option<String>,
    /// Instead of one plan: fail over every plan whose primary is SITE
    /// (a site lost), each plan its own run (`run failover --site SITE`).
    #[arg(long, value_name = "SITE", conflicts_with = "plan")]
    site: Option<String>,
    /// `permanent_failover` only: protect the plan from where it serves
    /// onto this site instead of back onto the old primary (lost for good).
    #[arg(long, value_name = "SITE", conflicts_with = "site")]
    new_standby: Option<String>,
    /// Follow the run (or each plan's run) to its end; the exit status says
    /// how it ended (the worst of them).
    #[arg(long)]
    wait: bool,
    /// Repeating the command with the same key returns the same run(s).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Start nothing: the steps the run would take, each with its expected
    /// duration, and the expected RTO against the phase's objective (with
    /// `--site`: each plan's failover forecast, or why it cannot now).
    #[arg(long, conflicts_with_all = ["wait", "idempotency_key"])]
    dry_run: bool,
}

pub async fn run(server: &ServerArgs, args: &RunArgs) -> Result<()> {
    let client = Client::new(server)?;
    let mut headers = Vec::new();
    if let Some(key) = &args.idempotency_key {
        headers.push(("idempotency-key", key.as_str()));
    }
    let plan = match (&args.plan, &args.site) {
        (Some(plan), _) => plan,
        (None, Some(site)) if args.workflow == "failover" => {
            return if args.dry_run {
                preview_site(&client, site).await
            } else {
                fail_over_site(&client, site, &headers, args.wait).await
            };
        }
        (None, _) => {
            return Err(Exit::new(
                exit::REFUSED,
                format!(
                    "--site fails a whole site over: use it with `failover`, not `{}`",
                    args.workflow
                ),
            )
            .into());
        }
    };
    let body = match &args.new_standby {
        Some(site) => json!({"workflow": args.workflow, "new_standby": site}),
        None => json!({"workflow": args.workflow}),
    };
    if args.dry_run {
        let forecast = dry_run(&client, plan, &body).await?;
        println!(
            "dry run: {} of plan '{plan}' (nothing started)",
            args.workflow
        );
        print_forecast(&forecast);
        return Ok(());
    }
    let (_, run) = client
        .call(
            reqwest::Method::POST,
            &format!("/plans/{plan}/runs"),
            Some(("application/json", body.to_string())),
            &headers,
        )
        .await?;
    let id = run["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the host answered no run id"))?
        .to_owned();
    println!(
        "run {id}: {} of plan '{plan}' {}",
        args.workflow, run["status"]
    );
    if !args.wait {
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut seen: HashMap<i64, (String, i64)> = HashMap::new();
    let mut told_waiting = false;
    loop {
        let detail = client.get(&format!("/runs/{id}")).await?;
        let steps = detail["steps"].as_array().cloned().unwrap_or_default();
        bar.set_length(steps.len() as u64);
        bar.set_position(
            steps
                .iter()
                .filter(|s| matches!(s["status"].as_str(), Some("succeeded" | "skipped")))
                .count() as u64,
        );
        for step in &steps {
            let seq = step["seq"].as_i64().unwrap_or_default();
            let status = step["status"].as_str().unwrap_or_default().to_owned();
            let attempts = step["attempts"].as_i64().unwrap_or_default();
            if seen.get(&seq) != Some(&(status.clone(), attempts)) && status != "pending" {
                let error = step["error"]
                    .as_str()
                    .map(|e| format!(" — {e}"))
                    .or_else(|| transfer_summary(&step["transfer"]).map(|t| format!(" — {t}")))
                    .unwrap_or_default();
                let name = step["name"].as_str().unwrap_or_default();
                // Above the bar on a terminal; plain lines in a pipe.
                bar.suspend(|| {
                    println!("  step {seq:>3} {name:<50} {status} (attempt {attempts}){error}");
                });
                if status == "running" {
                    bar.set_message(name.to_owned());
                }
                seen.insert(seq, (status, attempts));
            }
        }
        let status = detail["status"].as_str().unwrap_or_default();
        match status {
            "succeeded" | "failed" | "cancelled" => {
                bar.finish_and_clear();
                print_report(&id, plan, status, &detail);
                if let Some(total) = transfers_total(&steps) {
                    println!("  {total}");
                }
                return match status {
                    "succeeded" => Ok(()),
                    "failed" => Err(Exit::new(exit::RUN_FAILED, format!("run {id} failed")).into()),
                    _ => Err(
                        Exit::new(exit::RUN_CANCELLED, format!("run {id} was cancelled")).into(),
                    ),
                };
            }
            "waiting_approval" if !told_waiting => {
                told_waiting = true;
                bar.set_message("waiting for approval");
                bar.suspend(|| {
                    eprintln!("run {id} waits for an operator's approval (rebound approve {id})");
                });
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The host's dry-run of `body` (a workflow request) on `plan`.
async fn dry_run(client: &Client, plan: &str, body: &Value) -> Result<Value> {
    let (_, forecast) = client
        .call(
            reqwest::Method::POST,
            &format!("/plans/{plan}/dry-run"),
            Some(("application/json", body.to_string())),
            &[],
        )
        .await?;
    Ok(forecast)
}

/// A duration in milliseconds as seconds, `-` when absent.
fn seconds(v: &Value) -> String {
    v.as_i64().map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.1} s", ms as f64 / 1000.0),
    )
}

/// A measured or expected figure against its objective.
fn met(figure: &Value, objective: &Value) -> &'static str {
    match (figure.as_i64(), objective.as_i64()) {
        (Some(m), Some(o)) if m <= o => "met",
        (Some(_), Some(_)) => "MISSED",
        _ => "-",
    }
}

/// A dry-run's forecast: each step with its expected duration and where
/// that comes from, then the expected RTO against the phase's objective.
fn print_forecast(forecast: &Value) {
    for (seq, step) in forecast["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let basis = step["measured_in"]
            .as_str()
            .map_or_else(|| "default".to_owned(), |run| format!("measured in {run}"));
        println!(
            "  step {seq:>3} {:<50} ~{:>9} ({basis})",
            step["name"].as_str().unwrap_or_default(),
            seconds(&step["expected_ms"]),
        );
    }
    println!(
        "  RTO expected {:>10}  objective {:>10}  {} ({} phase)",
        seconds(&forecast["rto_ms"]),
        seconds(&forecast["objective_rto_ms"]),
        met(&forecast["rto_ms"], &forecast["objective_rto_ms"]),
        forecast["phase"].as_str().unwrap_or_default()
    );
    print_way_back(&forecast["return_leg"], "expected");
}

/// A round-trip drill's way back (`return_leg`), if any, against the other
/// phase's objective; `how` the RTO was found (measured, expected).
fn print_way_back(back: &Value, how: &str) {
    if back.is_object() {
        println!(
            "  way back ({} phase) RTO {how} {:>10}  objective {:>10}  {}",
            back["phase"].as_str().unwrap_or_default(),
            seconds(&back["rto_ms"]),
            seconds(&back["objective_rto_ms"]),
            met(&back["rto_ms"], &back["objective_rto_ms"])
        );
    }
}

/// `run failover --site SITE --dry-run`: the host's preview — the plans
/// the site serves, each with its failover's expected RTO against its
/// objective or the refusal a failover would get now; nothing is started.
async fn preview_site(client: &Client, site: &str) -> Result<()> {
    let preview = client
        .get(&format!("/sites/{site}/failover/dry-run"))
        .await?;
    let plans = preview["plans"].as_array().cloned().unwrap_or_default();
    if plans.is_empty() {
        println!("site '{site}' serves no plan");
        return Ok(());
    }
    println!(
        "dry run: failover of site '{site}' (nothing started), {} plan(s)",
        plans.len()
    );
    for p in &plans {
        let (plan, standby) = (
            p["plan"].as_str().unwrap_or_default(),
            p["standby"].as_str().unwrap_or_default(),
        );
        let forecast = &p["forecast"];
        if forecast.is_object() {
            println!(
                "  plan '{plan}' → {standby}: RTO expected {}  objective {}  {}",
                seconds(&forecast["rto_ms"]),
                seconds(&forecast["objective_rto_ms"]),
                met(&forecast["rto_ms"], &forecast["objective_rto_ms"])
            );
        } else {
            println!(
                "  plan '{plan}' would be left as it is: {}",
                p["refusal"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `run failover --site SITE`: every plan the site serves failed over,
/// each plan's run listed (and the plans left, with why); with `wait`,
/// each run's report as it ends, the exit status the worst of them.
async fn fail_over_site(
    client: &Client,
    site: &str,
    headers: &[(&str, &str)],
    wait: bool,
) -> Result<()> {
    let (_, done) = client
        .call(
            reqwest::Method::POST,
            &format!("/sites/{site}/failover"),
            None,
            headers,
        )
        .await?;
    let started = done["started"].as_array().cloned().unwrap_or_default();
    for plan in &started {
        let again = if plan["replayed"] == true {
            " (started before under this key)"
        } else {
            ""
        };
        println!(
            "run {}: failover of plan '{}'{again}",
            plan["run"].as_str().unwrap_or_default(),
            plan["plan"].as_str().unwrap_or_default()
        );
    }
    for plan in done["skipped"].as_array().into_iter().flatten() {
        println!(
            "plan '{}' left as it is: {}",
            plan["plan"].as_str().unwrap_or_default(),
            plan["reason"].as_str().unwrap_or_default()
        );
    }
    if started.is_empty() {
        println!("site '{site}' serves no plan that can fail over now");
    }
    if !wait || started.is_empty() {
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(started.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} plans failed over  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut open: Vec<(String, String)> = started
        .iter()
        .map(|p| {
            (
                p["run"].as_str().unwrap_or_default().to_owned(),
                p["plan"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let (mut failed, mut cancelled) = (0, 0);
    let mut told_waiting = Vec::new();
    while !open.is_empty() {
        let mut still = Vec::new();
        for (id, plan) in open {
            let detail = client.get(&format!("/runs/{id}")).await?;
            match detail["status"].as_str().unwrap_or_default() {
                status @ ("succeeded" | "failed" | "cancelled") => {
                    failed += usize::from(status == "failed");
                    cancelled += usize::from(status == "cancelled");
                    bar.inc(1);
                    bar.suspend(|| print_report(&id, &plan, status, &detail));
                }
                "waiting_approval" if !told_waiting.contains(&id) => {
                    bar.suspend(|| {
                        eprintln!(
                            "run {id} (plan '{plan}') waits for an operator's approval \
                             (rebound approve {id})"
                        );
                    });
                    told_waiting.push(id.clone());
                    still.push((id, plan));
                }
                _ => still.push((id, plan)),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    bar.finish_and_clear();
    let total = started.len();
    if failed > 0 {
        return Err(Exit::new(
            exit::RUN_FAILED,
            format!("{failed} of {total} failovers from site '{site}' failed"),
        )
        .into());
    }
    if cancelled > 0 {
        return Err(Exit::new(
            exit::RUN_CANCELLED,
            format!("{cancelled} of {total} failovers from site '{site}' were cancelled"),
        )
        .into());
    }
    println!("site '{site}': {total} plan(s) failed over");
    Ok(())
}

/// What a finished transfer step of the data mover did (a step's
/// `transfer` in the API), in the words of the web UI's run timeline.
fn transfer_summary(transfer: &Value) -> Option<String> {
    use indicatif::BinaryBytes;
    let bytes = |field: &str| BinaryBytes(transfer[field].as_u64().unwrap_or(0));
    let total = transfer["bytes_total"].as_u64()?;
    let mut parts = vec![
        format!("moved {} of {}", bytes("bytes_moved"), BinaryBytes(total)),
        format!("read {}", bytes("bytes_read")),
    ];
    if transfer["bytes_hashed"].as_u64().is_some_and(|n| n > 0) {
        parts.push(format!("hashed {} of the target", bytes("bytes_hashed")));
    }
    let mut modes: Vec<&str> = Vec::new();
    for mode in transfer["modes"].as_array().into_iter().flatten() {
        if let Some(m) = mode.as_str().filter(|m| !modes.contains(m)) {
            modes.push(m);
        }
    }
    if !modes.is_empty() {
        parts.push(modes.join("; "));
    }
    Some(format!("{}; every block verified", parts.join(", ")))
}

/// The data the run's transfer steps moved altogether, when it had any.
fn transfers_total(steps: &[Value]) -> Option<String> {
    use indicatif::BinaryBytes;
    let transfers: Vec<&Value> = steps
        .iter()
        .map(|s| &s["transfer"])
        .filter(|t| t["bytes_total"].is_u64())
        .collect();
    if transfers.is_empty() {
        return None;
    }
    let sum = |field: &str| -> u64 { transfers.iter().filter_map(|t| t[field].as_u64()).sum() };
    Some(format!(
        "data   moved {} of {} in {} disk transfer(s), read {}",
        BinaryBytes(sum("bytes_moved")),
        BinaryBytes(sum("bytes_total")),
        transfers.len(),
        BinaryBytes(sum("bytes_read")),
    ))
}

/// The run's measured RTO and achieved RPO against the phase's objectives
/// (and a round-trip drill's way back against the other phase's), and the
/// plugin versions it ran on, from its `detail`.
fn print_report(id: &str, plan: &str, status: &str, detail: &Value) {
    let report = &detail["report"];
    println!("run {id} {status}");
    println!(
        "  RTO measured {:>10}  objective {:>10}  {}",
        seconds(&report["measured_rto_ms"]),
        seconds(&report["objective_rto_ms"]),
        met(&report["measured_rto_ms"], &report["objective_rto_ms"])
    );
    println!(
        "  RPO achieved {:>10}  objective {:>10}  {}",
        seconds(&report["achieved_rpo_ms"]),
        seconds(&report["objective_rpo_ms"]),
        met(&report["achieved_rpo_ms"], &report["objective_rpo_ms"])
    );
    print_way_back(&report["return_leg"], "measured");
    // What a failed drill left (a site down at its end).
    for left in report["left"].as_array().into_iter().flatten() {
        println!("  {}", left_line(plan, left));
    }
    let plugins: Vec<String> = detail["plugins"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, version)| format!("{name} {}", version.as_str().unwrap_or_default()))
        .collect();
    if !plugins.is_empty() {
        println!("  plugins {}", plugins.join(", "));
    }
}

/// One site's leftovers of a drill, as the report prints them, with the
/// command that removes them now.
fn left_line(plan: &str, left: &Value) -> String {
    let mut what = Vec::new();
    if left["sandbox"] == true {
        what.push("its sandbox".to_owned());
    }
    match left["copies"].as_array().map_or(0, Vec::len) {
        0 => {}
        1 => what.push("1 copy".to_owned()),
        n => what.push(format!("{n} copies")),
    }
    format!(
        "left on {}: {} (the plan's next replication cycle or drill removes it; \
         `rebound run replication {plan}` starts one now)",
        left["site"].as_str().unwrap_or_default(),
        what.join(" and ")
    )
}

/// Approve a run's next approval gate, or cancel a run nobody is driving.
pub async fn decide(server: &ServerArgs, run: &str, verb: &str) -> Result<()> {
    let client = Client::new(server)?;
    let (_, detail) = client
        .call(
            reqwest::Method::POST,
            &format!("/runs/{run}/{verb}"),
            None,
            &[],
        )
        .await?;
    println!(
        "run {run}: {}",
        detail["status"].as_str().unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{left_line, transfer_summary, transfers_total};

    #[test]
    fn what_a_drill_left_says_where_and_what() {
        let left = json!({"site": "lab-b", "sandbox": true, "copies": ["snap-1", "snap-2"]});
        assert_eq!(
            left_line("shop", &left),
            "left on lab-b: its sandbox and 2 copies (the plan's next replication cycle or \
             drill removes it; `rebound run replication shop` starts one now)"
        );
        let left = json!({"site": "lab-a", "sandbox": false, "copies": ["snap-1"]});
        assert!(left_line("shop", &left).starts_with("left on lab-a: 1 copy ("));
    }

    #[test]
    fn a_transfer_step_says_what_the_data_mover_did() {
        let t = json!({"bytes_total": 20 << 20, "bytes_moved": 64 << 10, "bytes_read": 4 << 20,
            "bytes_hashed": 0, "modes": ["delta by changed ranges", "delta by changed ranges"]});
        assert_eq!(
            transfer_summary(&t).as_deref(),
            Some(
                "moved 64.00 KiB of 20.00 MiB, read 4.00 MiB, delta by changed ranges; every \
                 block verified"
            )
        );
        let hashed = json!({"bytes_total": 1024, "bytes_moved": 1024, "bytes_read": 1024,
            "bytes_hashed": 1024, "modes": []});
        assert!(
            transfer_summary(&hashed).is_some_and(|s| s.contains("hashed 1.00 KiB of the target"))
        );
        // Any other step has no transfer.
        assert_eq!(transfer_summary(&serde_json::Value::Null), None);
        let steps = [
            json!({"transfer": t}),
            json!({"transfer": null}),
            json!({"transfer": hashed}),
        ];
        assert_eq!(
            transfers_total(&steps).as_deref(),
            Some("data   moved 65.00 KiB of 20.00 MiB in 2 disk transfer(s), read 4.00 MiB")
        );
        assert_eq!(transfers_total(&[json!({"name": "fence"})]), None);
    }
}
