//! The smallest pipeline: run a command in a container and print what it wrote.
//!
//! ```sh
//! cargo run -p examples --bin hello                                   # the embedded engine (as root)
//! cargo run -p examples --bin hello -- 127.0.0.1:5000/busybox:latest  # another image
//! dagger run cargo run -p examples --bin hello                        # a Dagger engine
//! ```
//!
//! The image comes from the first argument, else `HELLO_IMAGE`, else `busybox:latest` (which the offline
//! registry of `cargo run -p xtask -- images` also serves, as a `docker.io` mirror).

#[tokio::main]
async fn main() -> Result<(), dagger::Error> {
    let image = examples::arg_or_env(1, "HELLO_IMAGE", "busybox:latest");
    let out = dagger::connect(|dag| async move { examples::hello::greet(&dag, &image).await }).await?;
    print!("{out}");
    Ok(())
}
