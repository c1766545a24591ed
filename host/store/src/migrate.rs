//! Bringing the schema up to date, one host at a time. The hosts of one
//! deployment start together (a Deployment's replicas, a restart of every
//! host after an upgrade); two applying the same migration at once fail on
//! each other's half-made tables. So connecting and migrating run under a lock that
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

/// The lock for one database, held while a host connects and migrates.
pub(crate) enum MigrationLock {
    /// A session of its own holding the advisory lock.
    Postgres(sqlx::PgConnection),
    /// The open, locked `<file>.migrate.lock`.
    Sqlite(std::fs::File),
    /// An in-memory database: nobody else to wait for.
    None,
}

impl MigrationLock {
    /// Wait for the lock of `url`'s database. On SQLite it is taken before
    /// the first connection opens: a fresh file's first connection switches
    /// it to WAL, which needs the file to itself — two hosts doing that at
    /// once fail with "database is locked" whatever the busy timeout.
    pub(crate) async fn acquire(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut session = sqlx::PgConnection::connect(url)
                .await
                .map_err(|e| lock_error(format!("connecting for the migration lock: {e}")))?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(ADVISORY_KEY)
                .execute(&mut session)
                .await
                .map_err(|e| lock_error(format!("taking the migration lock: {e}")))?;
            return Ok(Self::Postgres(session));
        }
        let Some(path) = sqlite_lock_path(url) else {
            return Ok(Self::None);
        };
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&path)
                .map_err(|e| lock_error(format!("{}: {e}", path.display())))?;
            file.lock()
                .map_err(|e| lock_error(format!("{}: {e}", path.display())))?;
            Ok(Self::Sqlite(file))
        })
        .await
        .map_err(|e| lock_error(e.to_string()))?
    }

    /// Let the next host go: closing the session or the file drops the lock
    /// (as the server or the kernel would for a dead process).
    pub(crate) async fn release(self) {
        match self {
            Self::Postgres(session) => {
                let _ = session.close().await;
            }
            Self::Sqlite(file) => {
                let _ = file.unlock();
            }
            Self::None => {}
        }
    }
}

/// Apply the migrations `db` lacks; the caller holds the [`MigrationLock`].
pub(crate) async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
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
