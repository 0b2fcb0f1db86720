use dagger::prelude::*;

struct Ci;

impl Ci {
    #[step]
    fn build(&self, src: Directory) -> Container {
        Query::detached().container().with_directory("/src", src)
    }
}

fn main() {}
