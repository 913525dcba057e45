//! Reading and pruning the change log that followers and Watch read.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
};

use crate::model::Micros;
use crate::repository::change_state;
use crate::repository::entities::{change, endpoint, event_type, subscription, tenant};
use crate::repository::error::{classify, internal};
use crate::repository::query::at;
use crate::repository::revision::pg_horizon_sql;
use crate::repository::rows::{event_type_from_row, subscription_from_row, tenant_from_row};
use crate::repository::{
    ChangeLogStore, ChangeRecord, RepoError, RepoResult, ResourceKind, Revision, SeaRepository,
};

/// The change log after `$1`, at most `$2` rows, each with the state its
/// change left its resource in (`c.state`, see `change_state`) and, for rows
/// written before that was kept, its resource's row as of the same snapshot
/// (NULLs when it is gone): the subscription, endpoint, tenant or event
/// type, or a credential's revocation. One round trip; the follower and the
/// Watch feed read every change through it. Written out, and its rows read
/// by position, because the follower reads it after every batch of writes:
/// building it with sea-query and mapping rows by prefixed column names
/// were most of the follower's time in a create profile. Every join is by
/// primary key. The joins stay for rows with a state too: a state that
/// cannot be read (an endpoint's sealed secret that no longer opens, after a
/// master key was dropped without `hookplane rekey`) falls back to the
/// current row rather than pass the resource on as gone.
const CHANGES_SINCE: &str = "SELECT c.revision, c.tenant_id, c.resource_type, c.resource_key, c.kind, \
     s.tenant_id, s.subscription_id, s.endpoint_id, s.name, s.event_types, s.status, \
     s.expire_time, s.create_time, s.update_time, s.etag, \
     e.tenant_id, e.endpoint_id, e.url, e.description, e.enabled, e.secret_enc, \
     e.previous_secret_enc, e.previous_secret_expire_time, e.create_time, e.update_time, \
     e.delete_time, e.etag, \
     cr.api_id, cr.revoke_time, \
     tn.tenant_id, tn.display_name, tn.state, tn.require_verification, tn.https_only, \
     tn.default_ttl_seconds, tn.max_ttl_seconds, tn.create_time, tn.update_time, \
     tn.delete_time, tn.etag, \
     et.name, et.description, et.schema_json, et.legacy_code, et.deprecated, \
     et.create_time, et.update_time, et.etag, \
     c.state \
     FROM changes c LEFT JOIN subscriptions s ON c.resource_type = 'subscription' \
     AND s.tenant_id = c.tenant_id AND s.subscription_id = c.resource_key \
     LEFT JOIN endpoints e ON c.resource_type = 'endpoint' \
     AND e.tenant_id = c.tenant_id AND e.endpoint_id = c.resource_key \
     LEFT JOIN credentials cr ON c.resource_type = 'credential' AND cr.api_id = c.resource_key \
     LEFT JOIN tenants tn ON c.resource_type = 'tenant' AND tn.tenant_id = c.resource_key \
     LEFT JOIN event_types et ON c.resource_type = 'event_type' AND et.name = c.resource_key \
     WHERE c.revision > $1";

const CHANGES_ORDER: &str = "ORDER BY c.revision LIMIT $2";

/// The position of `c.state` in [`CHANGES_SINCE`].
const STATE: usize = 48;

impl SeaRepository {
    /// One row of [`CHANGES_SINCE`]: the change, with its resource's state
    /// as the change left it, or else as the joined row has it.
    fn change_from_row(&self, row: &sea_orm::QueryResult) -> RepoResult<ChangeRecord> {
        let mut record = ChangeRecord {
            revision: at(row, 0)?,
            tenant_id: at(row, 1)?,
            resource_type: at(row, 2)?,
            resource_key: at(row, 3)?,
            kind: at(row, 4)?,
            subscription: None,
            endpoint: None,
            credential_live: None,
            tenant: None,
            event_type: None,
        };
        let Some(resource) = record.resource() else {
            return Ok(record);
        };
        if let Some(state) = at::<Option<String>>(row, STATE)? {
            match self.read_state(&mut record, resource, &state) {
                Ok(()) => return Ok(record),
                // Never the state itself: an endpoint's holds its secrets.
                Err(e) => tracing::warn!(
                    revision = record.revision,
                    resource = resource.as_str(),
                    error = %e,
                    "a change's stored state cannot be read; using the resource's current row"
                ),
            }
        }
        self.read_joined(&mut record, resource, row)?;
        Ok(record)
    }

    /// Fills `record` from the state its change stored.
    fn read_state(
        &self,
        record: &mut ChangeRecord,
        resource: ResourceKind,
        state: &str,
    ) -> Result<(), StateError> {
        let (tenant_id, key) = (record.tenant_id.as_deref(), record.resource_key.as_str());
        match resource {
            ResourceKind::Subscription => {
                let row = change_state::subscription(tenant_id, key, state)?;
                record.subscription = Some(subscription_from_row(row)?);
            }
            ResourceKind::Endpoint => {
                let row = change_state::endpoint(tenant_id, key, state)?;
                record.endpoint = Some(self.endpoint_from_row(row)?);
            }
            ResourceKind::Credential => {
                record.credential_live = Some(change_state::credential_live(state)?);
            }
            ResourceKind::Tenant => {
                record.tenant = Some(tenant_from_row(change_state::tenant(key, state)?)?);
            }
            ResourceKind::EventType => {
                record.event_type =
                    Some(event_type_from_row(change_state::event_type(key, state)?));
            }
        }
        Ok(())
    }

    /// Fills `record` from the joined current row (a change stored before
    /// states were, or one whose state cannot be read).
    fn read_joined(
        &self,
        record: &mut ChangeRecord,
        resource: ResourceKind,
        row: &sea_orm::QueryResult,
    ) -> RepoResult<()> {
        match resource {
            ResourceKind::Subscription => {
                record.subscription = match at::<Option<String>>(row, 5)? {
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
                }
            }
            ResourceKind::Endpoint => {
                record.endpoint = match at::<Option<String>>(row, 15)? {
                    None => None,
                    Some(tenant_id) => Some(self.endpoint_from_row(endpoint::Model {
                        tenant_id,
                        endpoint_id: at(row, 16)?,
                        url: at(row, 17)?,
                        description: at(row, 18)?,
                        enabled: at(row, 19)?,
                        secret_enc: at(row, 20)?,
                        previous_secret_enc: at(row, 21)?,
                        previous_secret_expire_time: at(row, 22)?,
                        create_time: at(row, 23)?,
                        update_time: at(row, 24)?,
                        delete_time: at(row, 25)?,
                        etag: at(row, 26)?,
                    })?),
                }
            }
            ResourceKind::Credential => {
                let found = at::<Option<String>>(row, 27)?.is_some();
                record.credential_live = Some(found && at::<Option<i64>>(row, 28)?.is_none());
            }
            ResourceKind::Tenant => {
                record.tenant = match at::<Option<String>>(row, 29)? {
                    None => None,
                    Some(tenant_id) => Some(tenant_from_row(tenant::Model {
                        tenant_id,
                        display_name: at(row, 30)?,
                        state: at(row, 31)?,
                        require_verification: at(row, 32)?,
                        https_only: at(row, 33)?,
                        default_ttl_seconds: at(row, 34)?,
                        max_ttl_seconds: at(row, 35)?,
                        create_time: at(row, 36)?,
                        update_time: at(row, 37)?,
                        delete_time: at(row, 38)?,
                        etag: at(row, 39)?,
                    })?),
                }
            }
            ResourceKind::EventType => {
                record.event_type = match at::<Option<String>>(row, 40)? {
                    None => None,
                    Some(name) => Some(event_type_from_row(event_type::Model {
                        name,
                        description: at(row, 41)?,
                        schema_json: at(row, 42)?,
                        legacy_code: at(row, 43)?,
                        deprecated: at(row, 44)?,
                        create_time: at(row, 45)?,
                        update_time: at(row, 46)?,
                        etag: at(row, 47)?,
                    })),
                }
            }
        }
        Ok(())
    }
}

/// Why a change's stored state was not used.
#[derive(Debug, thiserror::Error)]
enum StateError {
    #[error(transparent)]
    Unreadable(#[from] change_state::UnreadableState),
    /// A value this build does not know, or a secret that does not open
    /// (the repository's own error says which only in its source).
    #[error("the stored row does not read back: {}", source_text(.0))]
    Row(#[from] RepoError),
}

fn source_text(e: &RepoError) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string)
}

#[async_trait::async_trait]
impl ChangeLogStore for SeaRepository {
    async fn current_revision(&self) -> RepoResult<Revision> {
        let sql = match self.backend() {
            // Every revision below the horizon is final; see PG_REVISION_SHIFT.
            DatabaseBackend::Postgres => format!("SELECT {} - 1 AS value", pg_horizon_sql()),
            _ => "SELECT value FROM revision_counter WHERE id = 1".to_owned(),
        };
        let row = self
            .reader
            .query_one_raw(Statement::from_string(self.backend(), sql))
            .await
            .map_err(classify)?
            .ok_or_else(|| internal("revision counter row is missing"))?;
        row.try_get::<i64>("", "value").map_err(classify)
    }

    async fn changes_since(&self, after: Revision, limit: u64) -> RepoResult<Vec<ChangeRecord>> {
        let sql = match self.backend() {
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
            Statement::from_sql_and_values(self.backend(), sql, [after.into(), limit.into()]);
        self.read_rows(statement)
            .await?
            .iter()
            .map(|row| self.change_from_row(row))
            .collect()
    }

    async fn pruned_through(&self) -> RepoResult<Revision> {
        let row = self
            .reader
            .query_one_raw(Statement::from_string(
                self.backend(),
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
        txn.execute_raw(self.backend().build(&mark))
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(result.rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The joins name the kinds as they are stored.
    #[test]
    fn every_join_names_a_stored_kind() {
        for kind in [
            ResourceKind::Subscription,
            ResourceKind::Endpoint,
            ResourceKind::Credential,
            ResourceKind::Tenant,
            ResourceKind::EventType,
        ] {
            let join = format!("c.resource_type = '{}'", kind.as_str());
            assert!(CHANGES_SINCE.contains(&join), "{join}");
        }
    }
}
