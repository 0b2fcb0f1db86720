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
            out version = tc.stdout();
        }
    }
}

#[step]
fn tagged(dag: &Query, version: String) -> Container {
    dag.container().from("alpine").with_label("version", version)
}

pipeline! {
    pub ci(src: Directory) {
        let checks = library::lint::run(src);
        let img = tagged(checks.version);
        out id = img.id();
    }
}

fn main() {}
