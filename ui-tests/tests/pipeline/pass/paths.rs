//! Steps and used pipelines named by paths: relative to the module the pipeline is written in (`self::`,
//! `super::`), from the crate's root (`crate::`), and through `use`.
#![allow(dead_code)]

use dagger::prelude::*;

mod ci {
    pub mod steps {
        use dagger::prelude::*;

        #[step]
        pub fn build(dag: &Query, src: Directory) -> Container {
            dag.container().from("rust:1-slim").with_directory("/src", src)
        }

        pipeline! {
            pub lint(src: Directory) {
                let tc = build(src);
                out ready = tc.sync();
            }
        }
    }
}

mod inner {
    use dagger::prelude::*;

    use crate::ci::steps::lint;

    pipeline! {
        pub uses(src: Directory) {
            let a = super::ci::steps::build(src);
            let b = crate::ci::steps::build(src);
            let checks = super::ci::steps::lint::run(src);
            let again = lint::run(src);
            out x = a.sync() after again.ready;
            out y = b.sync() after checks;
        }
    }
}

pipeline! {
    pub here(src: Directory) {
        let a = self::ci::steps::build(src);
        let checks = self::ci::steps::lint::run(src);
        out log = a.stdout() after checks.ready;
    }
}

fn main() {
    let _ = inner::uses::plan(Query::detached().directory());
    let _ = here::plan(Query::detached().directory());
}
