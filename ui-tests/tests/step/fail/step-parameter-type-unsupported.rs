use std::collections::HashMap;

use dagger::prelude::*;

#[step]
fn build(dag: &Query, env: HashMap<String, String>) -> Container {
    let _ = env;
    dag.container()
}

fn main() {}
