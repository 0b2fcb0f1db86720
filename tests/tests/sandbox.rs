//! Nothing a pipeline does writes outside its sandbox: symlinks met while writing into a `Directory` or a
//! container's filesystem are followed inside that tree's root, never onto the host.
//!
//! Every writer (`Directory.withNewFile`/`withDirectory`/`withNewDirectory`, `export`, `withRootfs`,
//! `Container.withNewFile`/`withDirectory`, `withMountedDirectory` with a write and with an exec) is tried with
//! every kind of link (an absolute one to a host directory, a relative one climbing with `../..`, a link to
//! such a link, and a link made by an earlier exec, or coming from a pulled image layer), and a canary
//! directory on the host must stay empty.

use dagger::prelude::*;
use dagger_engine::Config;
use dagger_engine::oci::Platform;
use dagger_engine::oci::image::build_image;
use dagger_engine::oci::reference::Reference;
use dagger_engine::oci::registry::{RegistryClient, RegistryConfig};
use dagger_engine::store::Store;
use testkit::registry::{LocalRegistry, busybox_config, busybox_layer};

struct Env {
    dag: Query,
    _session: dagger_engine::Session,
    dirs: tempfile::TempDir,
    canary: tempfile::TempDir,
}

async fn start() -> Env {
    let dirs = tempfile::tempdir().expect("dirs");
    let (session, dag) = testkit::start_engine(Config {
        cache_dir: dirs.path().join("cache"),
        ..Config::for_dir(dirs.path())
    })
    .await;
    // Outside the engine's directories, as a host directory a hostile pipeline would aim at.
    let canary = tempfile::Builder::new()
        .prefix("canary")
        .tempdir_in("/tmp")
        .expect("canary");
    Env {
        dag,
        _session: session,
        dirs,
        canary,
    }
}

/// The kinds of link pointing at the canary: `(name, links to create as (target, name))`; the link to write
/// through is always `s`.
fn links(canary: &str) -> Vec<(&'static str, Vec<(String, String)>)> {
    let climb = format!("{}{}", "../".repeat(12), canary.trim_start_matches('/'));
    vec![
        ("absolute", vec![(canary.to_owned(), "s".to_owned())]),
        ("relative", vec![(climb, "s".to_owned())]),
        (
            "link to a link",
            vec![(canary.to_owned(), "t".to_owned()), ("t".to_owned(), "s".to_owned())],
        ),
    ]
}

impl Env {
    fn canary_path(&self) -> String {
        self.canary.path().to_string_lossy().into_owned()
    }

    #[track_caller]
    fn assert_canary_untouched(&self, case: &str) {
        let found: Vec<_> = std::fs::read_dir(self.canary.path())
            .expect("canary")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(found.is_empty(), "{case}: written on the host: {found:?}");
    }

    fn out(&self, name: &str) -> String {
        self.dirs.path().join("out").join(name).to_string_lossy().into_owned()
    }

    /// A busybox root filesystem as a container.
    fn busybox(&self) -> Container {
        let root = self.dirs.path().join("busybox");
        if !root.exists() {
            busybox_layer(&root).expect("busybox layer");
        }
        self.dag
            .container()
            .with_rootfs(self.dag.host().directory(root.to_string_lossy()))
    }
}

/// Everything below `dir` on the host, relative.
fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.path().symlink_metadata().expect("meta");
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.push(
                e.path()
                    .strip_prefix(dir)
                    .expect("below")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn directory_writes_through_links_stay_inside_the_directory() {
    let env = start().await;
    let canary = env.canary_path();
    let inside = canary.trim_start_matches('/');
    for (kind, made) in links(&canary) {
        let mut dir = env.dag.directory();
        for (target, name) in &made {
            dir = dir.with_symlink(target.clone(), name.clone());
        }
        let payload = env.dag.directory().with_new_file("pwned", "x");
        let writes = [
            ("withNewFile", dir.with_new_file("s/pwned", "x")),
            ("withDirectory", dir.with_directory("s", payload.clone())),
            ("withNewDirectory", dir.with_new_directory("s/pwned")),
        ];
        for (writer, written) in writes {
            let case = format!("{writer} through an {kind} link");
            // The write lands inside the directory, where the link points from its root.
            assert_eq!(
                written
                    .entries_opts(dagger::DirectoryEntriesOpts {
                        path: Some(inside.to_owned())
                    })
                    .await
                    .expect(&case),
                ["pwned".to_owned() + if writer == "withNewDirectory" { "/" } else { "" }],
                "{case}"
            );
            let out = env.out(&format!("{writer}-{kind}").replace(' ', "-"));
            written.export(out.clone()).await.expect(&case);
            env.assert_canary_untouched(&case);
            let exported = files_below(std::path::Path::new(&out));
            assert!(
                exported.contains(&format!("{inside}/pwned")),
                "{case}: exported {exported:?}"
            );
        }
    }
}

#[tokio::test]
async fn container_writes_through_links_stay_inside_the_container() {
    let env = start().await;
    let canary = env.canary_path();
    let base = env.busybox();
    let mut cases: Vec<(String, Container)> = Vec::new();
    for (kind, made) in links(&canary) {
        let mut c = base.clone();
        for (target, name) in &made {
            c = c.with_symlink(target.clone(), format!("/{name}"));
        }
        cases.push((kind.to_owned(), c));
    }
    // A link made by a process in the container.
    cases.push((
        "exec-made".to_owned(),
        base.with_exec(["ln", "-s", canary.as_str(), "/s"]),
    ));
    let payload = env.dag.directory().with_new_file("pwned", "x");
    for (kind, c) in cases {
        let writes = [
            ("Container.withNewFile", c.with_new_file("/s/pwned", "x")),
            ("Container.withDirectory", c.with_directory("/s", payload.clone())),
            (
                "withRootfs",
                env.dag
                    .container()
                    .with_rootfs(c.directory("/").with_new_file("s/pwned", "x")),
            ),
        ];
        for (writer, written) in writes {
            let case = format!("{writer} through an {kind} link");
            // Inside the container the file is where the link points, as a process there would see it.
            let seen = written
                .with_exec(["cat", &format!("{canary}/pwned")])
                .stdout()
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(seen, "x", "{case}");
            env.assert_canary_untouched(&case);
        }
        // The container's root as a directory, written through the link, then exported.
        let case = format!("Container.directory + withNewFile + export through an {kind} link");
        let out = env.out(&format!("export-{kind}").replace(' ', "-"));
        c.directory("/")
            .with_new_file("s/pwned", "x")
            .export(out.clone())
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        env.assert_canary_untouched(&case);
        assert!(
            std::path::Path::new(&out)
                .join(canary.trim_start_matches('/'))
                .join("pwned")
                .is_file(),
            "{case}"
        );
    }
}

#[tokio::test]
async fn mounted_directories_with_links_are_written_inside_the_mount() {
    let env = start().await;
    let canary = env.canary_path();
    let base = env.busybox();
    for (kind, made) in links(&canary) {
        let mut dir = env.dag.directory().with_new_file("keep", "k");
        for (target, name) in &made {
            dir = dir.with_symlink(target.clone(), name.clone());
        }
        let mounted = base.with_mounted_directory("/m", dir);
        // A write by the engine into the mount, through the link.
        let case = format!("withMountedDirectory + withNewFile through an {kind} link");
        let written = mounted.with_new_file("/m/s/pwned", "x");
        written
            .with_exec(["ls", "/m"])
            .sync()
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        env.assert_canary_untouched(&case);
        // A write by the container's process through the link: it resolves in the container, not the host.
        let case = format!("withMountedDirectory + withExec through an {kind} link");
        mounted
            .with_exec(["sh", "-c", "echo x > /m/s/pwned; true"])
            .sync()
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        env.assert_canary_untouched(&case);
    }
}

#[tokio::test]
async fn a_link_in_a_pulled_image_layer_cannot_reach_the_host() {
    let env = start().await;
    let canary = env.canary_path();
    // An image whose second layer holds `/app -> <canary>`.
    let registry = LocalRegistry::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(env.dirs.path().join("fixture-store")).expect("store");
    let base = env.dirs.path().join("layer-busybox");
    busybox_layer(&base).expect("busybox layer");
    let hostile = env.dirs.path().join("layer-hostile");
    std::fs::create_dir_all(&hostile).expect("layer");
    std::os::unix::fs::symlink(&canary, hostile.join("app")).expect("link");
    let image = build_image(
        &store,
        &[base, hostile],
        &busybox_config().expect("config"),
        &Platform::default(),
    )
    .expect("image");
    let reference = Reference::parse(&format!("{}/hostile:latest", registry.host())).expect("reference");
    let client = RegistryClient::new(RegistryConfig::default()).expect("client");
    let pinned = client.push(&image, &reference, None).await.expect("push");

    let ctr = env.dag.container().from(pinned);
    let out = env.out("pulled");
    ctr.directory("/")
        .with_new_file("app/x", "x")
        .export(out.clone())
        .await
        .expect("export");
    env.assert_canary_untouched("Container.directory(\"/\").withNewFile(\"app/x\") + export");
    assert!(
        std::path::Path::new(&out)
            .join(canary.trim_start_matches('/'))
            .join("x")
            .is_file()
    );
    let seen = ctr
        .with_new_file("/app/x", "x")
        .with_exec(["cat", &format!("{canary}/x")])
        .stdout()
        .await
        .expect("cat");
    assert_eq!(seen, "x");
    env.assert_canary_untouched("Container.withNewFile(\"/app/x\")");
}

#[tokio::test]
async fn redirected_output_is_written_through_links_inside_the_container() {
    let env = start().await;
    let canary = env.canary_path();
    // A process makes the link; the next one's output is redirected through it (redirects are opened before
    // the process starts, as Dagger opens them).
    let c = env
        .busybox()
        .with_exec(["sh", "-c", &format!("mkdir -p {canary}; ln -s {canary} /out")])
        .with_exec_opts(
            ["echo", "hello"],
            dagger::ContainerWithExecOpts {
                redirect_stdout: Some("/out/stdout.txt".into()),
                ..Default::default()
            },
        );
    let seen = c
        .with_exec(["cat", &format!("{canary}/stdout.txt")])
        .stdout()
        .await
        .expect("the redirected output is inside the container");
    assert_eq!(seen, "hello\n");
    env.assert_canary_untouched("withExec(redirectStdout) through an exec-made link");
}
