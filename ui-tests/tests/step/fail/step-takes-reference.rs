use dagger::prelude::*;

#[step]
fn build(dag: &Query, src: &Directory) -> Container {
    dag.container().with_directory("/src", src)
}

fn main() {}
