//! The field router of the core API: which builder fields exist and the identity hooks some of them need
//! (host content, secrets, image tags resolved when the object is created), how a call is computed (by the
//! module of its parent's type), and which module answers a leaf.
//!
//! Builders (fields returning objects) only record a [`Call`]; nothing runs until a leaf needs a value.
//! Leaves evaluate their object through [`Engine::eval`], which caches by call digest. Fields and their
//! arguments are typed ([`crate::ops::fields`], generated from the schema); each type's module maps its
//! fields to ops in one `match`, so a field is "not supported" in exactly one place.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::model::ids::{Call, Digest, format_id};
use crate::model::tree::{FileEntry, Tree};
use crate::ops::error::OpError;

use crate::ops::engine::Engine;
use crate::ops::fields::{ContainerField, Field, FileField, HostField, QueryField, ServiceField, StatField};
use crate::ops::host::{host_path, read_host_dir, read_host_file};
use crate::ops::op::{Cx, Op, run, value};
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

/// Records a builder call (doing eager work where the call's identity depends on outside state).
pub(crate) async fn build(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &Field,
    ret: &str,
    mut args: Map<String, Value>,
) -> Result<Obj, OpError> {
    check_args(field)?;
    let (eager, secret) = identity_hooks(engine, parent, field, &mut args).await?;
    let call = Call {
        type_name: ret.to_owned(),
        parent: parent.digest.clone(),
        field: field.name().to_owned(),
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

/// The checks Dagger makes on arguments when a builder is selected, before anything is evaluated.
fn check_args(field: &Field) -> Result<(), OpError> {
    match field {
        Field::Query(QueryField::File(a)) => crate::ops::file::check_file_name(&a.name),
        Field::File(FileField::WithName(a)) => crate::ops::file::check_file_name(&a.name),
        _ => Ok(()),
    }
}

/// The identity hooks of builders whose result depends on outside state: host content read now (its digest
/// joins the call, and the result is kept), secret values as keyed MACs (a `setSecret` plaintext is returned
/// to keep in session memory), image tags resolved to a digest. Returns the eager result and the plaintext.
async fn identity_hooks(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &Field,
    args: &mut Map<String, Value>,
) -> Result<(Option<Evaluated>, Option<String>), OpError> {
    match field {
        // Host content is read now, and its digest becomes part of the call, so a changed file is a new object.
        Field::Host(HostField::Directory(a)) => {
            let path = host_path(engine, &a.path);
            let (tree, name) = read_host_dir(engine, &path, &a.path, &a.include, &a.exclude, a.gitignore)?;
            args.insert("$content".into(), json!(tree.digest()));
            args.remove("noCache");
            Ok((Some(Evaluated::Dir { tree, name }), None))
        }
        Field::Host(HostField::File(a)) => {
            let path = host_path(engine, &a.path);
            let (name, entry) = read_host_file(engine, &path)?;
            args.insert("$content".into(), json!(entry.blob));
            args.remove("noCache");
            Ok((Some(Evaluated::File { name, entry }), None))
        }
        // The plaintext never enters the call; a keyed digest of it does, so two values of one secret name
        // are two objects, while the ID reveals nothing without the cache directory's own key.
        Field::Query(QueryField::SetSecret(a)) => {
            args.remove("plaintext");
            let mac = engine.store.secret_mac(a.plaintext.as_bytes())?;
            args.insert("$mac".into(), json!(mac));
            Ok((None, Some(a.plaintext.clone())))
        }
        // A tag is resolved to the manifest digest now, so an image that moved is a new object.
        Field::Container(ContainerField::From(a)) => {
            if a.registry_service.is_some() {
                return Err(OpError::new(
                    "`Container.from(registryService:)` is not supported by this engine yet: pull from a registry \
                     the engine reaches directly (or through DAGGER_RS_REGISTRY_MIRRORS)",
                ));
            }
            let d = crate::ops::container::image::resolve_address(engine, parent.digest.as_ref(), &a.address).await?;
            args.insert("$digest".into(), json!(d));
            Ok((None, None))
        }
        Field::Query(QueryField::Secret(a)) => {
            let uri = a.uri.as_str();
            if !(uri.starts_with("env://") || uri.starts_with("file://")) {
                return Err(OpError::new(format!(
                    "secret URI `{uri}` is not supported: use `env://NAME` or `file://PATH`"
                )));
            }
            // The value as it is now is part of the identity (keyed, never in plaintext), so a changed value
            // re-runs what used it.
            if let Ok(value) = read_secret_uri(uri) {
                args.insert("$mac".into(), json!(engine.store.secret_mac(value.as_bytes())?));
            }
            Ok((None, None))
        }
        _ => Ok((None, None)),
    }
}

/// The op computing a builder field; `None` for a field this engine does not implement.
fn op_of(field: Field) -> Option<Op> {
    match field {
        Field::Query(f) => query_op(f),
        Field::Directory(f) => crate::ops::directory::op(f),
        Field::File(f) => crate::ops::file::op(f),
        Field::Container(f) => crate::ops::container::op(f),
        Field::Host(f) => crate::ops::host::op(f),
        Field::Service(f) => crate::ops::service::op(f),
        _ => None,
    }
}

/// The ops of the root's builder fields.
fn query_op(field: QueryField) -> Option<Op> {
    use QueryField as F;
    match field {
        F::Container(a) => value(Ok(crate::ops::container::empty(a.platform))),
        F::Directory => value(Ok(Evaluated::Dir {
            tree: Tree::default(),
            name: "/".into(),
        })),
        F::File(a) => run(move |cx| async move {
            let blob = cx.engine.store.put_blob(a.contents.as_bytes())?;
            Ok(Evaluated::File {
                name: a.name,
                entry: FileEntry {
                    mode: a.permissions as u32,
                    blob,
                    size: a.contents.len() as u64,
                    mtime: None,
                },
            })
        }),
        F::Host => value(Ok(Evaluated::Host)),
        F::CacheVolume(a) => run(move |cx| async move {
            let source = match &a.source {
                Some(d) => Some(cx.eval(d).await?.as_dir()?.0.clone()),
                None => None,
            };
            Ok(Evaluated::Cache {
                key: a.key,
                sharing: a.sharing.as_str().to_owned(),
                source,
                owner: a.owner,
            })
        }),
        F::SetSecret(a) => value(Ok(Evaluated::Secret {
            name: a.name,
            uri: String::new(),
        })),
        F::Secret(a) => value(Ok(Evaluated::Secret {
            name: a.uri.clone(),
            uri: a.uri,
        })),
        _ => None,
    }
}

/// The type whose field a call of a parent with value `parent` is.
fn type_of(parent: Option<&Evaluated>) -> &'static str {
    match parent {
        None => "Query",
        Some(Evaluated::Dir { .. }) => "Directory",
        Some(Evaluated::File { .. }) => "File",
        Some(Evaluated::Container(_)) => "Container",
        Some(Evaluated::Host) => "Host",
        Some(Evaluated::Secret { .. }) => "Secret",
        Some(Evaluated::Cache { .. }) => "CacheVolume",
        Some(Evaluated::Stat { .. }) => "Stat",
        Some(Evaluated::Record(_)) => "Record",
        Some(Evaluated::Service(_)) => "Service",
    }
}

/// Whether a field is a list of plain records (`Container.envVariables`, `labels`, `exposedPorts`,
/// `Service.ports`), each element an object of its own.
fn is_record_list(field: &Field) -> bool {
    use ContainerField as F;
    matches!(
        field,
        Field::Container(F::EnvVariables | F::Labels | F::ExposedPorts) | Field::Service(ServiceField::Ports)
    )
}

/// The records of the list `field` of `value`, the object `d`; `None` when it has no such list.
async fn records_of(
    engine: &Arc<Engine>,
    value: &Evaluated,
    field: &str,
    d: &Digest,
) -> Result<Option<Vec<Map<String, Value>>>, OpError> {
    Ok(match value {
        Evaluated::Container(st) => crate::ops::container::state::records(st, field),
        Evaluated::Service(def) if field == "ports" => {
            Some(crate::ops::service::run::port_records(engine, def, d).await?)
        }
        _ => None,
    })
}

/// Computes an object from its call.
pub(crate) async fn compute(engine: &Arc<Engine>, call: &Call) -> Result<Evaluated, OpError> {
    let parent = match &call.parent {
        Some(p) => Some(engine.eval(p).await?),
        None => None,
    };
    let ty = type_of(parent.as_deref());
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    let field = Field::parse(ty, &call.field, &args)?;
    if is_record_list(&field) {
        let index = args.get("$index").and_then(Value::as_u64).unwrap_or(0) as usize;
        let (Some(parent), Some(pd)) = (parent.as_deref(), &call.parent) else {
            return Err(OpError::unsupported(ty, &call.field));
        };
        return records_of(engine, parent, &call.field, pd)
            .await?
            .ok_or_else(|| OpError::unsupported(ty, &call.field))?
            .into_iter()
            .nth(index)
            .map(Evaluated::Record)
            .ok_or_else(|| OpError::new(format!("`{ty}.{}` has no element {index}", call.field)));
    }
    let name = (field.type_name(), field.name());
    let Some(op) = op_of(field) else {
        return Err(OpError::unsupported(name.0, name.1));
    };
    let hidden = args.into_iter().filter(|(k, _)| k.starts_with('$')).collect();
    op(Cx {
        engine: engine.clone(),
        digest: call.digest(),
        parent,
        hidden,
    })
    .await
}

/// Computes a leaf of an evaluated object.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    ty: &str,
    name: &str,
    args: &Map<String, Value>,
    v: &Evaluated,
    d: &Digest,
) -> Result<Value, OpError> {
    if name == "sync" {
        return Ok(json!(format_id(ty, d)));
    }
    if let Evaluated::Record(fields) = v {
        return fields.get(name).cloned().ok_or_else(|| OpError::unsupported(ty, name));
    }
    match (Field::parse(ty, name, args)?, v) {
        (Field::Container(f), Evaluated::Container(st)) => crate::ops::container::leaf(engine, f, st, d).await,
        (Field::Directory(f), Evaluated::Dir { tree, name }) => crate::ops::directory::leaf(engine, f, tree, name),
        (Field::File(f), Evaluated::File { name, entry }) => crate::ops::file::leaf(engine, f, name, entry),
        (Field::Secret(f), Evaluated::Secret { .. }) => crate::ops::secret::leaf(engine, f, v, d).await,
        (Field::Service(f), Evaluated::Service(def)) => crate::ops::service::leaf(engine, f, def, d).await,
        (
            Field::Stat(f),
            Evaluated::Stat {
                file_type,
                name,
                permissions,
                size,
            },
        ) => Ok(match f {
            StatField::FileType => json!(file_type),
            StatField::Name => json!(name),
            StatField::Permissions => json!(permissions),
            StatField::Size => json!(size),
            other => return Err(OpError::unsupported("Stat", other.name())),
        }),
        _ => Err(OpError::unsupported(ty, name)),
    }
}

/// The objects of a list of plain records (`Container.envVariables`, `labels`, `exposedPorts`) of `obj`, each
/// registered as a call of its own; `None` when `obj.name` is not such a list.
pub(crate) async fn record_list(
    engine: &Arc<Engine>,
    obj: &Obj,
    name: &str,
    ret: &str,
) -> Result<Option<Vec<Obj>>, OpError> {
    let ty = obj.type_name.as_str();
    let is_list = Field::parse(ty, name, &Map::new()).is_ok_and(|f| is_record_list(&f));
    let (true, Some(d)) = (is_list, &obj.digest) else {
        return Ok(None);
    };
    let value = engine.eval(d).await?;
    let Some(records) = records_of(engine, &value, name, d).await? else {
        return Err(OpError::unsupported(ty, name));
    };
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
    Ok(Some(out))
}

/// Records a builder call of a field returning an object; an error names a field this engine does not
/// implement (decided by the same `match` that computes it).
pub(crate) async fn builder(
    engine: &Arc<Engine>,
    parent: &Obj,
    field: &str,
    ret: &str,
    args: Map<String, Value>,
) -> Result<Obj, OpError> {
    let typed = Field::parse(&parent.type_name, field, &args)?;
    if op_of(typed.clone()).is_none() {
        return Err(OpError::unsupported(&parent.type_name, field));
    }
    build(engine, parent, &typed, ret, args).await
}

/// Computes the objects of the core API: the [`Compute`] the solver evaluates calls with.
impl Compute<Evaluated, OpError> for Engine {
    fn compute(self: Arc<Self>, call: Call) -> BoxFuture<'static, Result<Evaluated, OpError>> {
        Box::pin(async move {
            self.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            compute(&self, &call).await
        })
    }

    fn describe(&self, owner: &str, call: &Call) -> crate::solver::events::OpInfo {
        crate::ops::describe::describe(self, owner, call)
    }

    fn exit_code(&self, error: &OpError) -> Option<i32> {
        error.exec.as_ref().map(|f| f.exit_code)
    }
}

#[cfg(test)]
mod tests {
    //! Routing fields to ops: no runtime, no root.

    use serde_json::json;

    use super::*;
    use crate::ops::op::testing::engine;

    fn parsed(ty: &str, field: &str, args: Value) -> Field {
        Field::parse(ty, field, args.as_object().expect("object")).expect("parse")
    }

    #[test]
    fn implemented_builders_have_ops_and_others_do_not() {
        for (ty, field, args) in [
            ("Query", "container", json!({})),
            ("Query", "directory", json!({})),
            ("Query", "cacheVolume", json!({ "key": "k" })),
            ("Directory", "withNewFile", json!({ "path": "f", "contents": "" })),
            ("Container", "withExec", json!({ "args": ["true"] })),
            ("Container", "withEnvVariable", json!({ "name": "A", "value": "1" })),
            ("Container", "withMountedTemp", json!({ "path": "/t" })),
            ("Container", "rootfs", json!({})),
            ("Container", "asService", json!({})),
            ("Service", "withHostname", json!({ "hostname": "web" })),
            ("Host", "service", json!({ "ports": [{ "backend": 80 }] })),
        ] {
            assert!(op_of(parsed(ty, field, args)).is_some(), "{ty}.{field}");
        }
        for (ty, field, args) in [
            ("Query", "git", json!({ "url": "u" })),
            ("Query", "http", json!({ "url": "u" })),
            ("Directory", "dockerBuild", json!({})),
            ("Host", "unixSocket", json!({ "path": "/s" })),
        ] {
            assert!(
                op_of(parsed(ty, field, args)).is_none(),
                "{ty}.{field} is not implemented"
            );
        }
    }

    #[test]
    fn a_parent_value_names_the_type_whose_field_is_computed() {
        assert_eq!(type_of(None), "Query");
        assert_eq!(type_of(Some(&Evaluated::Host)), "Host");
        assert_eq!(
            type_of(Some(&Evaluated::Dir {
                tree: Tree::default(),
                name: "/".into()
            })),
            "Directory"
        );
        assert!(is_record_list(&parsed("Container", "envVariables", json!({}))));
        assert!(is_record_list(&parsed("Container", "exposedPorts", json!({}))));
        assert!(is_record_list(&parsed("Service", "ports", json!({}))));
        assert!(!is_record_list(&parsed("Container", "mounts", json!({}))));
    }

    #[tokio::test]
    async fn root_builders_make_their_objects_without_running_anything() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let root = |field: &str, args: Value| {
            let call = Call {
                type_name: "X".into(),
                parent: None,
                field: field.into(),
                args: args.as_object().cloned().expect("object").into_iter().collect(),
            };
            let e = e.clone();
            async move { compute(&e, &call).await }
        };
        let Evaluated::File { name, entry } =
            root("file", json!({ "name": "n", "contents": "abc", "permissions": 0o600 }))
                .await
                .expect("file")
        else {
            panic!("a file");
        };
        assert_eq!((name.as_str(), entry.mode, entry.size), ("n", 0o600, 3));
        assert!(matches!(
            root("cacheVolume", json!({ "key": "k" })).await.expect("cache"),
            Evaluated::Cache { key, .. } if key == "k"
        ));
        let Evaluated::Container(st) = root("container", json!({ "platform": "linux/arm64" }))
            .await
            .expect("container")
        else {
            panic!("a container");
        };
        assert_eq!(st.platform, "linux/arm64");
        let Evaluated::Container(st) = root("container", json!({})).await.expect("container") else {
            panic!("a container");
        };
        assert_eq!(st.platform, crate::ops::container::state::default_platform());
        assert!(matches!(
            root("setSecret", json!({ "name": "s" })).await.expect("secret"),
            Evaluated::Secret { name, uri } if name == "s" && uri.is_empty()
        ));
        let err = root("git", json!({ "url": "u" })).await.expect_err("unsupported");
        assert_eq!(err.message, "`Query.git` is not supported by this engine yet");
    }

    #[tokio::test]
    async fn builders_refuse_unimplemented_fields_before_recording_anything() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let err = builder(
            &e,
            &Obj::query(),
            "http",
            "File",
            json!({ "url": "u" }).as_object().cloned().expect("o"),
        )
        .await
        .expect_err("unsupported");
        assert_eq!(err.message, "`Query.http` is not supported by this engine yet");
        let obj = builder(&e, &Obj::query(), "directory", "Directory", Map::new())
            .await
            .expect("directory");
        let d = obj.digest.expect("a digest");
        assert_eq!(e.call(&d).map(|c| c.field), Some("directory".to_owned()));
    }

    #[tokio::test]
    async fn set_secret_keeps_its_plaintext_out_of_the_call() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let args = json!({ "name": "token", "plaintext": "hunter2" });
        let obj = builder(
            &e,
            &Obj::query(),
            "setSecret",
            "Secret",
            args.as_object().cloned().expect("o"),
        )
        .await
        .expect("setSecret");
        let d = obj.digest.expect("digest");
        let call = e.call(&d).expect("call");
        assert!(!call.args.contains_key("plaintext"), "{:?}", call.args);
        assert!(call.args.contains_key("$mac"));
        assert_eq!(e.secret(&d).as_deref(), Some("hunter2"), "kept in session memory");
        let v = compute(&e, &call).await.expect("computed again from its record");
        assert!(matches!(v, Evaluated::Secret { name, .. } if name == "token"));
    }

    #[tokio::test]
    async fn leaves_of_stats_and_records() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let d = Digest::of(b"x");
        let stat = Evaluated::Stat {
            file_type: "REGULAR".into(),
            name: "f".into(),
            permissions: 0o644,
            size: 3,
        };
        let none = Map::new();
        assert_eq!(
            leaf(&e, "Stat", "size", &none, &stat, &d).await.expect("size"),
            json!(3)
        );
        assert_eq!(
            leaf(&e, "Stat", "fileType", &none, &stat, &d).await.expect("type"),
            json!("REGULAR")
        );
        assert_eq!(
            leaf(&e, "Stat", "sync", &none, &stat, &d).await.expect("sync"),
            json!(format_id("Stat", &d))
        );
        let record = Evaluated::Record(json!({ "name": "A", "value": "1" }).as_object().cloned().expect("o"));
        assert_eq!(
            leaf(&e, "EnvVariable", "value", &none, &record, &d)
                .await
                .expect("value"),
            json!("1")
        );
        let unknown = leaf(&e, "Stat", "nope", &none, &stat, &d).await.expect_err("unknown");
        assert!(unknown.message.contains("no field `nope`"), "{}", unknown.message);
    }
}

#[cfg(test)]
mod generated_tests {
    //! The generated field parsers on the contract's own fields.

    use serde_json::json;

    use crate::ops::fields::*;

    fn parse(ty: &str, field: &str, args: serde_json::Value) -> Result<Field, String> {
        Field::parse(ty, field, args.as_object().expect("object")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_come_from_the_schema_when_an_argument_is_absent() {
        let Ok(Field::Container(ContainerField::WithExec(a))) =
            parse("Container", "withExec", json!({ "args": ["ls"] }))
        else {
            panic!("withExec");
        };
        assert_eq!(a.args, ["ls"]);
        assert_eq!(
            (a.expect, a.use_entrypoint, a.stdin.as_str()),
            (ReturnType::Success, false, "")
        );
        let Ok(Field::Container(ContainerField::WithMountedCache(c))) = parse(
            "Container",
            "withMountedCache",
            json!({ "path": "/c", "cache": { "$id": crate::model::ids::Digest::of(b"c") }, "sharing": "LOCKED" }),
        ) else {
            panic!("withMountedCache");
        };
        assert_eq!(
            (c.sharing, c.source, c.owner.as_str()),
            (CacheSharingMode::Locked, None, "")
        );
    }

    #[test]
    fn wrong_arguments_unknown_fields_and_unknown_types_are_named() {
        assert_eq!(
            parse("Container", "withExec", json!({ "args": "ls", "expect": "SOMETIMES" }))
                .err()
                .as_deref(),
            Some(
                "arguments of `Container.withExec`: `expect`: expected a value of the enum ReturnType, got \"SOMETIMES\""
            )
        );
        assert_eq!(
            parse("Directory", "withNewFile", json!({ "path": 3 })).err().as_deref(),
            Some("arguments of `Directory.withNewFile`: `path`: expected a string, got 3")
        );
        assert_eq!(
            parse("Directory", "teleport", json!({})).err().as_deref(),
            Some("type `Directory` has no field `teleport`")
        );
        assert_eq!(
            parse("Spaceship", "fly", json!({})).err().as_deref(),
            Some("the core API has no object type `Spaceship`")
        );
        assert_eq!(
            parse("Directory", "diff", json!({})).err().as_deref(),
            Some("arguments of `Directory.diff`: `other`: missing"),
            "an object argument has no zero value"
        );
    }

    #[test]
    fn fields_know_their_names_and_types() {
        let f = parse("Container", "withExec", json!({ "args": [] })).expect("parse");
        assert_eq!((f.type_name(), f.name()), ("Container", "withExec"));
        let f = parse("Query", "version", json!({})).expect("parse");
        assert_eq!((f.type_name(), f.name()), ("Query", "version"));
        assert_eq!(ImageLayerCompression::GZIP.as_str(), "GZIP");
        assert_eq!(ImageLayerCompression::Gzip.as_str(), "Gzip");
    }
}
