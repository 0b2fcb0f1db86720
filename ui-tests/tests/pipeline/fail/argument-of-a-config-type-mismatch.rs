use dagger::prelude::*;

#[derive(Clone)]
pub struct Build {
    pub profile: String,
}

#[step]
fn build(tc: Container, settings: Build) -> File {
    tc.with_exec(["cargo", "build", "--profile", &settings.profile]).file("app")
}

pipeline! {
    pub ci(tc: Container) {
        let bin = build(tc, "release");
        out size = bin.size();
    }
}

fn main() {}
