//! A user program in miniature: connects with the default provisioning (environment, CLI, …), asks the
//! engine for its version, and prints `OK <version>` or `ERR <error>`. Tests run it with chosen environments.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let result = dagger::connect(|dag| async move { dag.version().await }).await;
    match result {
        Ok(version) => {
            println!("OK {version}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ERR {e}");
            ExitCode::FAILURE
        }
    }
}
