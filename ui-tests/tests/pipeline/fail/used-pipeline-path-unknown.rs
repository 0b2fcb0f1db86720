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
    pub ci(src: Directory) {
        let checks = library::lnit::run(src);
        out id = src.id() after checks;
    }
}

fn main() {}
