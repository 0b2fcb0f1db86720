//! The generated files must be exactly what the schema generates: edit the schema, then run
//! `cargo run -p xtask -- codegen`.

#[test]
fn generated_files_are_up_to_date() {
    for (rel, expected) in xtask::codegen::generate_from_disk().expect("generate") {
        let actual = std::fs::read_to_string(xtask::workspace_root().join(rel)).expect("read generated file");
        assert!(
            actual == expected,
            "{rel} is stale: run `cargo run -p xtask -- codegen` and commit the result"
        );
    }
}
