use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("alpine").with_directory("/src", src)
}

#[pipeline_fn]
pub fn ci(src: Directory) {
    let tc = toolchain(src);
    #[out]
    let built = tc.sync();
    #[out(before(built))]
    let log = tc.stdout();
}

fn main() {}
