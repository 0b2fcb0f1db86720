//! The quickstart pipeline written with `#[step]` and `pipeline!` (see `examples/src/quickstart_dsl.rs`).
//!
//! ```sh
//! cargo run -p examples --bin quickstart_dsl -- --plan      # print the requests, no engine needed
//! cargo run -p examples --bin quickstart_dsl -- --graph     # print the pipeline's graph (Mermaid)
//! DAGGER_RS_REGISTRY_MIRRORS=docker.io=http://127.0.0.1:5000 cargo run -p examples --bin quickstart_dsl
//! ```
//!
//! Options: `--plan`, `--graph`, `--app-dir`, `--rust-image`, `--runtime-image`, `--address`, `--client-image`,
//! `--no-serve` (or the `QUICKSTART_*` variables).

use std::process::ExitCode;
use std::time::Instant;

use examples::quickstart::{self, Settings, USAGE};
use examples::quickstart_dsl;

#[tokio::main]
async fn main() -> ExitCode {
    let (settings, rest) = match Settings::from_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {}
        ["--plan"] => {
            let plan = quickstart_dsl::plan(&settings);
            println!("{plan}");
            return ExitCode::SUCCESS;
        }
        ["--graph"] => {
            print!("{}", quickstart_dsl::quickstart::GRAPH.mermaid());
            return ExitCode::SUCCESS;
        }
        [flag, ..] => {
            eprintln!("error: unknown argument `{flag}`\n--plan, --graph, or {USAGE}");
            return ExitCode::from(2);
        }
    }
    println!(
        "quickstart (pipeline!): {} requests, publishing to {}",
        quickstart_dsl::plan(&settings).documents.len(),
        settings.address
    );
    let started = Instant::now();
    let result = dagger::connect(|dag| async move { quickstart_dsl::run(&dag, &settings).await }).await;
    quickstart::conclude(result, started)
}
