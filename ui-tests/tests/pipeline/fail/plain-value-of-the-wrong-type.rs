#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn tests(toolchain: Container, filter: &str) -> Container {
    toolchain.with_exec(vec!["cargo".to_owned(), "test".to_owned(), filter.to_owned()])
}

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        let t = tests(tc, 3);
        out log = t.stdout();
    }
}

fn main() {}
