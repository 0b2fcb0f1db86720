//! `Secret`: secrets by name and URI (`env://`, `file://`) or set by value; plaintexts stay in session
//! memory, never on disk or in an ID.

use std::sync::Arc;

use crate::model::ids::Digest;
use crate::ops::error::OpError;

use crate::ops::engine::Engine;
use crate::ops::fields::SecretField;
use crate::ops::value::Evaluated;
use serde_json::{Value, json};

/// The current value behind an `env://NAME` or `file://PATH` secret URI.
pub(crate) fn read_secret_uri(uri: &str) -> Result<String, OpError> {
    if let Some(var) = uri.strip_prefix("env://") {
        return std::env::var(var)
            .map_err(|_| OpError::new(format!("secret `{uri}`: the environment variable `{var}` is not set")));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map_err(|e| OpError::new(format!("secret `{uri}`: cannot read {path}: {e}")));
    }
    Err(OpError::new(format!(
        "secret URI `{uri}` is not supported: use `env://NAME` or `file://PATH`"
    )))
}

/// The plaintext of a secret object: from session memory (`setSecret`), else read from its URI now.
pub(crate) async fn secret_plaintext(engine: &Arc<Engine>, d: &Digest) -> Result<String, OpError> {
    if let Some(p) = engine.secret(d) {
        return Ok(p);
    }
    let v = engine.eval(d).await?;
    let Evaluated::Secret { uri, name } = &*v else {
        return Err(OpError::new("not a secret"));
    };
    if uri.is_empty() {
        return Err(OpError::new(format!(
            "the value of secret `{name}` was set in another session and is not kept; set it again with `setSecret`"
        )));
    }
    read_secret_uri(uri)
}

/// Computes a leaf of the secret `v`, the object `d`.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    field: SecretField,
    v: &Evaluated,
    d: &Digest,
) -> Result<Value, OpError> {
    let Evaluated::Secret { name, uri } = v else {
        return Err(OpError::new("internal error: expected a secret"));
    };
    Ok(match field {
        SecretField::Name => json!(name),
        SecretField::Uri => json!(uri),
        SecretField::Plaintext => json!(secret_plaintext(engine, d).await?),
        other => return Err(OpError::unsupported("Secret", other.name())),
    })
}
