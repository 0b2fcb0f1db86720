#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, version: String) -> Container {
    dag.container().from(format!("rust:{version}")).with_directory("/src", src)
}

#[step]
fn unit_tests(toolchain: Container) -> Container {
    toolchain.with_exec(["cargo", "test"])
}

pipeline! {
    pub ci(src: Directory, versions: Vec<String>, images: Vec<String>) {
        for version in versions {
            let tc = toolchain(src, version);
            out logs = tc.stdout();
        }
        for image in images {
            let other = toolchain(src, image);
            let tests = unit_tests(tc);
            out image_logs = other.stdout();
            out test_logs = tests.stdout();
        }
    }
}

fn main() {}
