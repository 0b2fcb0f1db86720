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

const MAX: u32 = 8;

pipeline! {
    /// Names are found by syntax: a cast type, a constant, a closure parameter, a method or field name
    /// and a macro name are not taken for bindings.
    pub ci(src: Directory, jobs: u32, extra: Vec<String>) {
        let tc = toolchain(src);
        let tests = unit_tests(tc, jobs.min(MAX) as i64 + extra.iter().map(|e| e.len() as i64).sum::<i64>());
        out log = tests.stdout();
    }
}

fn main() {}
