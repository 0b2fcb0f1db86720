#![allow(dead_code)]

use dagger::prelude::*;

mod library {
    use dagger::prelude::*;

    #[step]
    pub fn toolchain(dag: &Query, src: Directory) -> Container {
        dag.container().from("alpine").with_directory("/src", src)
    }

    #[step]
    pub fn check(tc: Container, what: &str) -> Container {
        tc.with_exec(["sh", "-c", what])
    }

    pipeline! {
        /// A small shared pipeline.
        pub lint(src: Directory, strict: bool) {
            let tc = toolchain(src);
            let fmt = check(tc, if strict { "fmt --check" } else { "fmt" });
            out ready = tc.sync();
            out fmt_log = fmt.stdout() after ready;
        }
    }
}

#[step]
fn package(tc: Container) -> File {
    tc.with_exec(["tar", "cf", "/out.tar", "."]).file("/out.tar")
}

pipeline! {
    /// Uses the library's pipeline: its outputs are this one's, `checks.ready` is an object here.
    pub ci(src: Directory) {
        let checks = library::lint::run(src, true);
        let tarball = package(checks.ready);
        out size = tarball.size() after checks.fmt_log;
    }

    /// Only used pipelines: no output of its own.
    pub both(src: Directory) {
        let first = ci::run(src);
        let second = library::lint::run(src, false);
    }
}

fn main() {
    let src = Query::detached().host().directory(".");
    let plan = both::plan(src);
    assert_eq!(plan.documents.last().map(|d| d.title.as_str()), Some("first.size"));
    let _: Option<&str> = None::<both::Outputs>.as_ref().map(|o| o.first.checks.fmt_log.as_str());
}
