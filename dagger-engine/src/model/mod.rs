//! The model: plain data every layer shares and nothing below it — call identities and digests ([`ids`]),
//! directory snapshots as manifests ([`tree`]), and the error type ([`error`]).

pub mod error;
pub mod ids;
pub mod tree;
