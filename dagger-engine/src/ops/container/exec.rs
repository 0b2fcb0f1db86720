//! `withExec`: the exec's filesystem assembled from the layers and mounts, secrets on a private tmpfs, the
//! process run by the OCI runtime in its own network namespace, its output captured (secrets scrubbed), and
//! the overlay's upper directory kept as the container's next layer.

use std::path::Path;
use std::sync::Arc;

use crate::model::ids::Digest;
use crate::model::tree::Tree;
use crate::ops::container::exec_fs::{self, Redirect};
use crate::ops::container::fs::snap;
use crate::ops::container::process::{Secrets, cache_mounts, prepare, run_request, scrub, secrets};
use crate::ops::container::state::{ContainerState, ExecResult, MountSource, expand, layer_name, layers_dir, path_in};
use crate::ops::container::users::resolve_exec_user;
use crate::ops::engine::Engine;
use crate::ops::error::{ExecFailure, OpError};
use crate::ops::fields::{ContainerWithExec, ReturnType};
use crate::worker::scratch::Scratch;
use crate::worker::snapshot::{self};

/// Dagger's error for an exec without a command, and for reading the output of a container that ran none.
pub(crate) const NO_COMMAND: &str = "no command has been set";

/// Refuses what `withExec` cannot do here, and what Dagger refuses.
fn check_options(a: &ContainerWithExec) -> Result<(), OpError> {
    if !a.stdin.is_empty() && !a.redirect_stdin.is_empty() {
        return Err(OpError::new("cannot set both stdin and redirectStdin"));
    }
    if a.experimental_privileged_nesting {
        return Err(OpError::new(
            "`Container.withExec(experimentalPrivilegedNesting: true)` is not supported by this engine yet",
        ));
    }
    Ok(())
}

/// The command line, as Dagger makes it: `args` (expanded when asked), else the default args, behind the
/// entrypoint only when `useEntrypoint` asks for it.
pub(crate) fn command(st: &ContainerState, a: &ContainerWithExec) -> Result<Vec<String>, OpError> {
    let mut argv = a.args.clone();
    if a.expand {
        argv = argv.iter().map(|arg| expand(arg, st)).collect::<Result<_, _>>()?;
    }
    if argv.is_empty() {
        argv = st.config.cmd.clone();
    }
    if a.use_entrypoint {
        let mut full = st.config.entrypoint.clone();
        full.extend(argv);
        argv = full;
    }
    if argv.is_empty() {
        return Err(OpError::new(NO_COMMAND));
    }
    Ok(argv)
}

/// Runs `withExec` on `st`, returning the container after it.
///
/// Every resource it takes is a guard released on every path, a cancelled request included: the scratch
/// folder, the cache volume locks, the prepared filesystem (mounts, secrets' tmpfs) and the network
/// namespace.
pub(crate) async fn exec(
    engine: &Arc<Engine>,
    d: &Digest,
    mut st: ContainerState,
    opts: ContainerWithExec,
) -> Result<ContainerState, OpError> {
    check_options(&opts)?;
    let runtime = engine.runtime()?;
    let argv = command(&st, &opts)?;
    let Secrets { env, plaintexts, files } = secrets(engine, &st).await?;

    // The bound services run (started, or shared with other dependents) until the exec is over.
    let services = crate::ops::service::run::bind(engine, &st).await?;

    let scratch_guard = Scratch::new(&engine.store, "exec");
    let scratch = scratch_guard.path().to_owned();
    // Held until the exec is over.
    let cache_lease = engine.volumes.acquire(&cache_mounts(&st)).await?;
    let fresh_caches = cache_lease.fresh.clone();

    // Prepare the filesystem (blocking work) and run.
    let (prep_engine, prep_st, prep_scratch) = (engine.clone(), st.clone(), scratch.clone());
    let hosts = services.hosts.clone();
    let mut prepared = tokio::task::spawn_blocking(move || {
        prepare(&prep_engine, &prep_st, &prep_scratch, &files, &fresh_caches, &hosts)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))??;
    let user = resolve_exec_user(engine, &st)?;
    // Redirected streams are opened in the container's filesystem with its mounts, before the process starts.
    let mut stdin = opts.stdin.clone().into_bytes();
    if !opts.redirect_stdin.is_empty() {
        let path = path_in(&st, &opts.redirect_stdin, opts.expand)?;
        stdin = exec_fs::read_stdin(&prepared.rootfs, &prepared.mounts, &path)?;
    }
    let redirect = |what: &str, raw: &str| -> Result<Option<Redirect>, OpError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let path = path_in(&st, raw, opts.expand)?;
        Redirect::create(&prepared.rootfs, &prepared.mounts, what, &path, (user.uid, user.gid)).map(Some)
    };
    let redirect_stdout = redirect("stdout", &opts.redirect_stdout)?;
    let redirect_stderr = redirect("stderr", &opts.redirect_stderr)?;
    let req = run_request(
        engine,
        d,
        &st,
        opts.insecure_root_capabilities,
        &prepared,
        &scratch,
        argv.clone(),
        env,
        user,
        stdin,
    )
    .await?;
    // The services it binds are reached from its namespace (the host services it binds accept its connections,
    // and no other container's) while it runs.
    let allowed = services.connect(&req.1.path(), req.1.address()).await?;
    let on_line = log_sink(engine, d, &plaintexts);
    let result = runtime.run(&req.0, on_line).await;
    // The secrets' files, the namespace and the services go as soon as the process is done.
    drop(prepared.secrets.take());
    drop(req);
    drop(allowed);
    drop(services);
    // What the process printed goes to its redirects while the filesystem is still mounted.
    if let Ok(output) = &result {
        for (r, bytes) in [(redirect_stdout, &output.stdout), (redirect_stderr, &output.stderr)] {
            if let Some(r) = r {
                r.write(&scrub(bytes, &plaintexts))?;
            }
        }
    }
    // Tear down: remove the mount stubs, unmount, then read back what the process wrote into writable
    // snapshot mounts.
    let store = engine.store.clone();
    let read_back = prepared.read_back.clone();
    let trees = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Tree)>, OpError> {
        exec_fs::remove_stubs(&prepared.rootfs, &prepared.stubs);
        prepared.overlay.unmount().map_err(snap)?;
        read_back
            .iter()
            .map(|(path, host)| Ok((path.clone(), snapshot::read_tree(&store, host).map_err(snap)?)))
            .collect()
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?;
    let output = result.map_err(|e| OpError::new(e.to_string()))?;
    for (path, tree) in trees? {
        for (mp, src) in st.mounts.iter_mut() {
            if *mp == path
                && let MountSource::Dir { tree: t, .. } = src
            {
                *t = tree.clone();
            }
        }
    }
    let stdout = scrub(&output.stdout, &plaintexts);
    let stderr = scrub(&output.stderr, &plaintexts);
    let combined = scrub(&output.combined, &plaintexts);
    check_exit(&output, opts.expect, &argv, &stdout, &stderr, &plaintexts)?;
    let layer = layer_name(d);
    keep_layer(engine, &scratch.join("upper"), &layer)?;
    st.layers.push(layer);
    st.exec = Some(ExecResult {
        exit_code: output.exit_code,
        stdout: engine.store.put_blob(&stdout)?,
        stderr: engine.store.put_blob(&stderr)?,
        combined: engine.store.put_blob(&combined)?,
    });
    Ok(st)
}

/// Output lines as log events of `d`, secrets scrubbed.
fn log_sink(engine: &Arc<Engine>, d: &Digest, secrets: &[String]) -> crate::worker::runtime::LineSink {
    let (events, call_name, secrets) = (engine.clone(), d.clone(), secrets.to_vec());
    Arc::new(move |line: &str, _is_err: bool| {
        let line = String::from_utf8_lossy(&scrub(line.as_bytes(), &secrets)).into_owned();
        events.emit_log("Container.withExec", &call_name, line);
    })
}

/// The `EXEC_ERROR` of a process that did not end as `expect` says (or ran out of time).
fn check_exit(
    output: &crate::worker::runtime::RunOutput,
    expect: ReturnType,
    argv: &[String],
    stdout: &[u8],
    stderr: &[u8],
    secrets: &[String],
) -> Result<(), OpError> {
    let failed = match expect {
        ReturnType::Any => false,
        ReturnType::Failure => output.exit_code == 0,
        ReturnType::Success => output.exit_code != 0,
    } || output.timed_out.is_some();
    if !failed {
        return Ok(());
    }
    let cmd_text = argv.join(" ");
    let message = match (output.timed_out, expect) {
        (Some(t), _) => format!(
            "process \"{cmd_text}\" was killed after running for {}s (DAGGER_RS_EXEC_TIMEOUT)",
            t.as_secs()
        ),
        // An exit code of 0 where a failure was expected is reported like any other unexpected code.
        (None, _) if output.exit_code > 128 && output.exit_code < 128 + 65 => format!(
            "process \"{cmd_text}\" did not complete successfully: exit code: {} (killed by signal {})",
            output.exit_code,
            output.exit_code - 128
        ),
        (None, _) => format!(
            "process \"{cmd_text}\" did not complete successfully: exit code: {}",
            output.exit_code
        ),
    };
    Err(OpError::exec(
        String::from_utf8_lossy(&scrub(message.as_bytes(), secrets)),
        ExecFailure {
            cmd: argv.to_vec(),
            exit_code: output.exit_code,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        },
    ))
}

/// Keeps the exec's upper directory as the layer `name`.
fn keep_layer(engine: &Engine, upper: &Path, name: &str) -> Result<(), OpError> {
    let layers = layers_dir(&engine.store);
    std::fs::create_dir_all(&layers).map_err(|e| OpError::new(format!("cannot create {}: {e}", layers.display())))?;
    let target = layers.join(name);
    if target.exists() {
        snapshot::remove_all(&target);
    }
    std::fs::rename(upper, &target)
        .map_err(|e| OpError::new(format!("cannot keep the exec's layer at {}: {e}", target.display())))
}

#[cfg(test)]
mod tests {
    //! The pure parts of `withExec`: the command line, the exit check, scrubbing. No runtime, no root.

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::worker::runtime::RunOutput;

    fn args(v: serde_json::Value) -> ContainerWithExec {
        ContainerWithExec::parse(v.as_object().expect("object")).expect("arguments")
    }

    fn with_image(entrypoint: &[&str], cmd: &[&str]) -> ContainerState {
        let mut st = ContainerState::default();
        st.config.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        st.config.cmd = cmd.iter().map(|s| s.to_string()).collect();
        st
    }

    #[test]
    fn the_command_line_follows_args_default_args_and_the_entrypoint() {
        let st = with_image(&["/init"], &["serve", "--port=80"]);
        let cases = [
            (json!({ "args": ["ls", "-l"] }), vec!["ls", "-l"]),
            (json!({ "args": ["ls"], "useEntrypoint": true }), vec!["/init", "ls"]),
            (json!({ "args": [] }), vec!["serve", "--port=80"]),
            (
                json!({ "args": [], "useEntrypoint": true }),
                vec!["/init", "serve", "--port=80"],
            ),
        ];
        for (a, want) in cases {
            assert_eq!(
                command(&st, &args(a.clone())).map_err(|e| e.message),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{a}"
            );
        }
        let plain = with_image(&[], &["sh"]);
        assert_eq!(
            command(&plain, &args(json!({ "args": [] }))).map_err(|e| e.message),
            Ok(vec!["sh".to_owned()])
        );
        let none = with_image(&[], &[]);
        let err = command(&none, &args(json!({ "args": [] }))).expect_err("no command");
        assert_eq!(err.message, "no command has been set");
    }

    #[test]
    fn arguments_expand_from_the_environment_only_when_asked() {
        let mut st = with_image(&[], &[]);
        st.config.env.push("NAME=world".into());
        let a = args(json!({ "args": ["echo", "$NAME", "${NAME}!"], "expand": true }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Ok(vec!["echo".into(), "world".into(), "world!".into()])
        );
        let a = args(json!({ "args": ["echo", "$NAME"] }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Ok(vec!["echo".into(), "$NAME".into()])
        );
    }

    #[test]
    fn an_argument_naming_a_secret_variable_is_not_expanded() {
        let mut st = with_image(&[], &[]);
        st.secret_env.push(("TOKEN".into(), Digest::of(b"s")));
        let a = args(json!({ "args": ["echo", "${TOKEN}"], "expand": true }));
        assert_eq!(
            command(&st, &a).map_err(|e| e.message),
            Err("expand cannot be used with secret env variable \"TOKEN\"".to_owned())
        );
    }

    #[test]
    fn privileged_nesting_is_refused_by_name() {
        let a = args(json!({ "args": ["true"], "experimentalPrivilegedNesting": true }));
        let err = check_options(&a).expect_err("refused");
        assert!(err.message.contains("experimentalPrivilegedNesting"), "{}", err.message);
        assert!(check_options(&args(json!({ "args": ["true"] }))).is_ok());
    }

    fn output(exit_code: i32, timed_out: Option<Duration>) -> RunOutput {
        RunOutput {
            exit_code,
            stdout: b"out".to_vec(),
            stderr: b"err hunter2".to_vec(),
            combined: Vec::new(),
            timed_out,
        }
    }

    #[test]
    fn a_failed_exec_is_an_exec_error_with_its_code_output_and_no_secret() {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), "echo hunter2; exit 3".to_owned()];
        let secrets = vec!["hunter2".to_owned()];
        let stderr = scrub(b"err hunter2", &secrets);
        let err =
            check_exit(&output(3, None), ReturnType::Success, &argv, b"out", &stderr, &secrets).expect_err("fails");
        assert_eq!(
            err.message,
            "process \"sh -c echo ***; exit 3\" did not complete successfully: exit code: 3"
        );
        let failure = err.exec.expect("the process's details");
        assert_eq!(
            *failure,
            ExecFailure {
                cmd: argv,
                exit_code: 3,
                stdout: "out".into(),
                stderr: "err ***".into(),
            },
            "the command as given (IDs hold it already), the output scrubbed"
        );
    }

    #[test]
    fn expect_signals_and_timeouts_decide_what_failed() {
        let argv = vec!["x".to_owned()];
        let check = |code: i32, expect: ReturnType, t: Option<Duration>| {
            check_exit(&output(code, t), expect, &argv, b"", b"", &[]).map_err(|e| e.message)
        };
        assert_eq!(check(0, ReturnType::Success, None), Ok(()));
        assert_eq!(check(1, ReturnType::Any, None), Ok(()));
        assert_eq!(check(2, ReturnType::Failure, None), Ok(()));
        assert_eq!(
            check(0, ReturnType::Failure, None),
            Err("process \"x\" did not complete successfully: exit code: 0".into()),
            "Dagger's wording for every unexpected exit code"
        );
        assert_eq!(
            check(137, ReturnType::Success, None),
            Err("process \"x\" did not complete successfully: exit code: 137 (killed by signal 9)".into())
        );
        let timed_out = check(137, ReturnType::Any, Some(Duration::from_secs(2))).expect_err("timed out");
        assert!(timed_out.contains("killed after running for 2s"), "{timed_out}");
    }
}
