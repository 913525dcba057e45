//! Per-tenant quotas on live endpoints and subscriptions, enforced in the
//! write that would go past them.
//!
//! Each tenant has one `tenant_usage` row counting its live endpoints and
//! live (not DELETED) subscriptions. A create takes one from its quota by
//! updating that row, in its own transaction, only while the count is
//! below the limit; a delete gives back what it deleted. The update locks
//! the row until commit, so concurrent creates of one tenant, on any
//! replica, count one after another: the limit is exact. Every other lock
//! of a write is taken before this one (tenant, endpoint, subscriptions,
//! then usage), so it adds no lock-order cycle.

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement};

use super::error::classify;
use super::{RepoError, RepoResult};

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Live endpoints of a tenant.
    Endpoints,
    /// Live (not DELETED) subscriptions of a tenant.
    Subscriptions,
}

impl Quota {
    /// The `tenant_usage` column counting it.
    pub(super) fn column(self) -> &'static str {
        match self {
            Quota::Endpoints => "live_endpoints",
            Quota::Subscriptions => "live_subscriptions",
        }
    }
}

/// The most live resources of each kind one tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub endpoints_per_tenant: u64,
    pub subscriptions_per_tenant: u64,
}

impl Quotas {
    /// No limit (a repository used for migrations or bulk loads).
    pub const UNLIMITED: Quotas = Quotas {
        endpoints_per_tenant: u64::MAX,
        subscriptions_per_tenant: u64::MAX,
    };

    /// The limit of `quota`, as the database compares it.
    pub(super) fn limit(&self, quota: Quota) -> i64 {
        let limit = match quota {
            Quota::Endpoints => self.endpoints_per_tenant,
            Quota::Subscriptions => self.subscriptions_per_tenant,
        };
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}

/// Numbered bind parameters: SQLite binds `?N` by its number (a `$N`
/// there is a name, numbered by where it first appears).
fn params(backend: DatabaseBackend) -> [&'static str; 3] {
    match backend {
        DatabaseBackend::Postgres => ["$1", "$2", "$3"],
        _ => ["?1", "?2", "?3"],
    }
}

/// The statement that takes one of `quota` from the tenant bound at
/// `tenant` while its count is below the limit bound at `limit`, and
/// `condition` holds (empty: always). Every path that takes one uses it.
pub(super) fn take_one_sql(quota: Quota, tenant: &str, limit: &str, condition: &str) -> String {
    let column = quota.column();
    format!(
        "UPDATE tenant_usage SET {column} = {column} + 1 \
         WHERE tenant_id = {tenant} AND {column} < {limit}{condition}"
    )
}

/// The condition that the tenant bound at `tenant` has room for one more
/// of `quota` under the limit bound at `limit`.
pub(super) fn has_room_sql(quota: Quota, tenant: &str, limit: &str) -> String {
    let column = quota.column();
    format!("(SELECT {column} FROM tenant_usage WHERE tenant_id = {tenant}) < {limit}")
}

/// Takes one of `quota` for `tenant_id`, or fails with `QuotaExceeded`.
pub(super) async fn take(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    quota: Quota,
    quotas: &Quotas,
) -> RepoResult<()> {
    if try_take(txn, tenant_id, quota, quotas).await? {
        return Ok(());
    }
    // A tenant without a count (written by a version that kept none) is
    // counted now, once.
    if !has_count(txn, tenant_id).await? {
        recount(txn, tenant_id).await?;
        if try_take(txn, tenant_id, quota, quotas).await? {
            return Ok(());
        }
    }
    Err(RepoError::QuotaExceeded(quota, quotas.limit(quota)))
}

/// Takes one of `quota` if there is room; whether it did.
async fn try_take(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    quota: Quota,
    quotas: &Quotas,
) -> RepoResult<bool> {
    let backend = txn.get_database_backend();
    let [tenant, limit, _] = params(backend);
    let result = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            take_one_sql(quota, tenant, limit, ""),
            [tenant_id.to_owned().into(), quotas.limit(quota).into()],
        ))
        .await
        .map_err(classify)?;
    Ok(result.rows_affected() > 0)
}

async fn has_count(txn: &DatabaseTransaction, tenant_id: &str) -> RepoResult<bool> {
    let backend = txn.get_database_backend();
    let [tenant, _, _] = params(backend);
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            format!("SELECT 1 AS found FROM tenant_usage WHERE tenant_id = {tenant}"),
            [tenant_id.to_owned().into()],
        ))
        .await
        .map_err(classify)?;
    Ok(row.is_some())
}

/// Gives back what a delete of `endpoints` endpoints and `subscriptions`
/// subscriptions of `tenant_id` freed.
pub(super) async fn give_back(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    endpoints: usize,
    subscriptions: usize,
) -> RepoResult<()> {
    if endpoints == 0 && subscriptions == 0 {
        return Ok(());
    }
    let backend = txn.get_database_backend();
    let [tenant, e, s] = params(backend);
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "UPDATE tenant_usage SET live_endpoints = live_endpoints - {e}, \
             live_subscriptions = live_subscriptions - {s} WHERE tenant_id = {tenant}"
        ),
        [
            tenant_id.to_owned().into(),
            count(endpoints).into(),
            count(subscriptions).into(),
        ],
    ))
    .await
    .map_err(classify)?;
    Ok(())
}

/// Starts a new tenant's count at zero.
pub(super) async fn open(txn: &DatabaseTransaction, tenant_id: &str) -> RepoResult<()> {
    let backend = txn.get_database_backend();
    let [tenant, _, _] = params(backend);
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!("INSERT INTO tenant_usage (tenant_id) VALUES ({tenant}) ON CONFLICT DO NOTHING"),
        [tenant_id.to_owned().into()],
    ))
    .await
    .map_err(classify)?;
    Ok(())
}

/// Counts `tenant_id`'s live resources afresh (after a bulk load, which
/// writes rows without going through the quotas).
pub(super) async fn recount(txn: &DatabaseTransaction, tenant_id: &str) -> RepoResult<()> {
    let backend = txn.get_database_backend();
    let [tenant, _, _] = params(backend);
    let sql = format!(
        "INSERT INTO tenant_usage (tenant_id, live_endpoints, live_subscriptions) \
         SELECT t.tenant_id, \
         (SELECT count(*) FROM endpoints e \
          WHERE e.tenant_id = t.tenant_id AND e.delete_time IS NULL), \
         (SELECT count(*) FROM subscriptions s \
          WHERE s.tenant_id = t.tenant_id AND s.status <> 'DELETED') \
         FROM tenants t WHERE t.tenant_id = {tenant} \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         live_endpoints = excluded.live_endpoints, \
         live_subscriptions = excluded.live_subscriptions"
    );
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [tenant_id.to_owned().into()],
    ))
    .await
    .map_err(classify)?;
    Ok(())
}
