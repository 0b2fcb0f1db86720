use dagger::prelude::*;

mod ci {
    pub mod steps {
        use dagger::prelude::*;

        #[step]
        pub fn toolchain(dag: &Query, src: Directory, image: &str) -> Container {
            dag.container().from(image).with_directory("/src", src).with_workdir("/src")
        }

        #[step]
        pub fn build(tc: Container, profile: String) -> File {
            tc.with_exec(["cargo", "build", "--profile", &profile]).file("target/app")
        }
    }
}

#[step]
fn image(dag: &Query, bin: File) -> Container {
    dag.container().from("debian:bookworm-slim").with_file("/app", bin)
}

#[step]
fn collect(dag: &Query, a: File, b: File) -> Directory {
    dag.directory().with_file("a", a).with_file("b", b)
}

const BASE: &str = "rust:1-slim";

pipeline! {
    /// Builds two profiles and packs them.
    pub release(src: Directory, registry: String) {
        let tc = ci::steps::toolchain(src, BASE);
        let debug = ci::steps::build(tc, "dev");
        let fast = ci::steps::build(tc.with_env_variable("RUSTFLAGS", "-Copt-level=3"), "release");
        let both = collect(debug, fast);
        let img = image(fast);
        /// What was built.
        out names = both.entries();
        out exported = both.export_opts("out", DirectoryExportOpts::default().wipe(true));
        out image_ref = img.publish(format!("{registry}/app:latest")) after names, exported;
        out exit = img.exit_code() after image_ref;
    }

    helper(src: Directory) {
        let _unused = collect(src.file("a"), src.file("b"));
        out id = src.id();
    }
}

fn main() {
    let plan = release::plan(Query::detached().host().directory("."), "127.0.0.1:5000".to_owned());
    // Two ID rounds (the release binary needs the host directory's ID), then one request per level.
    assert_eq!(plan.documents.len(), 2 + release::LEVELS.len());
    let _: fn(Directory) -> dagger::Plan = helper::plan;
    let _ = release::Outputs {
        names: vec![],
        exported: String::new(),
        image_ref: String::new(),
        exit: 0,
    };
}
