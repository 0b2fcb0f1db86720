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

#[cfg(test)]
mod tests {
    //! Secrets by URI and by value: no runtime, no root.

    use super::*;
    use crate::ops::op::testing::{engine, object};

    #[test]
    fn uris_name_an_environment_variable_or_a_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file").expect("write");
        assert_eq!(
            read_secret_uri(&format!("file://{}", path.display())).map_err(|e| e.message),
            Ok("from-a-file".to_owned())
        );
        // PATH is set in every test environment.
        assert_eq!(read_secret_uri("env://PATH").ok(), std::env::var("PATH").ok());
        let unset = read_secret_uri("env://DAGGER_RS_TEST_SURELY_UNSET_1234").expect_err("unset");
        assert!(unset.message.contains("is not set"), "{}", unset.message);
        let missing = read_secret_uri("file:///nonexistent/secret").expect_err("missing");
        assert!(
            missing.message.contains("cannot read /nonexistent/secret"),
            "{}",
            missing.message
        );
        let other = read_secret_uri("vault://x").expect_err("unsupported scheme");
        assert!(other.message.contains("env://NAME"), "{}", other.message);
    }

    #[tokio::test]
    async fn a_set_secret_is_read_from_session_memory_and_otherwise_names_the_fix() {
        let dir = tempfile::tempdir().expect("dir");
        let e = engine(&dir);
        let v = Evaluated::Secret {
            name: "token".into(),
            uri: String::new(),
        };
        let d = object(&e, v.clone());
        let lost = secret_plaintext(&e, &d).await.expect_err("not in memory");
        assert!(
            lost.message.contains("set it again with `setSecret`"),
            "{}",
            lost.message
        );
        e.set_secret(&d, "hunter2".into());
        assert_eq!(
            secret_plaintext(&e, &d).await.map_err(|e| e.message),
            Ok("hunter2".to_owned())
        );
        assert_eq!(
            leaf(&e, SecretField::Plaintext, &v, &d).await.map_err(|e| e.message),
            Ok(json!("hunter2"))
        );
        assert_eq!(
            leaf(&e, SecretField::Name, &v, &d).await.map_err(|e| e.message),
            Ok(json!("token"))
        );
        let id = leaf(&e, SecretField::Id, &v, &d)
            .await
            .expect_err("id is answered by the resolver");
        assert!(id.message.contains("`Secret.id`"), "{}", id.message);
    }
}
