#![allow(dead_code)]

use dagger::prelude::*;

// The step's own error is the only one: the pipeline using it reports nothing more.
#[step]
async fn toolchain(dag: &Query, src: &Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src.clone())
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        out log = tc.stdout();
    }
}

fn main() {}
