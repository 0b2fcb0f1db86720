//! Strategy 2: `DAGGER_SESSION_PORT` and `DAGGER_SESSION_TOKEN`, set by `dagger run` and `dagger-rs run`.

use super::{Endpoint, EnvLookup};
use crate::error::SessionError;

/// The session named by the environment; a bad port or a missing token is an error, not a fallthrough.
pub(crate) fn endpoint(env: EnvLookup<'_>) -> Result<Option<Endpoint>, SessionError> {
    let Some(port) = env("DAGGER_SESSION_PORT") else {
        return Ok(None);
    };
    let parsed = port.trim().parse::<u16>().ok().filter(|p| *p != 0);
    let Some(port) = parsed else {
        return Err(SessionError::BadPort { value: port });
    };
    let Some(token) = env("DAGGER_SESSION_TOKEN") else {
        return Err(SessionError::MissingToken);
    };
    Ok(Some(Endpoint {
        base: format!("http://127.0.0.1:{port}"),
        token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn unset_port_falls_through() {
        assert!(
            endpoint(&lookup(&[("DAGGER_SESSION_TOKEN", "t")]))
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn port_and_token_make_an_endpoint() {
        let e = endpoint(&lookup(&[
            ("DAGGER_SESSION_PORT", "4242"),
            ("DAGGER_SESSION_TOKEN", "t"),
        ]))
        .expect("ok")
        .expect("some");
        assert_eq!((e.base.as_str(), e.token.as_str()), ("http://127.0.0.1:4242", "t"));
    }

    #[test]
    fn bad_ports_are_errors() {
        for bad in ["abc", "0", "70000", "-1", "12.5"] {
            let err = endpoint(&lookup(&[("DAGGER_SESSION_PORT", bad), ("DAGGER_SESSION_TOKEN", "t")])).expect_err(bad);
            assert!(
                matches!(err, SessionError::BadPort { ref value } if value == bad),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_token_is_an_error() {
        let err = endpoint(&lookup(&[("DAGGER_SESSION_PORT", "4242")])).expect_err("no token");
        assert!(matches!(err, SessionError::MissingToken));
    }
}
