use dagger::prelude::*;

/// A toolchain.
#[step]
fn toolchain(dag: &Query, src: Directory, image: &str) -> Container {
    dag.container().from(image).with_directory("/src", src)
}

#[step]
fn tests(toolchain: Container, jobs: i64, verbose: bool, features: Vec<String>) -> Container {
    let mut args = vec!["cargo".to_owned(), "test".to_owned(), format!("-j{jobs}")];
    if verbose {
        args.push("-v".to_owned());
    }
    args.extend(features);
    toolchain.with_exec(args)
}

#[step]
pub fn secret_env(ctr: Container, token: Secret, cache: CacheVolume) -> Container {
    ctr.with_secret_variable("TOKEN", token).with_mounted_cache("/cache", cache)
}

fn main() {
    let dag = Query::detached();
    let tc = toolchain(&dag, dag.directory(), "rust:1-slim");
    let _ = tests(tc, 2, true, vec!["--all-features".to_owned()]);
    use dagger::__private::Step;
    assert_eq!(<toolchain as Step>::PARAMS, &["src", "image"]);
    assert_eq!(<toolchain as Step>::DOC, "A toolchain.");
    assert_eq!(<tests as Step>::ARITY, 4);
}
