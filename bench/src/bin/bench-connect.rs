//! `bench-connect`: the engine-start figure's client (figure 14). Opens a session the way a program using the
//! SDK does (`Connection::builder().connect()`: with nothing configured, the engine starts in this process),
//! sends one query (`{ version }`), and prints the seconds from before `connect` to the answer, then the
//! seconds until the session is closed. The cache directory comes from `DAGGER_RS_CACHE_DIR`, set by the
//! harness: a fresh one for a cold start, a used one for a warm start.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-connect: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let start = Instant::now();
        let conn = dagger::Connection::builder().quiet().connect().await?;
        let version = conn.query().version().await?;
        let answered = start.elapsed();
        drop(conn);
        Ok::<_, dagger::Error>((answered, start, version))
    });
    match result {
        Ok((answered, start, version)) => {
            // Dropping the runtime ends the session's tasks.
            drop(runtime);
            println!(
                "{:.6} {:.6} {version}",
                answered.as_secs_f64(),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-connect: {e}");
            ExitCode::FAILURE
        }
    }
}
