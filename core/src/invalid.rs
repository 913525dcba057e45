//! The one error a value parser returns.

use std::fmt;

/// Why a value was refused: one clear sentence WITHOUT the field name (the
/// caller attaches the field), e.g. "must be 2..63 characters of a-z, 0-9,
/// '_' and '-', starting with a letter or digit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl InvalidValue {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidValue {}
