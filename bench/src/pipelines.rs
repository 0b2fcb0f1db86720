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

/// Runs `echo $((count + 1))` in `prev`: a command made from the value of an earlier output.
#[step]
pub(crate) fn counted(prev: Container, nonce: String, n: i64, count: String) -> Container {
    let script = format!("echo $(({} + 1))", count.trim());
    prev.with_env_variable("BENCH_NONCE", format!("{nonce}-{n}"))
        .with_exec(["sh", "-c", script.as_str()])
}

pipeline! {
    /// One slow branch (`sleep 1`, two leaves) beside a short chain of dependent values: each link's output is
    /// the next link's argument, so the chain is three waves, sent while the slow branch runs.
    pub(crate) unbalanced(base: Container, nonce: String) {
        let slow = tagged(base, nonce, 1, "sleep 1; echo slow");
        out slow_log = slow.stdout();
        out slow_code = slow.exit_code();
        let first = tagged(base, nonce, 2, "echo 1");
        out one = first.stdout();
        let second = counted(base, nonce, 3, one);
        out two = second.stdout();
        out two_code = second.exit_code();
        let third = counted(base, nonce, 4, two);
        out three = third.stdout();
    }
}

/// The plain-API version of [`unbalanced`]: the slow branch and the chain awaited together with
/// `tokio::try_join!`, each independent pair of leaves too.
pub(crate) async fn unbalanced_plain(base: &Container, nonce: &str) -> Result<String, dagger::Error> {
    let slow = tagged(base.clone(), nonce.to_owned(), 1, "sleep 1; echo slow".to_owned());
    let slow_branch = async { tokio::try_join!(async { slow.stdout().await }, async { slow.exit_code().await }) };
    let chain = async {
        let one = tagged(base.clone(), nonce.to_owned(), 2, "echo 1".to_owned())
            .stdout()
            .await?;
        let second = counted(base.clone(), nonce.to_owned(), 3, one);
        let (two, _) = tokio::try_join!(async { second.stdout().await }, async { second.exit_code().await })?;
        counted(base.clone(), nonce.to_owned(), 4, two).stdout().await
    };
    let (_, three) = tokio::try_join!(slow_branch, chain)?;
    Ok(three)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unbalanced_plan_sends_the_chain_beside_the_slow_branch() {
        let base = Query::detached().container().from("busybox");
        let plan = unbalanced::plan(base, "n".to_owned());
        let titles: Vec<(&str, &[usize])> = plan
            .documents
            .iter()
            .map(|d| (d.title.as_str(), &d.after[..]))
            .collect();
        // The chain's links wait only for the value before them, not for the slow branch; `two_code` is a
        // request of its own because nothing waits for it while `three` waits for `two`.
        assert_eq!(
            titles,
            [
                ("slow_log, slow_code", &[][..]),
                ("one", &[]),
                ("two (with the value of `one`)", &[2]),
                ("two_code (with the value of `one`)", &[2]),
                ("three (with the value of `two`)", &[3]),
            ],
            "{plan}"
        );
    }
}
