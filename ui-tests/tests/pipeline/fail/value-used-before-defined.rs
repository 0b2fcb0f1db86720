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
fn version_file(src: Directory) -> File {
    src.file("VERSION")
}

pipeline! {
    pub ci(src: Directory) {
        let vf = version_file(src);
        let img = tagged(version);
        out version = vf.contents();
        out published = img.publish("registry.example/app");
    }
}

fn main() {}
