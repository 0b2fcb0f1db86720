use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("alpine").with_directory("/src", src)
}

#[pipeline_fn]
pub fn ci(src: Directory) {
    let tc = toolchain(src);
    #[out(after(biult))]
    let built = tc.sync();
}

fn main() {}
