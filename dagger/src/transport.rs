//! HTTP transport: POST a GraphQL document to the session's `/query` endpoint and decode the answer.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, ExecError};

/// The longest excerpt of an unexpected body that goes into an error message.
const EXCERPT: usize = 300;

/// A live session: where to send queries and how to authenticate.
///
/// Shared by every object built from one connection. It also owns whatever keeps the session alive (a CLI
/// child process, an in-process engine), so the session ends when the last object is dropped.
pub(crate) struct Transport {
    http: reqwest::Client,
    url: String,
    token: String,
    traceparent: Option<String>,
    _keepalive: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output.
        f.debug_struct("Transport")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A cheap handle on a [`Transport`].
pub(crate) type Client = Arc<Transport>;

/// One entry of a GraphQL response's `errors` list.
#[derive(Clone, Debug, Deserialize)]
pub struct GraphQlError {
    /// The error message.
    pub message: String,
    /// The response path of the failed field.
    #[serde(default)]
    pub path: Vec<serde_json::Value>,
    /// Extra, typed details (`_type: "EXEC_ERROR"` for failed commands).
    #[serde(default)]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl GraphQlError {
    /// The path as strings (list indexes printed as numbers).
    pub fn path_strings(&self) -> Vec<String> {
        self.path
            .iter()
            .map(|p| match p {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// Turns the error into the SDK's typed error: an [`ExecError`] when the extensions say so.
    pub fn into_error(self) -> Error {
        if let Some(ext) = &self.extensions
            && ext.get("_type").and_then(|t| t.as_str()) == Some("EXEC_ERROR")
        {
            let text = |k: &str| ext.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let cmd = ext
                .get("cmd")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect())
                .unwrap_or_default();
            return Error::Exec(ExecError {
                cmd,
                exit_code: ext.get("exitCode").and_then(|v| v.as_i64()).unwrap_or(-1),
                stdout: text("stdout"),
                stderr: text("stderr"),
                message: self.message,
            });
        }
        let path = self.path_strings();
        Error::Query {
            message: self.message,
            path,
        }
    }
}

/// A decoded GraphQL response: the data (possibly partial) and the errors.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Response {
    /// The `data` object (`null` when the whole request failed).
    #[serde(default)]
    pub data: serde_json::Value,
    /// The `errors` list, empty on success.
    #[serde(default)]
    pub errors: Vec<GraphQlError>,
}

impl Response {
    /// The data, or the first error as a typed [`Error`].
    pub fn into_data(mut self) -> Result<serde_json::Value, Error> {
        if self.errors.is_empty() {
            Ok(self.data)
        } else {
            Err(self.errors.swap_remove(0).into_error())
        }
    }
}

impl Transport {
    /// A transport to the engine at `base` (`http://127.0.0.1:PORT`), authenticating with `token`.
    pub(crate) fn new(base: &str, token: String, keepalive: Option<Box<dyn Any + Send + Sync>>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            // The engine is on loopback: a proxy from the environment must never sit in between.
            .no_proxy()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| Error::Connect {
                url: base.to_owned(),
                source,
            })?;
        let traceparent = std::env::var("TRACEPARENT").ok().filter(|t| !t.is_empty());
        Ok(Self {
            http,
            url: format!("{}/query", base.trim_end_matches('/')),
            token,
            traceparent,
            _keepalive: keepalive,
        })
    }

    /// The `/query` URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Sends one document and returns the decoded response, GraphQL errors included.
    pub(crate) async fn request(&self, document: &str) -> Result<Response, Error> {
        self.request_with(document, serde_json::Map::new()).await
    }

    /// Sends one document with `extensions` (none when empty). The embedded engine and `dagger-rs` read two,
    /// for progress and reports: `serves` (root response key → what that field serves, such as a `pipeline!`
    /// output's name) and `pipeline` (the graph of the pipeline being run); other engines ignore them.
    pub(crate) async fn request_with(
        &self,
        document: &str,
        extensions: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Response, Error> {
        let body = if extensions.is_empty() {
            serde_json::json!({ "query": document })
        } else {
            serde_json::json!({ "query": document, "extensions": extensions })
        };
        let mut req = self
            .http
            .post(&self.url)
            .basic_auth(&self.token, Some(""))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(tp) = &self.traceparent {
            req = req.header("traceparent", tp);
        }
        let resp = req.send().await.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })?;
        if status == 401 {
            return Err(Error::Unauthorized { url: self.url.clone() });
        }
        let decoded = decode_response(&bytes);
        match decoded {
            // Some servers answer GraphQL errors with a 4xx status; the errors say more than the status.
            Ok(r) if status == 200 || !r.errors.is_empty() => Ok(r),
            _ if status != 200 => Err(Error::Http {
                url: self.url.clone(),
                status,
                body: excerpt(&bytes),
            }),
            Ok(r) => Ok(r),
            Err(e) => Err(Error::Decode {
                message: format!("not a GraphQL JSON response ({e})"),
                body: excerpt(&bytes),
            }),
        }
    }
}

/// Decodes a response body. Every chained call nests the answer one level deeper, so serde_json's default
/// nesting limit (128) is lifted: pipelines chain hundreds of calls.
fn decode_response(bytes: &[u8]) -> Result<Response, serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let r = Response::deserialize(&mut de)?;
    de.end()?;
    Ok(r)
}

/// The start of a body, lossily decoded, for error messages.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(an empty body)".to_owned();
    }
    match text.char_indices().nth(EXCERPT) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Walks `data` along `path` and returns the value found there.
pub(crate) fn extract(mut data: serde_json::Value, path: &[&str]) -> Result<serde_json::Value, Error> {
    for (i, key) in path.iter().enumerate() {
        let is_last = i + 1 == path.len();
        data = match data {
            serde_json::Value::Object(mut map) => match map.remove(*key) {
                Some(serde_json::Value::Null) if !is_last => {
                    return Err(Error::Query {
                        message: format!("`{key}` returned null, so nothing below it can be read"),
                        path: path[..=i].iter().map(|s| (*s).to_owned()).collect(),
                    });
                }
                Some(v) => v,
                None => {
                    return Err(Error::MissingData {
                        path: path[..=i].join("."),
                    });
                }
            },
            _ => {
                return Err(Error::MissingData {
                    path: path[..=i].join("."),
                });
            }
        };
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_error_extensions_become_exec_error() {
        let r: Response = serde_json::from_str(
            r#"{"data":null,"errors":[{"message":"exit code: 3","path":["container","withExec","stdout"],
            "extensions":{"_type":"EXEC_ERROR","cmd":["sh","-c","exit 3"],"exitCode":3,"stdout":"o","stderr":"e"}}]}"#,
        )
        .expect("valid");
        match r.into_data() {
            Err(Error::Exec(e)) => {
                assert_eq!(e.cmd, vec!["sh", "-c", "exit 3"]);
                assert_eq!((e.exit_code, e.stdout.as_str(), e.stderr.as_str()), (3, "o", "e"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn extract_reports_missing_and_null() {
        let data = serde_json::json!({"a": {"b": null}});
        assert!(matches!(extract(data.clone(), &["a", "c"]), Err(Error::MissingData { path }) if path == "a.c"));
        assert!(matches!(
            extract(data.clone(), &["a", "b", "c"]),
            Err(Error::Query { .. })
        ));
        assert_eq!(extract(data, &["a", "b"]).expect("null leaf"), serde_json::Value::Null);
    }
}
