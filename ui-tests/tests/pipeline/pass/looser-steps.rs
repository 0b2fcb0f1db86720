#![allow(dead_code)]

use std::collections::BTreeMap;

use dagger::prelude::*;

/// A config struct: any `Clone` type can be a step parameter.
#[derive(Clone, Debug)]
pub struct Build {
    pub profile: String,
    pub features: Vec<String>,
}

/// An enum parameter.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Fast,
    Thorough,
}

#[step]
fn toolchain(dag: &Query, src: Directory, proxy: Option<String>) -> Container {
    let tc = dag.container().from("rust:1-slim").with_directory("/src", src);
    match proxy {
        Some(p) => tc.with_env_variable("HTTPS_PROXY", p),
        None => tc,
    }
}

/// A step returning a tuple: the binary and the docs.
#[step]
fn build(tc: Container, build: Build, mode: Mode) -> (File, Directory) {
    let mut args = vec!["cargo".to_owned(), "build".to_owned(), "--profile".to_owned(), build.profile];
    args.extend(build.features);
    if let Mode::Thorough = mode {
        args.push("--locked".to_owned());
    }
    let built = tc.with_exec(args);
    (built.file("target/app"), built.directory("target/doc"))
}

#[step]
fn gather(dag: &Query, bins: BTreeMap<String, File>) -> Directory {
    bins.into_iter()
        .fold(dag.directory(), |d, (k, f)| d.with_file(k, f))
}

pipeline! {
    pub ci(src: Directory, settings: Build, proxy: Option<String>, targets: Vec<String>) {
        let tc = toolchain(src, proxy);
        let (bin, docs) = build(tc, settings, Mode::Fast);
        let (release, _) = build(tc, Build { profile: "release".into(), features: vec![] }, Mode::Thorough);
        out size = bin.size();
        out doc_entries = docs.entries();
        out release_size = release.size();
        for target in targets {
            let (per_target, _) = build(tc, Build { profile: target.clone(), features: vec![] }, Mode::Fast);
            out sizes = per_target.size();
        }
        let all = gather(per_target);
        out gathered = all.entries();
    }

    pub no_proxy(src: Directory) {
        let tc = toolchain(src, None);
        let (bin, _docs) = build(tc, Build { profile: "dev".into(), features: vec!["x".into()] }, Mode::Fast);
        out id = bin.id();
    }
}

fn main() {
    let src = Query::detached().host().directory(".");
    let settings = Build { profile: "dev".into(), features: vec![] };
    let _ = ci::plan(src.clone(), settings, Some("http://proxy".into()), vec!["a".into()]);
    let _ = no_proxy::plan(src);
    let tc = toolchain(&Query::detached(), Query::detached().directory(), None);
    let _ = build::plan(tc, Build { profile: "dev".into(), features: vec![] }, Mode::Fast);
}
