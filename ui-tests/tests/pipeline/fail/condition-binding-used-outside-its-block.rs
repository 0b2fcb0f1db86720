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

pipeline! {
    pub ci(src: Directory, slow: bool) {
        let tc = toolchain(src);
        if slow {
            let tests = unit_tests(tc);
            out test_log = tests.stdout();
        }
        out code = tests.exit_code();
    }
}

fn main() {}
