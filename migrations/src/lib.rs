//! Schema migrations for hookplane. They run unchanged on SQLite and
//! PostgreSQL. Each migration declares its own identifiers and never imports
//! the application's entities, so old migrations keep compiling as the model
//! moves on. Keep them additive: SQLite's ALTER TABLE is limited.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_verification;
mod m20261122_000003_expiry_index;
mod m20261122_000004_pruned_through;
mod m20261207_000005_tenant_usage;
mod m20261207_000006_change_state;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_verification::Migration),
            Box::new(m20261122_000003_expiry_index::Migration),
            Box::new(m20261122_000004_pruned_through::Migration),
            Box::new(m20261207_000005_tenant_usage::Migration),
            Box::new(m20261207_000006_change_state::Migration),
        ]
    }
}
