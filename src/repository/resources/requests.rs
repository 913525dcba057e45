//! What is kept of requests: write nonces and idempotent responses.

use sea_orm::EntityTrait;

use crate::model::Micros;
use crate::repository::entities::{idempotency, nonce};
use crate::repository::error::classify;
use crate::repository::secrets::idempotency_aad;
use crate::repository::write::nonce_row;
use crate::repository::{
    IdempotencyRecord, RepoError, RepoResult, RequestStore, SeaRepository, WriteMeta,
};

#[async_trait::async_trait]
impl RequestStore for SeaRepository {
    async fn find_idempotency(
        &self,
        api_id: &str,
        request_id: &str,
        not_before: Micros,
    ) -> RepoResult<Option<IdempotencyRecord>> {
        // Read through the writer: a retry must see a record committed a
        // moment ago, whatever the reader pool's snapshot.
        let Some(row) = idempotency::Entity::find_by_id((api_id.to_owned(), request_id.to_owned()))
            .one(&self.writer)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        if row.create_time < not_before {
            return Ok(None);
        }
        let response = self
            .key
            .decrypt(
                &row.response_enc,
                idempotency_aad(api_id, request_id).as_bytes(),
            )
            .map_err(|e| RepoError::Internal(Box::new(e)))?;
        Ok(Some(IdempotencyRecord {
            method: row.method,
            fingerprint: row.fingerprint,
            response,
            create_time: row.create_time,
        }))
    }

    async fn nonce_recorded(&self, api_id: &str, nonce: &str) -> RepoResult<bool> {
        // Through the writer, like `find_idempotency`: a write acknowledged a
        // moment ago must be seen.
        Ok(
            nonce::Entity::find_by_id((api_id.to_owned(), nonce.to_owned()))
                .one(&self.writer)
                .await
                .map_err(classify)?
                .is_some(),
        )
    }

    async fn record_nonce(&self, meta: &WriteMeta) -> RepoResult<()> {
        let Some(row) = nonce_row(meta) else {
            return Ok(());
        };
        nonce::Entity::insert(row)
            .exec_without_returning(&self.writer)
            .await
            .map_err(|e| match classify(e) {
                RepoError::AlreadyExists(_) => RepoError::Replay,
                other => other,
            })?;
        Ok(())
    }
}
