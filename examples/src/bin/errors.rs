//! Errors: a failed command as `dagger::Error::Exec`, exit codes read with `expect: ReturnType::Any`, and a
//! failed `pipeline!` run with the partial results of its siblings (see `examples::errors`).
//!
//! Every failure below is intended; the program exits 0 when each one failed the way it should.
//!
//! ```sh
//! cargo run -p examples --bin errors                            # embedded engine, busybox:latest
//! cargo run -p examples --bin errors -- alpine:3.20
//! ERRORS_IMAGE=127.0.0.1:5000/busybox:latest cargo run -p examples --bin errors
//! dagger run cargo run -p examples --bin errors                 # against a Dagger engine
//! ```

use examples::{BoxError, arg_or_env, errors};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let image = arg_or_env(1, "ERRORS_IMAGE", "busybox:latest");
    dagger::connect(|dag| async move {
        println!("== a failing command ==");
        let exec = errors::failed_command(&dag, &image).await?;
        print!("{}", errors::report(&exec, 2));
        println!("(its stdout was: {:?})", exec.stdout);

        println!("\n== exit codes as answers ==");
        let t = errors::tolerated_failures(&dag, &image).await?;
        println!("grep for `password` exited {} and printed {:?}", t.exit_code, t.stdout);
        println!(
            "reading a file that must not exist exited {} (as required)",
            t.expected_failure
        );

        println!("\n== a failing pipeline ==");
        match errors::failed_pipeline(&dag, &image).await {
            Ok(_) => return Err::<(), BoxError>("the `checks` pipeline was expected to fail".into()),
            Err(err) => print!("{}", errors::pipeline_report(&err)),
        }
        Ok(())
    })
    .await
}
