//! `for` loops over run-time collections: a key per element, maps as outputs, and a loop binding used after
//! its loop as the map of its values; `if` blocks whose outputs are options.
#![allow(dead_code)]

use std::collections::BTreeMap;

use dagger::prelude::*;

#[step]
fn toolchain(dag: &Query, src: Directory, version: String) -> Container {
    dag.container().from(format!("rust:{version}")).with_directory("/src", src)
}

#[step]
fn binary(tc: Container) -> File {
    tc.file("target/release/app")
}

#[step]
fn bundle(dag: &Query, bins: BTreeMap<String, File>) -> Directory {
    bins.into_iter().fold(dag.directory(), |d, (k, f)| d.with_file(k, f))
}

pipeline! {
    /// Inputs, bindings and outputs may be named like the expansion's own locals.
    pub ci(dag: Directory, versions: Vec<String>, images: BTreeMap<String, String>, publish: bool) {
        for version in versions {
            let results = toolchain(dag, version);
            /// One log per version.
            out run = results.stdout();
            out partial = results.exit_code() after run;
        }
        for (name, image) in images {
            let tc = toolchain(dag, image);
            let bin = binary(tc);
            out sizes = bin.size();
        }
        let all = bundle(bin);
        out entries = all.entries() after run;
        if publish {
            let again = bundle(bin);
            out digest = again.digest() after entries;
        }
        if !publish {
            out exported = all.export("out");
        }
    }
}

fn check_types(out: ci::Outputs, partial: ci::Partial) {
    let _: BTreeMap<String, String> = out.run;
    let _: BTreeMap<String, i64> = out.partial;
    let _: BTreeMap<String, i64> = partial.sizes;
    let _: Option<Vec<String>> = partial.entries;
    let _: Option<String> = out.digest;
    let _: Option<String> = partial.exported;
}

fn main() {
    let dag = Query::detached();
    let plan = ci::plan(dag.directory(), vec!["1.85".into()], BTreeMap::new(), true);
    assert_eq!(plan.pipeline, "ci");
}
