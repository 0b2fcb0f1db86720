//! Blocks inside blocks, and values feeding steps inside them: an `if` on a loop's own variable, a loop inside
//! an `if`, an `if` inside an `if`; a value per element feeding that element's steps, a value of the body
//! feeding every element, a value computed from a value inside an `if`, and a loop binding that waits for a
//! value used after its loop as a map. The types of the outputs say where each was declared.
#![allow(dead_code)]

use std::collections::BTreeMap;

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, version: String) -> Container {
    dag.container().from(format!("rust:{version}")).with_directory("/src", src)
}

#[step]
fn tagged(dag: &Query, base: String, version: String) -> Container {
    dag.container().from(base).with_label("version", version)
}

#[step]
fn labelled(tc: Container, label: String) -> File {
    tc.with_env_variable("LABEL", label).file("target/release/app")
}

#[step]
fn bundle(dag: &Query, bins: BTreeMap<String, File>) -> Directory {
    bins.into_iter().fold(dag.directory(), |d, (k, f)| d.with_file(k, f))
}

pipeline! {
    pub ci(src: Directory, base: String, targets: BTreeMap<String, bool>, nightly: bool, versions: Vec<String>) {
        let vf = toolchain(src, "1");
        out version = vf.stdout();
        for (target, publish) in targets {
            let tc = toolchain(src, target);
            out reported = tc.stdout();
            let img = tagged(base, format!("{} {}", version, reported));
            out built = img.sync();
            let bin = labelled(tc, reported);
            if publish {
                out refs = img.publish(format!("registry.example/app:{}", target)) after built;
                if nightly {
                    let again = tagged(base, refs);
                    out again_refs = again.publish("registry.example/app:again");
                }
            }
        }
        let all = bundle(bin);
        out entries = all.entries();
        if nightly {
            for v in versions {
                let soak = toolchain(src, v);
                out soak_logs = soak.stdout();
            }
            let first = tagged(base, version);
            out first_label = first.stdout();
            let second = tagged(base, first_label);
            out second_ref = second.publish("registry.example/app:second");
        }
    }
}

fn check_types(out: ci::Outputs) {
    let _: String = out.version;
    let _: BTreeMap<String, String> = out.reported;
    let _: BTreeMap<String, Container> = out.built;
    let _: BTreeMap<String, String> = out.refs;
    let _: BTreeMap<String, String> = out.again_refs;
    let _: Vec<String> = out.entries;
    let _: Option<BTreeMap<String, String>> = out.soak_logs;
    let _: Option<String> = out.first_label;
    let _: Option<String> = out.second_ref;
}

fn main() {}
