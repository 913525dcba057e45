//! Records how far the change log has been pruned. On PostgreSQL revisions
//! are sparse (they derive from transaction ids), so the oldest retained row
//! no longer tells whether a reader's position fell off the log.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000004_pruned_through"
    }
}

#[derive(DeriveIden)]
enum RevisionCounter {
    Table,
    PrunedThrough,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RevisionCounter::Table)
                    .add_column(
                        ColumnDef::new(RevisionCounter::PrunedThrough)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RevisionCounter::Table)
                    .drop_column(RevisionCounter::PrunedThrough)
                    .to_owned(),
            )
            .await
    }
}
