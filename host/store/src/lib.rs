//! Rebound's store: protection plans (document + lifecycle), runs and their
//! steps, and the append-only audit log, on an embedded SQLite file (the
//! zero-setup default) or PostgreSQL (production and HA). Both run the same
//! migrations (`migrations/`) and the same tests.
//!
//! Runs are leased: a host replica claims a run for a while and renews the
//! lease with heartbeats; when it dies, the lease expires and another
//! replica claims the run (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! a compare-and-set update on both).
//!
//! This crate owns persistence only; the engine decides what to store.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod api;
mod entity;
mod migrate;
mod sign_in;
mod sites;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rebound_domain::{Lifecycle, PlanDocument, PlanError, PlanState, Workflow};
use rebound_migrations::Migrator;
use rebound_migrations::MigratorTrait;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};

pub use api::{RunFilter, RunListing, TokenRecord, UserRecord, UserSummary};
use entity::{audit, event, plan, recovery_point, run, site_probe, step};
pub use sites::SiteRecord;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] DbErr),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{kind} '{id}' does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Transition(#[from] rebound_domain::TransitionError),
    #[error("stored {what} is unreadable ({reason}); was the database edited by hand?")]
    Corrupt { what: String, reason: String },
    #[error("store: the lock that keeps two hosts from migrating at once: {0}")]
    MigrationLock(String),
}

/// Something the policy engine observed about a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub at_ms: i64,
    pub plan: String,
    /// `rpo.breach`, `rpo.met`, `rto.breach`, `rto.met`,
    /// `replication.scheduled`.
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub document: PlanDocument,
    pub lifecycle: Lifecycle,
    /// Bumped on every change; updates name the revision they start from.
    pub revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    WaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    /// Statuses a host replica works on (and may claim).
    const ACTIVE: [&'static str; 2] = ["pending", "running"];
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    pub plan: String,
    pub workflow: Workflow,
    pub status: RunStatus,
    pub idempotency_key: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    /// Started by [`Store::start_workflow`]: finishing it moves the plan's
    /// lifecycle.
    pub lifecycle: bool,
    /// Who asked to cancel it while a host was driving it: the host stops
    /// at its next stage boundary.
    pub cancel_requested_by: Option<String>,
}

/// A witness's last probe of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRecord {
    pub site: String,
    /// The host that probed.
    pub witness: String,
    pub at_ms: i64,
    pub ok: bool,
    /// Failed probes in a row.
    pub failures: u32,
    pub detail: String,
}

/// What [`Store::cancel_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancel {
    /// Nobody was driving the run: it is cancelled.
    Cancelled,
    /// A host is driving it: it stops at its next stage boundary.
    Requested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl StepStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// Steps updated by one statement in `save_steps` (8 bind values each,
/// well under SQLite's and PostgreSQL's limits).
const SAVE_CHUNK: usize = 256;

/// A step to create with its run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    pub name: String,
    pub input: serde_json::Value,
}

/// A stored step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub run: String,
    pub seq: i32,
    pub name: String,
    pub status: StepStatus,
    /// `<run>/<seq>`: the same for every attempt, so a resumed step never
    /// repeats a provider side effect.
    pub idempotency_key: String,
    /// The long operation being polled, persisted before polling starts.
    pub operation: Option<serde_json::Value>,
    pub attempts: i32,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    pub input: serde_json::Value,
    pub output: Option<serde_json::Value>,
}

/// A consistent copy of a workload's data at a site.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPointRecord {
    pub site: String,
    /// The provider's id of the copy on `site`.
    pub id: String,
    pub plan: String,
    pub workload: String,
    /// When the data was captured, in ms since the epoch (not when the copy
    /// finished): the age of the data a recovery from it gets.
    pub captured_at_ms: i64,
    /// The run that produced it.
    pub run: String,
    /// The provider's description (disks, spec).
    pub detail: serde_json::Value,
}

impl RecoveryPointRecord {
    fn from_row(row: recovery_point::Model) -> Result<Self, StoreError> {
        Ok(Self {
            detail: serde_json::from_str(&row.detail)
                .map_err(|e| corrupt(format!("recovery point {}", row.id), e))?,
            site: row.site,
            id: row.id,
            plan: row.plan,
            workload: row.workload,
            captured_at_ms: row.captured_at,
            run: row.run,
        })
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub principal: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// How long a PostgreSQL session may sit idle inside a transaction before
/// the server ends it.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(15);

impl Store {
    /// Connect and bring the schema up to date. A `sqlite:` URL's file is
    /// created on first start.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let mut options = ConnectOptions::new(url.clone());
        options.sqlx_logging(false);
        // On every pooled connection: readers never block the writer,
        // writers wait instead of failing, a commit survives a crash of the
        // process (WAL with `synchronous=NORMAL`; an OS crash may lose the
        // last commits, never consistency — and a repeated step call is
        // harmless under its idempotency key).
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
        // A transaction left open on a PostgreSQL connection — its task
        // cancelled between statements (an executor stopped, an API client
        // gone) — would hold its row locks until the connection is used
        // again, and every other host's statement on those rows would wait
        // for it. A connection released while still in a transaction (its
        // rollback never queued) is closed, not pooled: the server rolls
        // back. And the server ends any session left idle in a transaction
        // for IDLE_IN_TRANSACTION (transactions here wait on nothing but the
        // store between statements), should one slip past.
        options.map_sqlx_postgres_pool_opts(|pool| {
            pool.after_release(|conn, _| {
                Box::pin(async move { Ok(!sea_orm::sqlx::Connection::is_in_transaction(conn)) })
            })
        });
        options.map_sqlx_postgres_opts(|o| {
            o.options([(
                "idle_in_transaction_session_timeout",
                format!("{}s", IDLE_IN_TRANSACTION.as_secs()),
            )])
        });
        let lock = migrate::MigrationLock::acquire(&url).await?;
        let migrated = async {
            let db = Database::connect(options).await?;
            migrate::migrate(&db).await?;
            Ok::<_, StoreError>(db)
        }
        .await;
        lock.release().await;
        Ok(Self { db: migrated? })
    }

    /// Connect without migrating (to create databases, say).
    #[doc(hidden)]
    pub async fn connect_admin(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false);
        Ok(Self {
            db: Database::connect(options).await?,
        })
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Reachable and fully migrated (what `/readyz` reports).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        let pending = Migrator::get_pending_migrations(&self.db).await?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{} migration(s) not applied",
                pending.len()
            )))
        }
    }

    /// Create or update a plan from its document, audited in the same
    /// transaction. Moving a plan to other sites is refused unless it is
    /// protected with nothing running.
    pub async fn put_plan(
        &self,
        document: &PlanDocument,
        principal: &str,
    ) -> Result<PlanRecord, StoreError> {
        document.validate()?;
        let text = serde_json::to_string(document).map_err(|e| corrupt("plan document", e))?;
        let tx = self.db.begin().await?;
        let now = now_ms();
        let existing = plan::Entity::find_by_id(document.name.clone())
            .one(&tx)
            .await?;
        let record = match existing {
            None => {
                let lifecycle = Lifecycle::new(&document.source, &document.target);
                plan::ActiveModel {
                    name: Set(document.name.clone()),
                    document: Set(text),
                    lifecycle: Set(
                        serde_json::to_string(&lifecycle).map_err(|e| corrupt("lifecycle", e))?
                    ),
                    revision: Set(1),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&tx)
                .await?;
                audit_in(
                    &tx,
                    principal,
                    "plan.create",
                    &document.name,
                    serde_json::json!({"revision": 1}),
                )
                .await?;
                PlanRecord {
                    document: document.clone(),
                    lifecycle,
                    revision: 1,
                }
            }
            Some(row) => {
                let current = decode_plan(&row)?;
                let moved = current.document.source != document.source
                    || current.document.target != document.target;
                if moved
                    && (current.lifecycle.state != PlanState::Protected
                        || current.lifecycle.drilling)
                {
                    return Err(StoreError::Conflict(format!(
                        "plan '{}' is {}; its source and target can change only while it is protected and idle",
                        document.name, current.lifecycle.state
                    )));
                }
                let lifecycle = if moved {
                    Lifecycle::new(&document.source, &document.target)
                } else {
                    current.lifecycle
                };
                let revision = row.revision + 1;
                let mut active: plan::ActiveModel = row.into();
                active.document = Set(text);
                active.lifecycle =
                    Set(serde_json::to_string(&lifecycle).map_err(|e| corrupt("lifecycle", e))?);
                active.revision = Set(revision);
                active.updated_at = Set(now);
                active.update(&tx).await?;
                audit_in(
                    &tx,
                    principal,
                    "plan.update",
                    &document.name,
                    serde_json::json!({"revision": revision}),
                )
                .await?;
                PlanRecord {
                    document: document.clone(),
                    lifecycle,
                    revision,
                }
            }
        };
        tx.commit().await?;
        Ok(record)
    }

    pub async fn plan(&self, name: &str) -> Result<PlanRecord, StoreError> {
        let row = plan::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "plan",
                id: name.to_owned(),
            })?;
        decode_plan(&row)
    }

    pub async fn plans(&self) -> Result<Vec<PlanRecord>, StoreError> {
        plan::Entity::find()
            .order_by_asc(plan::Column::Name)
            .all(&self.db)
            .await?
            .iter()
            .map(decode_plan)
            .collect()
    }

    /// Store a new lifecycle if the plan is still at `revision`; returns the
    /// new revision. A concurrent change makes this a conflict, never a
    /// lost update.
    pub async fn save_lifecycle(
        &self,
        name: &str,
        lifecycle: &Lifecycle,
        revision: i64,
        principal: &str,
        action: &str,
    ) -> Result<i64, StoreError> {
        let tx = self.db.begin().await?;
        update_lifecycle(&tx, name, lifecycle, revision).await?;
        audit_in(
            &tx,
            principal,
            action,
            name,
            serde_json::json!({"state": lifecycle.state, "epoch": lifecycle.epoch, "primary": lifecycle.primary}),
        )
        .await?;
        tx.commit().await?;
        Ok(revision + 1)
    }

    /// Create a run without steps; see [`Self::create_run_with_steps`].
    pub async fn create_run(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
    ) -> Result<RunRecord, StoreError> {
        self.create_run_with_steps(plan_name, workflow, idempotency_key, principal, &[])
            .await
    }

    /// Create a run and its planned steps in one transaction; with an
    /// idempotency key, the same key returns the run it created the first
    /// time.
    pub async fn create_run_with_steps(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
    ) -> Result<RunRecord, StoreError> {
        self.create(
            plan_name,
            workflow,
            idempotency_key,
            principal,
            steps,
            false,
        )
        .await
    }

    /// Start a workflow on a plan: begin its lifecycle transition (refused
    /// with the reason when illegal) and create the run with its steps, in
    /// one transaction. The same idempotency key returns the same run.
    pub async fn start_workflow(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
    ) -> Result<RunRecord, StoreError> {
        self.create(plan_name, workflow, idempotency_key, principal, steps, true)
            .await
    }

    async fn create(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
        lifecycle: bool,
    ) -> Result<RunRecord, StoreError> {
        if let Some(key) = idempotency_key
            && let Some(existing) = self.run_by_key(key).await?
        {
            return same_request(existing, plan_name, workflow);
        }
        self.plan(plan_name).await?;
        let mut bytes = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        let id = format!("run-{}", hex::encode(bytes));
        let now = now_ms();
        let tx = self.db.begin().await?;
        if lifecycle {
            let row = plan::Entity::find_by_id(plan_name.to_owned())
                .one(&tx)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "plan",
                    id: plan_name.to_owned(),
                })?;
            let mut current = decode_plan(&row)?.lifecycle;
            current.begin(workflow)?;
            update_lifecycle(&tx, plan_name, &current, row.revision).await?;
            audit_in(
                &tx,
                principal,
                &format!("plan.{workflow}.begin"),
                plan_name,
                serde_json::json!({"state": current.state, "epoch": current.epoch}),
            )
            .await?;
        }
        let inserted = run::ActiveModel {
            id: Set(id.clone()),
            plan: Set(plan_name.to_owned()),
            workflow: Set(workflow.to_string()),
            status: Set(RunStatus::Pending.as_str().to_owned()),
            idempotency_key: Set(idempotency_key.map(str::to_owned)),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            finished_at: Set(None),
            lifecycle: Set(lifecycle),
            cancel_requested_by: Set(None),
        }
        .insert(&tx)
        .await;
        match inserted {
            Ok(row) => {
                for (seq, new) in steps.iter().enumerate() {
                    let seq = i32::try_from(seq)
                        .map_err(|_| StoreError::Conflict("too many steps".into()))?;
                    new_step(&id, seq, new).insert(&tx).await?;
                }
                audit_in(
                    &tx,
                    principal,
                    "run.create",
                    &id,
                    serde_json::json!({"plan": plan_name, "workflow": workflow}),
                )
                .await?;
                tx.commit().await?;
                decode_run(&row)
            }
            // Two requests with one key raced; the other one won.
            Err(e) => {
                drop(tx);
                match idempotency_key {
                    Some(key) => match self.run_by_key(key).await? {
                        Some(existing) => same_request(existing, plan_name, workflow),
                        None => Err(e.into()),
                    },
                    None => Err(e.into()),
                }
            }
        }
    }

    async fn run_by_key(&self, key: &str) -> Result<Option<RunRecord>, StoreError> {
        run::Entity::find()
            .filter(run::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .as_ref()
            .map(decode_run)
            .transpose()
    }

    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        decode_run(&find_run(&self.db, id).await?)
    }

    /// A plan's runs, newest first.
    pub async fn runs_of(&self, plan: &str) -> Result<Vec<RunRecord>, StoreError> {
        run::Entity::find()
            .filter(run::Column::Plan.eq(plan))
            .order_by_desc(run::Column::CreatedAt)
            .order_by_desc(run::Column::Id)
            .all(&self.db)
            .await?
            .iter()
            .map(decode_run)
            .collect()
    }

    /// Claim an active run whose lease is free or expired, for `lease`.
    pub async fn claim_run(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<RunRecord>, StoreError> {
        let now = now_ms();
        let tx = self.db.begin().await?;
        let mut query = run::Entity::find()
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .filter(
                run::Column::LeaseExpiresAt
                    .is_null()
                    .or(run::Column::LeaseExpiresAt.lt(now)),
            )
            .order_by_asc(run::Column::CreatedAt)
            .limit(8);
        if tx.get_database_backend() == DbBackend::Postgres {
            // Replicas skip rows another replica is claiming right now.
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let candidates = query.all(&tx).await?;
        for candidate in candidates {
            let claimed = run::Entity::update_many()
                .col_expr(run::Column::LeaseOwner, Expr::value(owner))
                .col_expr(
                    run::Column::LeaseExpiresAt,
                    Expr::value(now + millis(lease)),
                )
                .col_expr(run::Column::UpdatedAt, Expr::value(now))
                .filter(run::Column::Id.eq(candidate.id.clone()))
                .filter(
                    run::Column::LeaseExpiresAt
                        .is_null()
                        .or(run::Column::LeaseExpiresAt.lt(now)),
                )
                .exec(&tx)
                .await?;
            if claimed.rows_affected == 1 {
                let previous = candidate.lease_owner.clone();
                audit_in(
                    &tx,
                    owner,
                    "run.claim",
                    &candidate.id,
                    serde_json::json!({"previous_owner": previous}),
                )
                .await?;
                tx.commit().await?;
                return self.run(&candidate.id).await.map(Some);
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Give up the leases `owner` holds, so another host claims those runs
    /// at once instead of after the leases expire (a host stopping, its
    /// workers already stopped). Each release is audited. Returns the runs.
    pub async fn release_leases(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let tx = self.db.begin().await?;
        let held = run::Entity::find()
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::LeaseExpiresAt.gte(now))
            .all(&tx)
            .await?;
        let mut released = Vec::new();
        for held in held {
            run::Entity::update_many()
                .col_expr(run::Column::LeaseExpiresAt, Expr::value(now - 1))
                .col_expr(run::Column::UpdatedAt, Expr::value(now))
                .filter(run::Column::Id.eq(held.id.clone()))
                .filter(run::Column::LeaseOwner.eq(owner))
                .exec(&tx)
                .await?;
            audit_in(
                &tx,
                owner,
                "run.release",
                &held.id,
                serde_json::json!({"reason": "host stopping"}),
            )
            .await?;
            released.push(held.id);
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Renew a lease; fails once another replica has taken the run over.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let renewed = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now + millis(lease)),
            )
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .exec(&self.db)
            .await?;
        if renewed.rows_affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the lease of run '{run_id}' is no longer held by '{owner}'; stop working on it"
            )))
        }
    }

    /// Set a run's status as its lease holder.
    pub async fn set_run_status(
        &self,
        run_id: &str,
        owner: &str,
        status: RunStatus,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let update = run_status_update(status);
        let changed = update
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .exec(&tx)
            .await?;
        if changed.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        audit_in(
            &tx,
            owner,
            "run.status",
            run_id,
            serde_json::json!({"status": status}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A run's steps in order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .order_by_asc(step::Column::Seq)
            .all(&self.db)
            .await?
            .iter()
            .map(decode_step)
            .collect()
    }

    /// Save steps of one run as its lease holder and renew the lease, in
    /// one transaction (a stage's steps are saved together). Refused with
    /// [`StoreError::Conflict`] — nothing saved — when `owner` no longer
    /// holds the lease.
    pub async fn save_steps(
        &self,
        owner: &str,
        run_id: &str,
        lease: Duration,
        records: &[StepRecord],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let renewed = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now_ms() + millis(lease)),
            )
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .exec(&tx)
            .await?;
        if renewed.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "steps of run '{run_id}' were not saved: '{owner}' no longer holds the run's lease"
            )));
        }
        if let Some(stray) = records.iter().find(|r| r.run != run_id) {
            return Err(StoreError::Conflict(format!(
                "step {} belongs to run '{}', not '{run_id}'",
                stray.seq, stray.run
            )));
        }
        // One statement per chunk of steps: the new values as a table of
        // VALUES joined on the key, so a stage of hundreds of steps costs a
        // few statements, not hundreds.
        let backend = tx.get_database_backend();
        for chunk in records.chunks(SAVE_CHUNK) {
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 8 + 1);
            let mut rows = Vec::with_capacity(chunk.len());
            for record in chunk {
                let row: [sea_orm::Value; 8] = [
                    record.seq.into(),
                    record.status.as_str().into(),
                    record.operation.as_ref().map(ToString::to_string).into(),
                    record.attempts.into(),
                    record.started_at_ms.into(),
                    record.finished_at_ms.into(),
                    record.error.clone().into(),
                    record.output.as_ref().map(ToString::to_string).into(),
                ];
                let mut marks = Vec::with_capacity(row.len());
                for value in row {
                    values.push(value);
                    marks.push(mark(backend, values.len()));
                }
                rows.push(format!("({})", marks.join(", ")));
            }
            values.push(run_id.into());
            let sql = format!(
                "WITH v(seq, status, operation, attempts, started_at, finished_at, error, output) \
                 AS (VALUES {rows}) \
                 UPDATE steps SET status = v.status, operation = v.operation, \
                 attempts = v.attempts, started_at = v.started_at, finished_at = v.finished_at, \
                 error = v.error, output = v.output \
                 FROM v WHERE steps.run = {run} AND steps.seq = v.seq",
                rows = rows.join(", "),
                run = mark(backend, values.len()),
            );
            tx.execute_raw(sea_orm::Statement::from_sql_and_values(
                backend, sql, values,
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finish a lifecycle run as its lease holder: finish the plan's
    /// transition and the run in one transaction. A success the lifecycle
    /// refuses (a planned promotion whose old primary was not fenced) is
    /// rolled back instead and the run fails. Returns the run's status.
    pub async fn finish_workflow(
        &self,
        run_id: &str,
        owner: &str,
        succeeded: bool,
        old_primary_fenced: bool,
    ) -> Result<RunStatus, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        let record = decode_run(&run)?;
        let (lifecycle, refusal) =
            finish_lifecycle(&tx, &record, succeeded, old_primary_fenced).await?;
        let status = if succeeded && refusal.is_none() {
            RunStatus::Succeeded
        } else if record.cancel_requested_by.is_some() {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        run_status_update(status)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(
            &tx,
            owner,
            &format!("plan.{}.finish", record.workflow),
            &run.plan,
            serde_json::json!({
                "run": run_id, "status": status, "state": lifecycle.state,
                "epoch": lifecycle.epoch, "primary": lifecycle.primary, "refused": refusal,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(status)
    }

    /// Append steps to a run as its lease holder (a failed run's
    /// compensation), in one transaction, after its last step. Returns the
    /// run's steps.
    pub async fn append_steps(
        &self,
        run_id: &str,
        owner: &str,
        steps: &[NewStep],
    ) -> Result<Vec<StepRecord>, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "steps were not added to run '{run_id}': '{owner}' no longer holds its lease"
            )));
        }
        let next = step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .order_by_desc(step::Column::Seq)
            .one(&tx)
            .await?
            .map_or(0, |last| last.seq + 1);
        for (i, new) in steps.iter().enumerate() {
            let seq = next
                + i32::try_from(i).map_err(|_| StoreError::Conflict("too many steps".into()))?;
            new_step(run_id, seq, new).insert(&tx).await?;
        }
        audit_in(
            &tx,
            owner,
            "run.steps_added",
            run_id,
            serde_json::json!({"from": next, "names": steps.iter().map(|s| &s.name).collect::<Vec<_>>()}),
        )
        .await?;
        tx.commit().await?;
        self.steps(run_id).await
    }

    /// An operator approves the run's next approval step (before or while
    /// the run waits at it). A waiting run becomes claimable again.
    pub async fn approve(&self, run_id: &str, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        let status = RunStatus::parse(&run.status).unwrap_or(RunStatus::Failed);
        if !matches!(
            status,
            RunStatus::Pending | RunStatus::Running | RunStatus::WaitingApproval
        ) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is {}; only a run that has not finished can be approved",
                status.as_str()
            )));
        }
        let step = step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .filter(step::Column::Status.eq(StepStatus::Pending.as_str()))
            .order_by_asc(step::Column::Seq)
            .all(&tx)
            .await?
            .into_iter()
            .find(is_approval)
            .ok_or_else(|| {
                StoreError::Conflict(format!("run '{run_id}' has no approval left to give"))
            })?;
        let now = now_ms();
        let output = serde_json::json!({"approved_by": principal, "at_ms": now}).to_string();
        step::Entity::update_many()
            .col_expr(
                step::Column::Status,
                Expr::value(StepStatus::Succeeded.as_str()),
            )
            .col_expr(step::Column::StartedAt, Expr::value(now))
            .col_expr(step::Column::FinishedAt, Expr::value(now))
            .col_expr(step::Column::Output, Expr::value(output))
            .filter(step::Column::Run.eq(run_id))
            .filter(step::Column::Seq.eq(step.seq))
            .exec(&tx)
            .await?;
        if status == RunStatus::WaitingApproval {
            run_status_update(RunStatus::Running)
                .filter(run::Column::Id.eq(run_id))
                .exec(&tx)
                .await?;
        }
        audit_in(
            &tx,
            principal,
            "run.approve",
            run_id,
            serde_json::json!({"step": step.seq}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The lease holder reached approval step `seq`: `true` when it was
    /// approved already; otherwise the run waits (status
    /// `waiting_approval`, lease released) and `false` is returned.
    pub async fn await_approval(
        &self,
        run_id: &str,
        owner: &str,
        seq: i32,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        let step = step::Entity::find_by_id((run_id.to_owned(), seq))
            .one(&tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "step",
                id: format!("{run_id}/{seq}"),
            })?;
        if step.status == StepStatus::Succeeded.as_str() {
            tx.commit().await?;
            return Ok(true);
        }
        run_status_update(RunStatus::WaitingApproval)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(
            &tx,
            owner,
            "run.waiting_approval",
            run_id,
            serde_json::json!({"step": seq}),
        )
        .await?;
        tx.commit().await?;
        Ok(false)
    }

    /// Cancel a run. One nobody is driving (pending, or waiting for
    /// approval) ends `cancelled` at once and a lifecycle run rolls the
    /// plan back to where it started, in one transaction
    /// ([`Cancel::Cancelled`]). One a host is driving records the request
    /// ([`Cancel::Requested`]): the host stops at its next stage boundary
    /// (steps in flight finish), undoes what needs undoing as for a failure
    /// (compensation) and ends the run `cancelled`. A finished run is
    /// refused with the reason.
    pub async fn cancel_run(&self, run_id: &str, principal: &str) -> Result<Cancel, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        let record = decode_run(&run)?;
        if !matches!(
            record.status,
            RunStatus::Pending | RunStatus::Running | RunStatus::WaitingApproval
        ) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is {}; only a run that has not finished can be cancelled",
                record.status.as_str(),
            )));
        }
        let driven = record.status == RunStatus::Running
            || (record.status == RunStatus::Pending
                && run.lease_expires_at.is_some_and(|t| t >= now_ms()));
        if driven {
            if record.cancel_requested_by.is_none() {
                run::Entity::update_many()
                    .col_expr(run::Column::CancelRequestedBy, Expr::value(principal))
                    .filter(run::Column::Id.eq(run_id))
                    .exec(&tx)
                    .await?;
                let detail = serde_json::json!({"driven_by": run.lease_owner});
                audit_in(&tx, principal, "run.cancel_requested", run_id, detail).await?;
            }
            tx.commit().await?;
            return Ok(Cancel::Requested);
        }
        let mut detail = serde_json::json!({});
        if record.lifecycle {
            let (lifecycle, _) = finish_lifecycle(&tx, &record, false, false).await?;
            detail = serde_json::json!({"state": lifecycle.state, "primary": lifecycle.primary});
        }
        run_status_update(RunStatus::Cancelled)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(&tx, principal, "run.cancel", run_id, detail).await?;
        tx.commit().await?;
        Ok(Cancel::Cancelled)
    }

    /// Record a recovery point; recording the same (site, id) again is a
    /// no-op, so a resumed step may record twice.
    pub async fn record_recovery_point(
        &self,
        point: &RecoveryPointRecord,
    ) -> Result<(), StoreError> {
        let row = recovery_point::ActiveModel {
            site: Set(point.site.clone()),
            id: Set(point.id.clone()),
            plan: Set(point.plan.clone()),
            workload: Set(point.workload.clone()),
            captured_at: Set(point.captured_at_ms),
            run: Set(point.run.clone()),
            detail: Set(point.detail.to_string()),
        };
        recovery_point::Entity::insert(row)
            .on_conflict_do_nothing_on([recovery_point::Column::Site, recovery_point::Column::Id])
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forget recovery points whose copies the site removed (pruned past
    /// the plan's retention).
    pub async fn forget_recovery_points(
        &self,
        site: &str,
        ids: &[String],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        recovery_point::Entity::delete_many()
            .filter(recovery_point::Column::Site.eq(site))
            .filter(recovery_point::Column::Id.is_in(ids.iter().cloned()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Record a witness's probe of a site: the failures in a row grow with
    /// each failed probe and reset with a good one. Returns the record.
    pub async fn record_probe(
        &self,
        site: &str,
        witness: &str,
        at_ms: i64,
        ok: bool,
        detail: &str,
    ) -> Result<ProbeRecord, StoreError> {
        let tx = self.db.begin().await?;
        let key = (site.to_owned(), witness.to_owned());
        let previous = site_probe::Entity::find_by_id(key).one(&tx).await?;
        let failures = match (&previous, ok) {
            (_, true) => 0,
            (Some(p), false) => p.failures.saturating_add(1),
            (None, false) => 1,
        };
        let row = site_probe::ActiveModel {
            site: Set(site.to_owned()),
            witness: Set(witness.to_owned()),
            at: Set(at_ms),
            ok: Set(ok),
            failures: Set(failures),
            detail: Set(detail.to_owned()),
        };
        if previous.is_some() {
            row.update(&tx).await?;
        } else {
            row.insert(&tx).await?;
        }
        tx.commit().await?;
        Ok(ProbeRecord {
            site: site.to_owned(),
            witness: witness.to_owned(),
            at_ms,
            ok,
            failures: u32::try_from(failures).unwrap_or_default(),
            detail: detail.to_owned(),
        })
    }

    /// The last probe of a site by each witness.
    pub async fn probes(&self, site: &str) -> Result<Vec<ProbeRecord>, StoreError> {
        Ok(site_probe::Entity::find()
            .filter(site_probe::Column::Site.eq(site))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|p| ProbeRecord {
                site: p.site,
                witness: p.witness,
                at_ms: p.at,
                ok: p.ok,
                failures: u32::try_from(p.failures).unwrap_or_default(),
                detail: p.detail,
            })
            .collect())
    }

    /// The newest recovery point of a plan's workload at a site.
    pub async fn latest_recovery_point(
        &self,
        plan: &str,
        workload: &str,
        site: &str,
    ) -> Result<Option<RecoveryPointRecord>, StoreError> {
        recovery_point::Entity::find()
            .filter(recovery_point::Column::Plan.eq(plan))
            .filter(recovery_point::Column::Workload.eq(workload))
            .filter(recovery_point::Column::Site.eq(site))
            .order_by_desc(recovery_point::Column::CapturedAt)
            .one(&self.db)
            .await?
            .map(RecoveryPointRecord::from_row)
            .transpose()
    }

    /// A plan's recovery points, newest first.
    pub async fn recovery_points(
        &self,
        plan: &str,
    ) -> Result<Vec<RecoveryPointRecord>, StoreError> {
        recovery_point::Entity::find()
            .filter(recovery_point::Column::Plan.eq(plan))
            .order_by_desc(recovery_point::Column::CapturedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(RecoveryPointRecord::from_row)
            .collect()
    }

    /// Append to the audit log.
    pub async fn audit(
        &self,
        principal: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        audit_in(&self.db, principal, action, target, detail).await
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        audit::Entity::find()
            .order_by_desc(audit::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                Ok(AuditEntry {
                    detail: serde_json::from_str(&row.detail)
                        .map_err(|e| corrupt("audit detail", e))?,
                    id: row.id,
                    at_ms: row.at,
                    principal: row.principal,
                    action: row.action,
                    target: row.target,
                })
            })
            .collect()
    }

    /// Record an event about a plan.
    pub async fn record_event(
        &self,
        plan: &str,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<EventRecord, StoreError> {
        let at = now_ms();
        let row = event::ActiveModel {
            at: Set(at),
            plan: Set(plan.to_owned()),
            kind: Set(kind.to_owned()),
            detail: Set(detail.to_string()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        decode_event(row)
    }

    /// Events, newest first: of one plan or all, of some kinds or all.
    pub async fn events(
        &self,
        plan: Option<&str>,
        kinds: &[&str],
        limit: u64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut query = event::Entity::find();
        if let Some(plan) = plan {
            query = query.filter(event::Column::Plan.eq(plan));
        }
        if !kinds.is_empty() {
            query = query.filter(event::Column::Kind.is_in(kinds.iter().copied()));
        }
        query
            .order_by_desc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(decode_event)
            .collect()
    }

    /// Run raw SQL; for tests that prove what the database itself refuses.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.db.execute_unprepared(sql).await?;
        Ok(())
    }
}

/// Fresh databases for tests, shared by the crates whose suites run on
/// both backends.
#[doc(hidden)]
/// Run each named `async fn check(store: Store)` of a test file on a fresh
/// SQLite store and on a fresh PostgreSQL database (see
/// [`testing::fresh_postgres`]). The calling crate needs `tempfile` and
/// `tokio` as dev-dependencies.
#[macro_export]
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("tmp");
                    let store = $crate::testing::fresh_sqlite(dir.path()).await.expect("store");
                    super::$check(store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(store) = $crate::testing::fresh_postgres().await.expect("postgres") {
                        super::$check(store).await;
                    }
                }
            )*
        }
    };
}

pub mod testing {
    use super::{Store, StoreError};

    /// A fresh PostgreSQL database on the server `REBOUND_TEST_POSTGRES_URL`
    /// names, or `None` (and a note) when it is unset. With
    /// `REBOUND_REQUIRE_POSTGRES` set (as in CI) an unset URL is an error.
    pub async fn fresh_postgres() -> Result<Option<Store>, StoreError> {
        match fresh_postgres_url().await? {
            Some(url) => Store::connect(&url).await.map(Some),
            None => Ok(None),
        }
    }

    /// Like [`fresh_postgres`], the URL of the fresh database (for tests
    /// that hand it to host processes).
    pub async fn fresh_postgres_url() -> Result<Option<String>, StoreError> {
        let Ok(admin) = std::env::var("REBOUND_TEST_POSTGRES_URL") else {
            if std::env::var_os("REBOUND_REQUIRE_POSTGRES").is_some() {
                return Err(StoreError::Conflict(
                    "REBOUND_REQUIRE_POSTGRES is set but REBOUND_TEST_POSTGRES_URL is not".into(),
                ));
            }
            eprintln!("REBOUND_TEST_POSTGRES_URL unset: PostgreSQL case skipped");
            return Ok(None);
        };
        let name = format!("rebound_test_{:016x}", rand::random::<u64>());
        Store::connect_admin(&admin)
            .await?
            .execute_raw(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Ok(Some(format!("{base}/{name}")))
    }

    /// A fresh SQLite file in `dir`.
    pub async fn fresh_sqlite(dir: &std::path::Path) -> Result<Store, StoreError> {
        Store::connect(&format!("sqlite://{}", dir.join("rebound.db").display())).await
    }
}

/// The `n`th (1-based) bind placeholder of a statement.
fn mark(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// A step row to insert: pending, keyed `<run>/<seq>`.
fn new_step(run: &str, seq: i32, new: &NewStep) -> step::ActiveModel {
    step::ActiveModel {
        run: Set(run.to_owned()),
        seq: Set(seq),
        name: Set(new.name.clone()),
        status: Set(StepStatus::Pending.as_str().into()),
        idempotency_key: Set(format!("{run}/{seq}")),
        operation: Set(None),
        attempts: Set(0),
        started_at: Set(None),
        finished_at: Set(None),
        error: Set(None),
        input: Set(new.input.to_string()),
        output: Set(None),
    }
}

fn decode_event(row: event::Model) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        detail: serde_json::from_str(&row.detail).map_err(|e| corrupt("event detail", e))?,
        id: row.id,
        at_ms: row.at,
        plan: row.plan,
        kind: row.kind,
    })
}

async fn find_run(db: &impl ConnectionTrait, run_id: &str) -> Result<run::Model, StoreError> {
    run::Entity::find_by_id(run_id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "run",
            id: run_id.to_owned(),
        })
}

/// Whether a stored step is an operator's approval gate.
fn is_approval(step: &step::Model) -> bool {
    serde_json::from_str::<serde_json::Value>(&step.input)
        .is_ok_and(|input| input["action"] == APPROVAL_ACTION)
}

/// The `action` of an approval step (see `Store::approve`).
pub const APPROVAL_ACTION: &str = "approval";

/// The update that moves a run to `status`: a finished run, or one that
/// waits for an operator, releases its lease. Callers add the filters.
fn run_status_update(status: RunStatus) -> sea_orm::UpdateMany<run::Entity> {
    let now = now_ms();
    let finished = matches!(
        status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
    );
    let mut update = run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(status.as_str()))
        .col_expr(run::Column::UpdatedAt, Expr::value(now));
    if finished {
        update = update.col_expr(run::Column::FinishedAt, Expr::value(now));
    }
    if finished || status == RunStatus::WaitingApproval {
        update = update
            .col_expr(run::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(Option::<i64>::None),
            );
    }
    update
}

/// End a lifecycle run's transition of its plan: `succeeded` as the run
/// says, unless the lifecycle refuses it (an unconfirmed fence), in which
/// case the transition is rolled back and the refusal returned.
async fn finish_lifecycle(
    db: &impl ConnectionTrait,
    run: &RunRecord,
    succeeded: bool,
    old_primary_fenced: bool,
) -> Result<(Lifecycle, Option<String>), StoreError> {
    let plan_row = plan::Entity::find_by_id(run.plan.clone())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "plan",
            id: run.plan.clone(),
        })?;
    let mut lifecycle = decode_plan(&plan_row)?.lifecycle;
    let mut refusal = None;
    if let Err(e) = lifecycle.finish(run.workflow, succeeded, old_primary_fenced) {
        refusal = Some(e.to_string());
        lifecycle.finish(run.workflow, false, false)?;
    }
    update_lifecycle(db, &run.plan, &lifecycle, plan_row.revision).await?;
    Ok((lifecycle, refusal))
}

/// Compare-and-set a plan's lifecycle at `revision`.
async fn update_lifecycle(
    db: &impl ConnectionTrait,
    name: &str,
    lifecycle: &Lifecycle,
    revision: i64,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(lifecycle).map_err(|e| corrupt("lifecycle", e))?;
    let updated = plan::Entity::update_many()
        .col_expr(plan::Column::Lifecycle, Expr::value(text))
        .col_expr(plan::Column::Revision, Expr::value(revision + 1))
        .col_expr(plan::Column::UpdatedAt, Expr::value(now_ms()))
        .filter(plan::Column::Name.eq(name))
        .filter(plan::Column::Revision.eq(revision))
        .exec(db)
        .await?;
    if updated.rows_affected != 1 {
        return Err(StoreError::Conflict(format!(
            "plan '{name}' changed since revision {revision}; reload it and retry"
        )));
    }
    Ok(())
}

async fn audit_in(
    db: &impl ConnectionTrait,
    principal: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    audit::ActiveModel {
        at: Set(now_ms()),
        principal: Set(principal.to_owned()),
        action: Set(action.to_owned()),
        target: Set(target.to_owned()),
        detail: Set(detail.to_string()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

fn same_request(
    existing: RunRecord,
    plan: &str,
    workflow: Workflow,
) -> Result<RunRecord, StoreError> {
    if existing.plan == plan && existing.workflow == workflow {
        Ok(existing)
    } else {
        Err(StoreError::Conflict(format!(
            "idempotency key already used for {} of plan '{}'; use a new key for a different request",
            existing.workflow, existing.plan
        )))
    }
}

fn decode_plan(row: &plan::Model) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        document: serde_json::from_str(&row.document)
            .map_err(|e| corrupt(format!("plan '{}'", row.name), e))?,
        lifecycle: serde_json::from_str(&row.lifecycle)
            .map_err(|e| corrupt(format!("lifecycle of plan '{}'", row.name), e))?,
        revision: row.revision,
    })
}

fn decode_step(row: &step::Model) -> Result<StepRecord, StoreError> {
    let what = || format!("step {} of run '{}'", row.seq, row.run);
    let json = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).map_err(|e| corrupt(what(), e))
    };
    Ok(StepRecord {
        run: row.run.clone(),
        seq: row.seq,
        name: row.name.clone(),
        status: serde_json::from_value(serde_json::Value::String(row.status.clone()))
            .map_err(|e| corrupt(what(), e))?,
        idempotency_key: row.idempotency_key.clone(),
        operation: row.operation.as_deref().map(json).transpose()?,
        attempts: row.attempts,
        started_at_ms: row.started_at,
        finished_at_ms: row.finished_at,
        error: row.error.clone(),
        input: json(&row.input)?,
        output: row.output.as_deref().map(json).transpose()?,
    })
}

fn decode_run(row: &run::Model) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.id.clone(),
        plan: row.plan.clone(),
        workflow: serde_json::from_value(serde_json::Value::String(row.workflow.clone()))
            .map_err(|e| corrupt(format!("workflow of run '{}'", row.id), e))?,
        status: RunStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("status of run '{}'", row.id), &row.status))?,
        idempotency_key: row.idempotency_key.clone(),
        lease_owner: row.lease_owner.clone(),
        lease_expires_at_ms: row.lease_expires_at,
        lifecycle: row.lifecycle,
        cancel_requested_by: row.cancel_requested_by.clone(),
    })
}

#[cfg(test)]
mod tests {
    use sea_orm::sqlx::{self, Connection as _};

    /// A pooled PostgreSQL connection given back inside a transaction (its
    /// task cancelled before any rollback was queued) is closed, so the
    /// server rolls back and its row locks do not hold others up.
    #[tokio::test]
    async fn a_connection_released_inside_a_transaction_is_not_pooled() {
        let Some(store) = super::testing::fresh_postgres().await.expect("postgres") else {
            return;
        };
        store.host_key("k", "v").await.expect("row");
        let pool = store.db.get_postgres_connection_pool().clone();
        let mut held = pool.acquire().await.expect("connection");
        let mut tx = held.begin().await.expect("begin");
        sqlx::query("SELECT name FROM host_keys WHERE name = 'k' FOR UPDATE")
            .execute(&mut *tx)
            .await
            .expect("lock the row");
        // Released with the transaction open and nothing queued to end it,
        // as when a cancelled transaction's rollback could not be queued.
        std::mem::forget(tx);
        drop(held);
        let mut other = pool.acquire().await.expect("connection");
        sqlx::query("SET lock_timeout = '3s'")
            .execute(&mut *other)
            .await
            .expect("set");
        sqlx::query("UPDATE host_keys SET material = 'w' WHERE name = 'k'")
            .execute(&mut *other)
            .await
            .expect("the row is free: the abandoned transaction was rolled back");
    }
}
