#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, target: String) -> Container {
    dag.container().from("rust:1-slim").with_env_variable("TARGET", target).with_directory("/src", src)
}

pipeline! {
    pub ci(src: Directory, targets: std::collections::BTreeMap<String, bool>) {
        for (target, publish) in targets {
            let tc = toolchain(src, target);
            out built = tc.sync();
        }
        if publish {
            let other = toolchain(src, "all");
            out all = other.stdout();
        }
    }
}

fn main() {}
