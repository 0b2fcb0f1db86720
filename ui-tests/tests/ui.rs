//! Compile-time behaviour of `#[step]` and `pipeline!`: passing cases compile, and each failing case is pinned
//! with the exact error rustc prints (one broken rule per file, named after the rule).
//!
//! `UI_ONLY=value-of-an-object,loops` checks only the cases whose file names contain one of those words (a
//! quicker loop while working on messages); unset, every case is checked.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    let only: Vec<String> = std::env::var("UI_ONLY")
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    if only.is_empty() {
        t.pass("tests/step/pass/*.rs");
        t.pass("tests/pipeline/pass/*.rs");
        t.compile_fail("tests/step/fail/*.rs");
        t.compile_fail("tests/pipeline/fail/*.rs");
        return;
    }
    for dir in ["step/pass", "pipeline/pass", "step/fail", "pipeline/fail"] {
        let Ok(entries) = std::fs::read_dir(format!("tests/{dir}")) else {
            continue;
        };
        let mut files: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".rs") && only.iter().any(|o| f.contains(o.as_str())))
            .collect();
        files.sort();
        for f in files {
            let path = format!("tests/{dir}/{f}");
            if dir.ends_with("pass") {
                t.pass(path);
            } else {
                t.compile_fail(path);
            }
        }
    }
}
