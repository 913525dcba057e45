//! A change-log row's `state`: its resource's row as that change left it,
//! so that readers (the follower, Watch) pass on every revision's own
//! state, not the resource's current row (two updates read in one batch
//! would both carry the second).
//!
//! The write that changes a row knows the whole row it writes (the etag is
//! new and random, nothing in a row derives from its revision), so the
//! state is serialised in Rust and bound in the same INSERT as the change
//! row, including the one-statement creates' SQL.
//!
//! The format is a JSON object of the row's columns by name, less the ones
//! the change row has itself (its tenant and its resource key). Servers of
//! two versions read each other's rows for as long as the log keeps them,
//! so: unknown fields are ignored; a field added later must be
//! `#[serde(default)]`; a field is never renamed nor changes its type. An
//! endpoint's secrets are the row's sealed blobs (base64), never plaintext,
//! and `hookplane rekey` re-seals them with the row's. A credential's state
//! is only whether it is revoked: that is all a reader needs of it.
//!
//! Rows written before the state existed have none: readers then take the
//! resource's current row, as they always did (see `resources/change_log`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::entities::{credential, endpoint, event_type, subscription, tenant};
use super::rekey::RekeyError;
use super::{RepoError, RepoResult, ResourceKind};

/// A row a change wrote, as its change-log row records it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Changed<'a> {
    Tenant(&'a tenant::Model),
    Credential(&'a credential::Model),
    EventType(&'a event_type::Model),
    Endpoint(&'a endpoint::Model),
    Subscription(&'a subscription::Model),
}

impl<'a> Changed<'a> {
    pub(super) fn resource(self) -> ResourceKind {
        match self {
            Changed::Tenant(_) => ResourceKind::Tenant,
            Changed::Credential(_) => ResourceKind::Credential,
            Changed::EventType(_) => ResourceKind::EventType,
            Changed::Endpoint(_) => ResourceKind::Endpoint,
            Changed::Subscription(_) => ResourceKind::Subscription,
        }
    }

    /// The change row's tenant: none for the catalog and platform
    /// credentials.
    pub(super) fn tenant_id(self) -> Option<&'a str> {
        match self {
            Changed::Tenant(t) => Some(&t.tenant_id),
            Changed::Credential(c) => c.tenant_id.as_deref(),
            Changed::EventType(_) => None,
            Changed::Endpoint(e) => Some(&e.tenant_id),
            Changed::Subscription(s) => Some(&s.tenant_id),
        }
    }

    /// The change row's resource key.
    pub(super) fn key(self) -> &'a str {
        match self {
            Changed::Tenant(t) => &t.tenant_id,
            Changed::Credential(c) => &c.api_id,
            Changed::EventType(e) => &e.name,
            Changed::Endpoint(e) => &e.endpoint_id,
            Changed::Subscription(s) => &s.subscription_id,
        }
    }

    /// The state to store with the change.
    pub(super) fn state(self) -> RepoResult<String> {
        let json = match self {
            Changed::Tenant(t) => serde_json::to_string(&TenantState::of(t)),
            Changed::Credential(c) => serde_json::to_string(&CredentialState {
                revoke_time: c.revoke_time,
            }),
            Changed::EventType(e) => serde_json::to_string(&EventTypeState::of(e)),
            Changed::Endpoint(e) => {
                let secret = STANDARD.encode(&e.secret_enc);
                let previous = e.previous_secret_enc.as_ref().map(|b| STANDARD.encode(b));
                serde_json::to_string(&EndpointState::of(e, &secret, previous.as_deref()))
            }
            Changed::Subscription(s) => serde_json::to_string(&SubscriptionState::of(s)),
        };
        json.map_err(|e| RepoError::Internal(Box::new(e)))
    }
}

/// Why a stored state could not be read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum UnreadableState {
    #[error("not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a sealed secret is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the change row has no tenant")]
    NoTenant,
}

type Read<T> = Result<T, UnreadableState>;

pub(super) fn subscription(
    tenant_id: Option<&str>,
    subscription_id: &str,
    state: &str,
) -> Read<subscription::Model> {
    let s: SubscriptionState<String> = serde_json::from_str(state)?;
    Ok(subscription::Model {
        tenant_id: tenant_id.ok_or(UnreadableState::NoTenant)?.to_owned(),
        subscription_id: subscription_id.to_owned(),
        endpoint_id: s.endpoint_id,
        name: s.name,
        event_types: s.event_types,
        status: s.status,
        expire_time: s.expire_time,
        create_time: s.create_time,
        update_time: s.update_time,
        etag: s.etag,
    })
}

pub(super) fn endpoint(
    tenant_id: Option<&str>,
    endpoint_id: &str,
    state: &str,
) -> Read<endpoint::Model> {
    let e: EndpointState<String> = serde_json::from_str(state)?;
    Ok(endpoint::Model {
        tenant_id: tenant_id.ok_or(UnreadableState::NoTenant)?.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        url: e.url,
        description: e.description,
        enabled: e.enabled,
        secret_enc: STANDARD.decode(e.secret_enc)?,
        previous_secret_enc: e
            .previous_secret_enc
            .map(|b| STANDARD.decode(b))
            .transpose()?,
        previous_secret_expire_time: e.previous_secret_expire_time,
        create_time: e.create_time,
        update_time: e.update_time,
        delete_time: e.delete_time,
        etag: e.etag,
    })
}

pub(super) fn tenant(tenant_id: &str, state: &str) -> Read<tenant::Model> {
    let t: TenantState<String> = serde_json::from_str(state)?;
    Ok(tenant::Model {
        tenant_id: tenant_id.to_owned(),
        display_name: t.display_name,
        state: t.state,
        require_verification: t.require_verification,
        https_only: t.https_only,
        default_ttl_seconds: t.default_ttl_seconds,
        max_ttl_seconds: t.max_ttl_seconds,
        create_time: t.create_time,
        update_time: t.update_time,
        delete_time: t.delete_time,
        etag: t.etag,
    })
}

pub(super) fn event_type(name: &str, state: &str) -> Read<event_type::Model> {
    let e: EventTypeState<String> = serde_json::from_str(state)?;
    Ok(event_type::Model {
        name: name.to_owned(),
        description: e.description,
        schema_json: e.schema_json,
        legacy_code: e.legacy_code,
        deprecated: e.deprecated,
        create_time: e.create_time,
        update_time: e.update_time,
        etag: e.etag,
    })
}

/// Whether the credential was live (not revoked) after the change.
pub(super) fn credential_live(state: &str) -> Read<bool> {
    let c: CredentialState = serde_json::from_str(state)?;
    Ok(c.revoke_time.is_none())
}

/// An endpoint's stored state with its sealed secrets re-sealed by
/// `reseal` (for `hookplane rekey`); `None` when `reseal` changed neither.
/// Edited as a JSON object, so fields this build does not know stay.
pub(super) fn reseal_endpoint(
    state: &str,
    mut reseal: impl FnMut(&[u8], Secret) -> Result<Option<Vec<u8>>, RekeyError>,
) -> Result<Option<String>, RekeyError> {
    let unreadable = |e: UnreadableState| RekeyError::Repo(RepoError::Internal(Box::new(e)));
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(state).map_err(|e| unreadable(e.into()))?;
    let mut changed = false;
    for (name, which) in [
        ("secret_enc", Secret::Current),
        ("previous_secret_enc", Secret::Previous),
    ] {
        let Some(serde_json::Value::String(sealed)) = fields.get_mut(name) else {
            continue;
        };
        let blob = STANDARD
            .decode(&*sealed)
            .map_err(|e| unreadable(e.into()))?;
        if let Some(blob) = reseal(&blob, which)? {
            *sealed = STANDARD.encode(blob);
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_string(&fields)
        .map(Some)
        .map_err(|e| unreadable(e.into()))
}

/// Which of an endpoint's secrets a sealed blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Secret {
    Current,
    /// Rotated out, kept through its grace period.
    Previous,
}

// The stored shapes. Generic over the string type: written from borrowed
// rows (no copies on the write path), read back into owned ones.

#[derive(Serialize, Deserialize)]
struct SubscriptionState<S> {
    endpoint_id: S,
    name: Option<S>,
    /// The row's text: a JSON array of patterns.
    event_types: S,
    status: S,
    expire_time: Option<i64>,
    create_time: i64,
    update_time: i64,
    etag: S,
}

impl<'a> SubscriptionState<&'a str> {
    fn of(s: &'a subscription::Model) -> Self {
        SubscriptionState {
            endpoint_id: &s.endpoint_id,
            name: s.name.as_deref(),
            event_types: &s.event_types,
            status: &s.status,
            expire_time: s.expire_time,
            create_time: s.create_time,
            update_time: s.update_time,
            etag: &s.etag,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EndpointState<S> {
    url: S,
    description: S,
    enabled: bool,
    /// Sealed, base64.
    secret_enc: S,
    /// Sealed, base64.
    previous_secret_enc: Option<S>,
    previous_secret_expire_time: Option<i64>,
    create_time: i64,
    update_time: i64,
    delete_time: Option<i64>,
    etag: S,
}

impl<'a> EndpointState<&'a str> {
    fn of(e: &'a endpoint::Model, secret: &'a str, previous: Option<&'a str>) -> Self {
        EndpointState {
            url: &e.url,
            description: &e.description,
            enabled: e.enabled,
            secret_enc: secret,
            previous_secret_enc: previous,
            previous_secret_expire_time: e.previous_secret_expire_time,
            create_time: e.create_time,
            update_time: e.update_time,
            delete_time: e.delete_time,
            etag: &e.etag,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TenantState<S> {
    display_name: S,
    state: S,
    require_verification: bool,
    https_only: bool,
    default_ttl_seconds: i64,
    max_ttl_seconds: i64,
    create_time: i64,
    update_time: i64,
    delete_time: Option<i64>,
    etag: S,
}

impl<'a> TenantState<&'a str> {
    fn of(t: &'a tenant::Model) -> Self {
        TenantState {
            display_name: &t.display_name,
            state: &t.state,
            require_verification: t.require_verification,
            https_only: t.https_only,
            default_ttl_seconds: t.default_ttl_seconds,
            max_ttl_seconds: t.max_ttl_seconds,
            create_time: t.create_time,
            update_time: t.update_time,
            delete_time: t.delete_time,
            etag: &t.etag,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EventTypeState<S> {
    description: S,
    schema_json: Option<S>,
    legacy_code: Option<i32>,
    deprecated: bool,
    create_time: i64,
    update_time: i64,
    etag: S,
}

impl<'a> EventTypeState<&'a str> {
    fn of(e: &'a event_type::Model) -> Self {
        EventTypeState {
            description: &e.description,
            schema_json: e.schema_json.as_deref(),
            legacy_code: e.legacy_code,
            deprecated: e.deprecated,
            create_time: e.create_time,
            update_time: e.update_time,
            etag: &e.etag,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CredentialState {
    revoke_time: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription_row() -> subscription::Model {
        subscription::Model {
            tenant_id: "t1".into(),
            subscription_id: "s1".into(),
            endpoint_id: "e1".into(),
            name: Some("orders".into()),
            event_types: r#"["orders.*","billing.paid"]"#.into(),
            status: "ACTIVE".into(),
            expire_time: Some(7),
            create_time: 1,
            update_time: 2,
            etag: "s-etag".into(),
        }
    }

    fn endpoint_row() -> endpoint::Model {
        endpoint::Model {
            tenant_id: "t1".into(),
            endpoint_id: "e1".into(),
            url: "https://hooks.example.com/e1".into(),
            description: "primary".into(),
            enabled: true,
            secret_enc: vec![0, 1, 2, 250, 251, 255],
            previous_secret_enc: Some(vec![9, 8, 7]),
            previous_secret_expire_time: Some(99),
            create_time: 1,
            update_time: 2,
            delete_time: Some(3),
            etag: "e-etag".into(),
        }
    }

    fn tenant_row() -> tenant::Model {
        tenant::Model {
            tenant_id: "t1".into(),
            display_name: "Tenant \"one\"".into(),
            state: "SUSPENDED".into(),
            require_verification: true,
            https_only: false,
            default_ttl_seconds: 60,
            max_ttl_seconds: 3600,
            create_time: 1,
            update_time: 2,
            delete_time: None,
            etag: "t-etag".into(),
        }
    }

    fn event_type_row() -> event_type::Model {
        event_type::Model {
            name: "orders.created".into(),
            description: "an order was placed".into(),
            schema_json: Some(r#"{"type":"object"}"#.into()),
            legacy_code: Some(42),
            deprecated: true,
            create_time: 1,
            update_time: 2,
            etag: "et-etag".into(),
        }
    }

    fn credential_row(revoke_time: Option<i64>) -> credential::Model {
        credential::Model {
            api_id: "k1".into(),
            tenant_id: Some("t1".into()),
            role: "DISPATCHER".into(),
            description: String::new(),
            secret_enc: vec![1, 2, 3],
            create_time: 1,
            update_time: 2,
            revoke_time,
            etag: "c-etag".into(),
        }
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        let s = subscription_row();
        let state = Changed::Subscription(&s).state().unwrap();
        assert_eq!(subscription(Some("t1"), "s1", &state).unwrap(), s);

        let e = endpoint_row();
        let state = Changed::Endpoint(&e).state().unwrap();
        assert_eq!(endpoint(Some("t1"), "e1", &state).unwrap(), e);

        let t = tenant_row();
        let state = Changed::Tenant(&t).state().unwrap();
        assert_eq!(tenant("t1", &state).unwrap(), t);

        let et = event_type_row();
        let state = Changed::EventType(&et).state().unwrap();
        assert_eq!(event_type("orders.created", &state).unwrap(), et);

        for (revoke_time, live) in [(None, true), (Some(5), false)] {
            let state = Changed::Credential(&credential_row(revoke_time))
                .state()
                .unwrap();
            assert_eq!(credential_live(&state).unwrap(), live);
        }
    }

    /// The change row names the resource; the state does not repeat it,
    /// and a credential's holds nothing of its secret.
    #[test]
    fn the_change_row_carries_the_keys_and_the_state_the_rest() {
        let s = subscription_row();
        let changed = Changed::Subscription(&s);
        assert_eq!(
            (changed.resource(), changed.tenant_id(), changed.key()),
            (ResourceKind::Subscription, Some("t1"), "s1")
        );
        assert!(!changed.state().unwrap().contains("\"s1\""));
        let et = event_type_row();
        let changed = Changed::EventType(&et);
        assert_eq!(
            (changed.tenant_id(), changed.key()),
            (None, "orders.created")
        );
        let c = credential_row(None);
        assert_eq!(
            Changed::Credential(&c).state().unwrap(),
            r#"{"revoke_time":null}"#
        );
    }

    /// Rows written by a newer server (a field this build does not know)
    /// still read; a state missing a field this build needs does not.
    #[test]
    fn unknown_fields_are_ignored() {
        let s = subscription_row();
        let state = Changed::Subscription(&s).state().unwrap();
        let newer = state.replacen('{', r#"{"filters":[{"exact":{"a":"b"}}],"#, 1);
        assert_eq!(subscription(Some("t1"), "s1", &newer).unwrap(), s);
        let older = state.replace(r#""status":"ACTIVE","#, "");
        assert!(matches!(
            subscription(Some("t1"), "s1", &older),
            Err(UnreadableState::Json(_))
        ));
        assert!(matches!(
            subscription(None, "s1", &state),
            Err(UnreadableState::NoTenant)
        ));
    }

    #[test]
    fn an_endpoint_state_holds_its_sealed_blobs_in_base64() {
        let e = endpoint_row();
        let state = Changed::Endpoint(&e).state().unwrap();
        let fields: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(fields["secret_enc"], STANDARD.encode(&e.secret_enc));
        assert_eq!(fields["previous_secret_enc"], STANDARD.encode([9u8, 8, 7]));
    }

    #[test]
    fn resealing_replaces_only_the_blobs_and_keeps_unknown_fields() {
        let e = endpoint_row();
        let state = Changed::Endpoint(&e).state().unwrap();
        let newer = state.replacen('{', r#"{"headers":{"x":"y"},"#, 1);
        let mut seen = Vec::new();
        let resealed = reseal_endpoint(&newer, |blob, which| {
            seen.push((blob.to_vec(), which));
            Ok(Some(blob.iter().map(|b| b ^ 0xff).collect()))
        })
        .unwrap()
        .expect("both resealed");
        assert_eq!(
            seen,
            [
                (e.secret_enc.clone(), Secret::Current),
                (vec![9, 8, 7], Secret::Previous)
            ]
        );
        let fields: serde_json::Value = serde_json::from_str(&resealed).unwrap();
        assert_eq!(fields["headers"]["x"], "y");
        let read = endpoint(Some("t1"), "e1", &resealed).unwrap();
        assert_eq!(read.secret_enc, [255, 254, 253, 5, 4, 0]);
        assert_eq!(read.previous_secret_enc, Some(vec![246, 247, 248]));
        assert_eq!(
            endpoint::Model {
                secret_enc: e.secret_enc.clone(),
                previous_secret_enc: e.previous_secret_enc.clone(),
                ..read
            },
            e,
            "nothing else changed"
        );

        let unchanged = reseal_endpoint(&state, |_, _| Ok(None)).unwrap();
        assert_eq!(unchanged, None, "already under the new key");
    }
}
