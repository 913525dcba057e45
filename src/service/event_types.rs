//! The platform-wide event-type catalog and payload validation against its
//! JSON Schemas.

use super::payloads::PayloadCheck;
use super::{Idempotency, Listed, Paging, Services, Written, attach_response, check_text};
use crate::auth::Caller;
use crate::domain::EventTypeName;
use crate::domain::Permission;
use crate::error::{Error, FieldExt, Result, echo};
use crate::model::{EventType, new_etag, now_micros};

pub struct NewEventType {
    pub name: String,
    pub description: String,
    pub schema_json: String,
    pub legacy_code: i32,
    pub deprecated: bool,
}

#[derive(Default, Clone)]
pub struct EventTypeChanges {
    pub etag: String,
    pub description: Option<String>,
    pub schema_json: Option<String>,
    pub legacy_code: Option<i32>,
    pub deprecated: Option<bool>,
}

pub enum EventTypeKey {
    Name(String),
    LegacyCode(i32),
}

const DESCRIPTION_MAX: usize = 1024;
const SCHEMA_MAX_BYTES: usize = 256 * 1024;

/// Empty means no schema; otherwise it must be JSON and a valid JSON Schema.
fn check_schema(field: &str, schema_json: &str) -> Result<Option<String>> {
    if schema_json.trim().is_empty() {
        return Ok(None);
    }
    if schema_json.len() > SCHEMA_MAX_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {SCHEMA_MAX_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(schema_json)
        .map_err(|e| Error::invalid(field, format!("is not valid JSON: {e}")))?;
    if !(value.is_object() || value.is_boolean()) {
        return Err(Error::invalid(field, "must be a JSON Schema object"));
    }
    jsonschema::validator_for(&value).map_err(|e| {
        Error::invalid(
            field,
            format!("is not a valid JSON Schema: {}", echo(&e.to_string())),
        )
    })?;
    Ok(Some(schema_json.to_owned()))
}

fn check_legacy_code(field: &str, code: i32) -> Result<Option<i32>> {
    match code {
        0 => Ok(None),
        c if c > 0 => Ok(Some(c)),
        _ => Err(Error::invalid(
            field,
            "must be greater than 0 (0 means none)",
        )),
    }
}

impl Services {
    pub async fn create_event_type(
        &self,
        caller: &Caller,
        new: NewEventType,
        idempotency: Option<Idempotency>,
    ) -> Result<Written<EventType>> {
        self.require(caller, Permission::EventTypesWrite)?;
        let name = EventTypeName::parse(&new.name).field("event_type.name")?;
        check_text("event_type.description", &new.description, DESCRIPTION_MAX)?;
        let schema_json = check_schema("event_type.schema_json", &new.schema_json)?;
        let legacy_code = check_legacy_code("event_type.legacy_code", new.legacy_code)?;
        self.idempotent(
            caller,
            "CreateEventType",
            idempotency,
            |mut meta| async move {
                let event_type = EventType {
                    name: name.as_str().to_owned(),
                    description: new.description,
                    schema_json,
                    legacy_code,
                    deprecated: new.deprecated,
                    create_time: meta.now,
                    update_time: meta.now,
                    etag: new_etag(),
                };
                attach_response(&mut meta, &event_type)?;
                let revision = self.repo.create_event_type(&event_type, &meta).await?;
                Ok((event_type, revision))
            },
        )
        .await
    }

    pub async fn get_event_type(
        &self,
        _caller: &Caller,
        key: Option<EventTypeKey>,
    ) -> Result<EventType> {
        let found = match key {
            None => return Err(Error::invalid("key", "set name or legacy_code")),
            Some(EventTypeKey::Name(name)) => {
                let name = EventTypeName::parse(&name).field("name")?;
                self.repo.get_event_type(name.as_str()).await?
            }
            Some(EventTypeKey::LegacyCode(code)) => {
                let Some(code) = check_legacy_code("legacy_code", code)? else {
                    return Err(Error::invalid("legacy_code", "must be greater than 0"));
                };
                self.repo.get_event_type_by_code(code).await?
            }
        };
        found.ok_or_else(|| Error::NotFound("event type not found".into()))
    }

    pub async fn list_event_types(
        &self,
        _caller: &Caller,
        paging: &Paging,
    ) -> Result<Listed<EventType>> {
        let scope = "event_types";
        let request = self.page_request(scope, paging)?;
        let page = self.repo.list_event_types(&request).await?;
        Ok(self.listed(scope, page, |e| (e.create_time, e.name.clone())))
    }

    /// Updates; when the caller sent no etag, a concurrent change is not
    /// its conflict, so the update is re-read and retried a few times.
    pub async fn update_event_type(
        &self,
        caller: &Caller,
        name: &str,
        changes: EventTypeChanges,
    ) -> Result<Written<EventType>> {
        let mut attempt = 0;
        loop {
            match self
                .update_event_type_once(caller, name, changes.clone())
                .await
            {
                Err(Error::Aborted(_)) if changes.etag.is_empty() && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn update_event_type_once(
        &self,
        caller: &Caller,
        name: &str,
        changes: EventTypeChanges,
    ) -> Result<Written<EventType>> {
        self.require(caller, Permission::EventTypesWrite)?;
        let name = EventTypeName::parse(name).field("event_type.name")?;
        if let Some(d) = &changes.description {
            check_text("event_type.description", d, DESCRIPTION_MAX)?;
        }
        let schema = match &changes.schema_json {
            Some(s) => Some(check_schema("event_type.schema_json", s)?),
            None => None,
        };
        let code = match changes.legacy_code {
            Some(c) => Some(check_legacy_code("event_type.legacy_code", c)?),
            None => None,
        };
        let current = self
            .repo
            .get_event_type(name.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("event type {name} not found")))?;
        if !changes.etag.is_empty() && changes.etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the event type's current etag".into(),
            ));
        }
        let mut next = current.clone();
        if let Some(d) = changes.description {
            next.description = d;
        }
        if let Some(s) = schema {
            next.schema_json = s;
        }
        if let Some(c) = code {
            next.legacy_code = c;
        }
        if let Some(d) = changes.deprecated {
            next.deprecated = d;
        }
        let meta = self.write_meta(caller, now_micros());
        next.update_time = meta.now;
        next.etag = new_etag();
        let revision = self
            .repo
            .update_event_type(&next, &current.etag, &meta)
            .await?;
        Ok(self.done(next, revision).await)
    }

    /// Checks a payload against its event type's schema. Problems with the
    /// payload are data (valid: false), not errors.
    pub async fn validate_event_payload(
        &self,
        caller: &Caller,
        key: Option<EventTypeKey>,
        payload_json: &str,
    ) -> Result<PayloadCheck> {
        if payload_json.len() > SCHEMA_MAX_BYTES * 4 {
            return Err(Error::invalid("payload_json", "is too large"));
        }
        let event_type = self.get_event_type(caller, key).await?;
        self.payloads.check(&event_type, payload_json).await
    }
}
