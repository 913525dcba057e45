//! Lets the expiry sweeper find due subscriptions and rotated-out secrets
//! without scanning every row.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_expiry_index"
    }
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    ExpireTime,
}

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    PreviousSecretExpireTime,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_by_expiry")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::ExpireTime)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("endpoints_by_secret_expiry")
                    .table(Endpoints::Table)
                    .col(Endpoints::PreviousSecretExpireTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("endpoints_by_secret_expiry")
                    .table(Endpoints::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("subscriptions_by_expiry")
                    .table(Subscriptions::Table)
                    .to_owned(),
            )
            .await
    }
}
