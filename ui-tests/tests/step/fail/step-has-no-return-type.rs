use dagger::prelude::*;

#[step]
fn build(src: Directory) {
    let _ = src;
}

fn main() {}
