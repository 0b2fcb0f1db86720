//! Compile-fail and compile-pass cases for the `dagger` macros live in `tests/`; this library is empty.
