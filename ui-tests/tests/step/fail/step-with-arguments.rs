#![allow(dead_code)]

use dagger::prelude::*;

#[step(name = "x")]
fn build(dag: &Query) -> Container {
    dag.container()
}

fn main() {}
