//! The service-level error and the single place that turns it into a
//! `tonic::Status`; the HTTP listener's status codes follow from the gRPC
//! code chosen here, so the two listeners never disagree.

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

/// An error followed by each of its sources, `: `-separated, for logs.
/// `RepoError` and friends display only their outermost layer ("database
/// error"); the cause an operator needs is further down the chain.
pub(crate) fn chain(error: &dyn std::error::Error) -> Chain<'_> {
    Chain(error)
}

/// See [`chain`].
pub(crate) struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
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
                tracing::error!(error = %chain(source.as_ref()), "database unavailable");
                tonic::Status::unavailable(message)
            }
            Error::StorageFull(ref source) => {
                tracing::error!(error = %chain(source.as_ref()), "database disk full");
                tonic::Status::unavailable(message)
            }
            Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::Internal(ref source) => {
                tracing::error!(error = %chain(source.as_ref()), "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

impl Error {
    /// What the HTTP listener answers for this error: the status that
    /// follows from its gRPC code (see [`http_status`]) and the same
    /// message a gRPC caller would get. Internal errors are logged here, by
    /// the conversion into `tonic::Status`, as on the gRPC listener.
    pub fn into_http(self) -> (http::StatusCode, String) {
        let status = tonic::Status::from(self);
        (http_status(status.code()), status.message().to_owned())
    }
}

/// The HTTP status for a gRPC code. The HTTP listener serves confirmation
/// links, so a failed precondition there is a link that no longer applies
/// (used, expired or replaced): 410 Gone.
fn http_status(code: tonic::Code) -> http::StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument => http::StatusCode::BAD_REQUEST,
        Code::NotFound => http::StatusCode::NOT_FOUND,
        Code::FailedPrecondition => http::StatusCode::GONE,
        Code::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        _ => http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_follow_the_grpc_codes() {
        let cases = [
            (Error::invalid("token", "must not be empty"), 400),
            (Error::NotFound("unknown confirmation token".into()), 404),
            (Error::FailedPrecondition("the link was used".into()), 410),
            (Error::Unavailable("connection refused".into()), 503),
            (Error::StorageFull("no space left on device".into()), 503),
            (Error::ShuttingDown, 503),
            (Error::internal("a bug"), 500),
        ];
        for (error, expected) in cases {
            let shown = format!("{error:?}");
            assert_eq!(error.into_http().0.as_u16(), expected, "{shown}");
        }
    }

    #[test]
    fn http_messages_are_the_grpc_ones_and_hide_internals() {
        let (_, message) = Error::invalid("token", "must not be empty").into_http();
        assert_eq!(message, "token: must not be empty");
        let (_, message) = Error::internal("SELECT failed on table secrets").into_http();
        assert_eq!(message, "internal error");
        let (_, message) = Error::Unavailable("password authentication failed".into()).into_http();
        assert_eq!(message, "the database is unavailable");
    }

    #[test]
    fn chain_shows_every_source_in_order() {
        #[derive(Debug, thiserror::Error)]
        #[error("database error")]
        struct Outer(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("connection lost")]
        struct Middle(#[source] std::io::Error);
        let error = Outer(Middle(std::io::Error::other("broken pipe")));
        assert_eq!(
            chain(&error).to_string(),
            "database error: connection lost: broken pipe"
        );
        assert_eq!(chain(&std::io::Error::other("alone")).to_string(), "alone");
    }

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
