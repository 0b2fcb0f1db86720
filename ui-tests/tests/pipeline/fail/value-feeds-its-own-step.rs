#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory) -> Container {
    dag.container().from("rust:1-slim").with_directory("/src", src)
}

#[step]
fn tagged(dag: &Query, version: String) -> Container {
    dag.container().from("debian:bookworm-slim").with_label("version", version)
}

#[step]
fn labelled(tc: Container, version: String) -> Container {
    tc.with_label("version", version)
}

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        out version = img.label("version");
        let img = labelled(tc, version);
    }
}

fn main() {}
