//! A build matrix: one build script for several targets and profiles, run concurrently; the artifacts are
//! gathered into one directory and exported to the host (see `examples::matrix`).
//!
//! ```sh
//! cargo run -p examples --bin matrix                            # embedded engine, alpine:3.20, ./matrix-out
//! cargo run -p examples --bin matrix -- busybox:latest dist     # another image, another directory
//! MATRIX_IMAGE=127.0.0.1:5000/busybox:latest cargo run -p examples --bin matrix
//! dagger run cargo run -p examples --bin matrix                 # against a Dagger engine
//! ```

use examples::{BoxError, arg_or_env, matrix};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let image = arg_or_env(1, "MATRIX_IMAGE", "alpine:3.20");
    let out_dir = arg_or_env(2, "MATRIX_OUT", "matrix-out");
    let variants = matrix::default_variants();
    let started = std::time::Instant::now();
    let report = dagger::connect(|dag| async move { matrix::run(&dag, &image, &variants, 2, &out_dir).await }).await?;

    for b in &report.builds {
        println!(
            "built {:<28} {:>4} bytes  (container clock {}..{})",
            b.variant.artifact(),
            b.size,
            b.started,
            b.finished
        );
    }
    let how = if matrix::overlapped(&report.builds) {
        "concurrently"
    } else {
        "one after another"
    };
    println!(
        "{} builds of 2 s each ran {how}; {:.1} s in all",
        report.builds.len(),
        started.elapsed().as_secs_f64()
    );
    println!("exported to {}:", report.exported);
    for entry in &report.entries {
        println!("  {entry}");
    }
    Ok(())
}
