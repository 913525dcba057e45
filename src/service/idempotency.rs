//! Idempotent creates: a create with a `request_id` already answered returns
//! the stored answer, and a refused write signed with a recorded nonce is a
//! replay.

use serde::{Serialize, de::DeserializeOwned};

use super::{Services, Settle, Written};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::model::{IDEMPOTENCY_RETENTION_MICROS, now_micros};
use crate::repository::{IdempotencyWrite, RepoError, Revision, WriteMeta};

/// An idempotency key with the fingerprint of the request that carried it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: String,
    pub fingerprint: Vec<u8>,
}

impl Services {
    /// Runs a create once per (credential, request_id): a retry returns the
    /// stored response, the same request_id with another request is refused.
    pub(super) async fn idempotent<T, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        idempotency: Option<Idempotency>,
        run: F,
    ) -> Result<Written<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(WriteMeta) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Revision)>>,
    {
        self.idempotent_settled(caller, method, idempotency, Settle::Follower, run)
            .await
    }

    /// [`Self::idempotent`] for a `run` that settles as `settle` says.
    pub(super) async fn idempotent_settled<T, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        idempotency: Option<Idempotency>,
        settle: Settle,
        run: F,
    ) -> Result<Written<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(WriteMeta) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Revision)>>,
    {
        let now = now_micros();
        let mut meta = self.write_meta(caller, now);
        let Some(idem) = idempotency.filter(|i| !i.request_id.is_empty()) else {
            let (value, revision) = run(meta).await?;
            return Ok(self.settled(settle, value, revision).await);
        };
        if idem.request_id.len() > 128 || !idem.request_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "request_id",
                "must be 1..128 visible ASCII characters",
            ));
        }
        if let Some(found) = self.find_replay(method, &idem, &meta).await? {
            return Ok(found);
        }
        // The lookup after a conflict records the nonce of a call that wrote nothing.
        let lookup_meta = meta.clone();
        meta.idempotency = Some(IdempotencyWrite {
            request_id: idem.request_id.clone(),
            method,
            fingerprint: idem.fingerprint.clone(),
            response: Vec::new(),
        });
        match run(meta).await {
            Ok((value, revision)) => Ok(self.settled(settle, value, revision).await),
            Err(Error::Aborted(_)) => match self.find_replay(method, &idem, &lookup_meta).await? {
                Some(found) => Ok(found),
                None => Err(Error::Aborted(
                    "the call conflicted with another; retry".into(),
                )),
            },
            Err(e) => Err(e),
        }
    }

    /// The stored response of an earlier call with this request id, handed
    /// out only once this call's nonce is recorded: a request that was
    /// accepted before (replayed after a restart or on another replica)
    /// finds its nonce taken and is refused, and never reads the response.
    async fn find_replay<T: DeserializeOwned>(
        &self,
        method: &'static str,
        idem: &Idempotency,
        meta: &WriteMeta,
    ) -> Result<Option<Written<T>>> {
        let Some(record) = self
            .repo
            .find_idempotency(
                &meta.api_id,
                &idem.request_id,
                meta.now - IDEMPOTENCY_RETENTION_MICROS,
            )
            .await?
        else {
            return Ok(None);
        };
        if record.method != method || record.fingerprint != idem.fingerprint {
            return Err(Error::invalid(
                "request_id",
                "was already used for a different request",
            ));
        }
        let value = serde_json::from_slice(&record.response).map_err(Error::internal)?;
        // Last: a recorded nonce marks the call as accepted (see
        // `refused_write`).
        self.repo.record_nonce(meta).await?;
        Ok(Some(Written {
            value,
            revision: None,
        }))
    }

    /// What a refused write answers. A write signed with a nonce that an
    /// earlier write recorded is a replay, and a replay is UNAUTHENTICATED
    /// whatever else is wrong with it (on this replica the nonce store
    /// catches it first; after a restart or on another replica only the
    /// database remembers). Checked only once a write has failed, so an
    /// accepted write costs no extra read.
    pub async fn refused_write(&self, caller: &Caller, error: Error) -> Error {
        if matches!(error, Error::Unauthenticated(_)) {
            return error;
        }
        match self
            .repo
            .nonce_recorded(&caller.api_id, &caller.nonce)
            .await
        {
            Ok(true) => RepoError::Replay.into(),
            _ => error,
        }
    }
}

/// Puts the response an idempotent create will replay into its write.
pub(crate) fn attach_response<T: Serialize>(meta: &mut WriteMeta, value: &T) -> Result<()> {
    if let Some(idem) = meta.idempotency.as_mut() {
        idem.response = serde_json::to_vec(value).map_err(Error::internal)?;
    }
    Ok(())
}
