#![allow(dead_code)]

use dagger::prelude::*;

mod ci {
    pub mod steps {
        use dagger::prelude::*;

        #[step]
        pub fn build(dag: &Query, src: Directory) -> Container {
            dag.container().from("rust:1-slim").with_directory("/src", src)
        }
    }
}

pipeline! {
    pub release(src: Directory) {
        let tc = ci::steps::buld(src);
        out log = tc.stdout();
    }
}

fn main() {}
