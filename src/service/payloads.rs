//! ValidateEventPayload's checking: each event type's schema compiled once
//! per version of the type, and every answer bounded.
//!
//! The jsonschema crate collects all of a container's violations before
//! its iterator yields the first (one per array item against `items`), so
//! stopping after [`MAX_VIOLATIONS`] does not stop that work. What bounds
//! it: a valid payload is recognised by `is_valid`, which allocates
//! nothing; only an invalid one pays for collecting, which grows with the
//! payload (at most one violation per node and keyword), never with a
//! caller-chosen count; and collections run on the blocking pool, a few at
//! a time, so large ones neither stall other calls nor add up in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use tokio::sync::Semaphore;

use crate::error::{Error, Result, echo};
use crate::model::EventType;

/// The most violations one answer lists.
pub const MAX_VIOLATIONS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadViolation {
    pub path: String,
    pub message: String,
}

/// What a payload check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadCheck {
    /// At most [`MAX_VIOLATIONS`].
    pub violations: Vec<PayloadViolation>,
    /// There were more than `violations` holds.
    pub truncated: bool,
}

impl PayloadCheck {
    fn one(message: String) -> Self {
        PayloadCheck {
            violations: vec![PayloadViolation {
                path: String::new(),
                message,
            }],
            truncated: false,
        }
    }
}

/// Compiled schemas, and the gate on checks that collect violations.
pub(super) struct PayloadChecker {
    /// By event type name: the etag the schema was compiled at, and it.
    compiled: Mutex<HashMap<String, (String, Arc<Validator>)>>,
    collecting: Semaphore,
}

impl Default for PayloadChecker {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PayloadChecker {
            compiled: Mutex::default(),
            collecting: Semaphore::new(cores),
        }
    }
}

impl PayloadChecker {
    /// Checks `payload_json` against `event_type`'s schema (any JSON object
    /// when it has none).
    pub(super) async fn check(
        &self,
        event_type: &EventType,
        payload_json: &str,
    ) -> Result<PayloadCheck> {
        let validator = match &event_type.schema_json {
            Some(schema) => Some(self.validator(event_type, schema)?),
            None => None,
        };
        // Parsing a large payload and collecting its violations are both
        // CPU work: off the serving threads, a few at a time.
        let _permit = self
            .collecting
            .acquire()
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        let payload_json = payload_json.to_owned();
        tokio::task::spawn_blocking(move || check_now(validator.as_deref(), &payload_json))
            .await
            .map_err(Error::internal)
    }

    /// The compiled schema of this version of `event_type`.
    fn validator(&self, event_type: &EventType, schema: &str) -> Result<Arc<Validator>> {
        let compiled = |map: &HashMap<String, (String, Arc<Validator>)>| {
            map.get(&event_type.name)
                .filter(|(etag, _)| *etag == event_type.etag)
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = compiled(&self.lock()) {
            return Ok(v);
        }
        // Stored schemas were checked when written; one that no longer
        // compiles is the server's problem, not the caller's.
        let schema: serde_json::Value = serde_json::from_str(schema).map_err(Error::internal)?;
        let validator = Arc::new(
            jsonschema::validator_for(&schema).map_err(|e| Error::internal(e.to_string()))?,
        );
        self.lock().insert(
            event_type.name.clone(),
            (event_type.etag.clone(), validator.clone()),
        );
        Ok(validator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<Validator>)>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The check itself: parse, then the schema (or "an object" without one).
fn check_now(validator: Option<&Validator>, payload_json: &str) -> PayloadCheck {
    let payload: serde_json::Value = match serde_json::from_str(payload_json) {
        Ok(v) => v,
        Err(e) => return PayloadCheck::one(format!("payload is not valid JSON: {e}")),
    };
    let Some(validator) = validator else {
        return match payload.is_object() {
            true => PayloadCheck::default(),
            false => PayloadCheck::one("payload must be a JSON object".into()),
        };
    };
    if validator.is_valid(&payload) {
        return PayloadCheck::default();
    }
    let mut errors = validator.iter_errors(&payload);
    let violations = errors
        .by_ref()
        .take(MAX_VIOLATIONS)
        .map(|e| PayloadViolation {
            path: echo(e.instance_path().as_str()).to_string(),
            message: echo(&e.to_string()).to_string(),
        })
        .collect();
    PayloadCheck {
        violations,
        truncated: errors.next().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(schema: &str) -> Validator {
        jsonschema::validator_for(&serde_json::from_str(schema).unwrap()).unwrap()
    }

    #[test]
    fn many_violations_are_cut_at_the_limit() {
        let v = validator(r#"{"items": {"type": "string"}}"#);
        let payload = format!("[{}1]", "1,".repeat(5000));
        let check = check_now(Some(&v), &payload);
        assert_eq!(check.violations.len(), MAX_VIOLATIONS);
        assert!(check.truncated);
        assert_eq!(check.violations[99].path, "/99");
    }

    #[test]
    fn exactly_the_limit_is_not_truncated() {
        let v = validator(r#"{"items": {"type": "string"}}"#);
        let payload = format!("[{}1]", "1,".repeat(MAX_VIOLATIONS - 1));
        let check = check_now(Some(&v), &payload);
        assert_eq!(check.violations.len(), MAX_VIOLATIONS);
        assert!(!check.truncated);
    }

    #[test]
    fn a_long_offending_value_is_quoted_briefly() {
        let v = validator(r#"{"type": "object", "properties": {"a": {"maxLength": 3}}}"#);
        let payload = format!(r#"{{"a": "{}"}}"#, "z".repeat(10_000));
        let check = check_now(Some(&v), &payload);
        assert_eq!(check.violations.len(), 1);
        assert!(check.violations[0].message.chars().count() <= crate::error::ECHO_MAX_CHARS + 1);
    }

    #[tokio::test]
    async fn a_schema_is_compiled_once_per_version() {
        let checker = PayloadChecker::default();
        let mut event_type = EventType {
            name: "a.b".into(),
            description: String::new(),
            schema_json: Some(r#"{"type": "object"}"#.into()),
            legacy_code: None,
            deprecated: false,
            create_time: 0,
            update_time: 0,
            etag: "e1".into(),
        };
        let first = checker
            .validator(&event_type, event_type.schema_json.as_deref().unwrap())
            .unwrap();
        let again = checker
            .validator(&event_type, event_type.schema_json.as_deref().unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        event_type.etag = "e2".into();
        event_type.schema_json = Some(r#"{"type": "array"}"#.into());
        let changed = checker
            .validator(&event_type, event_type.schema_json.as_deref().unwrap())
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(
            checker.check(&event_type, "[]").await.unwrap(),
            PayloadCheck::default()
        );
    }
}
