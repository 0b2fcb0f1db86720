//! `quickstart_dsl --graph` prints the pipeline's graph as Mermaid, without an engine.

use std::process::Command;

#[test]
fn graph_prints_the_pipelines_mermaid_graph() {
    let out = Command::new(env!("CARGO_BIN_EXE_quickstart_dsl"))
        .arg("--graph")
        .output()
        .expect("the example runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(printed, examples::quickstart_dsl::quickstart::GRAPH.mermaid());
    assert!(printed.starts_with("flowchart LR\n"), "{printed}");
    assert!(printed.contains("o_published ==>|value| b4"), "{printed}");
}
