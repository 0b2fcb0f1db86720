//! The pipelines the figures run, written twice where requests are counted: with `#[step]` + `pipeline!`, and
//! with the plain API the way a user would write it (leaves awaited concurrently where they are independent).
//!
//! Every step puts a nonce in the environment before its command, so a new nonce makes every exec run again
//! and the same nonce hits the cache.

use dagger::prelude::*;

/// Runs `cmd` with `sh -c` in `prev`, tagged with the nonce and the step's number.
#[step]
pub(crate) fn tagged(prev: Container, nonce: String, n: i64, cmd: String) -> Container {
    prev.with_env_variable("BENCH_NONCE", format!("{nonce}-{n}"))
        .with_exec(["sh", "-c", cmd.as_str()])
}

/// A base with a cache volume and the sources mounted.
#[step]
pub(crate) fn toolchain(dag: &Query, base: Container, src: Directory) -> Container {
    base.with_mounted_cache("/cache", dag.cache_volume("bench-cache"))
        .with_directory("/src", src)
        .with_workdir("/src")
}

/// "Builds" a binary: concatenates the sources.
#[step]
pub(crate) fn binary(tc: Container, nonce: String) -> File {
    tc.with_env_variable("BENCH_NONCE", nonce)
        .with_exec(["sh", "-c", "cat *.txt > /app.bin"])
        .file("/app.bin")
}

/// The base with the binary in it.
#[step]
pub(crate) fn image(base: Container, bin: File) -> Container {
    base.with_file("/usr/local/bin/app", bin)
}

pipeline! {
    /// Eight independent execs of `cmd`: one level of eight outputs, one request.
    pub(crate) fan8(base: Container, nonce: String, cmd: String) {
        let s0 = tagged(base, nonce, 0, cmd);
        let s1 = tagged(base, nonce, 1, cmd);
        let s2 = tagged(base, nonce, 2, cmd);
        let s3 = tagged(base, nonce, 3, cmd);
        let s4 = tagged(base, nonce, 4, cmd);
        let s5 = tagged(base, nonce, 5, cmd);
        let s6 = tagged(base, nonce, 6, cmd);
        let s7 = tagged(base, nonce, 7, cmd);
        out o0 = s0.sync();
        out o1 = s1.sync();
        out o2 = s2.sync();
        out o3 = s3.sync();
        out o4 = s4.sync();
        out o5 = s5.sync();
        out o6 = s6.sync();
        out o7 = s7.sync();
    }
}

pipeline! {
    /// Ten execs, each on the previous one's result.
    pub(crate) linear10(base: Container, nonce: String) {
        let s1 = tagged(base, nonce, 1, "echo 1 >> /log");
        let s2 = tagged(s1, nonce, 2, "echo 2 >> /log");
        let s3 = tagged(s2, nonce, 3, "echo 3 >> /log");
        let s4 = tagged(s3, nonce, 4, "echo 4 >> /log");
        let s5 = tagged(s4, nonce, 5, "echo 5 >> /log");
        let s6 = tagged(s5, nonce, 6, "echo 6 >> /log");
        let s7 = tagged(s6, nonce, 7, "echo 7 >> /log");
        let s8 = tagged(s7, nonce, 8, "echo 8 >> /log");
        let s9 = tagged(s8, nonce, 9, "echo 9 >> /log");
        let s10 = tagged(s9, nonce, 10, "cat /log");
        out log = s10.stdout();
    }
}

pipeline! {
    /// A small CI: test and lint beside a build, then a smoke test of the image holding the build.
    pub(crate) ci(base: Container, src: Directory, nonce: String) {
        let tc = toolchain(base, src);
        let tests = tagged(tc, nonce, 1, "wc -l *.txt");
        let lint = tagged(tc, nonce, 2, "grep -c line *.txt");
        let bin = binary(tc, nonce);
        let img = image(base, bin);
        let smoke = tagged(img, nonce, 3, "ls -l /usr/local/bin/app");
        out test_log = tests.stdout();
        out lint_log = lint.stdout();
        out size = bin.size();
        out smoke_log = smoke.stdout() after test_log, lint_log;
    }
}

/// Three steps, the same as the Dockerfile of the BuildKit figure.
pub(crate) fn three_steps(base: &Container, nonce: &str) -> Container {
    base.with_env_variable("NONCE", nonce)
        .with_exec(["sh", "-c", "echo \"$NONCE\" > /nonce"])
        .with_exec(["sh", "-c", "seq 1 20000 > /numbers"])
        .with_exec(["sh", "-c", "wc -l /numbers > /count"])
}

/// The Dockerfile of the same three steps.
pub(crate) fn three_steps_dockerfile(base_ref: &str) -> String {
    format!(
        "FROM {base_ref}\nARG NONCE\nENV NONCE=$NONCE\nRUN echo \"$NONCE\" > /nonce\nRUN seq 1 20000 > /numbers\n\
         RUN wc -l /numbers > /count\n"
    )
}

/// The Dockerfile of [`linear10`]: ten `RUN`s, each on the previous one's result.
pub(crate) fn linear10_dockerfile(base_ref: &str) -> String {
    let mut f = format!("FROM {base_ref}\nARG NONCE\nENV NONCE=$NONCE\n");
    for n in 1..=9 {
        f.push_str(&format!("RUN echo {n} >> /log\n"));
    }
    f.push_str("RUN cat /log\n");
    f
}

/// The plain-API version of [`fan8`]: eight leaves awaited together.
pub(crate) async fn fan8_plain(base: &Container, nonce: &str, cmd: &str) -> Result<(), dagger::Error> {
    let leaves = (0..8).map(|n| tagged(base.clone(), nonce.to_owned(), n, cmd.to_owned()).sync());
    futures_util::future::try_join_all(leaves.map(|l| async move { l.await })).await?;
    Ok(())
}

/// The plain-API version of [`linear10`].
pub(crate) async fn linear10_plain(base: &Container, nonce: &str) -> Result<String, dagger::Error> {
    let mut c = base.clone();
    for n in 1..=9 {
        c = tagged(c, nonce.to_owned(), n, format!("echo {n} >> /log"));
    }
    tagged(c, nonce.to_owned(), 10, "cat /log".to_owned()).stdout().await
}

/// The plain-API version of [`ci`].
pub(crate) async fn ci_plain(dag: &Query, base: &Container, src: &Directory, nonce: &str) -> Result<(), dagger::Error> {
    let tc = toolchain(dag, base.clone(), src.clone());
    let tests = tagged(tc.clone(), nonce.to_owned(), 1, "wc -l *.txt".to_owned());
    let lint = tagged(tc.clone(), nonce.to_owned(), 2, "grep -c line *.txt".to_owned());
    let bin = binary(tc, nonce.to_owned());
    tokio::try_join!(async { tests.stdout().await }, async { lint.stdout().await }, async {
        bin.size().await
    })?;
    let img = image(base.clone(), bin);
    tagged(img, nonce.to_owned(), 3, "ls -l /usr/local/bin/app".to_owned())
        .stdout()
        .await?;
    Ok(())
}

/// The `diamond` pipeline of `tests/tests/pipeline.rs`, for the bytes its plan sends (figure 4h): a toolchain
/// synced first, tests and lint on it side by side, then the image holding its build published.
pub(crate) mod diamond_steps {
    use dagger::prelude::*;

    /// A toolchain with the sources mounted and a registry cache.
    #[step]
    pub(crate) fn toolchain(dag: &Query, src: Directory) -> Container {
        dag.container()
            .from("rust:1-slim")
            .with_mounted_cache("/usr/local/cargo/registry", dag.cache_volume("cargo-registry"))
            .with_directory("/src", src)
            .with_workdir("/src")
    }

    /// The unit tests.
    #[step]
    pub(crate) fn unit_tests(toolchain: Container, filter: &str) -> Container {
        toolchain.with_exec(["cargo", "test", filter])
    }

    /// The lint.
    #[step]
    pub(crate) fn lint(toolchain: Container) -> Container {
        toolchain.with_exec(["cargo", "clippy", "--", "-D", "warnings"])
    }

    /// The release binary.
    #[step]
    pub(crate) fn binary(toolchain: Container) -> File {
        toolchain
            .with_exec(["cargo", "build", "--release"])
            .file("target/release/app")
    }

    /// The runtime image.
    #[step]
    pub(crate) fn image(dag: &Query, binary: File, base: String) -> Container {
        dag.container().from(base).with_file("/usr/local/bin/app", binary)
    }

    pipeline! {
        /// Build once, then test and lint side by side, then publish.
        pub(crate) diamond(src: Directory, base: String) {
            let tc = toolchain(src);
            let tests = unit_tests(tc, "");
            let clippy = lint(tc);
            let img = image(binary(tc), base);
            out built = tc.sync();
            out test_log = tests.stdout() after built;
            out lint_log = clippy.stdout() after built;
            out image_ref = img.publish("127.0.0.1:5000/app:latest") after test_log, lint_log;
        }
    }
}
