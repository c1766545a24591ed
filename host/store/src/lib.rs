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
//! Here: the store, its records, and protection plans; `runs` holds runs,
//! steps, leases, approvals and cancel; `history` recovery points, site
//! probes, the audit log and events; `sites`, `sign_in` and `api` the
//! API's sites, users and tokens, and its listings; `calls` the slots of
//! each site's limit of plugin calls in flight, shared by the replicas.
//!
//! This crate owns persistence only; the engine decides what to store.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod api;
mod calls;
mod entity;
mod history;
mod migrate;
mod plugins;
mod runs;
mod sign_in;
mod sites;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rebound_domain::{Lifecycle, PlanDocument, PlanError, PlanState, Workflow};
use rebound_migrations::Migrator;
use rebound_migrations::MigratorTrait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};

pub use api::{RunFilter, RunListing, TokenRecord, UserRecord, UserSummary};
use entity::{audit, plan, recovery_point, run};
use history::decode_event;
pub use plugins::{PluginPackageRecord, PluginSettingRecord, PluginVersionRecord};
pub use runs::{APPROVAL_ACTION, Started};
use runs::{decode_run, find_run};
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
    /// `replication.scheduled`, `failover.triggered`, `standbys.kept`,
    /// `drill.leftovers`, `drill.leftovers.removed`.
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
    pub created_at_ms: i64,
}

/// Which of a plan's runs [`Store::plan_runs`] lists, newest first: those
/// of these workflows and statuses (empty: any), at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanRuns<'a> {
    pub workflows: &'a [Workflow],
    pub statuses: &'a [RunStatus],
    pub limit: Option<u64>,
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
    /// A drill's copy (a round trip's way back), for that drill alone: the
    /// plan's listings, its newest point, prunes and RPO leave it out.
    pub drill: bool,
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
            drill: row.drill,
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

    /// Whether host replicas can share this store (PostgreSQL; an SQLite
    /// file serves the one host that opened it).
    pub fn replicated(&self) -> bool {
        self.backend() == DbBackend::Postgres
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
            // A deleted plan's name applied again: a new plan in its row
            // (the history names it), its fencing epoch going on.
            Some(row) if row.deleted_at.is_some() => {
                let old = decode_plan(&row)?;
                let lifecycle = Lifecycle {
                    epoch: old.lifecycle.epoch,
                    ..Lifecycle::new(&document.source, &document.target)
                };
                let revision = 1;
                let mut active: plan::ActiveModel = row.into();
                active.created_at = Set(now);
                active.deleted_at = Set(None);
                rewrite(&tx, active, text, &lifecycle, revision, now).await?;
                audit_in(
                    &tx,
                    principal,
                    "plan.create",
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
                    deleted_at: Set(None),
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
                let idle = matches!(
                    current.lifecycle.state,
                    PlanState::Protected | PlanState::Unprotected
                ) && !current.lifecycle.drilling;
                if moved && !idle {
                    return Err(StoreError::Conflict(format!(
                        "plan '{}' is {}; its source and target can change only while it is protected (or unprotected) and idle",
                        document.name, current.lifecycle.state
                    )));
                }
                // Applied again after an unprotect: protected again.
                let protected_again = current.lifecycle.state == PlanState::Unprotected;
                let lifecycle = if moved {
                    // Fencing epochs only ever grow: plugins compare them.
                    Lifecycle {
                        epoch: current.lifecycle.epoch,
                        ..Lifecycle::new(&document.source, &document.target)
                    }
                } else {
                    let mut lifecycle = current.lifecycle;
                    lifecycle.protect_again();
                    lifecycle
                };
                let revision = row.revision + 1;
                rewrite(&tx, row.into(), text, &lifecycle, revision, now).await?;
                audit_in(
                    &tx,
                    principal,
                    "plan.update",
                    &document.name,
                    serde_json::json!({"revision": revision, "protected_again": protected_again}),
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

    /// A plan as it was last, deleted or not: what the reports of its runs
    /// read (their history outlives the plan).
    pub async fn plan_of_history(&self, name: &str) -> Result<PlanRecord, StoreError> {
        self.find_plan(name, true).await
    }

    pub async fn plan(&self, name: &str) -> Result<PlanRecord, StoreError> {
        self.find_plan(name, false).await
    }

    async fn find_plan(&self, name: &str, deleted_too: bool) -> Result<PlanRecord, StoreError> {
        let mut query = plan::Entity::find_by_id(name.to_owned());
        if !deleted_too {
            query = query.filter(plan::Column::DeletedAt.is_null());
        }
        let row = query
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "plan",
                id: name.to_owned(),
            })?;
        decode_plan(&row)
    }

    /// Delete an unprotected plan with no run under way, audited
    /// (`plan.delete`): gone from every list and lookup, its history kept.
    /// A protected plan is refused — its copies would be left behind
    /// unnamed — with what to do.
    pub async fn delete_plan(&self, name: &str, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let row = plan::Entity::find_by_id(name.to_owned())
            .filter(plan::Column::DeletedAt.is_null())
            .one(&tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "plan",
                id: name.to_owned(),
            })?;
        let current = decode_plan(&row)?;
        if current.lifecycle.state != PlanState::Unprotected {
            return Err(StoreError::Conflict(format!(
                "plan '{name}' is {}; unprotect it first (POST /api/v1/plans/{name}/runs {{\"workflow\": \"unprotect\"}}) so that no copy of its workloads is left behind",
                current.lifecycle.state
            )));
        }
        let active = run::Entity::find()
            .filter(run::Column::Plan.eq(name))
            .filter(run::Column::Status.is_in([
                RunStatus::Pending.as_str(),
                RunStatus::Running.as_str(),
                RunStatus::WaitingApproval.as_str(),
            ]))
            .count(&tx)
            .await?;
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "plan '{name}' has {active} run(s) under way; wait for them to end"
            )));
        }
        let mut update: plan::ActiveModel = row.into();
        update.deleted_at = Set(Some(now_ms()));
        update.update(&tx).await?;
        audit_in(&tx, principal, "plan.delete", name, serde_json::json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn plans(&self) -> Result<Vec<PlanRecord>, StoreError> {
        plan::Entity::find()
            .filter(plan::Column::DeletedAt.is_null())
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
        let server = Store::connect_admin(&admin).await?;
        REAPED.get_or_init(|| drop_stale(&server)).await;
        let name = format!(
            "{PREFIX}{}_{:016x}",
            super::now_ms() / 1000,
            rand::random::<u64>()
        );
        server
            .execute_raw(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Ok(Some(format!("{base}/{name}")))
    }

    /// Test databases are named `rebound_test_{created, unix s}_{random}`.
    const PREFIX: &str = "rebound_test_";
    /// No test process runs longer than this: a test database older than it
    /// is one its process left behind.
    const STALE_AFTER_S: i64 = 3 * 3600;
    static REAPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

    /// Drop the test databases earlier processes left behind (once per
    /// process): tests do not drop theirs, since a store cannot be closed
    /// from `Drop`, and the server would otherwise grow with every run.
    /// Failures are only reported: another process may be dropping the same.
    async fn drop_stale(server: &Store) {
        use sea_orm::{ConnectionTrait, Statement};
        let listed = server
            .db
            .query_all_raw(Statement::from_string(
                server.backend(),
                format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"),
            ))
            .await;
        let names = match listed {
            Ok(rows) => rows
                .iter()
                .filter_map(|row| row.try_get::<String>("", "datname").ok())
                .collect::<Vec<_>>(),
            Err(e) => return eprintln!("listing old test databases: {e}"),
        };
        let now_s = super::now_ms() / 1000;
        for name in names.iter().filter(|name| stale(name, now_s)) {
            let dropped = server
                .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            if let Err(e) = dropped {
                eprintln!("dropping old test database {name}: {e}");
            }
        }
    }

    /// Whether a test database is old enough to be dropped; one named
    /// without its creation time (an older naming) always is.
    fn stale(name: &str, now_s: i64) -> bool {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(created, _)| created.parse::<i64>().ok());
        created.is_none_or(|created| now_s - created > STALE_AFTER_S)
    }

    #[cfg(test)]
    #[test]
    fn only_old_test_databases_are_stale() {
        let now = 1_800_000_000;
        assert!(stale("rebound_test_0123456789abcdef", now));
        assert!(stale(&format!("rebound_test_{}_ab", now - 4 * 3600), now));
        assert!(!stale(&format!("rebound_test_{}_ab", now - 60), now));
    }

    /// A fresh SQLite file in `dir`.
    pub async fn fresh_sqlite(dir: &std::path::Path) -> Result<Store, StoreError> {
        Store::connect(&format!("sqlite://{}", dir.join("rebound.db").display())).await
    }
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

/// Write a plan's row with a new document, lifecycle and revision.
async fn rewrite(
    db: &impl ConnectionTrait,
    mut row: plan::ActiveModel,
    document: String,
    lifecycle: &Lifecycle,
    revision: i64,
    now: i64,
) -> Result<(), StoreError> {
    row.document = Set(document);
    row.lifecycle = Set(serde_json::to_string(lifecycle).map_err(|e| corrupt("lifecycle", e))?);
    row.revision = Set(revision);
    row.updated_at = Set(now);
    row.update(db).await?;
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

fn decode_plan(row: &plan::Model) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        document: serde_json::from_str(&row.document)
            .map_err(|e| corrupt(format!("plan '{}'", row.name), e))?,
        lifecycle: serde_json::from_str(&row.lifecycle)
            .map_err(|e| corrupt(format!("lifecycle of plan '{}'", row.name), e))?,
        revision: row.revision,
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
