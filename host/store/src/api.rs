//! What the REST API needs beyond the engine's queries: pages of plans,
//! runs, events and the audit log (keyset pagination, so a page never
//! skips or repeats a row while others write), and the API's
//! authentication state — local users, scoped API tokens (digests only)
//! and the host's keys. Every change here is audited in its own
//! transaction.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};

use super::entity::{audit, event, plan, run};
use super::{
    AuditEntry, EventRecord, PlanRecord, RunRecord, RunStatus, Store, StoreError, audit_in,
    corrupt, decode_event, decode_plan, decode_run, now_ms,
};

/// A run as listed, with its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunListing {
    pub run: RunRecord,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    pub plan: Option<&'a str>,
    pub status: Option<RunStatus>,
    /// The last run of the previous page.
    pub after: Option<&'a str>,
    pub limit: u64,
}

/// A local user of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub role: String,
}

/// A local user as listed: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub name: String,
    pub role: String,
    pub created_at_ms: i64,
    /// When its password was last set (tokens issued before are refused);
    /// none for users stored before this was recorded.
    pub password_changed_at_ms: Option<i64>,
}

fn user_summary(row: user::Model) -> UserSummary {
    UserSummary {
        name: row.name,
        role: row.role,
        created_at_ms: row.created_at,
        password_changed_at_ms: row.password_changed_at,
    }
}

/// A scoped API token; only the SHA-256 digest of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub digest: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub password_hash: String,
        pub role: String,
        pub created_at: i64,
        pub password_changed_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub role: String,
        pub digest: String,
        pub created_by: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod host_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "host_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub material: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn token_record(row: token::Model) -> TokenRecord {
    TokenRecord {
        id: row.id,
        name: row.name,
        role: row.role,
        digest: row.digest,
        created_by: row.created_by,
        created_at_ms: row.created_at,
        revoked_at_ms: row.revoked_at,
    }
}

impl Store {
    /// Plans in name order, after `after`.
    pub async fn plans_page(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<PlanRecord>, StoreError> {
        let mut query = plan::Entity::find().filter(plan::Column::DeletedAt.is_null());
        if let Some(after) = after {
            query = query.filter(plan::Column::Name.gt(after));
        }
        query
            .order_by_asc(plan::Column::Name)
            .limit(limit)
            .all(&self.db)
            .await?
            .iter()
            .map(decode_plan)
            .collect()
    }

    /// Runs newest first, filtered; `after` names the last run of the
    /// previous page (an unknown one is [`StoreError::NotFound`]).
    pub async fn runs_page(&self, filter: &RunFilter<'_>) -> Result<Vec<RunListing>, StoreError> {
        let mut query = run::Entity::find();
        if let Some(plan) = filter.plan {
            query = query.filter(run::Column::Plan.eq(plan));
        }
        if let Some(status) = filter.status {
            query = query.filter(run::Column::Status.eq(status.as_str()));
        }
        if let Some(after) = filter.after {
            let last = super::find_run(&self.db, after).await?;
            query = query.filter(
                Condition::any()
                    .add(run::Column::CreatedAt.lt(last.created_at))
                    .add(
                        Condition::all()
                            .add(run::Column::CreatedAt.eq(last.created_at))
                            .add(run::Column::Id.lt(last.id)),
                    ),
            );
        }
        query
            .order_by_desc(run::Column::CreatedAt)
            .order_by_desc(run::Column::Id)
            .limit(filter.limit)
            .all(&self.db)
            .await?
            .iter()
            .map(|row| {
                Ok(RunListing {
                    run: decode_run(row)?,
                    created_at_ms: row.created_at,
                    finished_at_ms: row.finished_at,
                })
            })
            .collect()
    }

    /// One run with its times.
    pub async fn run_listing(&self, id: &str) -> Result<RunListing, StoreError> {
        let row = super::find_run(&self.db, id).await?;
        Ok(RunListing {
            run: decode_run(&row)?,
            created_at_ms: row.created_at,
            finished_at_ms: row.finished_at,
        })
    }

    /// Audit entries newest first, older than entry `after`.
    pub async fn audit_page(
        &self,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut query = audit::Entity::find();
        if let Some(after) = after {
            query = query.filter(audit::Column::Id.lt(after));
        }
        query
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

    /// Events newest first, of one plan or all, older than event `after`.
    pub async fn events_page(
        &self,
        plan: Option<&str>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut query = event::Entity::find();
        if let Some(plan) = plan {
            query = query.filter(event::Column::Plan.eq(plan));
        }
        if let Some(after) = after {
            query = query.filter(event::Column::Id.lt(after));
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

    /// Create the first user when there is none (a host's first start);
    /// `true` when this call created it. Several replicas starting at once
    /// create it once.
    pub async fn bootstrap_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        if user::Entity::find().one(&tx).await?.is_some() {
            return Ok(false);
        }
        let inserted = user::Entity::insert(user::ActiveModel {
            name: Set(user.name.clone()),
            password_hash: Set(user.password_hash.clone()),
            role: Set(user.role.clone()),
            created_at: Set(now_ms()),
            password_changed_at: Set(Some(now_ms())),
        })
        .on_conflict(
            OnConflict::column(user::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        if inserted == 1 {
            audit_in(
                &tx,
                "system",
                "user.bootstrap",
                &user.name,
                serde_json::json!({"role": user.role}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Create or replace a local user (admin's decision), audited. The
    /// last admin keeps the admin role.
    pub async fn put_user(&self, user: &UserRecord, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        if user.role != ADMIN {
            keep_an_admin(&tx, &user.name, "take the admin role from").await?;
        }
        user::Entity::insert(user::ActiveModel {
            name: Set(user.name.clone()),
            password_hash: Set(user.password_hash.clone()),
            role: Set(user.role.clone()),
            created_at: Set(now_ms()),
            password_changed_at: Set(Some(now_ms())),
        })
        .on_conflict(
            OnConflict::column(user::Column::Name)
                .update_columns([
                    user::Column::PasswordHash,
                    user::Column::Role,
                    user::Column::PasswordChangedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        audit_in(
            &tx,
            principal,
            "user.put",
            &user.name,
            serde_json::json!({"role": user.role}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Remove a local user, audited; its tokens stop working at once. The
    /// last admin stays.
    pub async fn delete_user(&self, name: &str, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        keep_an_admin(&tx, name, "remove").await?;
        let deleted = user::Entity::delete_by_id(name.to_owned())
            .exec(&tx)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound {
                kind: "user",
                id: name.to_owned(),
            });
        }
        audit_in(&tx, principal, "user.delete", name, serde_json::json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The local users, by name.
    pub async fn users(&self) -> Result<Vec<UserSummary>, StoreError> {
        Ok(user::Entity::find()
            .order_by_asc(user::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(user_summary)
            .collect())
    }

    /// A local user's name, role and password time, without its hash.
    pub async fn user_summary(&self, name: &str) -> Result<Option<UserSummary>, StoreError> {
        Ok(user::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(user_summary))
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(user::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(|row| UserRecord {
                name: row.name,
                password_hash: row.password_hash,
                role: row.role,
            }))
    }

    /// The host key `name`, stored as `material` when there is none yet;
    /// every replica gets the same one.
    pub async fn host_key(&self, name: &str, material: &str) -> Result<String, StoreError> {
        host_key::Entity::insert(host_key::ActiveModel {
            name: Set(name.to_owned()),
            material: Set(material.to_owned()),
            created_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(host_key::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        host_key::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(|row| row.material)
            .ok_or_else(|| corrupt(format!("host key '{name}'"), "missing after insert"))
    }

    /// Store a new API token (its digest), audited.
    pub async fn create_token(
        &self,
        token: &TokenRecord,
        principal: &str,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        token::ActiveModel {
            id: Set(token.id.clone()),
            name: Set(token.name.clone()),
            role: Set(token.role.clone()),
            digest: Set(token.digest.clone()),
            created_by: Set(token.created_by.clone()),
            created_at: Set(token.created_at_ms),
            revoked_at: Set(None),
        }
        .insert(&tx)
        .await?;
        audit_in(
            &tx,
            principal,
            "token.create",
            &token.id,
            serde_json::json!({"name": token.name, "role": token.role}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every API token, oldest first (digests included; callers must not
    /// show them).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(token::Entity::find()
            .order_by_asc(token::Column::CreatedAt)
            .order_by_asc(token::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(token_record)
            .collect())
    }

    /// The unrevoked token with this digest.
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(token::Entity::find()
            .filter(token::Column::Digest.eq(digest))
            .filter(token::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .map(token_record))
    }

    /// Revoke a token, audited; revoking it again is a no-op.
    pub async fn revoke_token(&self, id: &str, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let found = token::Entity::find_by_id(id.to_owned()).one(&tx).await?;
        let Some(row) = found else {
            return Err(StoreError::NotFound {
                kind: "token",
                id: id.to_owned(),
            });
        };
        if row.revoked_at.is_none() {
            token::Entity::update_many()
                .col_expr(token::Column::RevokedAt, Expr::value(now_ms()))
                .filter(token::Column::Id.eq(id))
                .exec(&tx)
                .await?;
            audit_in(&tx, principal, "token.revoke", id, serde_json::json!({})).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// The run an idempotency key started, if any.
    pub async fn run_for_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.run_by_key(key).await
    }
}

/// The admin role's stored name.
const ADMIN: &str = "admin";

/// Refuse to `doing` user `name` when it is the only admin: no one could
/// administer the host after. The admins' rows are locked on PostgreSQL,
/// so two admins removed at once cannot both pass.
async fn keep_an_admin(
    tx: &sea_orm::DatabaseTransaction,
    name: &str,
    doing: &str,
) -> Result<(), StoreError> {
    let mut admins = user::Entity::find().filter(user::Column::Role.eq(ADMIN));
    if sea_orm::ConnectionTrait::get_database_backend(tx) == sea_orm::DbBackend::Postgres {
        admins = admins.lock_exclusive();
    }
    let admins = admins.all(tx).await?;
    if admins.len() == 1 && admins[0].name == name {
        return Err(StoreError::Conflict(format!(
            "cannot {doing} '{name}': it is the only admin; make another user admin first"
        )));
    }
    Ok(())
}
