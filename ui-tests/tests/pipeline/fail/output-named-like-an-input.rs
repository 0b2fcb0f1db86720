#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

#[step]
fn unit_tests(toolchain: Container, jobs: i64) -> Container {
    toolchain.with_exec(vec!["cargo".to_owned(), "test".to_owned(), format!("-j{jobs}")])
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        out src = tc.sync();
    }
}

fn main() {}
