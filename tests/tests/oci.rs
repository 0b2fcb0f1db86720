//! Images against real parts: Debian's `docker-registry` on loopback, `skopeo` and `umoci` as independent
//! readers of what we write, and a fake registry for corrupt content and token challenges.

use std::path::Path;
use std::process::Command;

use dagger_engine::oci::manifest::{ImageIndex, descriptor};
use dagger_engine::oci::{
    Auth, OCI_INDEX, OCI_MANIFEST, OciError, Platform, PulledImage, Reference, RegistryClient, RegistryConfig,
    build_image, read_image_tarball, write_oci_tarball, write_oci_tarball_named,
};
use dagger_engine::store::Store;
use testkit::registry::{FakeRegistry, LocalRegistry, busybox_image, push_busybox};

fn registry() -> LocalRegistry {
    LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"))
}

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default()).expect("client")
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    (dir, store)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_inspect(target: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", target]));
    serde_json::from_str(&out).expect("skopeo prints JSON")
}

fn diff_ids(image: &PulledImage) -> Vec<String> {
    image.config.rootfs().diff_ids().clone()
}

fn check_busybox_layer(dir: &Path) {
    assert!(dir.join("bin/busybox").is_file(), "{}", dir.display());
    assert_eq!(
        std::fs::read_link(dir.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    let passwd = std::fs::read_to_string(dir.join("etc/passwd")).expect("passwd");
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(dir.join("tmp").is_dir());
}

#[tokio::test]
async fn pushed_images_pull_back_and_skopeo_reads_them() {
    let reg = registry();
    let pinned = push_busybox(&reg, "busybox:latest").await;
    assert!(
        pinned.starts_with(&format!("{}/busybox@sha256:", reg.host())),
        "{pinned}"
    );
    let digest = pinned.split_once('@').map(|(_, d)| d.to_owned()).expect("digest");

    // An independent client accepts it.
    let inspected = skopeo_inspect(&format!("docker://{}/busybox:latest", reg.host()));
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));

    // Pull it into a fresh store, by tag and by digest.
    let (_dir, store) = new_store();
    let c = client();
    let by_tag = c
        .pull(&store, &reg.reference("busybox:latest"), &Platform::default(), None)
        .await
        .expect("pull by tag");
    assert_eq!(by_tag.manifest_digest, digest);
    assert_eq!(by_tag.layers.len(), 1);
    let env = by_tag
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    let by_digest = c
        .pull(
            &store,
            &Reference::parse(&pinned).expect("pinned"),
            &Platform::default(),
            None,
        )
        .await
        .expect("pull by digest");
    assert_eq!(by_digest.layers, by_tag.layers);

    let layer = &by_tag.layers[0];
    let blob = layer.store_digest().expect("sha256");
    assert_eq!(std::fs::metadata(&layer.path).expect("blob").len(), layer.size);
    let dir = dagger_engine::oci::layer::extract_cached(&store, &blob).expect("extract");
    check_busybox_layer(&dir);
    // The extracted layer is a working root filesystem (chroot needs root; skipped otherwise).
    if rustix::process::geteuid().is_root() {
        let out = run(Command::new("chroot")
            .arg(&dir)
            .args(["/bin/sh", "-c", "echo hello from $(basename $0)"]));
        assert_eq!(out.trim(), "hello from sh");
    }

    // Push the pulled image elsewhere: the layer directory maps back to the very same blob.
    let rebuilt = build_image(&store, &[dir], &by_tag.config, &Platform::default()).expect("rebuild");
    assert_eq!(rebuilt.layers, by_tag.layers);
    let copy = reg.reference("copies/busybox:v1");
    let copy_pinned = c.push(&rebuilt, &copy, None).await.expect("push copy");
    assert!(copy_pinned.starts_with(&format!("{}/copies/busybox@sha256:", reg.host())));
    let (_dir2, store2) = new_store();
    let again = c
        .pull(&store2, &copy, &Platform::default(), None)
        .await
        .expect("pull copy");
    assert_eq!(diff_ids(&again), diff_ids(&by_tag));
    assert_eq!(again.layers[0].digest, by_tag.layers[0].digest);
    assert_eq!(again.config_digest, by_tag.config_digest);

    // Pushing again uploads nothing new and gives the same digest.
    assert_eq!(c.push(&rebuilt, &copy, None).await.expect("push again"), copy_pinned);

    // A missing tag says so.
    let err = c
        .pull(&store2, &reg.reference("busybox:nope"), &Platform::default(), None)
        .await
        .expect_err("missing tag");
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&reg.host()), "{err}");
}

#[tokio::test]
async fn index_entries_are_chosen_by_platform() {
    let reg = registry();
    let (_dir, store) = new_store();
    let c = client();
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for platform in ["linux/amd64", "linux/arm64/v8"] {
        let platform = Platform::parse(platform).expect("platform");
        let image = busybox_image(&store, &platform).expect("image");
        let by_digest = reg.reference(&format!("multi@{}", image.manifest.digest));
        c.push(&image, &by_digest, None).await.expect("push by digest");
        let mut d = descriptor(OCI_MANIFEST, &image.manifest.digest, image.manifest.size).expect("descriptor");
        d.set_platform(Some((&platform).into()));
        entries.push(d);
        digests.push(image.manifest.digest.clone());
    }
    assert_ne!(digests[0], digests[1], "the configs differ by platform");
    let mut index = ImageIndex::default();
    index.set_media_type(Some(OCI_INDEX.into()));
    index.set_manifests(entries);
    let bytes = serde_json::to_vec(&index).expect("json");
    let tagged = reg.reference("multi:latest");
    c.push_manifest(&tagged, OCI_INDEX, bytes, None)
        .await
        .expect("push index");

    for (platform, expected) in [("linux/amd64", &digests[0]), ("linux/arm64", &digests[1])] {
        let p = Platform::parse(platform).expect("platform");
        let pulled = c.pull(&store, &tagged, &p, None).await.expect(platform);
        assert_eq!(&pulled.manifest_digest, expected, "{platform}");
        assert_eq!(pulled.config.architecture().to_string(), p.architecture);
    }
    let err = c
        .pull(
            &store,
            &tagged,
            &Platform::parse("linux/s390x").expect("platform"),
            None,
        )
        .await
        .expect_err("no s390x");
    let msg = err.to_string();
    assert!(msg.starts_with("no linux/s390x image in index"), "{msg}");
    assert!(msg.ends_with("available: linux/amd64, linux/arm64/v8"), "{msg}");

    // skopeo picks the amd64 entry of our index too.
    let inspected = skopeo_inspect(&format!("docker://{}/multi:latest", reg.host()));
    assert_eq!(inspected["Architecture"], "amd64");
}

#[tokio::test]
async fn mirrors_are_tried_first() {
    let reg = registry();
    push_busybox(&reg, "library/busybox:1.36").await;
    let config = RegistryConfig::parse(&format!("docker.io=http://{}", reg.host()), "").expect("config");
    let c = RegistryClient::new(config).expect("client");
    let (_dir, store) = new_store();
    // `busybox:1.36` is a Docker Hub name; only the mirror is reachable here, and it has the image.
    let pulled = c
        .pull(
            &store,
            &Reference::parse("busybox:1.36").expect("ref"),
            &Platform::default(),
            None,
        )
        .await
        .expect("pull through the mirror");
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(
        pulled.reference.map(|r| r.to_string()).as_deref(),
        Some("docker.io/library/busybox:1.36")
    );
}

// A registry that serves a valid manifest and config, and a layer blob whose bytes are not what its digest says.
#[tokio::test]
async fn corrupt_blobs_are_detected_and_not_stored() {
    let good_layer = b"the layer the manifest promises".to_vec();
    let evil_layer = b"a layer swapped in by somebody!".to_vec();
    assert_eq!(good_layer.len(), evil_layer.len());
    let sha = |b: &[u8]| format!("sha256:{}", dagger_engine::ids::Digest::of(b));
    let layer_digest = sha(&good_layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    }))
    .expect("config");
    let config_digest = sha(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": good_layer.len()}]
    }))
    .expect("manifest");
    let fake = FakeRegistry::start({
        let (manifest, config, config_digest, layer_digest) = (
            manifest.clone(),
            config.clone(),
            config_digest.clone(),
            layer_digest.clone(),
        );
        move |_, req| {
            let ct = |t: &str| vec![("content-type".to_owned(), t.to_owned())];
            if req.target.contains("/manifests/") {
                (200, ct(OCI_MANIFEST), manifest.clone())
            } else if req.target.ends_with(&config_digest) {
                (200, ct("application/octet-stream"), config.clone())
            } else if req.target.ends_with(&layer_digest) {
                (200, ct("application/octet-stream"), evil_layer.clone())
            } else {
                (404, vec![], b"{}".to_vec())
            }
        }
    })
    .await;
    let (dir, store) = new_store();
    let reference = Reference::parse(&format!("{}/app:latest", fake.host())).expect("ref");
    let err = client()
        .pull(&store, &reference, &Platform::default(), None)
        .await
        .expect_err("corrupt layer");
    match &err {
        OciError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(expected, &layer_digest);
            assert_eq!(actual, &sha(b"a layer swapped in by somebody!"));
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("corrupt"), "{err}");
    let blob = |d: &str| dir.path().join("blobs").join(d.trim_start_matches("sha256:"));
    assert!(!blob(&layer_digest).exists() && !blob(&sha(b"a layer swapped in by somebody!")).exists());
    assert!(blob(&config_digest).exists(), "the valid config was kept");
    assert!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none());

    // A pinned reference whose manifest does not match is refused before anything else is fetched.
    let wrong = format!("{}/app@sha256:{}", fake.host(), "0".repeat(64));
    let err = client()
        .pull(
            &store,
            &Reference::parse(&wrong).expect("ref"),
            &Platform::default(),
            None,
        )
        .await
        .expect_err("manifest digest");
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

// Token auth as Docker Hub and most registries do it: 401 with a Bearer challenge, a token from the realm for
// basic credentials, then the request again with the token.
#[tokio::test]
async fn bearer_challenges_are_answered_with_credentials() {
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 2},
        "layers": []}))
    .expect("manifest");
    let expected_basic = "Basic dXNlcjpzM2NyZXQ="; // user:s3cret
    let fake = FakeRegistry::start({
        let manifest = manifest.clone();
        move |port, req| {
            let auth = req.headers.get("authorization").cloned().unwrap_or_default();
            if req.target.starts_with("/token?") {
                if auth != expected_basic {
                    return (401, vec![], b"bad credentials".to_vec());
                }
                assert!(req.target.contains("service=fake-registry"), "{}", req.target);
                assert!(req.target.contains("scope=repository%3Aprivate%2Fapp%3Apull"), "{}", req.target);
                return (200, vec![], br#"{"token":"t0k3n"}"#.to_vec());
            }
            if auth != "Bearer t0k3n" {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake-registry",scope="repository:private/app:pull""#
                );
                return (401, vec![("www-authenticate".to_owned(), challenge)], b"{}".to_vec());
            }
            (200, vec![("content-type".to_owned(), OCI_MANIFEST.to_owned())], manifest.clone())
        }
    })
    .await;
    let reference = Reference::parse(&format!("{}/private/app:latest", fake.host())).expect("ref");
    let c = client();

    let err = c.resolve(&reference, None).await.expect_err("anonymous");
    assert_eq!(
        err.to_string(),
        format!(
            "registry {} answered 401 for a token for `repository:private/app:pull`: pass credentials with `withRegistryAuth`",
            fake.host()
        )
    );
    let wrong = Auth {
        username: "user".into(),
        secret: "wrong".into(),
    };
    let err = c.resolve(&reference, Some(&wrong)).await.expect_err("wrong password");
    assert!(err.to_string().contains("check the credentials"), "{err}");

    let auth = Auth {
        username: "user".into(),
        secret: "s3cret".into(),
    };
    let digest = c.resolve(&reference, Some(&auth)).await.expect("with credentials");
    assert_eq!(digest, format!("sha256:{}", dagger_engine::ids::Digest::of(&manifest)));
    // The token is reused: the next request goes straight through.
    let before = fake.requests().len();
    c.resolve(&reference, Some(&auth)).await.expect("cached token");
    assert_eq!(fake.requests().len(), before + 1);
}

#[tokio::test]
async fn oci_tarballs_round_trip_and_other_tools_read_them() {
    let (dir, store) = new_store();
    let image = busybox_image(&store, &Platform::default()).expect("image");
    let tarball = dir.path().join("busybox.tar");
    write_oci_tarball(&image, std::fs::File::create(&tarball).expect("create")).expect("write");
    let mut again = Vec::new();
    write_oci_tarball(&image, &mut again).expect("write again");
    assert_eq!(
        std::fs::read(&tarball).expect("read"),
        again,
        "tarballs are deterministic"
    );

    // skopeo reads the OCI layout, and converts it to a docker-archive.
    let inspected = skopeo_inspect(&format!("oci-archive:{}", tarball.display()));
    assert_eq!(inspected["Digest"], image.manifest.digest.as_str());
    let docker_tar = dir.path().join("docker.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci-archive:{}", tarball.display()),
        &format!("docker-archive:{}:example.com/team/busybox:1", docker_tar.display()),
    ]));

    // umoci unpacks what we wrote into a runtime bundle (it finds images in a layout by tag).
    let named = dir.path().join("named.tar");
    let name = Reference::parse("example.com/team/busybox:1").expect("ref");
    write_oci_tarball_named(&image, Some(&name), std::fs::File::create(&named).expect("create")).expect("write");
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    run(Command::new("tar").arg("-xf").arg(&named).arg("-C").arg(&layout));
    let bundle = dir.path().join("bundle");
    let image_arg = format!("{}:1", layout.display());
    let listed = run(Command::new("umoci").arg("ls").arg("--layout").arg(&layout));
    assert_eq!(listed.trim(), "1");

    let mut unpack = Command::new("umoci");
    unpack.args(["raw", "unpack", "--image", &image_arg]).arg(&bundle);
    run(&mut unpack);
    check_busybox_layer(&bundle);

    // Our reader takes both our OCI tarball and skopeo's docker-archive.
    let (_d2, store2) = new_store();
    let from_oci = read_image_tarball(&tarball, &store2).expect("read OCI tarball");
    assert_eq!(from_oci.manifest_digest, image.manifest.digest);
    assert_eq!(diff_ids(&from_oci), image.diff_ids);
    assert_eq!(
        from_oci.layers.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        image.layers.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );
    let d = from_oci.layers[0].store_digest().expect("digest");
    check_busybox_layer(&dagger_engine::oci::layer::extract_cached(&store2, &d).expect("extract"));
    let from_named = read_image_tarball(&named, &store2).expect("read named OCI tarball");
    assert_eq!(from_named.reference, Some(name));
    assert_eq!(from_named.manifest_digest, image.manifest.digest);

    let from_docker = read_image_tarball(&docker_tar, &store2).expect("read docker archive");
    assert_eq!(
        from_docker.reference.as_ref().map(|r| r.to_string()).as_deref(),
        Some("example.com/team/busybox:1")
    );
    assert_eq!(diff_ids(&from_docker), image.diff_ids);
    let layer = &from_docker.layers[0];
    let d = layer.store_digest().expect("digest");
    // docker-archive layers are stored uncompressed, so their digest is the diff_id.
    assert_eq!(layer.digest, image.diff_ids[0]);
    assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar");
    check_busybox_layer(&dagger_engine::oci::layer::extract_cached(&store2, &d).expect("extract"));

    // Not an image tarball at all.
    let junk = dir.path().join("junk.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, "hello.txt", &b"hi"[..]).expect("append");
    std::fs::write(&junk, b.into_inner().expect("tar")).expect("write junk");
    let err = read_image_tarball(&junk, &store2).expect_err("junk");
    assert!(err.to_string().contains("neither `index.json`"), "{err}");
}
