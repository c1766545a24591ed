//! The first schema: plans (document and lifecycle), runs (leased by host
//! replicas), their steps (with idempotency keys and persisted operation
//! handles), and the append-only audit log. Times are milliseconds since the
//! Unix epoch in BIGINT columns, identical on both backends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Plans {
    Table,
    Name,
    Document,
    Lifecycle,
    Revision,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    Plan,
    Workflow,
    Status,
    IdempotencyKey,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Steps {
    Table,
    Run,
    Seq,
    Name,
    Status,
    IdempotencyKey,
    Operation,
    Attempts,
    StartedAt,
    FinishedAt,
    Error,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Principal,
    Action,
    Target,
    Detail,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .col(
                        ColumnDef::new(Plans::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Plans::Document).text().not_null())
                    .col(ColumnDef::new(Plans::Lifecycle).text().not_null())
                    .col(ColumnDef::new(Plans::Revision).big_integer().not_null())
                    .col(ColumnDef::new(Plans::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Plans::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(ColumnDef::new(Runs::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Runs::Plan).string().not_null())
                    .col(ColumnDef::new(Runs::Workflow).string().not_null())
                    .col(ColumnDef::new(Runs::Status).string().not_null())
                    .col(
                        ColumnDef::new(Runs::IdempotencyKey)
                            .string()
                            .null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Runs::LeaseOwner).string().null())
                    .col(ColumnDef::new(Runs::LeaseExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Runs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Runs::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Runs::FinishedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_runs_plan")
                            .from(Runs::Table, Runs::Plan)
                            .to(Plans::Table, Plans::Name)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_runs_claimable")
                    .table(Runs::Table)
                    .col(Runs::Status)
                    .col(Runs::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Steps::Table)
                    .col(ColumnDef::new(Steps::Run).string().not_null())
                    .col(ColumnDef::new(Steps::Seq).integer().not_null())
                    .col(ColumnDef::new(Steps::Name).string().not_null())
                    .col(ColumnDef::new(Steps::Status).string().not_null())
                    .col(
                        ColumnDef::new(Steps::IdempotencyKey)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Steps::Operation).text().null())
                    .col(ColumnDef::new(Steps::Attempts).integer().not_null())
                    .col(ColumnDef::new(Steps::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Steps::FinishedAt).big_integer().null())
                    .col(ColumnDef::new(Steps::Error).text().null())
                    .primary_key(Index::create().col(Steps::Run).col(Steps::Seq))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_steps_run")
                            .from(Steps::Table, Steps::Run)
                            .to(Runs::Table, Runs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(
                        ColumnDef::new(AuditLog::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditLog::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditLog::Principal).string().not_null())
                    .col(ColumnDef::new(AuditLog::Action).string().not_null())
                    .col(ColumnDef::new(AuditLog::Target).string().not_null())
                    .col(ColumnDef::new(AuditLog::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;

        // The audit log is append-only, enforced by the database itself so
        // no code path (or operator with SQL) can quietly rewrite history.
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$ \
                     BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
                )
                .await?;
            }
            _ => {
                for op in ["UPDATE", "DELETE"] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER audit_log_no_{op} BEFORE {op} ON audit_log \
                         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }
}
