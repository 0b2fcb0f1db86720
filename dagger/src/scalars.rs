//! Custom scalars of the API: `ID`, `Platform` and `JSON`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The opaque ID of a pipeline object, as the engine hands it out.
///
/// IDs are deterministic: the same pipeline yields the same ID, so they are safe to store and compare. Load an
/// object back from its ID with the `Query::load_*_from_id` methods.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// The ID as the engine wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the ID, returning its string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A platform in OCI notation, such as `linux/amd64` or `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Platform(pub String);

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Platform {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Platform {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// An arbitrary JSON value carried by the `JSON` scalar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(pub serde_json::Value);

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
