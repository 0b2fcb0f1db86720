use dagger::prelude::*;

#[step]
fn build(tc: Container) -> (File, Directory) {
    let built = tc.with_exec(["make"]);
    (built.file("app"), built.directory("doc"))
}

pipeline! {
    pub ci(tc: Container) {
        let (bin, docs) = build(tc);
        out size = bin.size();
    }
}

fn main() {}
