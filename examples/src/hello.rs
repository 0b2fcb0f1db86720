//! The smallest pipeline: run a command in a container and return what it wrote.

use dagger::prelude::*;

/// Runs `echo "hello, $NAME"` in `image` and returns its output.
pub async fn greet(dag: &Query, image: &str) -> Result<String, dagger::Error> {
    dag.container()
        .from(image)
        .with_env_variable("NAME", "pipelines")
        .with_exec(["sh", "-c", "echo \"hello, $NAME\""])
        .stdout()
        .await
}
