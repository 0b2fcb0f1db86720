#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, version: String) -> Container {
    dag.container().from(format!("rust:{version}")).with_directory("/src", src)
}

#[step]
fn tagged(dag: &Query, version: String) -> Container {
    dag.container().from("debian:bookworm-slim").with_label("version", version)
}

pipeline! {
    pub ci(src: Directory, versions: Vec<String>) {
        for version in versions {
            let tc = toolchain(src, version);
            out reported = tc.stdout();
        }
        let img = tagged(reported);
        out published = img.publish("registry.example/app");
    }
}

fn main() {}
