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
    CacheSharingMode, Container, ContainerExistsOpts, ContainerWithExecOptsBuilder, ContainerWithSymlinkOpts,
    DirectoryEntriesOpts, DirectoryExistsOpts, DirectoryFilterOpts, DirectoryWithNewDirectoryOpts,
    DirectoryWithNewFileOptsBuilder, ExistsType, HostDirectoryOpts, HostDirectoryOptsBuilder, Query,
    QueryCacheVolumeOpts, ReturnType,
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

/// Fails unless `result` is an error whose text holds `wanted`.
fn expect_error<T>(what: &str, result: Result<T, dagger_sdk::errors::DaggerError>, wanted: &str) -> Result<()> {
    match result {
        Ok(_) => bail!("{what}: succeeded; expected an error saying {wanted:?}"),
        Err(e) => ensure!(
            e.to_string().contains(wanted),
            "{what}: the error does not say {wanted:?}: {e}"
        ),
    }
    Ok(())
}

/// Writes `files` (relative path, contents) under `root`.
fn write_tree(root: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// gitignore as Dagger applies it: every .gitignore from the nearest `.git` down, relative to its folder.
async fn gitignore(client: &Query, scratch: &Path) -> Result<()> {
    let repo = scratch.join("gitignore-repo");
    std::fs::create_dir_all(repo.join(".git"))?;
    write_tree(
        &repo,
        &[
            (".gitignore", "**.txt\n.git/\n!subdir/e.txt\n*.md\nbar/\n"),
            ("b.md", "2"),
            ("c.txt.rar", "3"),
            ("subdir/e.txt", "2"),
            ("subdir/g.txt", "6"),
            ("subdir/h.yaml", "6"),
            ("subdir2/.gitignore", "*.yaml\n.gitignore\n"),
            ("subdir2/foo.go", "1"),
            ("subdir2/bool.yaml", "1"),
            ("bar/bar.txt", "1"),
        ],
    )?;
    let opts = |exclude: Vec<&'static str>| HostDirectoryOpts {
        exclude: Some(exclude),
        gitignore: Some(true),
        include: None,
        no_cache: None,
    };
    let d = client.host().directory_opts(repo.to_string_lossy(), opts(vec![]));
    expect(
        "root entries",
        d.entries().await?,
        vec![
            ".gitignore".into(),
            "c.txt.rar".into(),
            "subdir/".into(),
            "subdir2/".into(),
        ],
    )?;
    expect(
        "a negation re-includes",
        d.directory("subdir").entries().await?,
        vec!["e.txt".into(), "h.yaml".into()],
    )?;
    expect(
        "a nested .gitignore",
        d.directory("subdir2").entries().await?,
        vec!["foo.go".to_owned()],
    )?;
    let sub = client
        .host()
        .directory_opts(repo.join("subdir").to_string_lossy(), opts(vec![]));
    expect(
        "a parent's rules apply below it",
        sub.entries().await?,
        vec!["e.txt".into(), "h.yaml".into()],
    )?;
    let excluded = client
        .host()
        .directory_opts(repo.to_string_lossy(), opts(vec![".gitignore"]));
    expect(
        "an excluded .gitignore still applies",
        excluded.entries().await?,
        vec!["c.txt.rar".into(), "subdir/".into(), "subdir2/".into()],
    )?;
    expect_error(
        "an ignored path",
        client
            .host()
            .directory_opts(repo.join("bar").to_string_lossy(), opts(vec![]))
            .entries()
            .await,
        "bar: no such file or directory",
    )?;
    let plain = scratch.join("gitignore-plain");
    write_tree(&plain, &[(".gitignore", "**/**"), ("foo.go", "1")])?;
    expect(
        "no .git, no rules",
        client
            .host()
            .directory_opts(plain.to_string_lossy(), opts(vec![]))
            .entries()
            .await?,
        vec![".gitignore".into(), "foo.go".into()],
    )?;
    let own = client
        .directory()
        .with_new_file(".gitignore", "b.txt\n")
        .with_new_file("a.txt", "")
        .with_new_file("b.txt", "");
    expect(
        "Directory.filter(gitignore)",
        own.filter_opts(DirectoryFilterOpts {
            exclude: None,
            include: None,
            gitignore: Some(true),
        })
        .entries()
        .await?,
        vec![".gitignore".into(), "a.txt".into()],
    )
}

/// A directory keeps its own root's mode; host files keep their times; Dagger's error wording.
async fn modes_times_and_wording(client: &Query, scratch: &Path) -> Result<()> {
    let sub = client
        .directory()
        .with_new_directory_opts(
            "p",
            DirectoryWithNewDirectoryOpts {
                permissions: Some(0o700),
            },
        )
        .with_new_file("p/f", "x")
        .directory("p");
    expect(
        "directory(path) keeps its mode",
        sub.stat(".").permissions().await?,
        0o700,
    )?;
    expect(
        "a copy to a new path keeps its mode",
        client
            .directory()
            .with_directory("new", sub.clone())
            .stat("new")
            .permissions()
            .await?,
        0o700,
    )?;
    let src = scratch.join("times");
    write_tree(&src, &[("f", "x")])?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(499_162_500);
    std::fs::File::options()
        .write(true)
        .open(src.join("f"))?
        .set_modified(when)?;
    let out = scratch.join("times-out");
    client
        .host()
        .directory(src.to_string_lossy())
        .export(out.to_string_lossy())
        .await?;
    expect(
        "an exported host file keeps its time",
        std::fs::metadata(out.join("f"))?.modified()?,
        when,
    )?;
    let d = client.directory().with_new_file("a/f", "x").with_new_directory("b");
    expect_error(
        "a missing directory",
        d.directory("/foo").sync().await,
        "/foo: no such file or directory",
    )?;
    expect_error(
        "a missing file, as given",
        d.file("keep/../this").sync().await,
        "keep/../this: no such file or directory",
    )?;
    expect_error(
        "a directory as a file",
        d.file("a").sync().await,
        "path a is a directory, not a file",
    )?;
    expect_error(
        "a file as a directory",
        d.directory("a/f").sync().await,
        "path a/f is a file, not a directory",
    )?;
    expect_error(
        "outside its parent",
        d.directory("b").with_new_directory("../c").sync().await,
        "cannot create directory outside parent: ../c",
    )?;
    expect_error(
        "a removal pattern in a missing directory",
        d.without_files(vec!["*.txt", "nothing/*"]).sync().await,
        "nothing: no such file or directory",
    )
}

/// Containers as Dagger runs them: groups, redirects, expand, mounted files and secrets, cache volume defaults,
/// mount stubs, modes, times, wording, publish.
async fn containers_like_dagger(client: &Query, registry: &str, scratch: &Path) -> Result<()> {
    let run = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let users = busybox(client, registry)
        .with_new_file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .with_new_file(
            "/etc/group",
            "root:x:0:\nwheel:x:10:root\nstaff:x:50:app\napp:x:1000:\n",
        );
    expect(
        "the user's groups",
        users.with_user("app").with_exec(vec!["id", "-G"]).stdout().await?,
        "1000 50\n".into(),
    )?;
    expect(
        "an explicit group only",
        users
            .with_user("app:staff")
            .with_exec(vec!["id", "-G"])
            .stdout()
            .await?,
        "50\n".into(),
    )?;

    let c = busybox(client, registry)
        .with_mounted_directory("/out", client.directory())
        .with_mounted_directory("/in", client.directory().with_new_file("in.txt", "from a mount\n"))
        .with_mounted_secret("/run/s", client.set_secret("s", "hunter2"))
        .with_env_variable("D", "/tmp")
        .with_workdir("/tmp");
    let r = c.with_exec_opts(
        vec!["sh", "-c", "cat; echo oops >&2"],
        ContainerWithExecOptsBuilder::default()
            .redirect_stdin("/in/in.txt")
            .redirect_stdout("/out/o.txt")
            .redirect_stderr("e.txt")
            .build()?,
    );
    expect(
        "stdout into a mounted directory",
        r.directory("/out").entries().await?,
        vec!["o.txt".to_owned()],
    )?;
    expect(
        "stdin from a mount",
        r.file("/out/o.txt").contents().await?,
        "from a mount\n".into(),
    )?;
    expect(
        "stderr against the workdir",
        r.file("/tmp/e.txt").contents().await?,
        "oops\n".into(),
    )?;
    let x = c.with_exec_opts(
        vec!["echo", "hi"],
        ContainerWithExecOptsBuilder::default()
            .redirect_stdout("${D}/x")
            .expand(true)
            .build()?,
    );
    expect(
        "an expanded redirect",
        x.file("/tmp/x").contents().await?,
        "hi\n".into(),
    )?;
    let n = c
        .with_exec_opts(
            vec!["wc", "-c"],
            ContainerWithExecOptsBuilder::default()
                .redirect_stdin("/run/s")
                .build()?,
        )
        .stdout()
        .await?;
    expect("stdin from a mounted secret", n.trim(), "7")?;

    let e = busybox(client, registry)
        .with_env_variable("T", "/etc/passwd")
        .with_env_variable("L", "/link");
    let expanded = ContainerWithSymlinkOpts { expand: Some(true) };
    expect(
        "withSymlink expands both",
        e.with_symlink_opts("${T}", "${L}", expanded)
            .with_exec(vec!["readlink", "/link"])
            .stdout()
            .await?,
        "/etc/passwd\n".into(),
    )?;
    expect_error(
        "a secret variable in expand",
        e.with_secret_variable("S", client.set_secret("s", "x"))
            .with_symlink_opts("/x", "${S}", ContainerWithSymlinkOpts { expand: Some(true) })
            .sync()
            .await,
        "expand cannot be used with secret env variable \"S\"",
    )?;

    let m = busybox(client, registry)
        .with_mounted_directory(
            "/mnt",
            client.directory().with_new_file("f1", "1").with_new_file("f2", "2"),
        )
        .with_mounted_file("/mnt/f2", client.file("f3", "3"));
    expect(
        "withFile onto a mounted file",
        m.with_file("/mnt/f2", client.file("f4", "4"))
            .file("/mnt/f2")
            .contents()
            .await?,
        "4".into(),
    )?;
    let both = busybox(client, registry)
        .with_mounted_secret("/run/tok", client.set_secret("tok", "s3cret"))
        .with_mounted_file("/run/tok", client.file("tok", "file"));
    expect(
        "a file mount hides the secret on read-back",
        both.file("/run/tok").contents().await?,
        "file".into(),
    )?;
    expect(
        "the exec sees the secret",
        both.with_exec(vec!["sh", "-c", r#"test "$(cat /run/tok)" = s3cret && echo secret"#])
            .stdout()
            .await?,
        "secret\n".into(),
    )?;

    let seed = client.directory().with_new_file("seeded", "x").id().await?;
    let volume = client.cache_volume_opts(
        format!("rust-defaults-{run}"),
        QueryCacheVolumeOpts {
            source: Some(seed),
            sharing: Some(CacheSharingMode::Locked),
            owner: Some("1000"),
        },
    );
    let cached = busybox(client, registry)
        .with_env_variable("RUN", run.clone())
        .with_mounted_cache("/c", volume);
    expect(
        "the volume's source and owner",
        cached
            .with_exec(vec!["sh", "-c", "stat -c %u /c; ls /c"])
            .stdout()
            .await?,
        "1000\nseeded\n".into(),
    )?;
    let step = |me: &str| {
        cached.with_exec(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 0.5; rm /c/busy; echo {me}"
            ),
        ])
    };
    let (a, b) = (step("a"), step("b"));
    let (ra, rb) = tokio::join!(a.stdout(), b.stdout());
    expect("LOCKED from the volume", (ra?, rb?), ("a\n".into(), "b\n".into()))?;

    let before = busybox(client, registry);
    let after = before
        .with_mounted_directory("/src", client.directory().with_new_file("a", "a"))
        .with_mounted_cache("/deep/cache", client.cache_volume(format!("rust-stubs-{run}")))
        .with_exec(vec!["true"]);
    expect(
        "an exec that changes nothing",
        before.rootfs().diff(after.rootfs()).glob("**").await?,
        Vec::<String>::new(),
    )?;
    let p = client
        .directory()
        .with_new_directory_opts(
            "p",
            DirectoryWithNewDirectoryOpts {
                permissions: Some(0o700),
            },
        )
        .with_new_file("p/f", "x")
        .directory("p");
    let src = scratch.join("ctr-times");
    write_tree(&src, &[("f", "x")])?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(499_162_500);
    std::fs::File::options()
        .write(true)
        .open(src.join("f"))?
        .set_modified(when)?;
    expect(
        "modes and times in the container",
        before
            .with_mounted_directory("/m", p.clone())
            .with_directory("/copied", p)
            .with_new_file("/tmp/x", "")
            .with_directory("/h", client.host().directory(src.to_string_lossy()))
            .with_exec(vec!["stat", "-c", "%a %n", "/m", "/copied", "/tmp"])
            .with_exec_opts(
                vec!["stat", "-c", "%Y", "/h/f"],
                ContainerWithExecOptsBuilder::default()
                    .redirect_stdout("/tmp/t")
                    .build()?,
            )
            .with_exec(vec!["sh", "-c", "stat -c '%a %n' /m /copied /tmp; cat /tmp/t"])
            .stdout()
            .await?,
        "700 /m\n700 /copied\n1777 /tmp\n499162500\n".into(),
    )?;

    expect(
        "withNewFile onto a directory",
        before.with_new_file("/tmp", "x").file("/tmp/tmp").contents().await?,
        "x".into(),
    )?;
    expect_error(
        "stdout before any exec",
        before.stdout().await,
        "no command has been set",
    )?;
    expect_error(
        "expect failure, exit 0",
        before
            .with_exec_opts(
                vec!["true"],
                ContainerWithExecOptsBuilder::default()
                    .expect(ReturnType::Failure)
                    .build()?,
            )
            .sync()
            .await,
        "process \"true\" did not complete successfully: exit code: 0",
    )?;
    let mm = before
        .with_mounted_directory("/mnt/dir", client.directory().with_new_file("some-file", "x"))
        .with_mounted_temp("/mnt/tmp")
        .with_mounted_cache("/mnt/cache", client.cache_volume(format!("rust-wording-{run}")));
    expect_error(
        "a file as a directory",
        mm.directory("/mnt/dir/some-file").sync().await,
        "path /mnt/dir/some-file is a file, not a directory",
    )?;
    expect_error(
        "a directory as a file",
        mm.file("/mnt/dir").sync().await,
        "path /mnt/dir is a directory, not a file",
    )?;
    expect_error(
        "a tmpfs",
        mm.file("/mnt/tmp/bogus").sync().await,
        "bogus: cannot retrieve path from tmpfs",
    )?;
    expect_error(
        "a cache",
        mm.directory("/mnt/cache/bogus").sync().await,
        "bogus: cannot retrieve path from cache",
    )?;
    let published = before
        .with_new_file("/rust", run)
        .publish(format!("{registry}/rust-app:v1"))
        .await?;
    ensure!(
        published.starts_with(&format!("{registry}/rust-app:v1@sha256:")),
        "publish returned {published}"
    );
    Ok(())
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
        check(&mut failed, "gitignore", gitignore(&client, &dir)).await;
        check(
            &mut failed,
            "modes, times and wording",
            modes_times_and_wording(&client, &dir),
        )
        .await;
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
            check(
                &mut failed,
                "containers like Dagger",
                containers_like_dagger(&client, &registry, &dir),
            )
            .await;
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
