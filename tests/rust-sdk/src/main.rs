//! A program written against the official Rust SDK (dagger-sdk 0.21.8), the way its users write them, run as
//! `dagger-rs run <this program>`: the SDK finds the session through `DAGGER_SESSION_PORT` and
//! `DAGGER_SESSION_TOKEN`. It runs a quickstart-like pipeline and the common API (directories, files, the host,
//! container execs, env, secrets, exec errors, loading objects back by ID), each check printing `ok   <name>` or
//! `FAIL <name>: <why>`; any failure makes the exit code 1.
//!
//! DRS_TEST_REGISTRY names a plain-HTTP registry holding `busybox:latest` (`cargo run -p xtask -- images` serves
//! one on 127.0.0.1:5000); without it the container checks are skipped, and say so.

use std::future::Future;
use std::path::{Path, PathBuf};

use dagger_sdk::{
    Container, ContainerExistsOpts, ContainerWithExecOptsBuilder, DirectoryEntriesOpts, DirectoryExistsOpts,
    DirectoryWithNewFileOptsBuilder, ExistsType, HostDirectoryOptsBuilder, Query, ReturnType,
};
use eyre::{bail, ensure, Result};

/// Fails unless `got == want`, naming what was compared.
fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<()> {
    ensure!(got == want, "{what}: got {got:?}, want {want:?}");
    Ok(())
}

/// Runs one check, prints its outcome, and counts a failure.
async fn check<F: Future<Output = Result<()>>>(failed: &mut usize, name: &str, body: F) {
    match body.await {
        Ok(()) => println!("ok   {name}"),
        Err(e) => {
            println!("FAIL {name}: {e:#}");
            *failed += 1;
        }
    }
}

/// The quickstart: pull an image, run a command, read its output.
async fn quickstart(client: &Query, registry: &str) -> Result<()> {
    let out = client
        .container()
        .from(format!("{registry}/busybox:latest"))
        .with_exec(vec!["echo", "hello from the Rust SDK"])
        .stdout()
        .await?;
    expect("stdout", out.as_str(), "hello from the Rust SDK\n")
}

async fn directories(client: &Query) -> Result<()> {
    let d = client
        .directory()
        .with_new_file("src/main.rs", "fn main() {}\n")
        .with_new_file("README.md", "# readme\n")
        .with_new_directory("empty");
    expect(
        "entries",
        d.entries().await?,
        vec!["README.md".into(), "empty/".into(), "src/".into()],
    )?;
    expect("glob", d.glob("**/*.rs").await?, vec!["src/main.rs".to_owned()])?;
    expect(
        "sub-directory entries",
        d.directory("src").entries().await?,
        vec!["main.rs".to_owned()],
    )?;
    expect(
        "file contents",
        d.file("src/main.rs").contents().await?,
        "fn main() {}\n".into(),
    )?;
    let copied = client
        .directory()
        .with_directory("copy", d.clone())
        .without_file("copy/README.md");
    expect(
        "withDirectory then withoutFile",
        copied
            .entries_opts(dagger_sdk::DirectoryEntriesOpts { path: Some("copy") })
            .await?,
        vec!["empty/".into(), "src/".into()],
    )?;
    Ok(())
}

/// Paths as Dagger treats them: removal patterns, `withFile` into a directory, directories in `glob`, `exists`
/// and symlinks, bare file names.
async fn paths_like_dagger(client: &Query) -> Result<()> {
    let d = client
        .directory()
        .with_new_file("foo.txt", "")
        .with_new_file("b/foo.txt", "")
        .with_new_file("b/data.json", "")
        .with_new_file("a1/x", "")
        .with_new_file("a2/y", "");
    let in_b = DirectoryEntriesOpts { path: Some("b") };
    expect(
        "withoutFile b/*.txt",
        d.without_file("b/*.txt").entries_opts(in_b).await?,
        vec!["data.json".into()],
    )?;
    expect(
        "withoutDirectory a*",
        d.without_directory("a*").entries().await?,
        vec!["b/".into(), "foo.txt".into()],
    )?;
    expect(
        "withoutFiles with patterns",
        d.without_files(vec!["*.txt", "b/*.none", "missing"]).entries().await?,
        vec!["a1/".into(), "a2/".into(), "b/".into()],
    )?;
    expect(
        "glob",
        d.glob("*").await?,
        vec!["a1/".into(), "a2/".into(), "b/".into(), "foo.txt".into()],
    )?;
    let f = client
        .directory()
        .with_new_file("sub/some-file", "data")
        .file("sub/some-file");
    for root in ["", ".", "/"] {
        expect(
            &format!("withFile({root:?})"),
            client.directory().with_file(root, f.clone()).entries().await?,
            vec!["some-file".into()],
        )?;
    }
    let in_b = DirectoryEntriesOpts { path: Some("b") };
    expect(
        "withFile into a directory",
        d.with_file("b", f).entries_opts(in_b).await?,
        vec!["data.json".into(), "foo.txt".into(), "some-file".into()],
    )?;
    let linked = d.with_symlink("foo.txt", "link");
    let exists = |ty: ExistsType, no_follow: bool| {
        let linked = linked.clone();
        async move {
            linked
                .exists_opts(
                    "link",
                    DirectoryExistsOpts {
                        expected_type: Some(ty),
                        do_not_follow_symlinks: Some(no_follow),
                    },
                )
                .await
        }
    };
    expect(
        "a link to a file is a regular file",
        exists(ExistsType::RegularType, false).await?,
        true,
    )?;
    expect(
        "the symlink check sees the link",
        exists(ExistsType::SymlinkType, false).await?,
        true,
    )?;
    expect(
        "doNotFollowSymlinks",
        exists(ExistsType::RegularType, true).await?,
        false,
    )?;
    match client.file("dir/some-file", "x").contents().await {
        Ok(_) => bail!("`file(name: \"dir/some-file\")` succeeded"),
        Err(e) => ensure!(
            e.to_string().contains("must not contain a directory"),
            "unexpected error: {e}"
        ),
    }
    Ok(())
}

async fn files(client: &Query) -> Result<()> {
    let d = client.directory().with_new_file_opts(
        "run.sh",
        "#!/bin/sh\necho run\n",
        DirectoryWithNewFileOptsBuilder::default()
            .permissions(0o755_isize)
            .build()?,
    );
    let f = d.file("run.sh");
    expect("size", f.size().await?, 19)?;
    expect("name", f.name().await?, "run.sh".into())?;
    let renamed = f.with_name("go.sh");
    expect("withName", renamed.name().await?, "go.sh".into())?;
    let placed = client.directory().with_file("bin/go.sh", renamed);
    expect(
        "withFile",
        placed.file("bin/go.sh").contents().await?,
        "#!/bin/sh\necho run\n".into(),
    )
}

async fn host_and_export(client: &Query, scratch: &Path) -> Result<()> {
    let src = scratch.join("host-src");
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(src.join("keep.txt"), "keep")?;
    std::fs::write(src.join("drop.log"), "drop")?;
    std::fs::write(src.join("sub/nested.txt"), "nested")?;
    let d = client.host().directory_opts(
        src.to_string_lossy(),
        HostDirectoryOptsBuilder::default().exclude(vec!["*.log"]).build()?,
    );
    expect(
        "host directory entries",
        d.entries().await?,
        vec!["keep.txt".into(), "sub/".into()],
    )?;
    expect(
        "host file",
        client
            .host()
            .file(src.join("keep.txt").to_string_lossy())
            .contents()
            .await?,
        "keep".into(),
    )?;
    let out = scratch.join("exported");
    let written = d
        .with_new_file("made.txt", "made")
        .export(out.to_string_lossy())
        .await?;
    expect(
        "export returns the path",
        PathBuf::from(written).canonicalize()?,
        out.canonicalize()?,
    )?;
    expect(
        "exported file",
        std::fs::read_to_string(out.join("made.txt"))?,
        "made".into(),
    )?;
    expect(
        "exported nested file",
        std::fs::read_to_string(out.join("sub/nested.txt"))?,
        "nested".into(),
    )
}

async fn container_exec_and_env(client: &Query, registry: &str) -> Result<()> {
    let src = client.directory().with_new_file("in.txt", "hello\n");
    let c = busybox(client, registry)
        .with_env_variable("GREETING", "hi")
        .with_workdir("/work")
        .with_mounted_directory("/src", src.clone())
        .with_directory("/copied", src)
        .with_exec(vec![
            "sh",
            "-c",
            "echo $GREETING from $(pwd); cat /src/in.txt > out.txt",
        ]);
    expect("stdout", c.stdout().await?, "hi from /work\n".into())?;
    expect("exitCode", c.exit_code().await?, 0)?;
    expect("envVariable", c.env_variable("GREETING").await?, "hi".into())?;
    expect("workdir", c.workdir().await?, "/work".into())?;
    expect(
        "file the exec made",
        c.file("out.txt").contents().await?,
        "hello\n".into(),
    )?;
    expect(
        "copied directory",
        c.directory("/copied").entries().await?,
        vec!["in.txt".to_owned()],
    )?;
    let chained = c.with_exec(vec!["cat", "/work/out.txt"]);
    expect(
        "a second exec sees the first one's files",
        chained.stdout().await?,
        "hello\n".into(),
    )
}

async fn container_paths_like_dagger(client: &Query, registry: &str) -> Result<()> {
    let c = busybox(client, registry)
        .with_workdir("/workdir")
        .with_new_file("moo", "")
        .with_new_file("foo", "")
        .with_new_file("bar/man", "")
        .with_symlink("/workdir/foo", "/foo-link");
    expect(
        "withoutFile *oo",
        c.without_file("*oo").with_exec(vec!["ls", "-1"]).stdout().await?,
        "bar\n".into(),
    )?;
    let f = client
        .directory()
        .with_new_file("sub/some-file", "data")
        .file("sub/some-file");
    expect(
        "withFile into /tmp",
        c.with_file("/tmp", f).file("/tmp/some-file").contents().await?,
        "data".into(),
    )?;
    let exists = |ty: ExistsType, no_follow: bool| {
        let c = c.clone();
        async move {
            c.exists_opts(
                "/foo-link",
                ContainerExistsOpts {
                    expected_type: Some(ty),
                    do_not_follow_symlinks: Some(no_follow),
                    expand: None,
                },
            )
            .await
        }
    };
    expect(
        "exists follows a link",
        exists(ExistsType::RegularType, false).await?,
        true,
    )?;
    expect(
        "the symlink check sees the link",
        exists(ExistsType::SymlinkType, false).await?,
        true,
    )?;
    expect(
        "doNotFollowSymlinks",
        exists(ExistsType::RegularType, true).await?,
        false,
    )
}

async fn secrets(client: &Query, registry: &str) -> Result<()> {
    let secret = client.set_secret("token", "s3cret");
    expect("plaintext", secret.plaintext().await?, "s3cret".into())?;
    let c = busybox(client, registry)
        .with_secret_variable("TOKEN", secret)
        .with_exec(vec![
            "sh",
            "-c",
            r#"echo token=$TOKEN; test "$TOKEN" = s3cret && echo match"#,
        ]);
    expect(
        "stdout masks the secret",
        c.stdout().await?,
        "token=***\nmatch\n".into(),
    )
}

async fn exec_errors(client: &Query, registry: &str) -> Result<()> {
    match busybox(client, registry)
        .with_exec(vec!["sh", "-c", "exit 3"])
        .sync()
        .await
    {
        Ok(_) => bail!("`exit 3` succeeded"),
        Err(e) => ensure!(
            e.to_string().contains("exit code: 3"),
            "the error does not give the exit code: {e}"
        ),
    }
    let anyway = busybox(client, registry).with_exec_opts(
        vec!["sh", "-c", "exit 5"],
        ContainerWithExecOptsBuilder::default()
            .expect(ReturnType::Any)
            .build()?,
    );
    expect("exitCode with expect ANY", anyway.exit_code().await?, 5)
}

async fn load_by_id(client: &Query, registry: &str) -> Result<()> {
    let d = client.directory().with_new_file("a.txt", "A");
    let loaded = client.load_directory_from_id(d.id().await?);
    expect(
        "entries of a loaded directory",
        loaded.entries().await?,
        vec!["a.txt".to_owned()],
    )?;
    let file = client.load_file_from_id(d.file("a.txt").id().await?);
    expect("contents of a loaded file", file.contents().await?, "A".into())?;
    if let Ok(entries) = client
        .load_directory_from_id(d.file("a.txt").id().await?)
        .entries()
        .await
    {
        bail!("loading a File ID as a Directory succeeded: {entries:?}");
    }
    let c = busybox(client, registry)
        .with_env_variable("WHO", "loaded")
        .with_exec(vec!["sh", "-c", "echo $WHO > /who"]);
    let loaded = client.load_container_from_id(c.id().await?);
    expect(
        "env of a loaded container",
        loaded.env_variable("WHO").await?,
        "loaded".into(),
    )?;
    expect(
        "exec on a loaded container",
        loaded.with_exec(vec!["cat", "/who"]).stdout().await?,
        "loaded\n".into(),
    )?;
    let synced = c.sync().await?;
    expect(
        "a synced container",
        synced.file("/who").contents().await?,
        "loaded\n".into(),
    )
}

fn busybox(client: &Query, registry: &str) -> Container {
    client.container().from(format!("{registry}/busybox:latest"))
}

#[tokio::main]
async fn main() {
    let registry = std::env::var("DRS_TEST_REGISTRY").unwrap_or_default();
    let scratch = std::env::temp_dir().join(format!("drs-rust-sdk-{}", std::process::id()));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = failed.clone();
    let dir = scratch.clone();
    let outcome = dagger_sdk::connect(move |client| async move {
        let mut failed = 0;
        check(&mut failed, "directories", directories(&client)).await;
        check(&mut failed, "files", files(&client)).await;
        check(&mut failed, "paths like Dagger", paths_like_dagger(&client)).await;
        check(&mut failed, "host directory and export", host_and_export(&client, &dir)).await;
        if registry.is_empty() {
            println!("skip container checks: set DRS_TEST_REGISTRY to a registry holding busybox:latest");
        } else {
            check(&mut failed, "quickstart", quickstart(&client, &registry)).await;
            check(
                &mut failed,
                "container exec and env",
                container_exec_and_env(&client, &registry),
            )
            .await;
            check(
                &mut failed,
                "container paths like Dagger",
                container_paths_like_dagger(&client, &registry),
            )
            .await;
            check(&mut failed, "secrets", secrets(&client, &registry)).await;
            check(&mut failed, "exec errors", exec_errors(&client, &registry)).await;
            check(&mut failed, "load by ID", load_by_id(&client, &registry)).await;
        }
        count.store(failed, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = outcome {
        println!("FAIL connect: {e:?}");
        std::process::exit(1);
    }
    let failed = failed.load(std::sync::atomic::Ordering::SeqCst);
    if failed > 0 {
        println!("{failed} check(s) failed");
        std::process::exit(1);
    }
}
