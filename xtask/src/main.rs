//! `cargo run -p xtask -- <task>`: project automation.
//!
//! Tasks:
//! - `codegen`: regenerate `dagger/src/gen.rs` from `schema/core.graphql`;
//! - `codegen --check`: fail if `dagger/src/gen.rs` is stale.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => xtask::codegen::write(),
        ["codegen", "--check"] => xtask::codegen::check(),
        _ => Err("usage: cargo run -p xtask -- codegen [--check]".to_owned()),
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
