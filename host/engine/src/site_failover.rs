//! A site lost: fail over every plan the site serves, in one call — the
//! disaster-day request that would otherwise be one trigger per plan, typed
//! while the site is down. Each plan's failover is the ordinary one
//! ([`crate::trigger`]): its own run, fences, tiers, gates and approvals,
//! the plans' runs side by side under each site's `max_calls`. A plan whose
//! lifecycle does not allow a failover now (failed over already, being
//! migrated, unprotected) is left as it is and named with the reason.
//! The request is audited as `site.failover` (with the runs it started)
//! beside each run's own start.

use rebound_domain::Workflow;
use rebound_store::{Store, StoreError};
use serde::Serialize;

use crate::EngineError;

/// What failing a site over did, plan by plan (in plan-name order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteFailover {
    pub site: String,
    /// The failovers started: one run per plan.
    pub started: Vec<PlanFailover>,
    /// The plans the site serves that were not failed over, and why.
    pub skipped: Vec<SkippedPlan>,
}

/// One plan's failover run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanFailover {
    pub plan: String,
    pub run: String,
    /// Started by an earlier request with the same idempotency key (nothing
    /// new was started for this plan) — also by one arriving at once.
    pub replayed: bool,
}

/// A plan served by the site that was not failed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedPlan {
    pub plan: String,
    /// Why, in the words a single failover's refusal would use.
    pub reason: String,
}

/// A site's failover previewed: each plan it serves, with its failover's
/// forecast or the refusal its failover would get now. Nothing is stored.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteFailoverPreview {
    pub site: String,
    /// In plan-name order.
    pub plans: Vec<PlanFailoverPreview>,
}

/// One plan of [`SiteFailoverPreview`]: exactly one of `forecast` and
/// `refusal`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanFailoverPreview {
    pub plan: String,
    /// Where it would fail over to.
    pub standby: String,
    /// Its failover's steps and expected RTO, as the plan's dry-run says.
    pub forecast: Option<crate::report::Forecast>,
    /// Why it would be left as it is, in the words a failover's refusal
    /// would use.
    pub refusal: Option<String>,
}

/// Preview [`fail_over_site`]: the plans whose primary is `site`, each
/// with its failover's dry-run (`parallelism` the executor's) or the
/// reason its lifecycle refuses a failover now.
pub async fn preview_site_failover(
    store: &Store,
    site: &str,
    parallelism: usize,
) -> Result<SiteFailoverPreview, EngineError> {
    let served: Vec<_> = store
        .plans()
        .await?
        .into_iter()
        .filter(|p| p.lifecycle.primary == site)
        .collect();
    let names: Vec<&str> = served.iter().map(|p| p.document.name.as_str()).collect();
    let mut measured = crate::report::measured_durations_of(store, &names).await?;
    let mut plans = Vec::new();
    for plan in served {
        let mut started = plan.lifecycle.clone();
        let (forecast, refusal) = match started.begin(Workflow::Failover) {
            Ok(_) => {
                let forecast = crate::report::dry_run_measured(
                    store,
                    &plan.document,
                    &plan.lifecycle,
                    Workflow::Failover,
                    &measured.remove(&plan.document.name).unwrap_or_default(),
                    parallelism,
                )
                .await?;
                (Some(forecast), None)
            }
            Err(e) => (None, Some(StoreError::from(e).to_string())),
        };
        plans.push(PlanFailoverPreview {
            plan: plan.document.name,
            standby: plan.lifecycle.standby,
            forecast,
            refusal,
        });
    }
    Ok(SiteFailoverPreview {
        site: site.to_owned(),
        plans,
    })
}

/// The failover run of `plan` an earlier request started under `key`. (A
/// key used before for something else is none: the trigger refuses it.)
async fn keyed(
    store: &Store,
    key: Option<&str>,
    plan: &str,
) -> Result<Option<String>, EngineError> {
    let Some(key) = key else { return Ok(None) };
    Ok(store
        .run_for_idempotency_key(key)
        .await?
        .filter(|run| run.workflow == Workflow::Failover && run.plan == plan)
        .map(|run| run.id))
}

/// Fail over every plan whose primary is `site`. With an idempotency key,
/// each plan's run is keyed `<key>/<plan>`, so the same request again
/// returns the same runs — also for plans whose failover has moved them off
/// the site since — and starts nothing twice; after an error (the store
/// unreachable midway), repeating it with the key finishes the job.
pub async fn fail_over_site(
    store: &Store,
    site: &str,
    idempotency_key: Option<&str>,
    principal: &str,
) -> Result<SiteFailover, EngineError> {
    let mut out = SiteFailover {
        site: site.to_owned(),
        started: Vec::new(),
        skipped: Vec::new(),
    };
    for plan in store.plans().await? {
        let name = plan.document.name;
        let key = idempotency_key.map(|k| format!("{k}/{name}"));
        if let Some(run) = keyed(store, key.as_deref(), &name).await? {
            out.started.push(PlanFailover {
                plan: name,
                run,
                replayed: true,
            });
            continue;
        }
        if plan.lifecycle.primary != site {
            continue;
        }
        let started = crate::trigger_to(
            store,
            &name,
            Workflow::Failover,
            None,
            key.as_deref(),
            principal,
        )
        .await;
        match started {
            // (The same request arriving twice at once gets the one run,
            // replayed for the one that lost the race.)
            Ok(started) => out.started.push(PlanFailover {
                plan: name,
                run: started.run.id,
                replayed: started.replayed,
            }),
            // Not allowed now, or changed meanwhile by another request:
            // this plan stays as it is, the others go on.
            Err(EngineError::Store(e @ (StoreError::Transition(_) | StoreError::Conflict(_)))) => {
                out.skipped.push(SkippedPlan {
                    plan: name,
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    // Each run's start is audited with its plan; this entry ties them to
    // the one request.
    let fresh: Vec<&str> = out
        .started
        .iter()
        .filter(|p| !p.replayed)
        .map(|p| p.run.as_str())
        .collect();
    if !fresh.is_empty() {
        let skipped: Vec<&str> = out.skipped.iter().map(|p| p.plan.as_str()).collect();
        store
            .audit(
                principal,
                "site.failover",
                site,
                serde_json::json!({"runs": fresh, "skipped": skipped}),
            )
            .await?;
    }
    Ok(out)
}
