use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

pipeline! {
    pub ci(src: Directory) {
        let (tc, other) = toolchain(src);
        out a = tc.sync();
        out b = other.sync();
    }
}

fn main() {}
