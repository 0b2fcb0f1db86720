//! The model: plain data every layer shares and nothing below it — call identities and digests ([`ids`]) and
//! directory snapshots as manifests ([`tree`]).

pub mod ids;
pub mod tree;
