//! Thin gRPC adapters: proto in, domain/service call, proto out.

pub mod codec;
mod convert;
mod credentials;
mod endpoints;
mod event_types;
mod nul;
mod subscriptions;
mod tenants;
pub mod wire;

use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

pub use credentials::CredentialApi;
pub use endpoints::EndpointApi;
pub use event_types::EventTypeApi;
pub use subscriptions::SubscriptionApi;
pub use tenants::TenantApi;

use crate::auth::Caller;
use crate::error::{Error, echo};
use crate::service::{Idempotency, Paging, Services, Written};

/// Shared by every adapter.
#[derive(Clone)]
pub struct Api {
    services: Arc<Services>,
}

impl Api {
    pub fn new(services: Arc<Services>) -> Self {
        Api { services }
    }
}

/// The authenticated caller the interceptor put into the extensions.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!(
                "no authenticated caller in the request; is the interceptor installed?"
            );
            Status::internal("internal error")
        })
}

impl Api {
    /// A write's result as the caller gets it: a refused write is first
    /// checked for being a replay (see [`Services::refused_write`]).
    async fn write_result<T>(
        &self,
        caller: &Caller,
        result: Result<T, Error>,
    ) -> Result<T, Status> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(status(self.services.refused_write(caller, e).await)),
        }
    }
}

/// A write's response, with `x-revision` in its metadata.
fn written<M, T>(w: Written<M>, convert: impl FnOnce(M) -> T) -> Response<T> {
    let mut response = Response::new(convert(w.value));
    if let Some(revision) = w.revision
        && let Ok(value) = revision.to_string().parse()
    {
        response.metadata_mut().insert("x-revision", value);
    }
    response
}

fn paging(page_size: i32, page_token: &str, skip: i32) -> Result<Paging, Error> {
    if page_size < 0 {
        return Err(Error::invalid("page_size", "must not be negative"));
    }
    if skip < 0 {
        return Err(Error::invalid("skip", "must not be negative"));
    }
    if page_token.len() > 1024 {
        return Err(Error::invalid(
            "page_token",
            "is not a token returned by this listing",
        ));
    }
    Ok(Paging {
        page_size: page_size as u64,
        page_token: page_token.to_owned(),
        skip: skip as u64,
    })
}

/// The idempotency key of a create, fingerprinted by the whole request.
fn idempotency<M: Message>(request_id: &str, message: &M) -> Option<Idempotency> {
    if request_id.is_empty() {
        return None;
    }
    Some(Idempotency {
        request_id: request_id.to_owned(),
        fingerprint: Sha256::digest(message.encode_to_vec()).to_vec(),
    })
}

/// The paths of an update mask, checked against the resource's mutable
/// fields. `None` (no mask or an empty one) means every populated field.
fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    mutable: &[&str],
    immutable: &[&str],
) -> Result<Option<Vec<String>>, Error> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Ok(None);
    };
    for path in &mask.paths {
        if mutable.contains(&path.as_str()) {
            continue;
        }
        let why = if immutable.contains(&path.as_str()) {
            format!("{path} is output only or immutable")
        } else {
            format!("{} is not a field of this resource", echo(path))
        };
        return Err(Error::invalid("update_mask", why));
    }
    Ok(Some(mask.paths.clone()))
}

/// Whether an update touches `path`: listed in the mask (or a parent of it
/// is), or, with no mask, populated in the request.
fn touches(paths: &Option<Vec<String>>, path: &str, populated: bool) -> bool {
    match paths {
        None => populated,
        Some(paths) => paths.iter().any(|p| {
            p == path
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        }),
    }
}

fn status(e: Error) -> Status {
    e.into()
}
