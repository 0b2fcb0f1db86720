//! Object identity: every object is the call that produced it, and its ID is a digest of that call.
//!
//! A [`Call`] names its parent object (by digest), the field, and the arguments, with object arguments
//! replaced by their digests. Its canonical JSON is hashed, so the same pipeline gives the same digest in
//! every session, and the digest doubles as the cache key of the object's result. IDs on the wire are
//! `<Type>:<digest>`; the engine keeps the call behind each digest (in memory and in the cache directory) so
//! `node(id:)` can load it back.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest (SHA-256, lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(bytes);
        Digest(hex(&h.finalize()))
    }

    /// The digest of everything fed to `hasher` (for content that is streamed rather than held in memory).
    pub fn of_hasher(hasher: Sha256) -> Self {
        Digest(hex(&hasher.finalize()))
    }

    /// A digest computed elsewhere (a MAC), from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Digest(hex(bytes))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a hex digest, refusing anything that is not 64 lowercase hex characters (it names files).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The call that produced an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The GraphQL type of the object this call returns.
    #[serde(rename = "t")]
    pub type_name: String,
    /// The object the field was called on (`None` for fields of `Query`).
    #[serde(rename = "p", skip_serializing_if = "Option::is_none", default)]
    pub parent: Option<Digest>,
    /// The field name.
    #[serde(rename = "f")]
    pub field: String,
    /// The arguments, defaults applied, object arguments as `{"$id": digest}`; sorted by name.
    #[serde(rename = "a", skip_serializing_if = "BTreeMap::is_empty", default)]
    pub args: BTreeMap<String, serde_json::Value>,
}

impl Call {
    /// The call's digest: its identity and cache key.
    pub fn digest(&self) -> Digest {
        // Structs serialize in field order and `args` is a BTreeMap. JSON objects inside argument values keep
        // the order they were written in whenever serde_json's `preserve_order` is on (any crate in a build can
        // turn it on), so they are sorted here: an input object written `{a, b}` or `{b, a}` is the same call.
        let canonical = Call {
            args: self.args.iter().map(|(k, v)| (k.clone(), sorted(v))).collect(),
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        Digest::of(&bytes)
    }

    /// The digests of the objects this call depends on: its parent and its object arguments.
    pub fn inputs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.parent.iter().cloned().collect();
        for v in self.args.values() {
            collect_ids(v, &mut out);
        }
        out
    }
}

/// A copy of `v` whose objects list their keys in sorted order, at every depth.
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn collect_ids(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(d) = m.get("$id").and_then(|d| d.as_str()).and_then(Digest::parse) {
                out.push(d);
            } else {
                m.values().for_each(|v| collect_ids(v, out));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_ids(v, out)),
        _ => {}
    }
}

/// The wire form of an ID: `<Type>:<digest>`.
pub fn format_id(type_name: &str, digest: &Digest) -> String {
    format!("{type_name}:{digest}")
}

/// Why an ID string is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Not of the `<Type>:<digest>` form.
    #[error("`{0}` is not an ID of this engine (expected `<Type>:<sha256>`, as returned by an `id` field)")]
    Garbled(String),
    /// An ID of another type than the argument accepts.
    #[error("the ID `{id}` is a `{actual}`, but a `{expected}` is expected here")]
    WrongType {
        /// The ID.
        id: String,
        /// Its type.
        actual: String,
        /// The expected type.
        expected: String,
    },
}

/// Splits a wire ID into its type and digest.
pub fn parse_id(id: &str) -> Result<(String, Digest), IdError> {
    let garbled = || IdError::Garbled(shorten(id));
    let (ty, digest) = id.split_once(':').ok_or_else(garbled)?;
    if ty.is_empty() || !ty.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(garbled());
    }
    let digest = Digest::parse(digest).ok_or_else(garbled)?;
    Ok((ty.to_owned(), digest))
}

/// An ID string cut to a readable length for messages.
pub fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_deterministic_and_sensitive() {
        let call = |v: &str| Call {
            type_name: "Directory".into(),
            parent: None,
            field: "withNewFile".into(),
            args: BTreeMap::from([("path".into(), serde_json::json!(v))]),
        };
        assert_eq!(call("a").digest(), call("a").digest());
        assert_ne!(call("a").digest(), call("b").digest());
    }

    #[test]
    fn input_objects_written_in_any_order_are_the_same_call() {
        let call = |v: serde_json::Value| Call {
            type_name: "Container".into(),
            parent: None,
            field: "build".into(),
            args: BTreeMap::from([("buildArgs".into(), v)]),
        };
        let ab: serde_json::Value = serde_json::from_str(r#"[{"name":"A","value":{"x":1,"y":2}}]"#).unwrap_or_default();
        let ba: serde_json::Value = serde_json::from_str(r#"[{"value":{"y":2,"x":1},"name":"A"}]"#).unwrap_or_default();
        assert_eq!(call(ab).digest(), call(ba).digest());
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let d = Digest::of(b"x");
        let id = format_id("File", &d);
        assert_eq!(parse_id(&id), Ok(("File".to_owned(), d)));
        for bad in ["", "File", "File:xyz", ":abc", "12345", "Fi le:00"] {
            assert!(matches!(parse_id(bad), Err(IdError::Garbled(_))), "{bad}");
        }
    }
}
