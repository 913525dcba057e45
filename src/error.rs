//! The service-level error and the single place that turns it into a
//! `tonic::Status`.

use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::InvalidValue;

/// One bad field of a request, reported as a `google.rpc.BadRequest` field
/// violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", invalid_message(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Unimplemented(String),
    /// A request body that is not the method's message.
    #[error("{0}")]
    Undecodable(prost::DecodeError),
    /// A limit is reached; the message names its flag.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's rate limit is reached; it may call again after
    /// `retry_after` (sent as `google.rpc.RetryInfo`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    /// Retryable like any outage, but its cause is worth saying.
    #[error(
        "the database's disk is full; nothing was written, and writes resume once space is freed"
    )]
    StorageFull(#[source] BoxError),
    /// The server is stopping: open streams end with this.
    #[error("the server is shutting down; reconnect")]
    ShuttingDown,
    #[error("internal error")]
    Internal(#[source] BoxError),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn invalid_message(violations: &[FieldViolation]) -> String {
    match violations {
        [one] => format!("{}: {}", one.field, one.description),
        _ => {
            let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
            format!("invalid fields: {}", fields.join(", "))
        }
    }
}

impl Error {
    /// An INVALID_ARGUMENT naming one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn internal(source: impl Into<BoxError>) -> Self {
        Error::Internal(source.into())
    }
}

/// Attaches a field name to a domain parse failure.
pub trait FieldExt<T> {
    fn field(self, name: &str) -> Result<T>;
}

impl<T> FieldExt<T> for std::result::Result<T, InvalidValue> {
    fn field(self, name: &str) -> Result<T> {
        self.map_err(|e| Error::invalid(name, e.0))
    }
}

/// The most characters of a caller's input that an error repeats.
pub const ECHO_MAX_CHARS: usize = 200;

/// Caller input as an error or answer repeats it: at most
/// [`ECHO_MAX_CHARS`] characters, then `…`. Every message that quotes raw
/// input goes through it, so a 5,000-character mask path cannot make
/// 18 KB trailers (which some clients refuse). Values that passed a domain
/// parse are bounded by it (at most 128 characters) and are shown whole.
pub fn echo(input: &str) -> Echo<'_> {
    Echo(input)
}

/// See [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl std::fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(ECHO_MAX_CHARS) {
            None => f.write_str(self.0),
            Some((cut, _)) => {
                f.write_str(&self.0[..cut])?;
                f.write_str("…")
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use tonic::Code;
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                tonic::Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Aborted(_) => tonic::Status::aborted(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::OutOfRange(_) => tonic::Status::out_of_range(message),
            Error::Unimplemented(_) => tonic::Status::unimplemented(message),
            Error::Undecodable(_) => tonic::Status::invalid_argument(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::RateLimited { retry_after, .. } => {
                let details = ErrorDetails::with_retry_info(Some(retry_after));
                tonic::Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            Error::Unavailable(ref source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "database unavailable");
                tonic::Status::unavailable(message)
            }
            Error::StorageFull(ref source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "database disk full");
                tonic::Status::unavailable(message)
            }
            Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::Internal(ref source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_keeps_short_input_whole() {
        assert_eq!(echo("update_mask").to_string(), "update_mask");
        let exact = "é".repeat(ECHO_MAX_CHARS);
        assert_eq!(echo(&exact).to_string(), exact);
    }

    #[test]
    fn echo_cuts_long_input_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let shown = echo(&long).to_string();
        assert_eq!(shown.chars().count(), ECHO_MAX_CHARS + 1);
        assert!(shown.ends_with("é…"));
    }
}
