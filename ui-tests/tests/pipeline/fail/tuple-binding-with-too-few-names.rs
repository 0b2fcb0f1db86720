use dagger::prelude::*;

#[step]
fn build(tc: Container) -> (File, Directory, File) {
    let built = tc.with_exec(["make"]);
    (built.file("app"), built.directory("doc"), built.file("app.sig"))
}

pipeline! {
    pub ci(tc: Container) {
        let (bin, docs) = build(tc);
        out size = bin.size();
        out entries = docs.entries();
    }
}

fn main() {}
