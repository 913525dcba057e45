//! Reading and pruning the change log that followers and Watch read.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
};

use crate::model::Micros;
use crate::repository::entities::{change, subscription};
use crate::repository::error::{classify, internal};
use crate::repository::query::at;
use crate::repository::revision::pg_horizon_sql;
use crate::repository::rows::subscription_from_row;
use crate::repository::{ChangeLogStore, ChangeRecord, RepoResult, Revision, SeaRepository};

/// The change log after `$1`, at most `$2` rows, each subscription change
/// with the subscription's row as of the same snapshot (NULLs when it is
/// gone): one round trip where the follower took two. Written out, and its
/// rows read by position, because the follower reads it after every batch
/// of writes: building it with sea-query and mapping rows by prefixed
/// column names were most of the follower's time in a create profile.
const CHANGES_SINCE: &str = "SELECT c.revision, c.tenant_id, c.resource_type, c.resource_key, c.kind, \
     s.tenant_id, s.subscription_id, s.endpoint_id, s.name, s.event_types, s.status, \
     s.expire_time, s.create_time, s.update_time, s.etag \
     FROM changes c LEFT JOIN subscriptions s ON c.resource_type = 'subscription' \
     AND s.tenant_id = c.tenant_id AND s.subscription_id = c.resource_key \
     WHERE c.revision > $1";

const CHANGES_ORDER: &str = "ORDER BY c.revision LIMIT $2";

/// One row of [`CHANGES_SINCE`]: the change, with the subscription if the
/// change is a subscription's and the subscription is there.
fn change_from_row(row: &sea_orm::QueryResult) -> RepoResult<ChangeRecord> {
    let subscription = match at::<Option<String>>(row, 5)? {
        None => None,
        Some(tenant_id) => Some(subscription_from_row(subscription::Model {
            tenant_id,
            subscription_id: at(row, 6)?,
            endpoint_id: at(row, 7)?,
            name: at(row, 8)?,
            event_types: at(row, 9)?,
            status: at(row, 10)?,
            expire_time: at(row, 11)?,
            create_time: at(row, 12)?,
            update_time: at(row, 13)?,
            etag: at(row, 14)?,
        })?),
    };
    Ok(ChangeRecord {
        revision: at(row, 0)?,
        tenant_id: at(row, 1)?,
        resource_type: at(row, 2)?,
        resource_key: at(row, 3)?,
        kind: at(row, 4)?,
        subscription,
    })
}

#[async_trait::async_trait]
impl ChangeLogStore for SeaRepository {
    async fn current_revision(&self) -> RepoResult<Revision> {
        let sql = match self.backend {
            // Every revision below the horizon is final; see PG_REVISION_SHIFT.
            DatabaseBackend::Postgres => format!("SELECT {} - 1 AS value", pg_horizon_sql()),
            _ => "SELECT value FROM revision_counter WHERE id = 1".to_owned(),
        };
        let row = self
            .reader
            .query_one_raw(Statement::from_string(self.backend, sql))
            .await
            .map_err(classify)?
            .ok_or_else(|| internal("revision counter row is missing"))?;
        row.try_get::<i64>("", "value").map_err(classify)
    }

    async fn changes_since(&self, after: Revision, limit: u64) -> RepoResult<Vec<ChangeRecord>> {
        let sql = match self.backend {
            // Hold readers below the oldest running writer (see
            // PG_REVISION_SHIFT).
            DatabaseBackend::Postgres => {
                format!(
                    "{CHANGES_SINCE} AND c.revision < {} {CHANGES_ORDER}",
                    pg_horizon_sql()
                )
            }
            _ => format!("{CHANGES_SINCE} {CHANGES_ORDER}"),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let statement =
            Statement::from_sql_and_values(self.backend, sql, [after.into(), limit.into()]);
        self.read_rows(statement)
            .await?
            .iter()
            .map(change_from_row)
            .collect()
    }

    async fn pruned_through(&self) -> RepoResult<Revision> {
        let row = self
            .reader
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT pruned_through AS value FROM revision_counter WHERE id = 1",
            ))
            .await
            .map_err(classify)?
            .ok_or_else(|| internal("revision counter row is missing"))?;
        row.try_get::<i64>("", "value").map_err(classify)
    }

    async fn prune_changes(&self, before: Micros) -> RepoResult<u64> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let horizon = self.current_revision().await?;
        let txn = self.begin().await?;
        let through: Option<Revision> = change::Entity::find()
            .select_only()
            .column_as(change::Column::Revision.max(), "value")
            .filter(change::Column::ChangeTime.lt(before))
            .filter(change::Column::Revision.lte(horizon))
            .into_tuple()
            .one(&txn)
            .await
            .map_err(classify)?
            .flatten();
        let Some(through) = through else {
            return Ok(0);
        };
        let result = change::Entity::delete_many()
            .filter(change::Column::Revision.lte(through))
            .exec(&txn)
            .await
            .map_err(classify)?;
        let mark = Query::update()
            .table(Alias::new("revision_counter"))
            .value(Alias::new("pruned_through"), through)
            .and_where(Expr::col(Alias::new("id")).eq(1))
            .and_where(Expr::col(Alias::new("pruned_through")).lt(through))
            .to_owned();
        txn.execute_raw(self.backend.build(&mark))
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(result.rows_affected)
    }
}
