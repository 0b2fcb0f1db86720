//! Project automation behind `cargo run -p xtask -- …`.

pub mod codegen;
pub mod engine_fields;
pub mod images;

use std::path::PathBuf;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
