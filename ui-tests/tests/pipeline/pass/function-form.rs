#![allow(dead_code)]

use std::collections::BTreeMap;

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, version: String) -> Container {
    dag.container()
        .from(format!("rust:{version}"))
        .with_directory("/src", src)
}

#[step]
fn tests(tc: Container) -> Container {
    tc.with_exec(["cargo", "test"])
}

#[step]
fn version_file(src: Directory) -> File {
    src.file("VERSION")
}

#[step]
fn tagged(dag: &Query, version: String) -> Container {
    dag.container().from("alpine").with_label("version", version)
}

/// Every construct in the function form: loops, conditions, values, `after`, `#[fail_fast]`.
#[pipeline_fn]
#[fail_fast]
pub fn release(src: Directory, versions: Vec<String>, publish: bool) {
    for v in versions {
        let tc = toolchain(src, v);
        let tested = tests(tc);
        /// The test log of each version.
        #[out]
        let test_logs = tested.stdout();
    }
    let vfile = version_file(src);
    #[out]
    let version = vfile.contents();
    if publish {
        let img = tagged(version);
        #[out(after(test_logs))]
        let image_ref = img.publish("registry.example/app");
    }
}

fn main() {
    let src = Query::detached().host().directory(".");
    let plan = release::plan(src, vec!["1.85".into()], true);
    assert!(plan.documents.iter().any(|d| d.title.starts_with("image_ref")), "{plan}");
    let _: Option<BTreeMap<String, String>> = None::<release::Outputs>.map(|o| o.test_logs);
}
