//! Integration tests against a real database: Redis as a service bound as `db`, a writer and a reader in
//! other containers, and a counter several clients increment at once (see `examples::integration`).
//!
//! ```sh
//! cargo run -p xtask -- images      # the offline registry, with redis:7-bookworm built from Debian's packages
//! DAGGER_RS_REGISTRY_MIRRORS=docker.io=http://127.0.0.1:5000 cargo run -p examples --bin integration
//! cargo run -p examples --bin integration -- redis:7-bookworm 8 10   # IMAGE CLIENTS INCREMENTS
//! dagger run cargo run -p examples --bin integration                 # against a Dagger engine
//! ```
//!
//! Arguments (or `INTEGRATION_IMAGE`, `INTEGRATION_CLIENTS`, `INTEGRATION_INCREMENTS`): the image, which must
//! run `redis-server` by default and hold `redis-cli`; how many clients; how many increments each.

use std::process::ExitCode;

use examples::integration::{self, Settings};
use examples::{arg_or_env, print_error};

#[tokio::main]
async fn main() -> ExitCode {
    let count = |n, var, default: usize| {
        let value = arg_or_env(n, var, &default.to_string());
        match value.parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("{var} (argument {n}) must be a positive number, not `{value}`")),
        }
    };
    let defaults = Settings::default();
    let settings = match (
        count(2, "INTEGRATION_CLIENTS", defaults.clients),
        count(3, "INTEGRATION_INCREMENTS", defaults.increments),
    ) {
        (Ok(clients), Ok(increments)) => Settings {
            image: arg_or_env(1, "INTEGRATION_IMAGE", integration::IMAGE),
            clients,
            increments,
            ..defaults
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "integration: {} as a service, {} clients × {} increments",
        settings.image, settings.clients, settings.increments
    );
    let run = settings.clone();
    let result = dagger::connect(|dag| async move { integration::run(&dag, &run).await }).await;
    match result {
        Ok(report) => {
            integration::print_report(&settings, &report);
            if let Err(e) = report.check(&settings) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            println!("integration: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(e.as_ref());
            ExitCode::FAILURE
        }
    }
}
