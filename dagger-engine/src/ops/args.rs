//! Reading a field's arguments (coerced JSON, object arguments as `{"$id": digest}`), and the error for a
//! field this engine does not implement.

use serde_json::{Map, Value};

use crate::model::error::FieldError;
use crate::model::ids::Digest;

/// The error for a field this engine does not implement.
pub(crate) fn unsupported(type_name: &str, field: &str) -> FieldError {
    FieldError::new(format!("`{type_name}.{field}` is not supported by this engine yet"))
}

/// A string argument (empty when absent).
pub(crate) fn s<'a>(args: &'a Map<String, Value>, k: &str) -> &'a str {
    args.get(k).and_then(Value::as_str).unwrap_or("")
}

/// An integer argument.
pub(crate) fn i(args: &Map<String, Value>, k: &str) -> Option<i64> {
    args.get(k).and_then(Value::as_i64)
}

/// A boolean argument (false when absent).
pub(crate) fn b(args: &Map<String, Value>, k: &str) -> bool {
    args.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// A list-of-strings argument (empty when absent).
pub(crate) fn strings(args: &Map<String, Value>, k: &str) -> Vec<String> {
    args.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The digest of an object argument (normalized to `{"$id": digest}`).
pub(crate) fn digest_arg(args: &Map<String, Value>, k: &str) -> Option<Digest> {
    args.get(k)?.get("$id")?.as_str().and_then(Digest::parse)
}
