use dagger::prelude::*;

#[step]
async fn build(src: Directory) -> Container {
    Query::detached().container().with_directory("/src", src)
}

fn main() {}
