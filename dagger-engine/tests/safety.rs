//! Engine safety, end to end over GraphQL: a tag that cannot be resolved fails `from`, a silent registry fails
//! within its timeout, what unpacking a layer leaves out is reported, and a container the runtime cannot
//! start is the runtime's error, never the command's exit code.

use std::time::{Duration, Instant};

use dagger_engine::oci::registry::{RegistryConfig, RegistryTimeouts};
use dagger_engine::{Config, Session};
use serde_json::{Value, json};
use tests::registry::{FakeRegistry, FakeReply, FakeRequest};

struct Env {
    session: Session,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_with(f: impl FnOnce(&mut Config)) -> Env {
    let cache = tempfile::tempdir().expect("cache");
    let mut config = Config {
        cache_dir: cache.path().to_owned(),
        workdir: cache.path().to_owned(),
        registries: Some(RegistryConfig::default()),
        ..Config::default()
    };
    f(&mut config);
    let session = Session::start(config).await.expect("engine");
    Env {
        session,
        _dirs: vec![cache],
    }
}

impl Env {
    async fn query(&self, query: &str) -> Value {
        let body = reqwest::Client::new()
            .post(format!("{}/query", self.session.url()))
            .basic_auth(&self.session.token, Some(""))
            .body(json!({ "query": query }).to_string())
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    /// The one error of a query that must fail.
    async fn error(&self, query: &str) -> Value {
        let v = self.query(query).await;
        let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors: {v}"));
        assert_eq!(errors.len(), 1, "{v}");
        errors[0].clone()
    }

    /// A container over a busybox root filesystem built from the host's `/bin/busybox`.
    async fn busybox(&mut self) -> String {
        let dir = tempfile::tempdir().expect("rootfs");
        let root = dir.path();
        for d in ["bin", "etc", "tmp"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("/bin/busybox is missing: install the Debian package busybox-static");
        for applet in ["sh", "true", "echo"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        let v = self
            .query(&format!(
                r#"{{ host {{ directory(path: "{}") {{ id }} }} }}"#,
                root.display()
            ))
            .await;
        self._dirs.push(dir);
        let id = v["data"]["host"]["directory"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {v}"));
        format!(r#"container {{ withRootfs(directory: "{id}")"#)
    }
}

fn args(list: &[&str]) -> String {
    serde_json::to_string(list).expect("json")
}

// ----- runtime start failures ----------------------------------------------------------------------------

async fn missing_binary_is_a_runtime_error(runtime: &str) {
    let mut env = start_with(|c| c.runtime = Some(runtime.to_owned())).await;
    let base = env.busybox().await;
    let err = env
        .error(&format!(
            "{{ {base} {{ withExec(args: {}) {{ stdout }} }} }} }}",
            args(&["/no/such/binary", "--flag"])
        ))
        .await;
    let message = err["message"].as_str().unwrap_or_default();
    assert_ne!(err["extensions"]["_type"], json!("EXEC_ERROR"), "{err}");
    assert!(err["extensions"]["exitCode"].is_null(), "{err}");
    assert!(
        message.contains(&format!("{runtime} could not start the container")),
        "{runtime}: {message}"
    );
    assert!(
        message.contains("`/no/such/binary` was not found in the container"),
        "{runtime}: {message}"
    );
    // The runtime's own words are quoted.
    assert!(message.contains(&format!("{runtime} reported: ")), "{message}");
    assert!(!message.contains("exit code"), "{runtime}: {message}");

    // A bare name is looked up on the container's PATH, and the error says so.
    let err = env
        .error(&format!(
            "{{ {base} {{ withExec(args: {}) {{ stdout }} }} }} }}",
            args(&["no-such-tool"])
        ))
        .await;
    let message = err["message"].as_str().unwrap_or_default();
    assert!(err["extensions"]["exitCode"].is_null(), "{err}");
    assert!(
        message.contains("`no-such-tool` was not found in the container") && message.contains("PATH"),
        "{runtime}: {message}"
    );

    // A command the process itself fails with keeps its exit code.
    let err = env
        .error(&format!(
            "{{ {base} {{ withExec(args: {}) {{ stdout }} }} }} }}",
            args(&["sh", "-c", "exit 3"])
        ))
        .await;
    assert_eq!(err["extensions"]["_type"], json!("EXEC_ERROR"), "{err}");
    assert_eq!(err["extensions"]["exitCode"], json!(3), "{err}");
    // And so does `exit 1`, which is what a start failure used to look like.
    let err = env
        .error(&format!(
            "{{ {base} {{ withExec(args: {}) {{ stdout }} }} }} }}",
            args(&["sh", "-c", "echo no >&2; exit 1"])
        ))
        .await;
    assert_eq!(err["extensions"]["exitCode"], json!(1), "{err}");
    assert_eq!(err["extensions"]["stderr"], json!("no\n"), "{err}");
}

#[tokio::test]
async fn runc_failing_to_start_a_missing_binary_is_a_runtime_error_not_exit_code_1() {
    missing_binary_is_a_runtime_error("runc").await;
}

#[tokio::test]
async fn crun_failing_to_start_a_missing_binary_is_a_runtime_error_not_exit_code_1() {
    missing_binary_is_a_runtime_error("crun").await;
}
