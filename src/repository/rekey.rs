//! `hookplane rekey`: re-encrypts every stored secret under a new master key,
//! in batches of short transactions, while servers keep running (they run
//! with the new key and `HOOKPLANE_PREVIOUS_MASTER_KEY`, so they read rows
//! under either key and write under the new one).
//!
//! Each blob is opened with the new key or with the repository's keyring
//! (the old key, and a previous one if given). A blob already under the new
//! key is left alone; one that opens with none of them stops the run with an
//! error naming its row, never a silent skip. Rows are locked while their
//! batch runs, so a server's concurrent write is not lost.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::change_state::{self, Secret};
use super::entities::{change, credential, endpoint, idempotency, outbox};
use super::error::classify;
use super::sea::SeaRepository;
use super::secrets::{
    credential_aad, endpoint_aad, endpoint_previous_aad, idempotency_aad, outbox_aad,
};
use super::{RepoError, ResourceKind};
use crate::crypto::MasterKey;

/// What a rekey did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Secrets now under the new key that were not before.
    pub reencrypted: u64,
    /// Secrets that already were (written by a server running with it).
    pub already: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("{row} decrypts with neither the new nor the old master key")]
    Undecryptable { row: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

type Rekeyed<T> = Result<T, RekeyError>;

impl SeaRepository {
    /// Re-encrypts every stored secret under `new`, `batch` rows per
    /// transaction: credentials, endpoint secrets (current and rotated
    /// out, in their rows and in the states the change log keeps of them),
    /// queued messages and stored idempotent responses.
    pub async fn rekey(&self, new: &MasterKey, batch: u64) -> Rekeyed<RekeyReport> {
        let batch = batch.max(1);
        let mut report = RekeyReport::default();
        self.rekey_credentials(new, batch, &mut report).await?;
        self.rekey_endpoints(new, batch, &mut report).await?;
        self.rekey_endpoint_changes(new, batch, &mut report).await?;
        self.rekey_outbox(new, batch, &mut report).await?;
        self.rekey_idempotency(new, batch, &mut report).await?;
        Ok(report)
    }

    /// `blob` under `new`: `None` when it already is.
    fn reseal(
        &self,
        new: &MasterKey,
        blob: &[u8],
        aad: &str,
        row: impl FnOnce() -> String,
        report: &mut RekeyReport,
    ) -> Rekeyed<Option<Vec<u8>>> {
        if new.decrypt(blob, aad.as_bytes()).is_ok() {
            report.already += 1;
            return Ok(None);
        }
        let plain = self
            .keyring()
            .decrypt(blob, aad.as_bytes())
            .map_err(|_| RekeyError::Undecryptable { row: row() })?;
        report.reencrypted += 1;
        Ok(Some(new.encrypt(&plain, aad.as_bytes())))
    }

    async fn rekey_credentials(
        &self,
        new: &MasterKey,
        batch: u64,
        report: &mut RekeyReport,
    ) -> Rekeyed<()> {
        let mut after = String::new();
        loop {
            let txn = self.begin().await?;
            let rows = credential::Entity::find()
                .filter(credential::Column::ApiId.gt(after.clone()))
                .order_by_asc(credential::Column::ApiId)
                .limit(batch)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(classify)?;
            for row in &rows {
                let aad = credential_aad(&row.api_id);
                let row_name = || format!("credential {}", row.api_id);
                if let Some(blob) = self.reseal(new, &row.secret_enc, &aad, row_name, report)? {
                    credential::Entity::update_many()
                        .col_expr(credential::Column::SecretEnc, Expr::value(blob))
                        .filter(credential::Column::ApiId.eq(row.api_id.clone()))
                        .exec(&txn)
                        .await
                        .map_err(classify)?;
                }
            }
            txn.commit().await.map_err(classify)?;
            match rows.last() {
                Some(last) if rows.len() as u64 == batch => after = last.api_id.clone(),
                _ => return Ok(()),
            }
        }
    }

    async fn rekey_endpoints(
        &self,
        new: &MasterKey,
        batch: u64,
        report: &mut RekeyReport,
    ) -> Rekeyed<()> {
        let mut after: Option<(String, String)> = None;
        loop {
            let txn = self.begin().await?;
            let mut select = endpoint::Entity::find();
            if let Some((tenant_id, endpoint_id)) = &after {
                select = select.filter(
                    Condition::any()
                        .add(endpoint::Column::TenantId.gt(tenant_id.clone()))
                        .add(
                            Condition::all()
                                .add(endpoint::Column::TenantId.eq(tenant_id.clone()))
                                .add(endpoint::Column::EndpointId.gt(endpoint_id.clone())),
                        ),
                );
            }
            let rows = select
                .order_by_asc(endpoint::Column::TenantId)
                .order_by_asc(endpoint::Column::EndpointId)
                .limit(batch)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(classify)?;
            for row in &rows {
                let aad = endpoint_aad(&row.tenant_id, &row.endpoint_id);
                let row_name = |which: &str| {
                    format!(
                        "the {which} secret of endpoint {}/{}",
                        row.tenant_id, row.endpoint_id
                    )
                };
                let mut update = endpoint::Entity::update_many()
                    .filter(endpoint::Column::TenantId.eq(row.tenant_id.clone()))
                    .filter(endpoint::Column::EndpointId.eq(row.endpoint_id.clone()));
                let mut changed = false;
                if let Some(blob) =
                    self.reseal(new, &row.secret_enc, &aad, || row_name("current"), report)?
                {
                    update = update.col_expr(endpoint::Column::SecretEnc, Expr::value(blob));
                    changed = true;
                }
                if let Some(previous) = &row.previous_secret_enc
                    && let Some(blob) = self.reseal(
                        new,
                        previous,
                        &endpoint_previous_aad(&row.tenant_id, &row.endpoint_id),
                        || row_name("rotated-out"),
                        report,
                    )?
                {
                    update =
                        update.col_expr(endpoint::Column::PreviousSecretEnc, Expr::value(blob));
                    changed = true;
                }
                if changed {
                    update.exec(&txn).await.map_err(classify)?;
                }
            }
            txn.commit().await.map_err(classify)?;
            match rows.last() {
                Some(last) if rows.len() as u64 == batch => {
                    after = Some((last.tenant_id.clone(), last.endpoint_id.clone()))
                }
                _ => return Ok(()),
            }
        }
    }

    /// The sealed secrets in the change log's endpoint states (see
    /// `change_state`), by revision. Rows a server writes meanwhile are
    /// already under the new key.
    async fn rekey_endpoint_changes(
        &self,
        new: &MasterKey,
        batch: u64,
        report: &mut RekeyReport,
    ) -> Rekeyed<()> {
        let mut after = i64::MIN;
        loop {
            let txn = self.begin().await?;
            let rows = change::Entity::find()
                .filter(change::Column::Revision.gt(after))
                .filter(change::Column::ResourceType.eq(ResourceKind::Endpoint.as_str()))
                .filter(change::Column::State.is_not_null())
                .order_by_asc(change::Column::Revision)
                .limit(batch)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(classify)?;
            for row in &rows {
                let (Some(state), Some(tenant_id)) = (&row.state, &row.tenant_id) else {
                    continue;
                };
                let endpoint_id = &row.resource_key;
                let resealed = change_state::reseal_endpoint(state, |blob, which| {
                    let aad = match which {
                        Secret::Current => endpoint_aad(tenant_id, endpoint_id),
                        Secret::Previous => endpoint_previous_aad(tenant_id, endpoint_id),
                    };
                    let row_name = || {
                        format!(
                            "the {} secret of endpoint {tenant_id}/{endpoint_id} in the change at revision {}",
                            match which {
                                Secret::Current => "current",
                                Secret::Previous => "rotated-out",
                            },
                            row.revision
                        )
                    };
                    self.reseal(new, blob, &aad, row_name, report)
                })?;
                if let Some(state) = resealed {
                    change::Entity::update_many()
                        .col_expr(change::Column::State, Expr::value(state))
                        .filter(change::Column::Revision.eq(row.revision))
                        .exec(&txn)
                        .await
                        .map_err(classify)?;
                }
            }
            txn.commit().await.map_err(classify)?;
            match rows.last() {
                Some(last) if rows.len() as u64 == batch => after = last.revision,
                _ => return Ok(()),
            }
        }
    }

    async fn rekey_outbox(
        &self,
        new: &MasterKey,
        batch: u64,
        report: &mut RekeyReport,
    ) -> Rekeyed<()> {
        let mut after = String::new();
        loop {
            let txn = self.begin().await?;
            let rows = outbox::Entity::find()
                .filter(outbox::Column::Id.gt(after.clone()))
                .order_by_asc(outbox::Column::Id)
                .limit(batch)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(classify)?;
            for row in &rows {
                let aad = outbox_aad(&row.id);
                let row_name = || format!("outbox message {}", row.id);
                if let Some(blob) = self.reseal(new, &row.payload_enc, &aad, row_name, report)? {
                    outbox::Entity::update_many()
                        .col_expr(outbox::Column::PayloadEnc, Expr::value(blob))
                        .filter(outbox::Column::Id.eq(row.id.clone()))
                        .exec(&txn)
                        .await
                        .map_err(classify)?;
                }
            }
            txn.commit().await.map_err(classify)?;
            match rows.last() {
                Some(last) if rows.len() as u64 == batch => after = last.id.clone(),
                _ => return Ok(()),
            }
        }
    }

    async fn rekey_idempotency(
        &self,
        new: &MasterKey,
        batch: u64,
        report: &mut RekeyReport,
    ) -> Rekeyed<()> {
        let mut after: Option<(String, String)> = None;
        loop {
            let txn = self.begin().await?;
            let mut select = idempotency::Entity::find();
            if let Some((api_id, request_id)) = &after {
                select = select.filter(
                    Condition::any()
                        .add(idempotency::Column::ApiId.gt(api_id.clone()))
                        .add(
                            Condition::all()
                                .add(idempotency::Column::ApiId.eq(api_id.clone()))
                                .add(idempotency::Column::RequestId.gt(request_id.clone())),
                        ),
                );
            }
            let rows = select
                .order_by_asc(idempotency::Column::ApiId)
                .order_by_asc(idempotency::Column::RequestId)
                .limit(batch)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(classify)?;
            for row in &rows {
                let aad = idempotency_aad(&row.api_id, &row.request_id);
                let row_name = || {
                    format!(
                        "the stored response of request {} of credential {}",
                        row.request_id, row.api_id
                    )
                };
                if let Some(blob) = self.reseal(new, &row.response_enc, &aad, row_name, report)? {
                    idempotency::Entity::update_many()
                        .col_expr(idempotency::Column::ResponseEnc, Expr::value(blob))
                        .filter(idempotency::Column::ApiId.eq(row.api_id.clone()))
                        .filter(idempotency::Column::RequestId.eq(row.request_id.clone()))
                        .exec(&txn)
                        .await
                        .map_err(classify)?;
                }
            }
            txn.commit().await.map_err(classify)?;
            match rows.last() {
                Some(last) if rows.len() as u64 == batch => {
                    after = Some((last.api_id.clone(), last.request_id.clone()))
                }
                _ => return Ok(()),
            }
        }
    }
}
