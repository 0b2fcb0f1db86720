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

pipeline! {
    pub ci(src: Directory) {
        let tc = toolchain(src);
        out built = tc.sync();
        let img = tagged(built);
        out published = img.publish("registry.example/app");
    }
}

fn main() {}
