//! Bringing the schema up to date, one host at a time. The hosts of one
//! deployment start together (a Deployment's replicas, a restart of every
//! host after an upgrade); two applying the same migration at once fail on
//! each other's half-made tables. So the migrations run under a lock that
//! the database's other users cannot miss and that a dead process cannot
//! keep: on PostgreSQL a session advisory lock held on a connection of its
//! own (the server drops it with the connection), on SQLite an OS lock on
//! `<file>.migrate.lock` beside the database (the kernel drops it with the
//! process). The host that waited finds nothing left to apply.

use std::path::PathBuf;

use rebound_migrations::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use sea_orm::sqlx::{self, Connection};

use crate::StoreError;

/// The advisory lock's key: "rebound" in ASCII, so a DBA reading
/// `pg_locks` can tell whose it is.
const ADVISORY_KEY: i64 = 0x0072_6562_6f75_6e64;

/// Apply the migrations `db` lacks, holding the lock for `url`'s database.
pub(crate) async fn migrate(db: &DatabaseConnection, url: &str) -> Result<(), StoreError> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let mut lock = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| lock_error(format!("connecting for the migration lock: {e}")))?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ADVISORY_KEY)
            .execute(&mut lock)
            .await
            .map_err(|e| lock_error(format!("taking the migration lock: {e}")))?;
        let migrated = Migrator::up(db, None).await;
        // Closing the session releases the lock, whatever happened.
        let _ = lock.close().await;
        return Ok(migrated?);
    }
    let _lock = match sqlite_lock_path(url) {
        Some(path) => Some(
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::create(&path)
                    .map_err(|e| lock_error(format!("{}: {e}", path.display())))?;
                file.lock()
                    .map_err(|e| lock_error(format!("{}: {e}", path.display())))?;
                Ok::<_, StoreError>(file)
            })
            .await
            .map_err(|e| lock_error(e.to_string()))??,
        ),
        None => None,
    };
    Ok(Migrator::up(db, None).await?)
}

/// `<file>.migrate.lock` of a `sqlite:` URL naming a file; `None` for an
/// in-memory database, which no other connection shares.
fn sqlite_lock_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.migrate.lock")))
}

fn lock_error(reason: String) -> StoreError {
    StoreError::MigrationLock(reason)
}

#[cfg(test)]
mod tests {
    use super::sqlite_lock_path;
    use std::path::PathBuf;

    #[test]
    fn the_lock_file_sits_beside_the_database_file() {
        assert_eq!(
            sqlite_lock_path("sqlite:///var/lib/rebound/rebound.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/rebound/rebound.db.migrate.lock"))
        );
        assert_eq!(
            sqlite_lock_path("sqlite://rebound.db"),
            Some(PathBuf::from("rebound.db.migrate.lock"))
        );
        assert_eq!(sqlite_lock_path("sqlite::memory:"), None);
        assert_eq!(sqlite_lock_path("sqlite://x.db?mode=memory"), None);
    }
}
