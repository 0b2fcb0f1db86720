//! The model: plain data every layer shares and nothing below it — call identities and digests ([`ids`]) and
//! directory snapshots as manifests ([`tree`]), and the `.gitignore` rules applied to them ([`ignore`]).

pub mod ids;
pub mod ignore;
pub mod tree;
