//! The core API: which fields build objects, which are leaves, and how each object is computed.
//!
//! Builders (fields returning objects) only record a [`Call`]; nothing runs until a leaf needs a value.
//! Leaves evaluate their object through [`Engine::eval`], which caches by call digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apollo_compiler::executable::Field;
use serde_json::{Map, Value, json};

use crate::engine::{Engine, Evaluated};
use crate::exec::{Ctx, FieldError};
use crate::ids::{Call, Digest, format_id, parse_id};
use crate::schema::served;
use crate::tree::{Entry, FileEntry, Tree, normalize};

/// The engine's version string (`Query.version`).
pub const VERSION: &str = concat!("dagger-rs-engine v", env!("CARGO_PKG_VERSION"));

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

/// What a field resolved to.
#[derive(Debug)]
pub enum Resolved {
    /// `null`.
    Null,
    /// A scalar or enum.
    Leaf(Value),
    /// An object, to complete with the field's selection set.
    Obj(Obj),
    /// A list.
    List(Vec<Resolved>),
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

/// The error for a field this engine does not implement.
pub(crate) fn unsupported(type_name: &str, field: &str) -> FieldError {
    FieldError::new(format!("`{type_name}.{field}` is not supported by this engine yet"))
}

/// A string argument (empty when absent).
pub(crate) fn s<'a>(args: &'a Map<String, Value>, k: &str) -> &'a str {
    args.get(k).and_then(Value::as_str).unwrap_or("")
}

/// An integer argument.
pub(crate) fn i(args: &Map<String, Value>, k: &str) -> Option<i64> {
    args.get(k).and_then(Value::as_i64)
}

/// A boolean argument (false when absent).
pub(crate) fn b(args: &Map<String, Value>, k: &str) -> bool {
    args.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// A list-of-strings argument (empty when absent).
pub(crate) fn strings(args: &Map<String, Value>, k: &str) -> Vec<String> {
    args.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The digest of an object argument (normalized to `{"$id": digest}`).
pub(crate) fn digest_arg(args: &Map<String, Value>, k: &str) -> Option<Digest> {
    args.get(k)?.get("$id")?.as_str().and_then(Digest::parse)
}

/// Replaces ID arguments (`"<Type>:<digest>"`) by `{"$id": digest}`, checking their type and that they exist.
fn normalize_ids(ctx: &Ctx<'_>, field: &Field, args: &mut Map<String, Value>) -> Result<(), FieldError> {
    for def in &field.definition.arguments {
        if def.ty.inner_named_type().as_str() != "ID" {
            continue;
        }
        let expected = def
            .directives
            .get("expectedType")
            .and_then(|d| d.specified_argument_by_name("name"))
            .and_then(|v| v.as_str().map(str::to_owned));
        let Some(v) = args.get_mut(def.name.as_str()) else {
            continue;
        };
        let one = |v: &Value| -> Result<Value, FieldError> {
            let Some(id) = v.as_str() else { return Ok(Value::Null) };
            let (ty, d) = parse_id(id)?;
            if let Some(exp) = &expected
                && *exp != ty
            {
                return Err(crate::ids::IdError::WrongType {
                    id: crate::ids::shorten(id),
                    actual: ty,
                    expected: exp.clone(),
                }
                .into());
            }
            if ctx.engine.call(&d).is_none() && ty != "Query" {
                return Err(FieldError::new(format!(
                    "unknown ID `{}`: no `{ty}` with that ID was created on this engine (IDs come from `id` or `sync` \
                     on the same engine and cache directory)",
                    crate::ids::shorten(id)
                )));
            }
            Ok(json!({ "$id": d }))
        };
        let new = match &*v {
            Value::Array(items) => Value::Array(items.iter().map(one).collect::<Result<_, _>>()?),
            other => one(other)?,
        };
        *v = new;
    }
    Ok(())
}

/// Resolves one field of `obj`.
pub async fn resolve(
    ctx: &Ctx<'_>,
    obj: &Obj,
    field: &Field,
    mut args: Map<String, Value>,
) -> Result<Resolved, FieldError> {
    let engine = ctx.engine;
    let ty = obj.type_name.as_str();
    let name = field.name.as_str();
    let ret = field.definition.ty.inner_named_type().as_str();
    normalize_ids(ctx, field, &mut args)?;

    // `node(id:)` loads any object by ID.
    if ty == "Query" && name == "node" {
        let id = s(&args, "id");
        let (t, d) = match args.get("id").and_then(|v| v.get("$id")) {
            Some(_) => parse_id(&format!(
                "x:{}",
                digest_arg(&args, "id").map(|d| d.to_string()).unwrap_or_default()
            ))?,
            None => parse_id(id)?,
        };
        let call = engine.call(&d).ok_or_else(|| FieldError::new("unknown ID"))?;
        let _ = t;
        return Ok(Resolved::Obj(Obj {
            type_name: call.type_name,
            digest: Some(d),
        }));
    }

    if RECORD_LISTS.contains(&format!("{ty}.{name}").as_str())
        && let Some(d) = &obj.digest
    {
        let value = engine.eval(d).await?;
        let Evaluated::Container(st) = &*value else {
            return Err(unsupported(ty, name));
        };
        let records = crate::container::records(st, name).unwrap_or_default();
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
            out.push(Resolved::Obj(Obj {
                type_name: ret.to_owned(),
                digest: Some(rd),
            }));
        }
        return Ok(Resolved::List(out));
    }

    if served().is_object(ret) {
        let key = format!("{ty}.{name}");
        if !SUPPORTED_BUILDERS.contains(&key.as_str()) {
            return Err(unsupported(ty, name));
        }
        return build(ctx.engine, obj, name, ret, args).await.map(|o| {
            if matches!(
                field.definition.ty,
                apollo_compiler::ast::Type::List(_) | apollo_compiler::ast::Type::NonNullList(_)
            ) {
                Resolved::List(vec![Resolved::Obj(o)])
            } else {
                Resolved::Obj(o)
            }
        });
    }

    // Leaves.
    let own_id = || {
        obj.digest
            .as_ref()
            .map(|d| format_id(ty, d))
            .unwrap_or_else(|| "Query:root".to_owned())
    };
    match (ty, name) {
        ("Query", "version") => return Ok(Resolved::Leaf(json!(VERSION))),
        ("Query", "defaultPlatform") => return Ok(Resolved::Leaf(json!(default_platform()))),
        (_, "id") => return Ok(Resolved::Leaf(json!(own_id()))),
        _ => {}
    }
    let Some(d) = &obj.digest else {
        return Err(unsupported(ty, name));
    };
    let value = engine.eval(d).await?;
    leaf(engine, ty, name, &args, &value, d).await
}

/// The platform containers get when none is asked for.
pub(crate) fn default_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        "riscv64" => "linux/riscv64",
        "s390x" => "linux/s390x",
        "powerpc64" => "linux/ppc64le",
        _ => "linux/amd64",
    }
}

/// Records a builder call (doing eager work where the call's identity depends on outside state).
async fn build(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &str,
    ret: &str,
    mut args: Map<String, Value>,
) -> Result<Obj, FieldError> {
    let ty = parent.type_name.as_str();
    let mut eager: Option<Evaluated> = None;
    let mut secret: Option<String> = None;
    match (ty, field) {
        // Host content is read now, and its digest becomes part of the call, so a changed file is a new object.
        ("Host", "directory") => {
            let path = host_path(engine, s(&args, "path"));
            let (tree, name) = read_host_dir(
                engine,
                &path,
                &strings(&args, "include"),
                &strings(&args, "exclude"),
                b(&args, "gitignore"),
            )?;
            args.insert("$content".into(), json!(tree.digest()));
            args.remove("noCache");
            eager = Some(Evaluated::Dir { tree, name });
        }
        ("Host", "file") => {
            let path = host_path(engine, s(&args, "path"));
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
            let d = crate::container::resolve_address(engine, parent.digest.as_ref(), s(&args, "address")).await?;
            args.insert("$digest".into(), json!(d));
        }
        ("Query", "secret") => {
            let uri = s(&args, "uri");
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

/// A host path: absolute as given, relative ones against the session's workdir.
pub(crate) fn host_path(engine: &Engine, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        engine.config.workdir.join(p)
    }
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

/// Reads a host directory into a tree (filtered), storing file contents as blobs.
fn read_host_dir(
    engine: &Engine,
    root: &Path,
    include: &[String],
    exclude: &[String],
    gitignore: bool,
) -> Result<(Tree, String), FieldError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| FieldError::new(format!("cannot read host directory {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(FieldError::new(format!(
            "host path {} is not a directory",
            root.display()
        )));
    }
    let mut exclude = exclude.to_vec();
    if gitignore && let Ok(text) = std::fs::read_to_string(root.join(".gitignore")) {
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        {
            let pat = line.trim_end_matches('/');
            if pat.starts_with('/') {
                exclude.push(pat.trim_start_matches('/').to_owned());
            } else {
                exclude.push(format!("**/{pat}"));
            }
        }
    }
    let tree = crate::snapshot::read_tree(&engine.store, root).map_err(|e| FieldError::new(e.to_string()))?;
    let tree = tree.filter(include, &exclude);
    let name = root
        .file_name()
        .map(|n| format!("{}/", n.to_string_lossy()))
        .unwrap_or_else(|| "/".to_owned());
    Ok((tree, name))
}

fn dir_of(v: &Evaluated) -> Result<(&Tree, &str), FieldError> {
    match v {
        Evaluated::Dir { tree, name } => Ok((tree, name)),
        _ => Err(FieldError::new("internal error: expected a directory")),
    }
}

fn file_of(v: &Evaluated) -> Result<(&str, &FileEntry), FieldError> {
    match v {
        Evaluated::File { name, entry } => Ok((name, entry)),
        _ => Err(FieldError::new("internal error: expected a file")),
    }
}

/// Computes an object from its call.
pub async fn compute(engine: &Arc<Engine>, call: &Call) -> Result<Evaluated, FieldError> {
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    let parent = match &call.parent {
        Some(p) => Some(engine.eval(p).await?),
        None => None,
    };
    let obj_arg = |k: &str| {
        let engine = engine.clone();
        let d = digest_arg(&args, k);
        async move {
            match d {
                Some(d) => engine.eval(&d).await.map(Some),
                None => Ok(None),
            }
        }
    };
    let path_arg = |k: &str| normalize(s(&args, k)).map_err(FieldError::from);
    let pty = parent.as_deref();
    match (call.field.as_str(), pty) {
        ("container", None) => return crate::container::compute(engine, call, &call.digest(), None).await,
        (field, Some(Evaluated::Container(st))) => {
            if RECORD_LISTS.contains(&format!("Container.{field}").as_str()) {
                let index = args.get("$index").and_then(Value::as_u64).unwrap_or(0) as usize;
                return crate::container::records(st, field)
                    .and_then(|r| r.into_iter().nth(index))
                    .map(Evaluated::Record)
                    .ok_or_else(|| FieldError::new(format!("`Container.{field}` has no element {index}")));
            }
            return crate::container::compute(engine, call, &call.digest(), Some(st)).await;
        }
        _ => {}
    }
    Ok(match (call.type_name.as_str(), call.field.as_str(), pty) {
        ("Directory", "directory", None) => Evaluated::Dir {
            tree: Tree::default(),
            name: "/".into(),
        },
        ("Host", "host", None) => Evaluated::Host,
        ("CacheVolume", "cacheVolume", None) => Evaluated::Cache {
            key: s(&args, "key").to_owned(),
        },
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
            let (tree, dname) = dir_of(p)?;
            let mut t = tree.clone();
            match field {
                "withNewFile" => {
                    let path = path_arg("path")?;
                    let contents = s(&args, "contents");
                    let blob = engine.store.put_blob(contents.as_bytes())?;
                    t.put(
                        &path,
                        Entry::File(FileEntry {
                            mode: i(&args, "permissions").unwrap_or(0o644) as u32,
                            blob,
                            size: contents.len() as u64,
                            mtime: None,
                        }),
                        true,
                    )?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withNewDirectory" => {
                    let path = path_arg("path")?;
                    t.mkdir_all(&path, i(&args, "permissions").unwrap_or(0o755) as u32)?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withoutFile" | "withoutDirectory" => {
                    t.remove_path(&path_arg("path")?)?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withoutFiles" => {
                    for p in strings(&args, "paths") {
                        t.remove_path(&normalize(&p)?)?;
                    }
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "directory" => {
                    let path = path_arg("path")?;
                    let sub = tree.subtree(&tree.resolve(&path, true)?)?;
                    let name = path
                        .rsplit('/')
                        .next()
                        .filter(|n| !n.is_empty())
                        .map_or("/".to_owned(), |n| format!("{n}/"));
                    Evaluated::Dir { tree: sub, name }
                }
                "file" => {
                    let path = path_arg("path")?;
                    let entry = tree.file(&tree.resolve(&path, true)?)?.clone();
                    Evaluated::File {
                        name: path.rsplit('/').next().unwrap_or_default().to_owned(),
                        entry,
                    }
                }
                "stat" => {
                    let path = path_arg("path")?;
                    let at = t.resolve(&path, !b(&args, "doNotFollowSymlinks"))?;
                    stat_named(&t, &at, base_name(&path))?
                }
                "withFile" => {
                    let path = path_arg("path")?;
                    let src = obj_arg("source")
                        .await?
                        .ok_or_else(|| FieldError::new("missing `source`"))?;
                    let (_, entry) = file_of(&src)?;
                    let mut entry = entry.clone();
                    if let Some(p) = i(&args, "permissions") {
                        entry.mode = p as u32;
                    }
                    t.put(&path, Entry::File(entry), true)?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withFiles" => {
                    let path = path_arg("path")?;
                    for (name, entry) in source_files(engine, &args).await? {
                        let target = if path.is_empty() {
                            name
                        } else {
                            format!("{path}/{name}")
                        };
                        t.put(&target, Entry::File(entry), true)?;
                    }
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withDirectory" => {
                    let path = path_arg("path")?;
                    let src = obj_arg("source")
                        .await?
                        .ok_or_else(|| FieldError::new("missing `source`"))?;
                    let (stree, _) = dir_of(&src)?;
                    let mut filtered = stree.filter(&strings(&args, "include"), &strings(&args, "exclude"));
                    if let Some(p) = i(&args, "permissions") {
                        filtered.set_permissions(p as u32);
                    }
                    t.merge(&path, &filtered)?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "withSymlink" => {
                    let link = path_arg("linkName")?;
                    t.put(
                        &link,
                        Entry::Symlink {
                            target: s(&args, "target").to_owned(),
                        },
                        false,
                    )?;
                    Evaluated::Dir {
                        tree: t,
                        name: dname.to_owned(),
                    }
                }
                "diff" => {
                    let other = obj_arg("other")
                        .await?
                        .ok_or_else(|| FieldError::new("missing `other`"))?;
                    let (otree, _) = dir_of(&other)?;
                    Evaluated::Dir {
                        tree: tree.diff(otree),
                        name: dname.to_owned(),
                    }
                }
                "filter" => Evaluated::Dir {
                    tree: tree.filter(&strings(&args, "include"), &strings(&args, "exclude")),
                    name: dname.to_owned(),
                },
                "withTimestamps" => Evaluated::Dir {
                    tree: tree.with_timestamps(i(&args, "timestamp").unwrap_or(0)),
                    name: dname.to_owned(),
                },
                other => return Err(unsupported("Directory", other)),
            }
        }
        (_, field, Some(p @ Evaluated::File { .. })) => {
            let (name, entry) = file_of(p)?;
            match field {
                "withName" => Evaluated::File {
                    name: s(&args, "name").to_owned(),
                    entry: entry.clone(),
                },
                "withTimestamps" => Evaluated::File {
                    name: name.to_owned(),
                    entry: FileEntry {
                        mtime: i(&args, "timestamp"),
                        ..entry.clone()
                    },
                },
                "stat" => Evaluated::Stat {
                    file_type: "REGULAR".into(),
                    name: name.to_owned(),
                    permissions: entry.mode,
                    size: entry.size,
                },
                other => return Err(unsupported("File", other)),
            }
        }
        (t, f, _) => return Err(unsupported(t, f)),
    })
}

/// The files of a list argument of file IDs (`sources`), each with its name, and `permissions` applied when
/// given.
pub(crate) async fn source_files(
    engine: &Arc<Engine>,
    args: &Map<String, Value>,
) -> Result<Vec<(String, FileEntry)>, FieldError> {
    let mut files = Vec::new();
    for v in args
        .get("sources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(d) = v.get("$id").and_then(Value::as_str).and_then(Digest::parse) else {
            continue;
        };
        let src = engine.eval(&d).await?;
        let Evaluated::File { name, entry } = &*src else {
            return Err(FieldError::new("`sources` holds something that is not a file"));
        };
        let mut entry = entry.clone();
        if let Some(p) = i(args, "permissions") {
            entry.mode = p as u32;
        }
        files.push((name.clone(), entry));
    }
    Ok(files)
}

/// The current value behind an `env://NAME` or `file://PATH` secret URI.
pub(crate) fn read_secret_uri(uri: &str) -> Result<String, FieldError> {
    if let Some(var) = uri.strip_prefix("env://") {
        return std::env::var(var)
            .map_err(|_| FieldError::new(format!("secret `{uri}`: the environment variable `{var}` is not set")));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map_err(|e| FieldError::new(format!("secret `{uri}`: cannot read {path}: {e}")));
    }
    Err(FieldError::new(format!(
        "secret URI `{uri}` is not supported: use `env://NAME` or `file://PATH`"
    )))
}

/// The plaintext of a secret object: from session memory (`setSecret`), else read from its URI now.
pub(crate) async fn secret_plaintext(engine: &Arc<Engine>, d: &Digest) -> Result<String, FieldError> {
    if let Some(p) = engine.secret(d) {
        return Ok(p);
    }
    let v = engine.eval(d).await?;
    let Evaluated::Secret { uri, name } = &*v else {
        return Err(FieldError::new("not a secret"));
    };
    if uri.is_empty() {
        return Err(FieldError::new(format!(
            "the value of secret `{name}` was set in another session and is not kept; set it again with `setSecret`"
        )));
    }
    read_secret_uri(uri)
}

/// Whether `path` (normalized; empty for the root, a directory) is in the tree, and of the `expected` kind
/// (`REGULAR_TYPE`, `DIRECTORY_TYPE`, `SYMLINK_TYPE`; empty for any).
pub(crate) fn tree_has(tree: &Tree, path: &str, expected: &str) -> bool {
    let entry = if path.is_empty() {
        Some(&Entry::Dir {
            mode: 0o755,
            mtime: None,
        })
    } else {
        tree.entries.get(path)
    };
    matches!(
        (entry, expected),
        (Some(_), "")
            | (Some(Entry::File(_)), "REGULAR_TYPE")
            | (Some(Entry::Dir { .. }), "DIRECTORY_TYPE")
            | (Some(Entry::Symlink { .. }), "SYMLINK_TYPE")
    )
}

/// `stat` of `path` in a tree (the root for an empty path), reported under `name`.
pub(crate) fn stat_named(tree: &Tree, path: &str, name: String) -> Result<Evaluated, FieldError> {
    let stat = |file_type: &str, permissions: u32, size: u64| Evaluated::Stat {
        file_type: file_type.into(),
        name: name.clone(),
        permissions,
        size,
    };
    if path.is_empty() {
        return Ok(stat("DIRECTORY", 0o755, 0));
    }
    Ok(match tree.entries.get(path) {
        Some(Entry::Dir { mode, .. }) => stat("DIRECTORY", *mode, 0),
        Some(Entry::File(f)) => stat("REGULAR", f.mode, f.size),
        Some(Entry::Symlink { target }) => stat("SYMLINK", 0o777, target.len() as u64),
        None => return Err(crate::tree::PathError::NotFound(path.to_owned()).into()),
    })
}

/// The last component of a normalized path, `/` for the root.
fn base_name(path: &str) -> String {
    match path.rsplit('/').next() {
        Some(n) if !path.is_empty() => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Computes a leaf of an evaluated object.
async fn leaf(
    engine: &Arc<Engine>,
    ty: &str,
    name: &str,
    args: &Map<String, Value>,
    v: &Evaluated,
    d: &Digest,
) -> Result<Resolved, FieldError> {
    let leaf = |v: Value| Ok(Resolved::Leaf(v));
    match (ty, name, v) {
        (_, "sync", _) => leaf(json!(format_id(ty, d))),
        ("Container", _, Evaluated::Container(st)) => match crate::container::leaf(engine, name, args, st).await? {
            Some(v) => leaf(v),
            None => Err(unsupported(ty, name)),
        },
        (_, _, Evaluated::Record(fields)) => match fields.get(name) {
            Some(v) => leaf(v.clone()),
            None => Err(unsupported(ty, name)),
        },
        ("Directory", "entries", Evaluated::Dir { tree, .. }) => {
            let path = normalize(s(args, "path"))?;
            leaf(json!(tree.list(&tree.resolve(&path, true)?)?))
        }
        ("Directory", "glob", Evaluated::Dir { tree, .. }) => leaf(json!(tree.glob(s(args, "pattern")))),
        ("Directory", "digest", Evaluated::Dir { tree, .. }) => leaf(json!(format!("sha256:{}", tree.digest()))),
        ("Directory", "name", Evaluated::Dir { name, .. }) => leaf(json!(name)),
        ("Directory", "exists", Evaluated::Dir { tree, .. }) => {
            let path = normalize(s(args, "path"))?;
            // Symlinks are followed (inside the directory) unless asked not to; a path that cannot be
            // resolved (a loop, a file used as a directory) does not exist.
            let found = tree
                .resolve(&path, !b(args, "doNotFollowSymlinks"))
                .is_ok_and(|at| tree_has(tree, &at, s(args, "expectedType")));
            leaf(json!(found))
        }
        ("Directory", "export", Evaluated::Dir { tree, .. }) => {
            let target = host_path(engine, s(args, "path"));
            export_tree(engine, tree, &target, b(args, "wipe"))?;
            leaf(json!(target.to_string_lossy()))
        }
        ("File", "contents", Evaluated::File { entry, .. }) => {
            let bytes = engine.store.get_blob(&entry.blob)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let offset = i(args, "offsetLines").unwrap_or(0).max(0) as usize;
            let text = match (offset, i(args, "limitLines")) {
                (0, None) => text,
                (o, limit) => {
                    let lines = text.split_inclusive('\n').skip(o);
                    match limit {
                        Some(l) => lines.take(l.max(0) as usize).collect(),
                        None => lines.collect(),
                    }
                }
            };
            leaf(json!(text))
        }
        ("File", "name", Evaluated::File { name, .. }) => leaf(json!(name)),
        ("File", "size", Evaluated::File { entry, .. }) => leaf(json!(entry.size)),
        ("File", "digest", Evaluated::File { entry, name }) => {
            if b(args, "excludeMetadata") {
                leaf(json!(format!("sha256:{}", entry.blob)))
            } else {
                let meta = serde_json::to_vec(&(name, entry)).unwrap_or_default();
                leaf(json!(format!("sha256:{}", Digest::of(&meta))))
            }
        }
        ("File", "export", Evaluated::File { entry, .. }) => {
            let mut target = host_path(engine, s(args, "path"));
            if target.is_dir() {
                if !b(args, "allowParentDirPath") {
                    return Err(FieldError::new(format!(
                        "{} is a directory; pass a file path, or set `allowParentDirPath` to write into it",
                        target.display()
                    )));
                }
                if let Ok((name, _)) = file_of(v) {
                    target = target.join(name);
                }
            }
            write_file(engine, entry, &target)?;
            leaf(json!(target.to_string_lossy()))
        }
        ("Secret", "name", Evaluated::Secret { name, .. }) => leaf(json!(name)),
        ("Secret", "uri", Evaluated::Secret { uri, .. }) => leaf(json!(uri)),
        ("Secret", "plaintext", Evaluated::Secret { .. }) => leaf(json!(secret_plaintext(engine, d).await?)),
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

fn write_file(engine: &Engine, entry: &FileEntry, target: &Path) -> Result<(), FieldError> {
    crate::snapshot::write_file(&engine.store, entry, target).map_err(|e| FieldError::new(e.to_string()))
}

fn export_tree(engine: &Engine, tree: &Tree, target: &Path, wipe: bool) -> Result<(), FieldError> {
    if wipe && target.exists() {
        std::fs::remove_dir_all(target)
            .map_err(|e| FieldError::new(format!("cannot wipe {}: {e}", target.display())))?;
    }
    crate::snapshot::write_tree(&engine.store, tree, target, "", None).map_err(|e| FieldError::new(e.to_string()))
}
