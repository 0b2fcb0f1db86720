use dagger::prelude::*;

mod library {
    use dagger::prelude::*;

    #[step]
    pub fn toolchain(dag: &Query, src: Directory) -> Container {
        dag.container().from("alpine").with_directory("/src", src)
    }

    pipeline! {
        pub lint(src: Directory) {
            let tc = toolchain(src);
            out ready = tc.sync();
            out log = tc.stdout() after ready;
        }
    }
}

#[step]
fn tests(tc: Container) -> Container {
    tc.with_exec(["sh", "-c", "echo ok"])
}

pipeline! {
    pub ci(src: Directory) {
        let checks = nolint::run(src);
        let tested = tests(checks.ready);
        out log = tested.stdout() after checks.log;
    }
}

fn main() {}
