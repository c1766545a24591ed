//! Sites registered through the API (the sites file's sites are not
//! stored: the file is their record). A site is bound to a plugin with its
//! settings, granted egress, CA bundle and credentials; the credentials
//! arrive here already sealed by the host and are never returned in clear.
//! Every change is audited in its own transaction, and deleting a site a
//! plan still names is refused.

use std::collections::BTreeMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use super::entity::plan;
use super::{Store, StoreError, audit_in, corrupt, decode_plan, now_ms};

/// A registered site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub name: String,
    pub plugin: String,
    pub config: BTreeMap<String, String>,
    pub egress: Vec<String>,
    pub ca_pem: Option<String>,
    /// The most calls of its plugin in flight at once (`None`: the
    /// default).
    pub max_calls: Option<i32>,
    /// Credential name → sealed value.
    pub secrets: BTreeMap<String, String>,
    /// Bumped on every change.
    pub revision: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

mod site {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sites")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub plugin: String,
        pub config: String,
        pub egress: String,
        pub ca_pem: Option<String>,
        pub max_calls: Option<i32>,
        pub secrets: String,
        pub revision: i64,
        pub updated_at: i64,
        pub updated_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn decode(row: site::Model) -> Result<SiteRecord, StoreError> {
    let what = || format!("site '{}'", row.name);
    Ok(SiteRecord {
        config: serde_json::from_str(&row.config).map_err(|e| corrupt(what(), e))?,
        egress: serde_json::from_str(&row.egress).map_err(|e| corrupt(what(), e))?,
        secrets: serde_json::from_str(&row.secrets).map_err(|e| corrupt(what(), e))?,
        name: row.name,
        plugin: row.plugin,
        ca_pem: row.ca_pem,
        max_calls: row.max_calls,
        revision: row.revision,
        updated_at_ms: row.updated_at,
        updated_by: row.updated_by,
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings serialize")
}

impl Store {
    /// Create or replace a site; returns the stored record (its revision
    /// 1 when created). Audited without its secrets' values.
    pub async fn put_site(
        &self,
        site: &SiteRecord,
        principal: &str,
    ) -> Result<SiteRecord, StoreError> {
        let tx = self.db.begin().await?;
        let previous = site::Entity::find_by_id(site.name.clone()).one(&tx).await?;
        let revision = previous.as_ref().map_or(1, |p| p.revision + 1);
        let at = now_ms();
        site::Entity::insert(site::ActiveModel {
            name: Set(site.name.clone()),
            plugin: Set(site.plugin.clone()),
            config: Set(json(&site.config)),
            egress: Set(json(&site.egress)),
            ca_pem: Set(site.ca_pem.clone()),
            max_calls: Set(site.max_calls),
            secrets: Set(json(&site.secrets)),
            revision: Set(revision),
            updated_at: Set(at),
            updated_by: Set(principal.to_owned()),
        })
        .on_conflict(
            OnConflict::column(site::Column::Name)
                .update_columns([
                    site::Column::Plugin,
                    site::Column::Config,
                    site::Column::Egress,
                    site::Column::CaPem,
                    site::Column::MaxCalls,
                    site::Column::Secrets,
                    site::Column::Revision,
                    site::Column::UpdatedAt,
                    site::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        audit_in(
            &tx,
            principal,
            if previous.is_some() {
                "site.update"
            } else {
                "site.create"
            },
            &site.name,
            serde_json::json!({
                "plugin": site.plugin,
                "config": site.config,
                "egress": site.egress,
                "ca": site.ca_pem.is_some(),
                "max_calls": site.max_calls,
                "secrets": site.secrets.keys().collect::<Vec<_>>(),
                "revision": revision,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(SiteRecord {
            revision,
            updated_at_ms: at,
            updated_by: principal.to_owned(),
            ..site.clone()
        })
    }

    pub async fn site(&self, name: &str) -> Result<Option<SiteRecord>, StoreError> {
        site::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(decode)
            .transpose()
    }

    /// Every registered site, in name order.
    pub async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        use sea_orm::QueryOrder;
        site::Entity::find()
            .order_by_asc(site::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// Delete a site no plan names; `Ok(false)` when there was none.
    pub async fn delete_site(&self, name: &str, principal: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        let users: Vec<String> = plan::Entity::find()
            .filter(plan::Column::DeletedAt.is_null())
            .all(&tx)
            .await?
            .iter()
            .map(decode_plan)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|p| p.document.source == name || p.document.target == name)
            .map(|p| p.document.name)
            .collect();
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "site '{name}' is named by plan(s) {}; change or delete them first",
                users.join(", ")
            )));
        }
        let deleted = site::Entity::delete_by_id(name.to_owned())
            .exec(&tx)
            .await?
            .rows_affected;
        if deleted == 1 {
            audit_in(&tx, principal, "site.delete", name, serde_json::json!({})).await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }
}
