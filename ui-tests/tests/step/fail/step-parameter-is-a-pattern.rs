#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn build(dag: &Query, (a, b): (File, File)) -> Directory {
    dag.directory().with_file("a", a).with_file("b", b)
}

fn main() {}
