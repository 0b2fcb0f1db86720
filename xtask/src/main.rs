//! `cargo run -p xtask -- <task>`: project automation.
//!
//! Tasks:
//! - `codegen`: regenerate `dagger/src/gen.rs` (the SDK), `dagger-macros/src/leaves.rs` and
//!   `dagger-engine/src/ops/fields.rs` (the engine's typed fields) from `schema/core.graphql`;
//! - `codegen --check`: fail if a generated file is stale;
//! - `images`: start (or reuse) a registry on `127.0.0.1:5000` and push the offline images to it (busybox,
//!   `debian:bookworm-slim`, `rust:1-slim`; the Debian ones are built with `mmdebstrap` on first use).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => xtask::codegen::write(),
        ["codegen", "--check"] => xtask::codegen::check(),
        ["images"] => xtask::images::run(),
        _ => Err("usage: cargo run -p xtask -- codegen [--check] | images".to_owned()),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
