//! A fact that may be unknown, with the reason it is unknown.

use serde::{Deserialize, Serialize};

/// One fact read from a host. A fact that cannot be read is not an error for the probe as a
/// whole: it is `Unknown`, with the reason (missing file, permission, garbage) so that a reader
/// can tell "absent" from "not looked at".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact<T> {
    /// The value as read.
    Known(T),
    /// Why the value could not be read.
    Unknown(String),
}

impl<T> Fact<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Fact::Known(value) => Some(value),
            Fact::Unknown(_) => None,
        }
    }

    pub fn is_known(&self) -> bool {
        matches!(self, Fact::Known(_))
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fact<U> {
        match self {
            Fact::Known(value) => Fact::Known(f(value)),
            Fact::Unknown(reason) => Fact::Unknown(reason),
        }
    }

    pub fn and_then<U>(self, f: impl FnOnce(T) -> Fact<U>) -> Fact<U> {
        match self {
            Fact::Known(value) => f(value),
            Fact::Unknown(reason) => Fact::Unknown(reason),
        }
    }
}

impl<T, E: std::fmt::Display> From<Result<T, E>> for Fact<T> {
    fn from(result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Fact::Known(value),
            Err(error) => Fact::Unknown(error.to_string()),
        }
    }
}
