//! Subscription verification: single-use confirmation tokens (stored as
//! hashes) and a durable outbox that drives outbound deliveries.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_verification"
    }
}

#[derive(DeriveIden)]
enum ConfirmationTokens {
    Table,
    TokenHash,
    TenantId,
    SubscriptionId,
    ExpireTime,
    UsedTime,
    CreateTime,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Kind,
    TenantId,
    SubscriptionId,
    EndpointId,
    PayloadEnc,
    Attempts,
    NextAttemptTime,
    DoneTime,
    LastError,
    CreateTime,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConfirmationTokens::Table)
                    .col(
                        ColumnDef::new(ConfirmationTokens::TokenHash)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ConfirmationTokens::TenantId)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConfirmationTokens::SubscriptionId)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConfirmationTokens::ExpireTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConfirmationTokens::UsedTime)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ConfirmationTokens::CreateTime)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("confirmation_tokens_by_subscription")
                    .table(ConfirmationTokens::Table)
                    .col(ConfirmationTokens::TenantId)
                    .col(ConfirmationTokens::SubscriptionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(ColumnDef::new(Outbox::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Outbox::Kind).text().not_null())
                    .col(ColumnDef::new(Outbox::TenantId).text().not_null())
                    .col(ColumnDef::new(Outbox::SubscriptionId).text().not_null())
                    .col(ColumnDef::new(Outbox::EndpointId).text().not_null())
                    .col(ColumnDef::new(Outbox::PayloadEnc).blob().not_null())
                    .col(ColumnDef::new(Outbox::Attempts).integer().not_null())
                    .col(
                        ColumnDef::new(Outbox::NextAttemptTime)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Outbox::DoneTime).big_integer().null())
                    .col(ColumnDef::new(Outbox::LastError).text().not_null())
                    .col(ColumnDef::new(Outbox::CreateTime).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_due")
                    .table(Outbox::Table)
                    .col(Outbox::DoneTime)
                    .col(Outbox::NextAttemptTime)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ConfirmationTokens::Table).to_owned())
            .await
    }
}
