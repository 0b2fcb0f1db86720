#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

#[step]
fn unit_tests(toolchain: Container) -> Container {
    toolchain.with_exec(["cargo", "test"])
}

#[step]
fn binary(toolchain: Container) -> File {
    toolchain.file("target/release/app")
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain();
        out log = tc.stdout();
    }
}

fn main() {}
