//! Compile-time behaviour of `#[step]` and `pipeline!`: passing cases compile, and each failing case is pinned
//! with the exact error rustc prints (one broken rule per file, named after the rule).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/step/pass/*.rs");
    t.pass("tests/pipeline/pass/*.rs");
    t.compile_fail("tests/step/fail/*.rs");
    t.compile_fail("tests/pipeline/fail/*.rs");
}
