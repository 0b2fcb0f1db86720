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
    pub ci(src: Directory, versions: Vec<String>, channels: Vec<String>, nightly: bool) {
        for version in versions {
            if nightly {
                for channel in channels {
                    let tc = toolchain(src, channel);
                    out logs = tc.stdout();
                }
            }
        }
    }
}

fn main() {}
