//! Each change-log row carries the state its change left the resource in,
//! so a reader passes on every revision's own state rather than the
//! resource's current row. NULL in rows written before this migration (and
//! by servers that predate it); readers then fall back to the current row.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000006_change_state"
    }
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    State,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .add_column(ColumnDef::new(Changes::State).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .drop_column(Changes::State)
                    .to_owned(),
            )
            .await
    }
}
