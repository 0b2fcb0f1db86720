//! Errors: what a failed command looks like, how to allow one, and how a `pipeline!` run reports a failure.
//!
//! - A command that exits non-zero fails the leaf that ran it with [`Error::Exec`]: an [`ExecError`] with
//!   the command line, the exit code, and everything it printed. [`report`] prints one for people.
//! - When a non-zero exit is an *answer* rather than a failure (a linter's findings, `grep` finding
//!   nothing), run the command with `expect: ReturnType::Any` and read [`Container::exit_code`].
//!   `ReturnType::Failure` turns it around: the step fails unless the command fails.
//! - A [`pipeline!`] run that fails returns a [`PipelineError`] naming the output, binding and step that
//!   failed, the outputs it skipped, and the values of the outputs that did finish (`partial`) — in earlier
//!   levels and beside the failure in its own level alike. [`checks`] runs lint and formatting before the
//!   tests, and packaging after them, so a failed test run shows all three kinds.

use dagger::prelude::*;
use dagger::{ContainerWithExecOpts, ReturnType};

use crate::BoxError;

/// A compiler run that fails: two lines of progress on stdout, a diagnostic on stderr, exit code 2.
pub const FAILING_BUILD: &str = "echo 'compiling app v0.1.0'; echo 'compiling parser'; \
     echo 'error[E0425]: cannot find value `x` in this scope' >&2; echo '  --> src/parser.rs:12:5' >&2; \
     echo 'error: could not compile `app` (1 previous error)' >&2; exit 2";

/// Runs [`FAILING_BUILD`] in `image` and returns the [`ExecError`] it fails with. Any other outcome (it
/// succeeds, or fails some other way) is returned as `Err`.
pub async fn failed_command(dag: &Query, image: &str) -> Result<ExecError, BoxError> {
    let result = dag
        .container()
        .from(image)
        .with_exec(["sh", "-c", FAILING_BUILD])
        .stdout()
        .await;
    match result {
        Err(Error::Exec(exec)) => Ok(exec),
        Err(other) => Err(other.into()),
        Ok(stdout) => Err(format!("the failing build succeeded and printed `{stdout}`").into()),
    }
}

/// A report of a failed command for people: the command, the exit code, and the last `tail` lines of its
/// standard error (where the reason usually is).
pub fn report(exec: &ExecError, tail: usize) -> String {
    let cmd = exec.cmd.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let lines: Vec<&str> = exec.stderr.lines().collect();
    let shown = &lines[lines.len().saturating_sub(tail)..];
    let mut out = format!("command failed with exit code {}\n  $ {cmd}\n", exec.exit_code);
    if lines.is_empty() {
        out.push_str("  (nothing on stderr)\n");
    } else if shown.len() < lines.len() {
        out.push_str(&format!("  stderr (last {} of {} lines):\n", shown.len(), lines.len()));
    } else {
        out.push_str("  stderr:\n");
    }
    for line in shown {
        out.push_str(&format!("  | {line}\n"));
    }
    out
}

/// `arg` as a POSIX shell word: as it is when that is safe, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A command's exit code and stderr, read without failing the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tolerated {
    /// The exit code of `grep` looking for a word that is not there (1).
    pub exit_code: i64,
    /// Its stdout (empty: nothing found).
    pub stdout: String,
    /// The exit code of the check that had to fail, run with `ReturnType::Failure`.
    pub expected_failure: i64,
}

/// Runs `grep` for a word that is absent with `expect: ReturnType::Any`, and reads its exit code (1); then a
/// check that must fail (`ReturnType::Failure`): reading a file that must not exist.
pub async fn tolerated_failures(dag: &Query, image: &str) -> Result<Tolerated, Error> {
    let base = dag
        .container()
        .from(image)
        .with_new_file("/app/config.toml", "debug = false\n");
    let search = base.with_exec_opts(
        ["grep", "-n", "password", "/app/config.toml"],
        ContainerWithExecOpts::default().expect(ReturnType::Any),
    );
    let no_secrets = base.with_exec_opts(
        ["cat", "/app/secrets.env"],
        ContainerWithExecOpts::default().expect(ReturnType::Failure),
    );
    let (exit_code, stdout, expected_failure) = tokio::try_join!(
        search.exit_code().into_future(),
        search.stdout().into_future(),
        no_secrets.exit_code().into_future(),
    )?;
    Ok(Tolerated {
        exit_code,
        stdout,
        expected_failure,
    })
}

/// A container from `image` working in `/work`.
#[step]
pub fn toolbox(dag: &Query, image: String) -> Container {
    dag.container().from(image).with_workdir("/work")
}

/// Runs a shell script in `base`.
#[step]
pub fn shell(base: Container, script: &str) -> Container {
    base.with_exec(["sh", "-c", script])
}

pipeline! {
    /// Lint and check formatting side by side, then test, then package. The tests fail.
    pub checks(image: String) {
        let base = toolbox(image);
        let lint = shell(base, "echo 'lint: 0 warnings'");
        let fmt = shell(base, "echo 'fmt: 12 files formatted'");
        let tests = shell(
            base,
            "echo 'test parse ... ok'; echo 'test render ... FAILED'; \
             echo \"assertion failed: left == right (left: 3, right: 4)\" >&2; exit 101"
        );
        let package = shell(base, "echo packaged");
        /// The linter's report.
        out lint_log = lint.stdout();
        /// The formatter's report.
        out fmt_log = fmt.stdout();
        /// The test log, once lint and formatting passed.
        out test_log = tests.stdout() after lint_log, fmt_log;
        /// The packaged container, once the tests passed.
        out packaged = package.sync() after test_log;
    }
}

/// Runs [`checks`], which fails in its `tests` binding.
pub async fn failed_pipeline(dag: &Query, image: &str) -> Result<checks::Outputs, PipelineError<checks::Partial>> {
    checks::run(dag, image.to_owned()).await
}

/// A report of a failed [`checks`] run for people: each failure (output, binding, step, and the command's
/// report), what was skipped, and what finished.
pub fn pipeline_report(err: &PipelineError<checks::Partial>) -> String {
    let mut out = format!("pipeline `{}` failed\n", err.pipeline);
    for f in &err.failures {
        out.push_str(&format!(
            "output `{}` (binding `{}`, step `{}`) failed:\n",
            f.output, f.binding, f.step
        ));
        match &f.error {
            Error::Exec(exec) => out.push_str(&report(exec, 5)),
            other => out.push_str(&format!("  {other}\n")),
        }
    }
    if !err.skipped.is_empty() {
        out.push_str(&format!("skipped: {}\n", err.skipped.join(", ")));
    }
    let finished = [("lint_log", &err.partial.lint_log), ("fmt_log", &err.partial.fmt_log)];
    for (name, value) in finished {
        if let Some(value) = value {
            out.push_str(&format!("finished: {name} = {:?}\n", value.trim_end()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cmd: &[&str], stderr: &str) -> ExecError {
        ExecError {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            exit_code: 1,
            stdout: String::new(),
            stderr: stderr.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn the_report_quotes_only_words_that_need_it() {
        let r = report(&exec(&["grep", "-n", "it's here", "/a b", ""], ""), 3);
        assert_eq!(
            r,
            "command failed with exit code 1\n  $ grep -n 'it'\\''s here' '/a b' ''\n  (nothing on stderr)\n"
        );
    }

    #[test]
    fn a_short_stderr_is_shown_whole() {
        let r = report(&exec(&["false"], "one\ntwo\n"), 5);
        assert!(r.ends_with("  stderr:\n  | one\n  | two\n"), "{r}");
    }
}
