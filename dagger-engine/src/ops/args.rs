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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_read_with_defaults_for_what_is_absent_or_of_another_type() {
        let d = Digest::of(b"x");
        let args = json!({
            "path": "a/b", "n": 7, "yes": true, "list": ["x", 1, "y"],
            "obj": { "$id": d.as_str() }, "bad": { "$id": "not-a-digest" },
        });
        let args = args.as_object().expect("object");
        assert_eq!((s(args, "path"), s(args, "missing"), s(args, "n")), ("a/b", "", ""));
        assert_eq!((i(args, "n"), i(args, "path")), (Some(7), None));
        assert_eq!((b(args, "yes"), b(args, "missing"), b(args, "n")), (true, false, false));
        assert_eq!(strings(args, "list"), ["x", "y"]);
        assert!(strings(args, "path").is_empty());
        assert_eq!(digest_arg(args, "obj"), Some(d));
        assert_eq!(digest_arg(args, "bad"), None, "a malformed digest never names a file");
        assert_eq!(
            unsupported("Container", "asService").message,
            "`Container.asService` is not supported by this engine yet"
        );
    }
}
