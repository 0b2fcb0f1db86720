//! Containers: their state (layers, image config, mounts, last exec), how each `Container` builder field
//! changes it, and how `withExec` runs a process.
//!
//! A container's filesystem is a stack of layer directories (see [`crate::worker::snapshot`]). File operations
//! (`withNewFile`, `withDirectory`, `withoutFile`, …) each add a small layer; `withExec` mounts the stack with
//! overlayfs, runs the process with the OCI runtime (see [`crate::worker::runtime`]), and keeps the overlay's upper
//! directory as the next layer. Mounts (`withMounted*`) are not part of the layers: they are set up for each
//! exec, and what an exec writes into a mounted directory is read back, so `directory(path)` of a mounted path
//! sees it.

pub(crate) mod exec;
pub(crate) mod exec_fs;
pub(crate) mod fs;
pub(crate) mod image;
pub(crate) mod mounts;
pub(crate) mod process;
pub(crate) mod state;
pub(crate) mod users;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::ids::Digest;
use crate::ops::container::exec::exec;
use crate::ops::container::image::{ImageOptions, as_tarball, export, from, import, publish};
use crate::ops::container::state::{ContainerState, ExecResult};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::ContainerField;
use futures_util::future::BoxFuture;

use crate::ops::op::{Cx, Op, run};
use crate::ops::value::Evaluated;
use crate::solver::events::{Event, EventKind, OpInfo, Role};

/// The op computing a builder field of a container; `None` for a field this engine does not implement.
///
/// Each group of fields is tried in turn (state edits, mounts, filesystem, then images and exec here); a
/// group hands back a field that is not its own.
pub(crate) fn op(field: ContainerField) -> Option<Op> {
    use ContainerField as F;
    let field = match state::edit(field) {
        Ok(e) => return edit(e),
        Err(other) => other,
    };
    let field = match mounts::op(field) {
        Ok(op) => return op,
        Err(other) => other,
    };
    let field = match fs::op(field) {
        Ok(op) => return op,
        Err(other) => other,
    };
    match field {
        F::WithExec(a) => run(move |cx| async move {
            let st = container_of(&cx)?.clone();
            exec(&cx.engine, &cx.digest, st, a)
                .await
                .map(|s| Evaluated::Container(Box::new(s)))
        }),
        F::From(a) => change(move |cx, st| {
            Box::pin(async move {
                let pinned = cx.hidden.get("$digest").and_then(Value::as_str);
                from(&cx.engine, &cx.digest, st, &a.address, pinned).await
            })
        }),
        F::AsService(a) => run(move |cx| async move {
            let st = container_of(&cx)?;
            let args = crate::ops::service::def::service_command(st, &a)?;
            Ok(Evaluated::Service(Box::new(crate::ops::service::def::ServiceDef {
                what: crate::ops::service::def::ServiceKind::Container {
                    container: Box::new(st.clone()),
                    args,
                    privileged: a.insecure_root_capabilities,
                },
                hostname: None,
            })))
        }),
        F::Import(a) => {
            change(move |cx, st| Box::pin(async move { import(&cx.engine, &cx.digest, st, &a.source).await }))
        }
        F::AsTarball(a) => run(move |cx| async move {
            let options = ImageOptions {
                field: "asTarball",
                platform_variants: &a.platform_variants,
                media_types: a.media_types,
                forced_compression: a.forced_compression,
            };
            as_tarball(&cx.engine, container_of(&cx)?, options).await
        }),
        _ => None,
    }
}

/// The parent container of an op.
pub(crate) fn container_of(cx: &Cx) -> Result<&ContainerState, OpError> {
    match cx.parent()? {
        Evaluated::Container(st) => Ok(st),
        _ => Err(OpError::new("internal error: expected a container")),
    }
}

/// An [`Op`] that changes a copy of the parent container (which may evaluate arguments, write layers, …).
pub(crate) fn change<F>(f: F) -> Option<Op>
where
    F: for<'a> FnOnce(&'a Cx, &'a mut ContainerState) -> BoxFuture<'a, Result<(), OpError>> + Send + 'static,
{
    run(move |cx| async move {
        let mut st = container_of(&cx)?.clone();
        f(&cx, &mut st).await?;
        Ok(Evaluated::Container(Box::new(st)))
    })
}

/// An [`Op`] that edits the parent container's state alone (no filesystem, no engine).
pub(crate) fn edit<F>(f: F) -> Option<Op>
where
    F: FnOnce(&mut ContainerState) -> Result<(), OpError> + Send + 'static,
{
    run(move |cx| async move {
        let mut st = container_of(&cx)?.clone();
        f(&mut st)?;
        Ok(Evaluated::Container(Box::new(st)))
    })
}

/// `Query.container(platform)`: an empty container.
pub(crate) fn empty(platform: Option<String>) -> Evaluated {
    let platform = platform
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| state::default_platform().to_owned());
    Evaluated::Container(Box::new(ContainerState {
        platform,
        ..ContainerState::default()
    }))
}

/// Computes a leaf of a container.
///
/// `d` is the container's digest: the leaves that do work (`export`, `publish`) name it in their events.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    field: ContainerField,
    st: &ContainerState,
    d: &Digest,
) -> Result<Value, OpError> {
    use ContainerField as F;
    // Dagger's wording when no `withExec` ran: the output of a container's image is not run by reading it.
    let last_exec = || st.exec.as_ref().ok_or_else(|| OpError::new(exec::NO_COMMAND));
    let exec_blob = |pick: fn(&ExecResult) -> &Digest| -> Result<Value, OpError> {
        let bytes = engine.store.get_blob(pick(last_exec()?))?;
        Ok(json!(String::from_utf8_lossy(&bytes)))
    };
    Ok(match field {
        F::Stdout => exec_blob(|e| &e.stdout)?,
        F::Stderr => exec_blob(|e| &e.stderr)?,
        F::CombinedOutput => exec_blob(|e| &e.combined)?,
        F::ExitCode => json!(last_exec()?.exit_code),
        F::EnvVariable(a) => json!(st.env_value(&a.name)),
        F::Workdir => json!(st.workdir()),
        F::User => json!(st.config.user),
        F::Entrypoint => json!(st.config.entrypoint),
        F::DefaultArgs => json!(st.config.cmd),
        F::Label(a) => json!(st.config.labels.get(&a.name)),
        F::Mounts => json!(st.mounts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()),
        F::Platform => json!(st.platform),
        F::ImageRef => json!(st.image_ref),
        F::Exists(a) => json!(fs::exists(engine, st, a).await?),
        F::Export(a) => {
            let what = Leaf {
                op: "Container.export",
                container: d,
                arg: ("path", &a.path),
            };
            with_progress(engine, what, export(engine, st, &a)).await?
        }
        F::Publish(a) => {
            if a.registry_service.is_some() {
                return Err(OpError::new(
                    "`Container.publish(registryService:)` is not supported by this engine yet: publish to a \
                     registry the engine reaches directly",
                ));
            }
            let what = Leaf {
                op: "Container.publish",
                container: d,
                arg: ("address", &a.address),
            };
            with_progress(engine, what, publish(engine, st, &a)).await?
        }
        other => return Err(OpError::unsupported("Container", other.name())),
    })
}

/// A leaf that does work, as its progress events name it.
struct Leaf<'a> {
    /// `Container.publish`.
    op: &'static str,
    /// The container it reads.
    container: &'a Digest,
    /// The argument that says what it does, and its value (`address`, the reference pushed to).
    arg: (&'static str, &'a str),
}

/// Runs image output (packing layers, uploading: it can take a while) with progress events of its own.
async fn with_progress(
    engine: &Arc<Engine>,
    what: Leaf<'_>,
    work: impl Future<Output = Result<Value, OpError>>,
) -> Result<Value, OpError> {
    let op = what.op;
    let key = Digest::of(format!("{op}{}{}", what.container, what.arg.1).as_bytes());
    let short = |d: &Digest| d.as_str().get(..12).unwrap_or(d.as_str()).to_owned();
    engine.send_event(Event {
        info: Some(Box::new(OpInfo {
            detail: what.arg.1.to_owned(),
            args: [(what.arg.0.to_owned(), json!(what.arg.1))].into_iter().collect(),
            inputs: vec![short(what.container)],
            role: Role::Work,
        })),
        ..Event::new(op, short(&key), EventKind::Started)
    });
    let started = std::time::Instant::now();
    let result = work.await;
    match &result {
        Ok(v) => {
            engine.emit_event(op, &key, EventKind::Log(v.as_str().unwrap_or("").to_owned()));
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            engine.emit_event(op, &key, EventKind::Done(ms));
        }
        Err(e) => engine.send_event(Event {
            exit_code: e.exec.as_ref().map(|f| f.exit_code),
            ..Event::new(op, short(&key), EventKind::Failed(e.message.clone()))
        }),
    }
    result
}

#[cfg(test)]
mod tests {
    //! Container ops that need no runtime: mounts, state edits through the op table, leaves, refusals.

    use serde_json::json;

    use super::*;
    use crate::ops::container::state::MountSource;
    use crate::ops::op::testing::{self, empty_dir, engine, object};

    fn op_of(field: &str, args: serde_json::Value) -> Option<Op> {
        op(ContainerField::parse(field, &testing::args(args)).expect("a field of Container"))
    }

    async fn apply(
        e: &Arc<Engine>,
        parent: Evaluated,
        field: &str,
        args: serde_json::Value,
    ) -> Result<Evaluated, OpError> {
        testing::apply(e, parent, op_of(field, args)).await
    }

    fn container() -> Evaluated {
        empty(Some("linux/amd64".into()))
    }

    fn state(v: Evaluated) -> ContainerState {
        match v {
            Evaluated::Container(st) => *st,
            _ => panic!("a container"),
        }
    }

    #[tokio::test]
    async fn mounts_are_recorded_at_absolute_paths_and_replaced_or_removed() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = object(&e, empty_dir());
        let cache = object(&e, Evaluated::cache("k"));
        let secret = object(
            &e,
            Evaluated::Secret {
                name: "s".into(),
                uri: String::new(),
            },
        );
        let c = apply(&e, container(), "withWorkdir", json!({ "path": "/w" }))
            .await
            .expect("workdir");
        let c = apply(
            &e,
            c,
            "withMountedDirectory",
            json!({ "path": "src", "source": { "$id": dir }, "readOnly": true }),
        )
        .await
        .expect("dir mount");
        let c = apply(
            &e,
            c,
            "withMountedCache",
            json!({ "path": "/cache", "cache": { "$id": cache }, "sharing": "LOCKED" }),
        )
        .await
        .expect("cache mount");
        let c = apply(
            &e,
            c,
            "withMountedSecret",
            json!({ "path": "/run/s", "source": { "$id": secret } }),
        )
        .await
        .expect("secret mount");
        let c = apply(&e, c, "withMountedTemp", json!({ "path": "/tmp", "size": 1024 }))
            .await
            .expect("tmpfs");
        let st = state(c.clone());
        let paths: Vec<&str> = st.mounts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/w/src", "/cache", "/tmp"], "secrets are mounted apart");
        assert!(matches!(
            &st.mounts[0].1,
            MountSource::Dir {
                read_only: true,
                owner: None,
                ..
            }
        ));
        assert!(
            matches!(&st.mounts[1].1, MountSource::Cache { key, sharing, .. } if key == "k" && sharing == "LOCKED")
        );
        assert!(matches!(&st.mounts[2].1, MountSource::Temp { size: Some(1024) }));
        assert_eq!(
            (st.secret_mounts[0].path.as_str(), st.secret_mounts[0].mode),
            ("/run/s", 0o400),
            "secrets default to 0400"
        );
        let c = apply(&e, c, "withoutMount", json!({ "path": "/cache" }))
            .await
            .expect("unmount");
        let paths: Vec<String> = state(c.clone()).mounts.into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/w/src", "/tmp"]);
        let c = apply(&e, c, "withoutMount", json!({ "path": "/run/s" }))
            .await
            .expect("unmount the secret");
        assert!(state(c).secret_mounts.is_empty());
    }

    #[tokio::test]
    async fn a_cache_volumes_own_arguments_are_the_defaults_of_its_mounts() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let seed = testing::dir(&e, &[("seeded", "x")]);
        let volume = object(
            &e,
            Evaluated::Cache {
                key: "k".into(),
                sharing: "LOCKED".into(),
                source: Some(seed.as_dir().expect("dir").0.clone()),
                owner: "1000".into(),
            },
        );
        let mounted = |args: serde_json::Value| {
            let e = e.clone();
            async move {
                let c = apply(&e, container(), "withMountedCache", args).await.expect("mount");
                state(c).mounts.remove(0).1
            }
        };
        let MountSource::Cache {
            sharing, seed, owner, ..
        } = mounted(json!({ "path": "/c", "cache": { "$id": volume } })).await
        else {
            panic!("a cache mount")
        };
        assert_eq!((sharing.as_str(), owner), ("LOCKED", Some((1000, 1000))));
        assert!(seed.is_some_and(|t| t.entries.contains_key("seeded")));
        let MountSource::Cache { sharing, owner, .. } =
            mounted(json!({ "path": "/c", "cache": { "$id": volume }, "sharing": "PRIVATE", "owner": "5:6" })).await
        else {
            panic!("a cache mount")
        };
        assert_eq!(
            (sharing.as_str(), owner),
            ("PRIVATE", Some((5, 6))),
            "a mount's own arguments win"
        );
    }

    #[tokio::test]
    async fn secret_mounts_are_kept_apart_from_other_mounts() {
        // Dagger keeps mounted secrets in a list of their own: a file mounted later at the same path does not
        // replace the secret (execs still see it, mounted last), and reading the path back shows the file, never
        // the secret; with nothing else there, reading it back finds nothing.
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let secret = object(
            &e,
            Evaluated::Secret {
                name: "s".into(),
                uri: String::new(),
            },
        );
        let f = object(&e, testing::file(&e, "f", "file", 0o644));
        let c = apply(
            &e,
            container(),
            "withMountedSecret",
            json!({ "path": "/run/s", "source": { "$id": secret } }),
        )
        .await
        .expect("secret mount");
        let err = apply(&e, c.clone(), "file", json!({ "path": "/run/s" }))
            .await
            .expect_err("a secret is not read back");
        assert_eq!(err.message, "/run/s: no such file or directory");
        let c = apply(
            &e,
            c,
            "withMountedFile",
            json!({ "path": "/run/s", "source": { "$id": f } }),
        )
        .await
        .expect("file mount");
        let st = state(c.clone());
        assert_eq!(st.secret_mounts.len(), 1, "the secret stays for execs");
        let read = apply(&e, c.clone(), "file", json!({ "path": "/run/s" }))
            .await
            .expect("the file mount is read back");
        let blob = &read.as_file().expect("file").1.blob;
        assert_eq!(e.store.get_blob(blob).expect("blob"), b"file");
        let mounts = leaf(&e, ContainerField::Mounts, &st, &Digest::of(b"c"))
            .await
            .expect("mounts");
        assert_eq!(mounts, json!(["/run/s"]), "`mounts` lists no secret");
    }

    #[tokio::test]
    async fn a_mount_source_of_the_wrong_kind_is_refused() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let not_a_cache = object(&e, empty_dir());
        let err = apply(
            &e,
            container(),
            "withMountedCache",
            json!({ "path": "/c", "cache": { "$id": not_a_cache } }),
        )
        .await
        .expect_err("not a cache");
        assert_eq!(err.message, "`cache` is not a cache volume");
        let err = apply(
            &e,
            container(),
            "withMountedFile",
            json!({ "path": "/f", "source": { "$id": not_a_cache } }),
        )
        .await
        .expect_err("not a file");
        assert_eq!(err.message, "`source` is not a file");
    }

    #[tokio::test]
    async fn mounted_snapshots_are_read_back_by_path() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = object(&e, testing::dir(&e, &[("a/f", "x")]));
        let c = apply(
            &e,
            container(),
            "withMountedDirectory",
            json!({ "path": "/m", "source": { "$id": dir } }),
        )
        .await
        .expect("mount");
        let sub = apply(&e, c.clone(), "directory", json!({ "path": "/m/a" }))
            .await
            .expect("directory");
        assert_eq!(sub.as_dir().expect("dir").0.entries.keys().collect::<Vec<_>>(), ["f"]);
        let f = apply(&e, c.clone(), "file", json!({ "path": "/m/a/f" }))
            .await
            .expect("file");
        assert_eq!(f.as_file().expect("file").0, "f");
        let exists = |path: &str| {
            let f = ContainerField::parse("exists", json!({ "path": path }).as_object().expect("o")).expect("field");
            let st = state(c.clone());
            let e = e.clone();
            async move { leaf(&e, f, &st, &Digest::of(b"c")).await.expect("exists") }
        };
        assert_eq!(exists("/m/a/f").await, json!(true));
        assert_eq!(exists("/m/nope").await, json!(false));
    }

    #[tokio::test]
    async fn leaves_read_the_state_and_say_what_is_missing() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let mut c = container();
        for (field, args) in [
            ("withEnvVariable", json!({ "name": "A", "value": "1" })),
            ("withLabel", json!({ "name": "l", "value": "v" })),
            ("withUser", json!({ "name": "app" })),
            ("withEntrypoint", json!({ "args": ["/bin/sh"] })),
            ("withDefaultArgs", json!({ "args": ["-c", "true"] })),
        ] {
            c = apply(&e, c, field, args).await.expect(field);
        }
        let st = state(c);
        let read = |field: &str, args: serde_json::Value| {
            let f = ContainerField::parse(field, args.as_object().expect("o")).expect("field");
            let (e, st) = (e.clone(), st.clone());
            async move { leaf(&e, f, &st, &Digest::of(b"c")).await }
        };
        assert_eq!(
            read("envVariable", json!({ "name": "A" })).await.expect("env"),
            json!("1")
        );
        assert_eq!(
            read("envVariable", json!({ "name": "B" })).await.expect("env"),
            json!(null)
        );
        assert_eq!(read("label", json!({ "name": "l" })).await.expect("label"), json!("v"));
        assert_eq!(read("user", json!({})).await.expect("user"), json!("app"));
        assert_eq!(read("entrypoint", json!({})).await.expect("ep"), json!(["/bin/sh"]));
        assert_eq!(
            read("defaultArgs", json!({})).await.expect("args"),
            json!(["-c", "true"])
        );
        assert_eq!(read("workdir", json!({})).await.expect("workdir"), json!("/"));
        assert_eq!(
            read("platform", json!({})).await.expect("platform"),
            json!("linux/amd64")
        );
        for field in ["stdout", "stderr", "combinedOutput", "exitCode"] {
            let err = read(field, json!({})).await.expect_err("no exec yet");
            assert_eq!(err.message, "no command has been set", "{field}");
        }
    }

    #[test]
    fn service_fields_have_ops() {
        assert!(op_of("asService", json!({})).is_some());
        assert!(
            op_of(
                "withServiceBinding",
                json!({ "alias": "db", "service": { "$id": Digest::of(b"s") } })
            )
            .is_some()
        );
        assert!(op_of("withRootfs", json!({ "directory": { "$id": Digest::of(b"d") } })).is_some());
    }

    #[test]
    fn image_options_this_engine_cannot_write_are_refused_by_name() {
        use crate::ops::container::image::{ImageOptions, check_image_options};
        use crate::ops::fields::{ImageLayerCompression as C, ImageMediaTypes as M};
        let check = |media_types, forced_compression, variants: &[Digest]| {
            check_image_options(&ImageOptions {
                field: "publish",
                platform_variants: variants,
                media_types,
                forced_compression,
            })
            .map_err(|e| e.message)
        };
        assert_eq!(check(M::OciMediaTypes, None, &[]), Ok(()));
        assert_eq!(check(M::Oci, Some(C::GZIP), &[]), Ok(()));
        assert_eq!(check(M::Oci, Some(C::Gzip), &[]), Ok(()));
        let docker = check(M::Docker, None, &[]).expect_err("docker media types");
        assert!(docker.contains("`Container.publish(mediaTypes: DOCKER)`"), "{docker}");
        let zstd = check(M::Oci, Some(C::Zstd), &[]).expect_err("zstd");
        assert!(zstd.contains("forcedCompression: Zstd"), "{zstd}");
        let variants = check(M::Oci, None, &[Digest::of(b"arm")]).expect_err("variants");
        assert!(variants.contains("platformVariants"), "{variants}");
    }
}
