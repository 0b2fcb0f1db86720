//! Sample pipelines built with the `dagger` crate; each binary in `src/bin/` is one runnable example.
