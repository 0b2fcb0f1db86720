//! Strategy 1: an endpoint given explicitly to [`ConnectionBuilder::endpoint`](crate::ConnectionBuilder::endpoint).

use super::{Endpoint, Options};
use crate::error::SessionError;

/// The explicit endpoint, checked, if one was given.
pub(crate) fn endpoint(opts: &Options) -> Result<Option<Endpoint>, SessionError> {
    let Some((url, token)) = &opts.endpoint else {
        return Ok(None);
    };
    let base = url.trim_end_matches('/');
    let base = base.strip_suffix("/query").unwrap_or(base);
    if !base.starts_with("http://") {
        return Err(SessionError::BadUrl {
            url: url.clone(),
            reason: "only `http://HOST:PORT` endpoints are supported (sessions listen on loopback, without TLS)"
                .to_owned(),
        });
    }
    if base.len() <= "http://".len() {
        return Err(SessionError::BadUrl {
            url: url.clone(),
            reason: "it names no host".to_owned(),
        });
    }
    Ok(Some(Endpoint {
        base: base.to_owned(),
        token: token.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> Options {
        Options {
            endpoint: Some((url.to_owned(), "t".to_owned())),
            ..Options::default()
        }
    }

    #[test]
    fn accepts_base_and_query_urls() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/query",
        ] {
            let e = endpoint(&opts(url)).expect("valid").expect("some");
            assert_eq!(e.base, "http://127.0.0.1:8080");
        }
        assert!(endpoint(&Options::default()).expect("ok").is_none());
    }

    #[test]
    fn rejects_other_schemes() {
        let err = endpoint(&opts("https://example.com")).expect_err("https");
        assert!(err.to_string().contains("only `http://HOST:PORT`"), "{err}");
    }
}
