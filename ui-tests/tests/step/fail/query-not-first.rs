use dagger::prelude::*;

#[step]
fn build(src: Directory, dag: &Query) -> Container {
    dag.container().with_directory("/src", src)
}

fn main() {}
