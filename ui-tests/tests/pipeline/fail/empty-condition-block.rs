#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

pipeline! {
    pub ci(src: Directory, publish: bool) {
        let tc = toolchain(src);
        out log = tc.stdout();
        if publish {}
    }
}

fn main() {}
