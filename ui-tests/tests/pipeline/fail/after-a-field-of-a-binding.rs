use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("alpine").with_directory("/src", src)
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        out built = tc.sync();
        out log = tc.stdout() after tc.built;
    }
}

fn main() {}
