//! The smallest pipeline: run a command in a container and print what it wrote.
//!
//! ```sh
//! dagger run cargo run -p examples --bin hello            # against a Dagger engine
//! HELLO_IMAGE=busybox:latest cargo run -p examples --bin hello
//! ```

#[tokio::main]
async fn main() -> Result<(), dagger::Error> {
    let image = std::env::var("HELLO_IMAGE").unwrap_or_else(|_| "alpine:3.20".to_owned());
    let out = dagger::connect(|dag| async move {
        dag.container()
            .from(image)
            .with_env_variable("NAME", "pipelines")
            .with_exec(["sh", "-c", "echo \"hello, $NAME\""])
            .stdout()
            .await
    })
    .await?;
    print!("{out}");
    Ok(())
}
