//! The transactional path's reads of the resources a write hangs from; the
//! rule they apply is `fast_create::parent`'s, shared with every path.

use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, QuerySelect};

use crate::repository::entities::{endpoint, tenant};
use crate::repository::error::classify;
use crate::repository::fast_create::parent::{self, Parents};
use crate::repository::query::by_key;
use crate::repository::{RepoError, RepoResult};

pub(super) async fn load_tenant_for_write(
    txn: &DatabaseTransaction,
    tenant_id: &str,
) -> RepoResult<tenant::Model> {
    let row = by_key(
        txn,
        tenant::Entity::find_by_id(tenant_id.to_owned()).lock_shared(),
    )
    .await?
    .filter(|t| t.delete_time.is_none())
    .ok_or(RepoError::NotFound("tenant"))?;
    parent::tenant_active(tenant_id, &row.state)?;
    Ok(row)
}

/// What a subscription write checks of its parents: the parent rule (see
/// `fast_create::parent`), with the tenant's etag when the write was built
/// from it; on PostgreSQL both rows stay share-locked (in the usual order,
/// tenant first) until commit. One statement when both rows exist, the
/// common case; otherwise the separate reads name what is missing.
pub(super) async fn ensure_parents(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    endpoint_id: &str,
    tenant_etag: Option<&str>,
) -> RepoResult<()> {
    let statement = parent::read(txn.get_database_backend(), tenant_id, endpoint_id);
    let Some(row) = txn.query_one_raw(statement).await.map_err(classify)? else {
        let tenant = load_tenant_for_write(txn, tenant_id).await?;
        ensure_live_endpoint(txn, tenant_id, endpoint_id).await?;
        return match tenant_etag {
            Some(etag) if etag != tenant.etag => Err(RepoError::TenantChanged),
            _ => Ok(()),
        };
    };
    Parents::from_row(&row)?.check(tenant_id, tenant_etag)
}

pub(super) async fn ensure_live_endpoint(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    endpoint_id: &str,
) -> RepoResult<()> {
    by_key(
        txn,
        endpoint::Entity::find_by_id((tenant_id.to_owned(), endpoint_id.to_owned())).lock_shared(),
    )
    .await?
    .filter(|e| e.delete_time.is_none())
    .map(|_| ())
    .ok_or(RepoError::NotFound("endpoint"))
}
