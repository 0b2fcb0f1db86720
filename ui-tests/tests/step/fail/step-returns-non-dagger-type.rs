use dagger::prelude::*;

#[step]
fn build(src: Directory) -> String {
    let _ = src;
    "built".to_owned()
}

fn main() {}
