//! Chaining: a version computed by one pipeline labels the image of a second, and a directory the first
//! built is verified by a third that receives only its ID (see `examples::chaining`).
//!
//! ```sh
//! cargo run -p examples --bin chaining                          # embedded engine, alpine:3.20
//! cargo run -p examples --bin chaining -- busybox:latest 2.0.0  # another image, another base version
//! CHAINING_IMAGE=127.0.0.1:5000/busybox:latest cargo run -p examples --bin chaining
//! dagger run cargo run -p examples --bin chaining               # against a Dagger engine
//! ```

use examples::{BoxError, arg_or_env, chaining};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let image = arg_or_env(1, "CHAINING_IMAGE", "alpine:3.20");
    let base = arg_or_env(2, "CHAINING_VERSION", "1.4.0");
    let chain = dagger::connect(|dag| async move { chaining::run(&dag, &image, &base).await }).await?;

    println!(
        "1. version:  {} (stdout), {} (version.txt)",
        chain.version,
        chain.version_file.trim_end()
    );
    println!(
        "   dist/:    {} (ID {} bytes long)",
        chain.dist_entries.join(", "),
        chain.dist_id.as_str().len()
    );
    println!("2. package:  {}", chain.package_log.trim_end());
    println!(
        "   label {} = {}",
        chaining::VERSION_LABEL,
        chain.label.as_deref().unwrap_or("(none)")
    );
    println!("   APP_VERSION = {}", chain.env.as_deref().unwrap_or("(none)"));
    println!("3. verify:");
    for line in chain.verify_log.lines() {
        println!("   {line}");
    }
    Ok(())
}
