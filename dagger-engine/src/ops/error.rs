//! The error of the operations layer: a message for the client and, for a process that did not end as
//! expected, its details. The GraphQL layer turns it into a response error once, at the top (an exec
//! failure becomes the `EXEC_ERROR` extensions the official SDKs read).

use std::sync::Arc;

use crate::model::ids::IdError;
use crate::model::tree::PathError;
use crate::ops::args::ArgError;
use crate::solver::SolverError;
use crate::store::StoreError;
use crate::worker::cache_volume::CacheVolumeError;
use crate::worker::oci::OciError;
use crate::worker::snapshot::SnapshotError;

/// An operation's error. Cloned to every request that shares the evaluation that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct OpError {
    /// What went wrong, as the client reads it.
    pub(crate) message: String,
    /// For a failed process: its command, exit code and output.
    pub(crate) exec: Option<Arc<ExecFailure>>,
}

/// A process that did not end as its `withExec` expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecFailure {
    /// The command, as given.
    pub(crate) cmd: Vec<String>,
    /// Its exit code.
    pub(crate) exit_code: i32,
    /// Its standard output (secrets scrubbed).
    pub(crate) stdout: String,
    /// Its standard error (secrets scrubbed).
    pub(crate) stderr: String,
}

impl OpError {
    /// An error with a message only.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exec: None,
        }
    }

    /// The error for a field this engine does not implement.
    pub(crate) fn unsupported(type_name: &str, field: &str) -> Self {
        Self::new(format!("`{type_name}.{field}` is not supported by this engine yet"))
    }

    /// The error of a process that did not end as expected.
    pub(crate) fn exec(message: impl Into<String>, failure: ExecFailure) -> Self {
        Self {
            message: message.into(),
            exec: Some(Arc::new(failure)),
        }
    }
}

/// The errors of the layers below, and of argument reading, keep their own wording.
macro_rules! from_display {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for OpError {
            fn from(e: $t) -> Self {
                OpError::new(e.to_string())
            }
        }
    )*};
}

from_display!(
    PathError,
    IdError,
    ArgError,
    SolverError,
    StoreError,
    OciError,
    SnapshotError,
    CacheVolumeError,
    std::io::Error,
);
