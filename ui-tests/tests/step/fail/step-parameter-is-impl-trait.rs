#![allow(dead_code)]

use dagger::prelude::*;

#[step]
fn build(dag: &Query, image: impl Into<String>) -> Container {
    dag.container().from(image)
}

fn main() {}
