//! A user program in miniature: connects with the default provisioning (environment, CLI, …), asks the
//! engine for its version, and prints `OK <version>` or `ERR <error>`. Tests run it with chosen environments.
//!
//! `PROBE_REPORT=PATH` connects with `Connection::builder().report(PATH)` instead of `dagger::connect`, and
//! `PROBE_WORK=1` also builds a small directory (so a report has operations to show).

use std::process::ExitCode;

async fn probe() -> Result<String, dagger::Error> {
    let mut builder = dagger::Connection::builder();
    if let Some(path) = std::env::var_os("PROBE_REPORT") {
        builder = builder.report(path);
    }
    let conn = builder.connect().await?;
    let dag = conn.query();
    let version = dag.version().await?;
    if std::env::var_os("PROBE_WORK").is_some() {
        dag.directory()
            .with_new_file("probe.txt", "probe")
            .with_new_directory("sub")
            .entries()
            .await?;
    }
    conn.close();
    Ok(version)
}

#[tokio::main]
async fn main() -> ExitCode {
    match probe().await {
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
