//! The quickstart pipeline (plain API): test and build `examples/app` in `rust:1-slim`, package it on
//! `debian:bookworm-slim`, publish it, then run the published image: its self-test, and as a service that a
//! busybox container requests by its alias, route by route.
//!
//! ```sh
//! ./scripts/quickstart.sh                                   # offline: images, registry and this, set up
//! DAGGER_RS_REGISTRY_MIRRORS=docker.io=http://127.0.0.1:5000 cargo run -p examples --bin quickstart
//! dagger run cargo run -p examples --bin quickstart -- --address ttl.sh/my-app:1h
//! ```
//!
//! Options: `--app-dir`, `--rust-image`, `--runtime-image`, `--address`, `--client-image`, `--no-serve` (or
//! the `QUICKSTART_*` variables).

use std::process::ExitCode;
use std::time::Instant;

use examples::quickstart::{self, Settings, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let (settings, rest) = match Settings::from_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(flag) = rest.first() {
        eprintln!("error: unknown argument `{flag}`\n{USAGE}");
        return ExitCode::from(2);
    }
    println!(
        "quickstart: testing and building {} in {}, packaging on {}, publishing to {}{}",
        settings.app_dir.display(),
        settings.rust_image,
        settings.runtime_image,
        settings.address,
        if settings.serve {
            format!(", serving it to a client in {}", settings.client_image)
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let result = dagger::connect(|dag| async move { quickstart::run(&dag, &settings).await }).await;
    quickstart::conclude(result.map_err(Into::into), started)
}
