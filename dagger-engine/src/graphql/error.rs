//! The error of one field in a GraphQL response: a message and optional typed details
//! (`_type: "EXEC_ERROR"`, …), put into the response's `errors` as they are. The layers below have their own
//! error types, turned into this one here, once.

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

impl From<crate::ops::error::OpError> for FieldError {
    fn from(e: crate::ops::error::OpError) -> Self {
        let extensions = e.exec.map(|f| {
            let mut ext = Map::new();
            ext.insert("_type".into(), Value::from("EXEC_ERROR"));
            ext.insert("cmd".into(), Value::from(f.cmd.clone()));
            ext.insert("exitCode".into(), Value::from(f.exit_code));
            ext.insert("stdout".into(), Value::from(f.stdout.clone()));
            ext.insert("stderr".into(), Value::from(f.stderr.clone()));
            ext
        });
        FieldError {
            message: e.message,
            extensions,
        }
    }
}

impl From<crate::model::ids::IdError> for FieldError {
    fn from(e: crate::model::ids::IdError) -> Self {
        FieldError::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::error::{ExecFailure, OpError};

    #[test]
    fn an_exec_failure_becomes_the_exec_error_extensions_the_sdks_read() {
        let failure = ExecFailure {
            cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
            exit_code: 3,
            stdout: "out".into(),
            stderr: "err".into(),
        };
        let e = FieldError::from(OpError::exec("process failed", failure));
        assert_eq!(e.message, "process failed");
        let ext = e.extensions.expect("extensions");
        assert_eq!(ext["_type"], "EXEC_ERROR");
        assert_eq!(ext["exitCode"], 3);
        assert_eq!(
            (ext["stdout"].as_str(), ext["stderr"].as_str()),
            (Some("out"), Some("err"))
        );
        assert_eq!(ext["cmd"], serde_json::json!(["sh", "-c", "exit 3"]));
        let plain = FieldError::from(OpError::new("no such file"));
        assert_eq!(
            (plain.message.as_str(), plain.extensions.is_none()),
            ("no such file", true)
        );
    }
}
