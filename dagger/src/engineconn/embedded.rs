//! Strategy 4: the engine, started in this process (feature `embedded`).
//!
//! It serves the same HTTP protocol on a loopback port with a random token, so the rest of the SDK does not
//! know the difference. Engine progress events go to the connection's log sink.

use super::{Endpoint, Options};
use crate::error::SessionError;
use crate::logs::Logs;

/// Keeps the in-process engine running; dropping it stops the server.
pub(crate) struct EmbeddedGuard {
    _session: dagger_engine::Session,
}

/// Starts the engine on `127.0.0.1:0`.
pub(crate) async fn start(opts: &Options, logs: &Logs) -> Result<(Endpoint, EmbeddedGuard), SessionError> {
    let mut config = dagger_engine::Config::load().map_err(|e| SessionError::Embedded {
        source: std::io::Error::other(e),
    })?;
    if let Some(dir) = &opts.workdir {
        config.workdir = dir.clone();
    }
    let session = dagger_engine::Session::start(config)
        .await
        .map_err(|source| SessionError::Embedded { source })?;
    if logs.0.is_some() {
        let mut events = session.engine.subscribe();
        let logs = logs.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                logs.line(&event.to_string());
            }
        });
    }
    Ok((
        Endpoint {
            base: session.url(),
            token: session.token.clone(),
        },
        EmbeddedGuard { _session: session },
    ))
}
