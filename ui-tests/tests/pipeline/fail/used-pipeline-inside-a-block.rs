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
        }
    }
}

pipeline! {
    pub ci(src: Directory, strict: bool) {
        let tc = library::toolchain(src);
        out built = tc.sync();
        if strict {
            let checks = library::lint::run(src);
        }
    }
}

fn main() {}
