//! The documents leaves send, printed offline from a detached `Query`: one snapshot per representative chain.
//!
//! Object arguments are printed as `<Type: path>` placeholders, naming the chain whose ID the SDK would ask
//! for first. Each snapshot holds the compact wire form, then the indented form.

use dagger::querybuilder::{IdMode, ObjectRef, Selection, Value};
use dagger::*;

fn placeholder(o: &ObjectRef) -> String {
    format!("<{}: {}>", o.type_name, o.selection.path().join("."))
}

fn print(sel: Selection) -> String {
    let ids = IdMode::Placeholder(&placeholder);
    format!(
        "{}\n\n{}",
        sel.print(ids).expect("placeholders"),
        sel.print_pretty(ids).expect("placeholders")
    )
}

fn leaf<T: Object>(obj: &T, name: &'static str) -> String {
    print(obj.selection().select(name, vec![]))
}

#[test]
fn container_exec_stdout() {
    let dag = Query::detached();
    let ctr = dag.container().from("alpine:3.20").with_exec(["echo", "hello"]);
    insta::assert_snapshot!(leaf(&ctr, "stdout"));
}

#[test]
fn exec_with_optional_arguments_and_enum() {
    let dag = Query::detached();
    let ctr = dag.container().from("alpine").with_exec_opts(
        ["sh", "-c", "exit 7"],
        ContainerWithExecOpts::default()
            .use_entrypoint(true)
            .redirect_stdout("/out.txt")
            .expect(ReturnType::Any),
    );
    insta::assert_snapshot!(leaf(&ctr, "exitCode"));
}

#[test]
fn cache_volume_mount_with_sharing_mode() {
    let dag = Query::detached();
    let ctr = dag.container().from("rust:1-slim").with_mounted_cache_opts(
        "/usr/local/cargo/registry",
        dag.cache_volume("cargo-registry"),
        ContainerWithMountedCacheOpts::default().sharing(CacheSharingMode::Locked),
    );
    insta::assert_snapshot!(leaf(&ctr, "sync"));
}

#[test]
fn list_of_objects_argument() {
    let dag = Query::detached();
    let a = dag.file("a.txt", "A");
    let b = dag.directory().with_new_file("b.txt", "B").file("b.txt");
    let ctr = dag.container().with_files("/data", [a, b]);
    insta::assert_snapshot!(leaf(&ctr, "id"));
}

#[test]
fn escaped_strings() {
    let dag = Query::detached();
    let dir = dag.directory().with_new_file(
        "notes/\"quoted\".txt",
        "line 1\nline 2\ttabbed\r\nback\\slash, bell \u{7}, nul \u{0}, é, 日本, 🚀",
    );
    insta::assert_snapshot!(leaf(&dir, "entries"));
}

#[test]
fn node_loading_by_id() {
    let dag = Query::detached();
    let ctr = dag.load_container_from_id("Y29udGFpbmVyOjE=").with_exec(["ls", "-l"]);
    insta::assert_snapshot!(leaf(&ctr, "stdout"));
}

#[test]
fn nested_object_arguments() {
    let dag = Query::detached();
    let src = dag
        .directory()
        .with_directory_opts(
            "src",
            dag.host().directory("."),
            DirectoryWithDirectoryOpts::default()
                .exclude(["target", ".git"])
                .include(Vec::<String>::new()),
        )
        .with_new_directory("empty");
    let ctr = dag
        .container()
        .from("alpine")
        .with_directory("/src", src)
        .with_workdir("/src");
    insta::assert_snapshot!(leaf(&ctr, "stdout"));
}

#[test]
fn input_objects_in_a_list() {
    let dag = Query::detached();
    let svc = dag.host().service([
        PortForward {
            frontend: Some(8080),
            backend: 80,
            protocol: Some(NetworkProtocol::Tcp),
        },
        PortForward {
            backend: 53,
            protocol: Some(NetworkProtocol::Udp),
            ..Default::default()
        },
    ]);
    insta::assert_snapshot!(leaf(&svc, "hostname"));
}

#[test]
fn ints_and_leaf_arguments() {
    let dag = Query::detached();
    let file = dag.file_opts(
        "run.sh",
        "#!/bin/sh\necho hi\n",
        QueryFileOpts::default().permissions(0o755),
    );
    let sel = file.selection().select(
        "contents",
        vec![("offsetLines", Value::Int(1)), ("limitLines", Value::Int(1))],
    );
    insta::assert_snapshot!(print(sel));
}

#[test]
fn publish_with_platform_variants() {
    let dag = Query::detached();
    let amd = dag
        .container_opts(QueryContainerOpts::default().platform("linux/amd64"))
        .from("busybox");
    let arm = dag
        .container_opts(QueryContainerOpts::default().platform("linux/arm64"))
        .from("busybox");
    let sel = dag.container().selection().select(
        "publish",
        vec![
            ("address", Value::String("127.0.0.1:5000/app:latest".into())),
            (
                "platformVariants",
                Value::List(vec![
                    Value::Object(ObjectRef {
                        type_name: "Container",
                        selection: amd.selection().clone(),
                    }),
                    Value::Object(ObjectRef {
                        type_name: "Container",
                        selection: arm.selection().clone(),
                    }),
                ]),
            ),
            ("mediaTypes", Value::Enum("DockerMediaTypes")),
        ],
    );
    insta::assert_snapshot!(print(sel));
}

#[test]
fn secrets_as_environment_variables() {
    let dag = Query::detached();
    let token = dag.set_secret("registry-token", "hunter2");
    let ctr = dag
        .container()
        .from("alpine")
        .with_secret_variable("TOKEN", token)
        .with_env_variable_opts(
            "GREETING",
            "hi $USER",
            ContainerWithEnvVariableOpts::default().expand(true),
        )
        .with_exec(["sh", "-c", "test -n \"$TOKEN\""]);
    insta::assert_snapshot!(leaf(&ctr, "combinedOutput"));
}

#[test]
fn git_tree_with_booleans() {
    let dag = Query::detached();
    let tree = dag
        .git_opts(
            "https://example.com/repo.git",
            QueryGitOpts::default().keep_git_dir(false),
        )
        .branch("main")
        .tree_opts(GitRefTreeOpts::default().depth(0).include_tags(true));
    insta::assert_snapshot!(leaf(&tree, "entries"));
}

#[test]
fn stat_of_a_nullable_object() {
    let dag = Query::detached();
    let stat = dag
        .container()
        .from("alpine")
        .stat_opts("/bin/sh", ContainerStatOpts::default().do_not_follow_symlinks(true));
    insta::assert_snapshot!(leaf(&stat, "fileType"));
}

#[test]
fn null_and_an_explicit_empty_list() {
    let sel = Selection::root().select("container", vec![]).select(
        "withDirectory",
        vec![
            ("path", Value::String("/x".into())),
            ("source", Value::String("some-id".into())),
            ("exclude", Value::List(vec![])),
            ("permissions", Value::Null),
        ],
    );
    insta::assert_snapshot!(print(sel.select("id", vec![])));
}
