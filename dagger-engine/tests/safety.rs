//! Engine safety, end to end over GraphQL: a tag that cannot be resolved fails `from`, a silent registry fails
//! within its timeout, what unpacking a layer leaves out is reported, and a container the runtime cannot
//! start is the runtime's error, never the command's exit code.

use std::time::{Duration, Instant};

use dagger_engine::oci::registry::{RegistryConfig, RegistryTimeouts};
use dagger_engine::{Config, Session};
use serde_json::{Value, json};
use testkit::registry::{FakeRegistry, FakeReply, FakeRequest};

struct Env {
    session: Session,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_with(f: impl FnOnce(&mut Config)) -> Env {
    let cache = tempfile::tempdir().expect("cache");
    let mut config = Config {
        registries: Some(RegistryConfig::default()),
        ..Config::for_dir(cache.path())
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

// ----- images: tag resolution, timeouts, skipped layer entries --------------------------------------------

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", dagger_engine::ids::Digest::of(bytes))
}

/// A one-image registry: a manifest, its config and layers, served by digest.
struct Image {
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn new(layers: Vec<Vec<u8>>) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        })
        .to_string()
        .into_bytes();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&config),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha256(l),
                "size": l.len(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let mut blobs = vec![(sha256(&config), config)];
        blobs.extend(layers.into_iter().map(|l| (sha256(&l), l)));
        Image { manifest, blobs }
    }

    /// Serves the image; every manifest request is first offered to `gate`, which may answer instead.
    async fn serve(self, gate: impl Fn(&FakeRequest) -> Option<FakeReply> + Send + Sync + 'static) -> FakeRegistry {
        FakeRegistry::start(move |_, req| {
            if req.target.contains("/manifests/") {
                if let Some(reply) = gate(req) {
                    return reply;
                }
                let ct = vec![(
                    "content-type".to_owned(),
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                )];
                return (200, ct, self.manifest.clone());
            }
            match self.blobs.iter().find(|(d, _)| req.target.ends_with(d.as_str())) {
                Some((_, bytes)) => (200, vec![], bytes.clone()),
                None => (404, vec![], b"{}".to_vec()),
            }
        })
        .await
    }
}

#[tokio::test]
async fn a_tag_that_cannot_be_resolved_fails_from_instead_of_pulling_it_unpinned() {
    let manifest_requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = manifest_requests.clone();
    // The first manifest request fails; any later one would succeed, so only a pull that goes on after the
    // failed resolution (by tag, unpinned) could succeed.
    let fake = Image::new(Vec::new())
        .serve(move |_| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (n == 0).then(|| (500, vec![], b"registry hiccup".to_vec()))
        })
        .await;
    let env = start_with(|_| {}).await;
    let address = format!("{}/flaky/app:v1", fake.host());
    let query = format!(r#"{{ container {{ from(address: "{address}") {{ imageRef }} }} }}"#);
    let err = env.error(&query).await;
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("cannot resolve image `{address}` to a digest")),
        "{message}"
    );
    assert!(
        message.contains("500") && message.contains("registry hiccup"),
        "{message}"
    );
    assert!(
        fake.requests().iter().all(|r| !r.target.contains("/blobs/")),
        "nothing was pulled: {:?}",
        fake.requests()
    );

    // Once the registry answers, the same address resolves and the image is pinned to what was resolved.
    let v = env.query(&query).await;
    let image_ref = v["data"]["container"]["from"]["imageRef"].as_str().unwrap_or_default();
    assert!(image_ref.starts_with(&format!("{address}@sha256:")), "{v}");

    // A tag the registry does not have names the reference and the cause.
    let gone = FakeRegistry::start(|_, _| (404, vec![], b"{}".to_vec())).await;
    let address = format!("{}/gone/app:v1", gone.host());
    let err = env
        .error(&format!(
            r#"{{ container {{ from(address: "{address}") {{ imageRef }} }} }}"#
        ))
        .await;
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("cannot resolve image `{address}` to a digest")) && message.contains("404"),
        "{message}"
    );
}

#[tokio::test]
async fn from_a_registry_that_never_answers_fails_within_the_request_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    // Accept every connection and keep it open, silent.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let env = start_with(|c| {
        c.registries = Some(RegistryConfig {
            timeouts: RegistryTimeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(1),
                idle: Duration::from_secs(1),
            },
            ..RegistryConfig::default()
        });
    })
    .await;
    let started = Instant::now();
    let err = env
        .error(&format!(
            r#"{{ container {{ from(address: "{host}/silent/app:v1") {{ imageRef }} }} }}"#
        ))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let message = err["message"].as_str().unwrap_or_default();
    for part in [
        format!("cannot resolve image `{host}/silent/app:v1`"),
        format!("registry {host} timed out"),
        format!("http://{host}/v2/silent/app/manifests/v1"),
        "within 1s".to_owned(),
        "DAGGER_RS_REGISTRY_TIMEOUT=request=".to_owned(),
    ] {
        assert!(message.contains(&part), "`{part}` missing from: {message}");
    }
    holder.abort();
}

/// A plain layer tar: a file, two device nodes, a fifo.
fn hostile_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |kind: tar::EntryType, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(8).expect("major");
            h.set_device_minor(0).expect("minor");
        }
        b.append_data(&mut h, path, data).expect("append");
    };
    add(tar::EntryType::Regular, "etc/kept", b"kept\n");
    add(tar::EntryType::Char, "dev/mem", b"");
    add(tar::EntryType::Block, "dev/sda", b"");
    add(tar::EntryType::Fifo, "run/pipe", b"");
    b.into_inner().expect("tar")
}

#[tokio::test]
async fn entries_left_out_of_a_layer_are_reported_per_layer() {
    let layer = hostile_layer();
    let layer_digest = sha256(&layer);
    let fake = Image::new(vec![layer]).serve(|_| None).await;
    let env = start_with(|_| {}).await;
    let mut events = env.session.engine.subscribe();
    let v = env
        .query(&format!(
            r#"{{ container {{ from(address: "{}/hostile/app:v1") {{ rootfs {{ entries(path: "dev") }} }} }} }}"#,
            fake.host()
        ))
        .await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(
        v["data"]["container"]["from"]["rootfs"]["entries"],
        json!([]),
        "no device was created: {v}"
    );

    let mut lines = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let dagger_engine::engine::EventKind::Log(line) = &e.kind
            && e.op == "Container.from"
        {
            lines.push(line.clone());
        }
    }
    let expected = format!(
        "skipped 2 device nodes (1 character, 1 block), 1 fifo in layer {layer_digest} (dev/mem, dev/sda, run/pipe)"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&expected) && l.contains("never from an image layer")),
        "`{expected}` not among the log lines of Container.from: {lines:?}"
    );
}
