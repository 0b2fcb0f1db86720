use dagger::prelude::*;

#[step]
fn build(tc: Container) -> (File, String) {
    (tc.file("app"), "app".to_owned())
}

fn main() {}
