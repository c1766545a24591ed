//! Published plugin packages and each plugin's settings (the active
//! version, enabled or not), shared by every host on the store. A host's
//! API writes them as it publishes, activates, disables or enables, in one
//! transaction with the audit entry; every host reads them back every few
//! seconds and loads what it lacks, verifying each package against its own
//! trusted keys (see `rebound-api`'s plugin sync). A version's package
//! never changes once published: the same version with another component
//! is refused.

use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::{Store, StoreError, audit_in, now_ms};

/// A published package: what `rebound-runtime` verifies and loads.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginPackageRecord {
    pub name: String,
    pub version: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub signature: Option<String>,
    pub published_by: String,
    pub published_at_ms: i64,
}

impl std::fmt::Debug for PluginPackageRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPackageRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("wasm_bytes", &self.wasm.len())
            .finish_non_exhaustive()
    }
}

/// A published version, without its bytes: what a host compares with
/// what it has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionRecord {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// A plugin's settings, as an admin last left them on any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettingRecord {
    pub name: String,
    /// The version calls go to (`None`: as each host loaded it).
    pub active: Option<String>,
    pub enabled: bool,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

mod package {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plugin_packages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: String,
        pub sha256: String,
        pub manifest: String,
        pub wasm: Vec<u8>,
        pub signature: Option<String>,
        pub published_by: String,
        pub published_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod setting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plugin_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub active: Option<String>,
        pub enabled: bool,
        pub updated_at: i64,
        pub updated_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl Store {
    /// Keep a verified package and make it its plugin's active version,
    /// audited (`plugin.publish`). Publishing a version again with the same
    /// component only activates it; with another one it is refused.
    pub async fn publish_plugin(
        &self,
        package: &PluginPackageRecord,
        principal: &str,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let key = (package.name.clone(), package.version.clone());
        match package::Entity::find_by_id(key).one(&tx).await? {
            Some(kept) if kept.sha256 != package.sha256 => {
                return Err(StoreError::Conflict(format!(
                    "version {} of plugin '{}' was published before with another component (sha256 {}); publish the change as a new version",
                    package.version, package.name, kept.sha256
                )));
            }
            Some(_) => {}
            None => {
                package::Entity::insert(package::ActiveModel {
                    name: Set(package.name.clone()),
                    version: Set(package.version.clone()),
                    sha256: Set(package.sha256.clone()),
                    manifest: Set(package.manifest.clone()),
                    wasm: Set(package.wasm.clone()),
                    signature: Set(package.signature.clone()),
                    published_by: Set(principal.to_owned()),
                    published_at: Set(now_ms()),
                })
                .exec_without_returning(&tx)
                .await?;
            }
        }
        set_in(&tx, &package.name, Some(&package.version), None, principal).await?;
        audit_in(
            &tx,
            principal,
            "plugin.publish",
            &package.name,
            serde_json::json!({"version": package.version, "sha256": package.sha256}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Make `version` the plugin's active version on every host, audited
    /// (`plugin.activate`).
    pub async fn activate_plugin(
        &self,
        name: &str,
        version: &str,
        principal: &str,
    ) -> Result<(), StoreError> {
        let detail = serde_json::json!({"version": version});
        self.settle(
            name,
            Some(version),
            None,
            principal,
            ("plugin.activate", detail),
        )
        .await
    }

    /// Enable or disable a plugin on every host, audited
    /// (`plugin.enable`, `plugin.disable`).
    pub async fn set_plugin_enabled(
        &self,
        name: &str,
        enabled: bool,
        principal: &str,
    ) -> Result<(), StoreError> {
        let action = if enabled {
            "plugin.enable"
        } else {
            "plugin.disable"
        };
        let audit = (action, serde_json::json!({}));
        self.settle(name, None, Some(enabled), principal, audit)
            .await
    }

    /// Change a plugin's settings (see [`set_in`]) with their audit entry
    /// `(action, detail)`, in one transaction.
    async fn settle(
        &self,
        name: &str,
        active: Option<&str>,
        enabled: Option<bool>,
        principal: &str,
        (action, detail): (&str, serde_json::Value),
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        set_in(&tx, name, active, enabled, principal).await?;
        audit_in(&tx, principal, action, name, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every published version, without the bytes, by name and version.
    pub async fn plugin_versions(&self) -> Result<Vec<PluginVersionRecord>, StoreError> {
        let rows: Vec<(String, String, String)> = package::Entity::find()
            .select_only()
            .columns([
                package::Column::Name,
                package::Column::Version,
                package::Column::Sha256,
            ])
            .order_by_asc(package::Column::Name)
            .order_by_asc(package::Column::PublishedAt)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, version, sha256)| PluginVersionRecord {
                name,
                version,
                sha256,
            })
            .collect())
    }

    /// One published package.
    pub async fn plugin_package(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginPackageRecord>, StoreError> {
        let key = (name.to_owned(), version.to_owned());
        Ok(package::Entity::find_by_id(key)
            .one(&self.db)
            .await?
            .map(|row| PluginPackageRecord {
                name: row.name,
                version: row.version,
                sha256: row.sha256,
                manifest: row.manifest,
                wasm: row.wasm,
                signature: row.signature,
                published_by: row.published_by,
                published_at_ms: row.published_at,
            }))
    }

    /// Every plugin's settings, by name.
    pub async fn plugin_settings(&self) -> Result<Vec<PluginSettingRecord>, StoreError> {
        Ok(setting::Entity::find()
            .order_by_asc(setting::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| PluginSettingRecord {
                name: row.name,
                active: row.active,
                enabled: row.enabled,
                updated_at_ms: row.updated_at,
                updated_by: row.updated_by,
            })
            .collect())
    }
}

/// Change a plugin's settings: the active version and/or enabled (each
/// kept as it was when `None`; a new plugin starts enabled).
async fn set_in(
    db: &impl sea_orm::ConnectionTrait,
    name: &str,
    active: Option<&str>,
    enabled: Option<bool>,
    principal: &str,
) -> Result<(), StoreError> {
    let current = setting::Entity::find_by_id(name.to_owned()).one(db).await?;
    let row = setting::ActiveModel {
        name: Set(name.to_owned()),
        active: Set(active
            .map(str::to_owned)
            .or_else(|| current.as_ref().and_then(|c| c.active.clone()))),
        enabled: Set(enabled.unwrap_or_else(|| current.as_ref().is_none_or(|c| c.enabled))),
        updated_at: Set(now_ms()),
        updated_by: Set(principal.to_owned()),
    };
    setting::Entity::insert(row)
        .on_conflict(
            OnConflict::column(setting::Column::Name)
                .update_columns([
                    setting::Column::Active,
                    setting::Column::Enabled,
                    setting::Column::UpdatedAt,
                    setting::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}
