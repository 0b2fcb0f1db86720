use dagger::prelude::*;

#[step]
fn build<T: Into<String>>(dag: &Query, image: T) -> Container {
    dag.container().from(image)
}

fn main() {}
