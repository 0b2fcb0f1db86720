//! Reading a field's arguments: the [`Arg`] conversions the generated [`crate::ops::fields`] structs use
//! (coerced JSON in, object arguments as `{"$id": digest}`), the error for arguments that do not fit, and the
//! error for a field this engine does not implement.

use serde_json::{Map, Value};

use crate::model::ids::Digest;

/// Arguments that do not fit the schema. The executor checks arguments against their types before any field
/// runs, so this means a call record read back from the store that an older engine wrote differently.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ArgError {
    /// The type has no such field.
    #[error("type `{type_name}` has no field `{field}`")]
    UnknownField {
        /// The object type.
        type_name: &'static str,
        /// The field asked for.
        field: String,
    },
    /// No such object type.
    #[error("the core API has no object type `{0}`")]
    UnknownType(String),
    /// An argument of the wrong type.
    #[error("arguments of `{field}`: {reason}")]
    Invalid {
        /// `Type.field`.
        field: &'static str,
        /// What did not fit.
        reason: String,
    },
}

/// Makes the error for the arguments of `field` (`Type.field`) that do not fit.
pub(crate) fn invalid(field: &'static str) -> impl FnOnce(String) -> ArgError {
    move |reason| ArgError::Invalid { field, reason }
}

/// A Rust value read from an argument's coerced JSON.
pub(crate) trait Arg: Sized {
    /// Reads the value, or says what was found instead.
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl Arg for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("expected a string, got {v}"))
    }
}

impl Arg for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        v.as_i64().ok_or_else(|| format!("expected an integer, got {v}"))
    }
}

impl Arg for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| format!("expected a boolean, got {v}"))
    }
}

impl Arg for Value {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}

impl Arg for Digest {
    fn from_value(v: &Value) -> Result<Self, String> {
        v.get("$id")
            .and_then(Value::as_str)
            .and_then(Digest::parse)
            .ok_or_else(|| format!("expected an object ID, got {v}"))
    }
}

impl<T: Arg> Arg for Vec<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items.iter().map(T::from_value).collect(),
            other => Ok(vec![T::from_value(other)?]),
        }
    }
}

/// A non-null argument without a default. An absent one reads as its type's zero value, except an object
/// (which has none): the executor has already refused requests without it, so only a call the engine stored
/// without it (`setSecret` keeps its plaintext out of the record) gets here.
pub(crate) fn required<T: Arg + ZeroOr>(m: &Map<String, Value>, k: &str) -> Result<T, String> {
    match m.get(k) {
        None | Some(Value::Null) => T::zero().ok_or_else(|| "missing".to_owned()),
        Some(v) => T::from_value(v),
    }
}

/// A nullable argument without a default.
pub(crate) fn optional<T: Arg>(m: &Map<String, Value>, k: &str) -> Result<Option<T>, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::from_value(v).map(Some),
    }
}

/// An argument with a default, applied when the argument is absent or null.
pub(crate) fn or_default<T: Arg>(m: &Map<String, Value>, k: &str, default: impl FnOnce() -> T) -> Result<T, String> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(default()),
        Some(v) => T::from_value(v),
    }
}

/// The value an absent required argument reads as, if its type has one.
pub(crate) trait ZeroOr: Sized {
    /// The zero value, or `None` for objects.
    fn zero() -> Option<Self>;
}

macro_rules! zero_is_default {
    ($($t:ty),*) => {$(
        impl ZeroOr for $t {
            fn zero() -> Option<Self> {
                Some(Default::default())
            }
        }
    )*};
}
zero_is_default!(String, i64, bool, Value);

impl<T> ZeroOr for Vec<T> {
    fn zero() -> Option<Self> {
        Some(Vec::new())
    }
}

macro_rules! no_zero {
    ($($t:ident),*) => {$(
        impl ZeroOr for $t {
            fn zero() -> Option<Self> {
                None
            }
        }
    )*};
}
no_zero!(Digest);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_read_as_their_types_with_defaults_for_what_is_absent() {
        let d = Digest::of(b"x");
        let args = json!({
            "path": "a/b", "n": 7, "yes": true, "list": ["x", "y"], "one": "z", "nothing": null,
            "obj": { "$id": d.as_str() }, "bad": { "$id": "not-a-digest" },
        });
        let m = args.as_object().expect("object");
        assert_eq!(required::<String>(m, "path"), Ok("a/b".to_owned()));
        assert_eq!(required::<String>(m, "missing"), Ok(String::new()));
        assert!(required::<String>(m, "n").is_err_and(|e| e.contains("expected a string")));
        assert_eq!(optional::<i64>(m, "n"), Ok(Some(7)));
        assert_eq!(optional::<i64>(m, "nothing"), Ok(None));
        assert_eq!(or_default(m, "missing", || 420i64), Ok(420));
        assert_eq!(or_default(m, "yes", || false), Ok(true));
        assert_eq!(
            required::<Vec<String>>(m, "list"),
            Ok(vec!["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(
            required::<Vec<String>>(m, "one"),
            Ok(vec!["z".to_owned()]),
            "a single value is a list of one"
        );
        assert_eq!(required::<Digest>(m, "obj"), Ok(d));
        assert_eq!(
            required::<Digest>(m, "missing"),
            Err("missing".to_owned()),
            "objects have no zero value"
        );
        assert!(
            required::<Digest>(m, "bad").is_err(),
            "a malformed digest never names a file"
        );
    }
}
