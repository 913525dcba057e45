//! The initial schema. Timestamps are BIGINT microseconds since the Unix
//! epoch so that both backends store and compare them identically.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    TenantId,
    DisplayName,
    State,
    RequireVerification,
    HttpsOnly,
    DefaultTtlSeconds,
    MaxTtlSeconds,
    CreateTime,
    UpdateTime,
    DeleteTime,
    Etag,
}

#[derive(DeriveIden)]
enum Credentials {
    Table,
    ApiId,
    TenantId,
    Role,
    Description,
    SecretEnc,
    CreateTime,
    UpdateTime,
    RevokeTime,
    Etag,
}

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    Name,
    Description,
    SchemaJson,
    LegacyCode,
    Deprecated,
    CreateTime,
    UpdateTime,
    Etag,
}

#[derive(DeriveIden)]
enum Endpoints {
    Table,
    TenantId,
    EndpointId,
    Url,
    Description,
    Enabled,
    SecretEnc,
    PreviousSecretEnc,
    PreviousSecretExpireTime,
    CreateTime,
    UpdateTime,
    DeleteTime,
    Etag,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    TenantId,
    SubscriptionId,
    EndpointId,
    Name,
    EventTypes,
    Status,
    ExpireTime,
    CreateTime,
    UpdateTime,
    Etag,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    Revision,
    TenantId,
    ResourceType,
    ResourceKey,
    Kind,
    ChangeTime,
}

#[derive(DeriveIden)]
enum RevisionCounter {
    Table,
    Id,
    Value,
}

#[derive(DeriveIden)]
enum RequestNonces {
    Table,
    ApiId,
    Nonce,
    ExpireTime,
}

#[derive(DeriveIden)]
enum IdempotencyRecords {
    Table,
    ApiId,
    RequestId,
    Method,
    Fingerprint,
    ResponseEnc,
    CreateTime,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn micros(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn optional_micros(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

fn flag(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).boolean().not_null().to_owned()
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(text(Tenants::TenantId).primary_key())
                    .col(text(Tenants::DisplayName))
                    .col(text(Tenants::State))
                    .col(flag(Tenants::RequireVerification))
                    .col(flag(Tenants::HttpsOnly))
                    .col(micros(Tenants::DefaultTtlSeconds))
                    .col(micros(Tenants::MaxTtlSeconds))
                    .col(micros(Tenants::CreateTime))
                    .col(micros(Tenants::UpdateTime))
                    .col(optional_micros(Tenants::DeleteTime))
                    .col(text(Tenants::Etag))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tenants_by_creation")
                    .table(Tenants::Table)
                    .col(Tenants::CreateTime)
                    .col(Tenants::TenantId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Credentials::Table)
                    .col(text(Credentials::ApiId).primary_key())
                    .col(ColumnDef::new(Credentials::TenantId).text().null())
                    .col(text(Credentials::Role))
                    .col(text(Credentials::Description))
                    .col(ColumnDef::new(Credentials::SecretEnc).blob().not_null())
                    .col(micros(Credentials::CreateTime))
                    .col(micros(Credentials::UpdateTime))
                    .col(optional_micros(Credentials::RevokeTime))
                    .col(text(Credentials::Etag))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credentials_by_tenant")
                    .table(Credentials::Table)
                    .col(Credentials::TenantId)
                    .col(Credentials::CreateTime)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventTypes::Table)
                    .col(text(EventTypes::Name).primary_key())
                    .col(text(EventTypes::Description))
                    .col(ColumnDef::new(EventTypes::SchemaJson).text().null())
                    .col(ColumnDef::new(EventTypes::LegacyCode).integer().null())
                    .col(flag(EventTypes::Deprecated))
                    .col(micros(EventTypes::CreateTime))
                    .col(micros(EventTypes::UpdateTime))
                    .col(text(EventTypes::Etag))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("event_types_legacy_code")
                    .table(EventTypes::Table)
                    .col(EventTypes::LegacyCode)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Endpoints::Table)
                    .col(text(Endpoints::TenantId))
                    .col(text(Endpoints::EndpointId))
                    .col(text(Endpoints::Url))
                    .col(text(Endpoints::Description))
                    .col(flag(Endpoints::Enabled))
                    .col(ColumnDef::new(Endpoints::SecretEnc).blob().not_null())
                    .col(ColumnDef::new(Endpoints::PreviousSecretEnc).blob().null())
                    .col(optional_micros(Endpoints::PreviousSecretExpireTime))
                    .col(micros(Endpoints::CreateTime))
                    .col(micros(Endpoints::UpdateTime))
                    .col(optional_micros(Endpoints::DeleteTime))
                    .col(text(Endpoints::Etag))
                    .primary_key(
                        Index::create()
                            .col(Endpoints::TenantId)
                            .col(Endpoints::EndpointId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("endpoints_tenant")
                            .from(Endpoints::Table, Endpoints::TenantId)
                            .to(Tenants::Table, Tenants::TenantId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("endpoints_by_creation")
                    .table(Endpoints::Table)
                    .col(Endpoints::TenantId)
                    .col(Endpoints::CreateTime)
                    .col(Endpoints::EndpointId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Subscriptions::Table)
                    .col(text(Subscriptions::TenantId))
                    .col(text(Subscriptions::SubscriptionId))
                    .col(text(Subscriptions::EndpointId))
                    .col(ColumnDef::new(Subscriptions::Name).text().null())
                    .col(text(Subscriptions::EventTypes))
                    .col(text(Subscriptions::Status))
                    .col(optional_micros(Subscriptions::ExpireTime))
                    .col(micros(Subscriptions::CreateTime))
                    .col(micros(Subscriptions::UpdateTime))
                    .col(text(Subscriptions::Etag))
                    .primary_key(
                        Index::create()
                            .col(Subscriptions::TenantId)
                            .col(Subscriptions::SubscriptionId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("subscriptions_endpoint")
                            .from(
                                Subscriptions::Table,
                                (Subscriptions::TenantId, Subscriptions::EndpointId),
                            )
                            .to(
                                Endpoints::Table,
                                (Endpoints::TenantId, Endpoints::EndpointId),
                            ),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_by_creation")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::TenantId)
                    .col(Subscriptions::CreateTime)
                    .col(Subscriptions::SubscriptionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_by_endpoint")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::TenantId)
                    .col(Subscriptions::EndpointId)
                    .to_owned(),
            )
            .await?;
        // Names are unique among live subscriptions only: deleting one frees
        // its name. The database enforces it, so concurrent creates cannot
        // both win.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX subscriptions_live_name ON subscriptions \
                 (tenant_id, name) WHERE status <> 'DELETED' AND name IS NOT NULL",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .col(
                        ColumnDef::new(Changes::Revision)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Changes::TenantId).text().null())
                    .col(text(Changes::ResourceType))
                    .col(text(Changes::ResourceKey))
                    .col(text(Changes::Kind))
                    .col(micros(Changes::ChangeTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("changes_by_time")
                    .table(Changes::Table)
                    .col(Changes::ChangeTime)
                    .to_owned(),
            )
            .await?;

        // One row whose update serialises revision assignment: a transaction
        // holds its row lock until commit, so revisions follow commit order.
        manager
            .create_table(
                Table::create()
                    .table(RevisionCounter::Table)
                    .col(
                        ColumnDef::new(RevisionCounter::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RevisionCounter::Value)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RevisionCounter::Table)
                    .columns([RevisionCounter::Id, RevisionCounter::Value])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RequestNonces::Table)
                    .col(text(RequestNonces::ApiId))
                    .col(text(RequestNonces::Nonce))
                    .col(micros(RequestNonces::ExpireTime))
                    .primary_key(
                        Index::create()
                            .col(RequestNonces::ApiId)
                            .col(RequestNonces::Nonce),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("request_nonces_by_expiry")
                    .table(RequestNonces::Table)
                    .col(RequestNonces::ExpireTime)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecords::Table)
                    .col(text(IdempotencyRecords::ApiId))
                    .col(text(IdempotencyRecords::RequestId))
                    .col(text(IdempotencyRecords::Method))
                    .col(
                        ColumnDef::new(IdempotencyRecords::Fingerprint)
                            .blob()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdempotencyRecords::ResponseEnc)
                            .blob()
                            .not_null(),
                    )
                    .col(micros(IdempotencyRecords::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyRecords::ApiId)
                            .col(IdempotencyRecords::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_records_by_time")
                    .table(IdempotencyRecords::Table)
                    .col(IdempotencyRecords::CreateTime)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyRecords::Table.into_iden(),
            RequestNonces::Table.into_iden(),
            RevisionCounter::Table.into_iden(),
            Changes::Table.into_iden(),
            Subscriptions::Table.into_iden(),
            Endpoints::Table.into_iden(),
            EventTypes::Table.into_iden(),
            Credentials::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
