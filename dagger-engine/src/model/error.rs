//! The error every layer reports: a message and optional typed details (`_type: "EXEC_ERROR"`, …), which
//! the GraphQL layer puts into a response's `errors` as they are.

use serde_json::{Map, Value};

/// An error of one field, with optional extensions (`_type: "EXEC_ERROR"`, …).
#[derive(Debug, Clone)]
pub struct FieldError {
    /// The message.
    pub message: String,
    /// Extra, typed details.
    pub extensions: Option<Map<String, Value>>,
}

impl FieldError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            extensions: None,
        }
    }
}

impl<E: std::fmt::Display> From<E> for FieldError {
    fn from(e: E) -> Self {
        FieldError::new(e.to_string())
    }
}
