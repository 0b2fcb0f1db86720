#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn version_file(src: Directory) -> File {
    src.file("VERSION")
}

#[step]
fn tagged(dag: &Query, version: String) -> Container {
    dag.container().from("debian:bookworm-slim").with_label("version", version)
}

pipeline! {
    pub ci(src: Directory, release: bool) {
        if release {
            let vf = version_file(src);
            out version = vf.contents();
        }
        let img = tagged(version);
        out published = img.publish("registry.example/app");
    }
}

fn main() {}
