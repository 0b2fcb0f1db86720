//! Images through the SDK on the embedded engine: `from` a loopback registry, `publish` back to it (checked by
//! pulling it again and by `skopeo`), `export`/`asTarball`/`import`, and moved tags.

use dagger::prelude::*;
use dagger_engine::{Config, Session};
use testkit::registry::{LocalRegistry, push_busybox};

async fn start() -> (Session, Query, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache dir");
    let (session, dag) = testkit::start_engine(Config::for_dir(cache.path())).await;
    (session, dag, cache)
}

fn registry() -> LocalRegistry {
    LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"))
}

fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is missing: install the Debian package skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

#[tokio::test]
async fn from_a_registry_runs_with_the_image_config() {
    let reg = registry();
    let pinned = push_busybox(&reg, "busybox:latest").await;
    let (_s, dag, _c) = start().await;
    let c = dag.container().from(format!("{}/busybox:latest", reg.host()));
    let out = c
        .with_exec(["sh", "-c", "echo $PATH; busybox | head -1 | cut -d' ' -f1"])
        .stdout()
        .await
        .expect("runs");
    assert_eq!(
        out,
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nBusyBox\n"
    );
    assert_eq!(c.default_args().await.expect("cmd"), ["sh"]);
    let image_ref = c.image_ref().await.expect("imageRef");
    let digest = pinned.rsplit('@').next().expect("digest");
    assert_eq!(image_ref, format!("{}/busybox:latest@{digest}", reg.host()));
    // By digest too.
    let by_digest = dag.container().from(pinned.clone());
    assert!(by_digest.exists("/bin/busybox").await.expect("exists"));
}

#[tokio::test]
async fn a_published_image_pulls_back_and_other_tools_read_it() {
    let reg = registry();
    push_busybox(&reg, "busybox:latest").await;
    let (session, dag, _c) = start().await;
    let mut events = session.engine.subscribe();
    let built = dag
        .container()
        .from(format!("{}/busybox:latest", reg.host()))
        .with_new_file("/app/greeting.txt", "hello\n")
        .with_exec(["sh", "-c", "mkdir -p /app/bin && printf '#!/bin/sh\\necho app says $(cat /app/greeting.txt)\\n' > /app/bin/app && chmod +x /app/bin/app"])
        .with_label("org.opencontainers.image.title", "app")
        .with_env_variable("APP_MODE", "test")
        .with_workdir("/app")
        .with_entrypoint(["/app/bin/app"]);
    let address = format!("{}/app:v1", reg.host());
    let published = built.publish(address.clone()).await.expect("publish");
    assert!(
        published.starts_with(&format!("{}/app:v1@sha256:", reg.host())),
        "{published}"
    );
    // The publish reported its progress, ending with the reference it pushed.
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if ev.op == "Container.publish" {
            seen.push(ev.kind);
        }
    }
    assert_eq!(seen.first(), Some(&dagger_engine::EventKind::Started), "{seen:?}");
    assert!(
        seen.contains(&dagger_engine::EventKind::Log(published.clone())),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(dagger_engine::EventKind::Done(_))),
        "{seen:?}"
    );

    // Pulled back, it runs as configured.
    let (s2, dag2, _c2) = start().await;
    let mut pulls = s2.engine.subscribe();
    let back = dag2.container().from(address.clone());
    let out = back
        .with_exec_opts(
            Vec::<String>::new(),
            dagger::ContainerWithExecOpts::default().use_entrypoint(true),
        )
        .stdout()
        .await
        .expect("entrypoint runs");
    assert_eq!(out, "app says hello\n");
    // The fresh engine downloaded the whole image once, and said how much: the blobs skopeo lists, and the
    // manifest and configuration.
    let mut pulled = Vec::new();
    while let Ok(ev) = pulls.try_recv() {
        if let dagger_engine::EventKind::Pulled(n) = ev.kind {
            assert_eq!(ev.op, "Container.from");
            pulled.push(n);
        }
    }
    let layer_bytes: u64 =
        skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{address}")])["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["size"].as_u64().expect("size"))
            .sum();
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert!(
        pulled[0] > layer_bytes && pulled[0] < layer_bytes + 64 * 1024,
        "pulled {pulled:?}, layers {layer_bytes}"
    );
    assert_eq!(back.workdir().await.expect("workdir"), "/app");
    assert_eq!(back.env_variable("APP_MODE").await.expect("env"), Some("test".into()));
    assert_eq!(
        back.label("org.opencontainers.image.title").await.expect("label"),
        Some("app".into())
    );

    // An independent tool agrees.
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{address}")]);
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "app");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        inspect["Digest"].as_str(),
        published.rsplit('@').next(),
        "skopeo sees the digest publish returned"
    );
}

#[tokio::test]
async fn export_as_tarball_and_import_round_trip() {
    let reg = registry();
    push_busybox(&reg, "busybox:latest").await;
    let (_s, dag, cache) = start().await;
    let c = dag
        .container()
        .from(format!("{}/busybox:latest", reg.host()))
        .with_new_file("/marker", "exported\n");
    let path = c.export("out/image.tar").await.expect("export");
    assert_eq!(path, cache.path().join("out/image.tar").to_string_lossy());
    let inspect = skopeo(&["inspect", &format!("oci-archive:{path}")]);
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(2));

    let imported = dag.container().import(dag.host().file(path));
    let out = imported.with_exec(["cat", "/marker"]).stdout().await.expect("runs");
    assert_eq!(out, "exported\n");

    let tarball = c.as_tarball();
    assert!(tarball.size().await.expect("size") > 100_000);
    let again = dag.container().import(tarball);
    assert_eq!(
        again.with_exec(["cat", "/marker"]).stdout().await.expect("runs"),
        "exported\n"
    );
}

#[tokio::test]
async fn a_moved_tag_is_a_new_image() {
    let reg = registry();
    push_busybox(&reg, "moving:v1").await;
    let (_s, dag, _c) = start().await;
    let address = format!("{}/moving:v1", reg.host());
    let first = dag.container().from(address.clone()).image_ref().await.expect("ref");
    // Move the tag: publish a different image under it.
    dag.container()
        .from(address.clone())
        .with_new_file("/new", "n")
        .publish(address.clone())
        .await
        .expect("publish");
    let second = dag.container().from(address.clone());
    assert_ne!(second.image_ref().await.expect("ref"), first);
    assert!(second.exists("/new").await.expect("exists"));
}

#[tokio::test]
async fn bad_references_and_missing_images_are_clear_errors() {
    let reg = registry();
    let (_s, dag, _c) = start().await;
    let err = dag
        .container()
        .from("UPPER/Case:tag")
        .sync()
        .await
        .expect_err("bad reference");
    assert!(err.to_string().contains("UPPER/Case"), "{err}");
    let err = dag
        .container()
        .from(format!("{}/nothing-here:latest", reg.host()))
        .sync()
        .await
        .expect_err("missing image");
    let msg = err.to_string();
    assert!(msg.contains("nothing-here"), "{msg}");
    let err = dag
        .container()
        .from(format!("{}/busybox", reg.host()))
        .publish(format!("{}/x:1", reg.host()))
        .await
        .expect_err("nothing to publish from a missing base");
    assert!(err.to_string().contains("busybox"), "{err}");
}

/// The offline `redis:7-bookworm` image (a database for service tests) starts its server from its default
/// command and answers its own client.
#[tokio::test]
async fn the_offline_redis_image_runs_its_server_and_client() {
    tokio::task::spawn_blocking(|| testkit::images::ensure().unwrap_or_else(|e| panic!("offline images: {e}")))
        .await
        .expect("join");
    let (_session, dag, _c) = start().await;
    let redis = dag
        .container()
        .from(format!("{}/library/redis:7-bookworm", testkit::images::ADDR));
    let ports = redis.exposed_ports().await.expect("exposed ports");
    assert_eq!(ports.len(), 1, "the image's 6379/tcp");
    assert_eq!(ports[0].port().await.expect("port"), 6379);
    let args = redis.default_args().await.expect("default args");
    assert_eq!(args.first().map(String::as_str), Some("redis-server"));
    let mut script = args.join(" ");
    script.push_str(
        " --daemonize yes && for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli ping && break; sleep 0.2; done && \
         redis-cli set greeting hello >/dev/null && redis-cli get greeting",
    );
    let out = redis.with_exec(["sh", "-c", &script]).stdout().await.expect("redis");
    assert_eq!(out, "PONG\nhello\n");
}
