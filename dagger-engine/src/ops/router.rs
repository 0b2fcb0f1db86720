//! The field router of the core API: which builder fields exist and the identity hooks some of them need
//! (host content, secrets, image tags resolved when the object is created), how a call is computed (by the
//! module of its parent's type), and which module answers a leaf.
//!
//! Builders (fields returning objects) only record a [`Call`]; nothing runs until a leaf needs a value.
//! Leaves evaluate their object through [`Engine::eval`], which caches by call digest.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::model::error::FieldError;
use crate::model::ids::{Call, Digest, format_id};
use crate::model::tree::{FileEntry, Tree};
use crate::ops::args::{b, i, s, strings, unsupported};
use crate::ops::engine::Engine;
use crate::ops::host::{file_mode, host_path, read_host_dir};
use crate::ops::secret::read_secret_uri;
use crate::ops::value::Evaluated;
use crate::solver::Compute;

/// The engine's version string (`Query.version`).
pub(crate) const VERSION: &str = concat!("dagger-rs-engine v", env!("CARGO_PKG_VERSION"));

/// An object during execution: its type and the digest of the call that made it (none for the root).
#[derive(Clone, Debug)]
pub struct Obj {
    /// The GraphQL type.
    pub type_name: String,
    /// The call digest (`None` for `Query`).
    pub digest: Option<Digest>,
}

impl Obj {
    /// The root.
    pub fn query() -> Self {
        Self {
            type_name: "Query".into(),
            digest: None,
        }
    }
}

/// The builder fields this engine can compute. Other fields answer a clear "not supported yet" error.
const SUPPORTED_BUILDERS: &[&str] = &[
    "Query.directory",
    "Query.file",
    "Query.host",
    "Query.cacheVolume",
    "Query.setSecret",
    "Query.secret",
    "Query.node",
    "Host.directory",
    "Host.file",
    "Directory.withDirectory",
    "Directory.withFile",
    "Directory.withFiles",
    "Directory.withNewFile",
    "Directory.withNewDirectory",
    "Directory.withoutFile",
    "Directory.withoutFiles",
    "Directory.withoutDirectory",
    "Directory.directory",
    "Directory.file",
    "Directory.stat",
    "Directory.withSymlink",
    "Directory.diff",
    "Directory.filter",
    "Directory.withTimestamps",
    "File.withName",
    "File.withTimestamps",
    "File.stat",
    "Query.container",
    "Container.withRootfs",
    "Container.withDirectory",
    "Container.withFile",
    "Container.withFiles",
    "Container.withNewFile",
    "Container.withSymlink",
    "Container.withoutFile",
    "Container.withoutFiles",
    "Container.withoutDirectory",
    "Container.withMountedDirectory",
    "Container.withMountedFile",
    "Container.withMountedCache",
    "Container.withMountedSecret",
    "Container.withMountedTemp",
    "Container.withoutMount",
    "Container.withEnvVariable",
    "Container.withoutEnvVariable",
    "Container.withSecretVariable",
    "Container.withoutSecretVariable",
    "Container.withWorkdir",
    "Container.withoutWorkdir",
    "Container.withUser",
    "Container.withoutUser",
    "Container.withEntrypoint",
    "Container.withoutEntrypoint",
    "Container.withDefaultArgs",
    "Container.withoutDefaultArgs",
    "Container.withLabel",
    "Container.withoutLabel",
    "Container.withExposedPort",
    "Container.withRegistryAuth",
    "Container.withExec",
    "Container.file",
    "Container.directory",
    "Container.rootfs",
    "Container.stat",
    "Container.from",
    "Container.import",
    "Container.asTarball",
];

/// Fields returning lists of plain records; each element becomes an object of its own.
const RECORD_LISTS: &[&str] = &["Container.envVariables", "Container.labels", "Container.exposedPorts"];

/// Records a builder call (doing eager work where the call's identity depends on outside state).
pub(crate) async fn build(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &str,
    ret: &str,
    mut args: Map<String, Value>,
) -> Result<Obj, FieldError> {
    let (eager, secret) = identity_hooks(engine, parent, field, &mut args).await?;
    let call = Call {
        type_name: ret.to_owned(),
        parent: parent.digest.clone(),
        field: field.to_owned(),
        args: args.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let d = engine.register(call)?;
    if let Some(v) = eager {
        engine.put_result(&d, v)?;
    }
    if let Some(p) = secret {
        engine.set_secret(&d, p);
    }
    Ok(Obj {
        type_name: ret.to_owned(),
        digest: Some(d),
    })
}

/// The identity hooks of builders whose result depends on outside state: host content read now (its digest
/// joins the call, and the result is kept), secret values as keyed MACs (a `setSecret` plaintext is returned
/// to keep in session memory), image tags resolved to a digest. Returns the eager result and the plaintext.
async fn identity_hooks(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &str,
    args: &mut Map<String, Value>,
) -> Result<(Option<Evaluated>, Option<String>), FieldError> {
    let ty = parent.type_name.as_str();
    let mut eager: Option<Evaluated> = None;
    let mut secret: Option<String> = None;
    match (ty, field) {
        // Host content is read now, and its digest becomes part of the call, so a changed file is a new object.
        ("Host", "directory") => {
            let path = host_path(engine, s(args, "path"));
            let (tree, name) = read_host_dir(
                engine,
                &path,
                &strings(args, "include"),
                &strings(args, "exclude"),
                b(args, "gitignore"),
            )?;
            args.insert("$content".into(), json!(tree.digest()));
            args.remove("noCache");
            eager = Some(Evaluated::Dir { tree, name });
        }
        ("Host", "file") => {
            let path = host_path(engine, s(args, "path"));
            let bytes = std::fs::read(&path)
                .map_err(|e| FieldError::new(format!("cannot read host file {}: {e}", path.display())))?;
            let mode = file_mode(&path);
            let blob = engine.store.put_blob(&bytes)?;
            args.insert("$content".into(), json!(blob));
            args.remove("noCache");
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            eager = Some(Evaluated::File {
                name,
                entry: FileEntry {
                    mode,
                    blob,
                    size: bytes.len() as u64,
                    mtime: None,
                },
            });
        }
        // The plaintext never enters the call; a keyed digest of it does, so two values of one secret name
        // are two objects, while the ID reveals nothing without the cache directory's own key.
        ("Query", "setSecret") => {
            secret = args.remove("plaintext").and_then(|v| v.as_str().map(str::to_owned));
            let mac = engine.store.secret_mac(secret.as_deref().unwrap_or("").as_bytes())?;
            args.insert("$mac".into(), json!(mac));
        }
        // A tag is resolved to the manifest digest now, so an image that moved is a new object.
        ("Container", "from") => {
            let d = crate::ops::container::image::resolve_address(engine, parent.digest.as_ref(), s(args, "address"))
                .await?;
            args.insert("$digest".into(), json!(d));
        }
        ("Query", "secret") => {
            let uri = s(args, "uri");
            if !(uri.starts_with("env://") || uri.starts_with("file://")) {
                return Err(FieldError::new(format!(
                    "secret URI `{uri}` is not supported: use `env://NAME` or `file://PATH`"
                )));
            }
            // The value as it is now is part of the identity (keyed, never in plaintext), so a changed value
            // re-runs what used it.
            if let Ok(value) = read_secret_uri(uri) {
                args.insert("$mac".into(), json!(engine.store.secret_mac(value.as_bytes())?));
            }
        }
        _ => {}
    }
    Ok((eager, secret))
}

/// Computes an object from its call.
pub(crate) async fn compute(engine: &Arc<Engine>, call: &Call) -> Result<Evaluated, FieldError> {
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    let parent = match &call.parent {
        Some(p) => Some(engine.eval(p).await?),
        None => None,
    };
    let pty = parent.as_deref();
    match (call.field.as_str(), pty) {
        ("container", None) => return crate::ops::container::compute(engine, call, &call.digest(), None).await,
        (field, Some(Evaluated::Container(st))) => {
            if RECORD_LISTS.contains(&format!("Container.{field}").as_str()) {
                let index = args.get("$index").and_then(Value::as_u64).unwrap_or(0) as usize;
                return crate::ops::container::state::records(st, field)
                    .and_then(|r| r.into_iter().nth(index))
                    .map(Evaluated::Record)
                    .ok_or_else(|| FieldError::new(format!("`Container.{field}` has no element {index}")));
            }
            return crate::ops::container::compute(engine, call, &call.digest(), Some(st)).await;
        }
        _ => {}
    }
    Ok(match (call.type_name.as_str(), call.field.as_str(), pty) {
        ("Directory", "directory", None) => Evaluated::Dir {
            tree: Tree::default(),
            name: "/".into(),
        },
        ("Host", "host", None) => Evaluated::Host,
        ("CacheVolume", "cacheVolume", None) => crate::ops::cache_volume::compute(&args),
        ("Secret", "setSecret", None) => Evaluated::Secret {
            name: s(&args, "name").to_owned(),
            uri: String::new(),
        },
        ("Secret", "secret", None) => Evaluated::Secret {
            name: s(&args, "uri").to_owned(),
            uri: s(&args, "uri").to_owned(),
        },
        ("File", "file", None) => {
            let contents = s(&args, "contents");
            let blob = engine.store.put_blob(contents.as_bytes())?;
            Evaluated::File {
                name: s(&args, "name").to_owned(),
                entry: FileEntry {
                    mode: i(&args, "permissions").unwrap_or(0o644) as u32,
                    blob,
                    size: contents.len() as u64,
                    mtime: None,
                },
            }
        }
        ("Directory", "directory", Some(Evaluated::Host)) | ("File", "file", Some(Evaluated::Host)) => {
            return Err(FieldError::new(
                "host content is read when the object is created; create it again in this session",
            ));
        }
        (_, field, Some(p @ Evaluated::Dir { .. })) => {
            return crate::ops::directory::compute(engine, p, field, &args).await;
        }
        (_, field, Some(p @ Evaluated::File { .. })) => return crate::ops::file::compute(p, field, &args),
        (t, f, _) => return Err(unsupported(t, f)),
    })
}

/// Computes a leaf of an evaluated object.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    ty: &str,
    name: &str,
    args: &Map<String, Value>,
    v: &Evaluated,
    d: &Digest,
) -> Result<Value, FieldError> {
    let leaf = |v: Value| Ok(v);
    match (ty, name, v) {
        (_, "sync", _) => leaf(json!(format_id(ty, d))),
        ("Container", _, Evaluated::Container(st)) => {
            match crate::ops::container::leaf(engine, name, args, st).await? {
                Some(v) => leaf(v),
                None => Err(unsupported(ty, name)),
            }
        }
        (_, _, Evaluated::Record(fields)) => match fields.get(name) {
            Some(v) => leaf(v.clone()),
            None => Err(unsupported(ty, name)),
        },
        ("Directory", _, Evaluated::Dir { .. }) => crate::ops::directory::leaf(engine, name, args, v),
        ("File", _, Evaluated::File { .. }) => crate::ops::file::leaf(engine, name, args, v),
        ("Secret", _, Evaluated::Secret { .. }) => crate::ops::secret::leaf(engine, name, v, d).await,
        (
            "Stat",
            field,
            Evaluated::Stat {
                file_type,
                name,
                permissions,
                size,
            },
        ) => match field {
            "fileType" => leaf(json!(file_type)),
            "name" => leaf(json!(name)),
            "permissions" => leaf(json!(permissions)),
            "size" => leaf(json!(size)),
            other => Err(unsupported("Stat", other)),
        },
        _ => Err(unsupported(ty, name)),
    }
}

/// The objects of a list of plain records (`Container.envVariables`, `labels`, `exposedPorts`) of `obj`, each
/// registered as a call of its own; `None` when `obj.name` is not such a list.
pub(crate) async fn record_list(
    engine: &Arc<Engine>,
    obj: &Obj,
    name: &str,
    ret: &str,
) -> Result<Option<Vec<Obj>>, FieldError> {
    let ty = obj.type_name.as_str();
    if RECORD_LISTS.contains(&format!("{ty}.{name}").as_str())
        && let Some(d) = &obj.digest
    {
        let value = engine.eval(d).await?;
        let Evaluated::Container(st) = &*value else {
            return Err(unsupported(ty, name));
        };
        let records = crate::ops::container::state::records(st, name).unwrap_or_default();
        let mut out = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let call = Call {
                type_name: ret.to_owned(),
                parent: Some(d.clone()),
                field: name.to_owned(),
                args: [("$index".to_owned(), json!(index))].into_iter().collect(),
            };
            let rd = engine.register(call)?;
            engine.put_result(&rd, Evaluated::Record(record))?;
            out.push(Obj {
                type_name: ret.to_owned(),
                digest: Some(rd),
            });
        }
        return Ok(Some(out));
    }

    Ok(None)
}

/// Records a builder call of a field returning an object; an error names a field this engine does not
/// implement.
pub(crate) async fn builder(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &str,
    ret: &str,
    args: Map<String, Value>,
) -> Result<Obj, FieldError> {
    let ty = parent.type_name.as_str();
    if !SUPPORTED_BUILDERS.contains(&format!("{ty}.{field}").as_str()) {
        return Err(unsupported(ty, field));
    }
    build(engine, parent, field, ret, args).await
}

/// Computes the objects of the core API: the [`Compute`] the solver evaluates calls with.
impl Compute<Evaluated> for Engine {
    fn compute(self: Arc<Self>, call: Call) -> BoxFuture<'static, Result<Evaluated, FieldError>> {
        Box::pin(async move {
            self.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            compute(&self, &call).await
        })
    }
}
