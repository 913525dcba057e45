//! Live endpoints and subscriptions per tenant, counted in the writes that
//! change them, so per-tenant quotas are checked in the same transaction
//! without counting rows (exact under concurrency and across replicas).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_tenant_usage"
    }
}

#[derive(DeriveIden)]
enum TenantUsage {
    Table,
    TenantId,
    LiveEndpoints,
    LiveSubscriptions,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantUsage::Table)
                    .col(
                        ColumnDef::new(TenantUsage::TenantId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TenantUsage::LiveEndpoints)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(TenantUsage::LiveSubscriptions)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        // Every existing tenant starts from what it holds now.
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO tenant_usage (tenant_id, live_endpoints, live_subscriptions) \
                 SELECT t.tenant_id, \
                 (SELECT count(*) FROM endpoints e \
                  WHERE e.tenant_id = t.tenant_id AND e.delete_time IS NULL), \
                 (SELECT count(*) FROM subscriptions s \
                  WHERE s.tenant_id = t.tenant_id AND s.status <> 'DELETED') \
                 FROM tenants t",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TenantUsage::Table).to_owned())
            .await
    }
}
