//! The core API as a [`Resolver`]: IDs in arguments checked and normalized, `node(id:)` and the legacy
//! loaders (`loadContainerFromID`, which the official 0.21 SDKs send), and for every other
//! field the schema says whether it builds an object (recorded by `ops::router`) or is a leaf
//! (evaluated, then answered by the module of its type).

use std::sync::Arc;

use apollo_compiler::executable::Field;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::graphql::error::FieldError;
use crate::graphql::executor::{self, Request, Resolved, Resolver, Response};
use crate::graphql::schema::served;
use crate::model::ids::{format_id, parse_id};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::QueryNode;
use crate::ops::router::{self, Obj};

/// Executes a request on `engine` and returns the response body.
///
/// A request may carry the graph of the client's pipeline as its `pipeline` extension (see
/// [`PipelineGraph`](crate::solver::events::PipelineGraph)): it becomes an event for reports. One that is not a
/// graph is left out with a note in the engine's events; the request runs either way.
pub async fn execute(engine: &Arc<Engine>, req: Request) -> Response {
    if let Some(graph) = req.extensions.as_ref().and_then(|e| e.get("pipeline")) {
        use crate::solver::events::{Event, EventKind, PipelineGraph};
        let event = match PipelineGraph::from_extension(graph) {
            Ok(g) => Event::new("pipeline", g.name.clone(), EventKind::Graph(Box::new(g))),
            Err(e) => Event::new(
                "engine",
                "pipeline",
                EventKind::Log(format!("the request's pipeline graph was left out of the report: {e}")),
            ),
        };
        engine.send_event(event);
    }
    executor::execute(served(), &CoreResolver { engine: engine.clone() }, Obj::query(), req).await
}

/// The resolver of the core API on one engine.
pub struct CoreResolver {
    /// The engine (session).
    pub engine: Arc<Engine>,
}

impl Resolver for CoreResolver {
    type Object = Obj;

    fn type_name<'o>(&self, obj: &'o Obj) -> &'o str {
        &obj.type_name
    }

    fn resolve<'a>(
        &'a self,
        obj: &'a Obj,
        field: &'a Field,
        args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Resolved<Obj>, FieldError>> {
        Box::pin(resolve(&self.engine, obj, field, args))
    }
}

/// The object type whose ID an argument of type `scalar` takes: `Some(None)` for `ID` (any type, unless
/// `@expectedType` names one), `Some(Some("Container"))` for the legacy `ContainerID`, `None` for other types.
fn id_scalar(scalar: &str) -> Option<Option<&str>> {
    if scalar == "ID" {
        return Some(None);
    }
    let object = scalar.strip_suffix("ID")?;
    let served = served();
    (served.is_object(object) && served.schema.get_scalar(scalar).is_some()).then_some(Some(object))
}

/// The object type a legacy loader field of `Query` loads (`loadContainerFromID` → `Container`).
fn legacy_loader(field: &str) -> Option<&str> {
    let object = field.strip_prefix("load")?.strip_suffix("FromID")?;
    served().is_object(object).then_some(object)
}

/// Replaces ID arguments (`"<Type>:<digest>"`, of type `ID` or a legacy `FooID`) by `{"$id": digest}`,
/// checking their type and that they exist.
fn normalize_ids(engine: &Engine, field: &Field, args: &mut Map<String, Value>) -> Result<(), FieldError> {
    for def in &field.definition.arguments {
        let Some(scalar_type) = id_scalar(def.ty.inner_named_type().as_str()) else {
            continue;
        };
        let expected = def
            .directives
            .get("expectedType")
            .and_then(|d| d.specified_argument_by_name("name"))
            .and_then(|v| v.as_str().map(str::to_owned))
            .or_else(|| scalar_type.map(str::to_owned));
        let Some(v) = args.get_mut(def.name.as_str()) else {
            continue;
        };
        let one = |v: &Value| -> Result<Value, FieldError> {
            let Some(id) = v.as_str() else { return Ok(Value::Null) };
            let (ty, d) = parse_id(id)?;
            if let Some(exp) = &expected
                && *exp != ty
            {
                return Err(crate::model::ids::IdError::WrongType {
                    id: crate::model::ids::shorten(id),
                    actual: ty,
                    expected: exp.clone(),
                }
                .into());
            }
            if engine.call(&d).is_none() && ty != "Query" {
                return Err(FieldError::new(format!(
                    "unknown ID `{}`: no `{ty}` with that ID was created on this engine (IDs come from `id` or `sync` \
                     on the same engine and cache directory)",
                    crate::model::ids::shorten(id)
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
async fn resolve(
    engine: &Arc<Engine>,
    obj: &Obj,
    field: &Field,
    mut args: Map<String, Value>,
) -> Result<Resolved<Obj>, FieldError> {
    let ty = obj.type_name.as_str();
    let name = field.name.as_str();
    normalize_ids(engine, field, &mut args)?;

    // `node(id:)` loads any object by ID (its existence was checked with the other IDs).
    if ty == "Query" && name == "node" {
        let d = QueryNode::parse(&args)
            .map_err(|e| FieldError::new(format!("`node`: {e}")))?
            .id;
        let call = engine.call(&d).ok_or_else(|| FieldError::new("unknown ID"))?;
        return Ok(Resolved::Obj(Obj {
            type_name: call.type_name,
            digest: Some(d),
        }));
    }

    // The legacy loaders (`loadContainerFromID`) load like `node`; the ID's type was checked with the other IDs.
    if ty == "Query"
        && let Some(expected) = legacy_loader(name)
    {
        let d = args
            .get("id")
            .and_then(|v| v.get("$id"))
            .and_then(Value::as_str)
            .and_then(crate::model::ids::Digest::parse)
            .ok_or_else(|| FieldError::new(format!("`{name}`: `id` is not an ID of this engine")))?;
        let call = engine.call(&d).ok_or_else(|| FieldError::new("unknown ID"))?;
        if call.type_name != expected {
            return Err(FieldError::new(format!(
                "`{name}`: the ID is a `{}`, but a `{expected}` is expected here",
                call.type_name
            )));
        }
        return Ok(Resolved::Obj(Obj {
            type_name: call.type_name,
            digest: Some(d),
        }));
    }

    resolve_core(engine, obj, field, args).await.map_err(FieldError::from)
}

/// Resolves a field of the core API other than `node` (errors of the operations layer).
async fn resolve_core(
    engine: &Arc<Engine>,
    obj: &Obj,
    field: &Field,
    args: Map<String, Value>,
) -> Result<Resolved<Obj>, OpError> {
    let ty = obj.type_name.as_str();
    let name = field.name.as_str();
    let ret = field.definition.ty.inner_named_type().as_str();
    if let Some(records) = router::record_list(engine, obj, name, ret).await? {
        return Ok(Resolved::List(records.into_iter().map(Resolved::Obj).collect()));
    }

    if served().is_object(ret) {
        return router::builder(engine, obj, name, ret, args).await.map(|o| {
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
        ("Query", "version") => return Ok(Resolved::Leaf(json!(router::VERSION))),
        ("Query", "defaultPlatform") => {
            return Ok(Resolved::Leaf(json!(crate::ops::container::state::default_platform())));
        }
        (_, "id") => return Ok(Resolved::Leaf(json!(own_id()))),
        _ => {}
    }
    let Some(d) = &obj.digest else {
        return Err(OpError::unsupported(ty, name));
    };
    let value = engine.eval(d).await?;
    router::leaf(engine, ty, name, &args, &value, d)
        .await
        .map(Resolved::Leaf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use crate::graphql::executor::Request;

    fn engine(dir: &tempfile::TempDir) -> Arc<Engine> {
        Engine::new(crate::Config {
            cache_dir: dir.path().join("cache"),
            ..crate::Config::for_dir(dir.path())
        })
        .expect("engine")
    }

    /// Executes on a thread with a large stack, as the server does (deep documents nest deeply).
    async fn run(engine: &Arc<Engine>, query: &str, variables: Value) -> Value {
        run_request(
            engine,
            Request {
                query: query.to_owned(),
                variables: variables.as_object().cloned(),
                ..Request::default()
            },
        )
        .await
    }

    async fn run_request(engine: &Arc<Engine>, req: Request) -> Value {
        let (engine, handle) = (engine.clone(), tokio::runtime::Handle::current());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let _ = tx.send(handle.block_on(execute(&engine, req)).to_json());
            })
            .expect("thread");
        rx.await.expect("response")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_events_of_a_named_field_say_what_it_serves() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let mut events = engine.subscribe();
        let req = Request {
            query: r#"{ o0: directory { withNewFile(path: "a", contents: "x") { entries } }
                        o1: directory { withNewFile(path: "b", contents: "y") { entries } } }"#
                .to_owned(),
            extensions: json!({"serves": {"o0": "tests"}}).as_object().cloned(),
            ..Request::default()
        };
        let v = run_request(&engine, req).await;
        assert!(v.get("errors").is_none(), "{v}");
        let mut serves = std::collections::BTreeMap::new();
        while let Ok(ev) = events.try_recv() {
            if ev.op == "Directory.withNewFile" && ev.kind == crate::solver::events::EventKind::Started {
                let path = ev.info.as_ref().map(|i| i.args["path"].clone()).unwrap_or_default();
                serves.insert(path.to_string(), ev.serves.clone());
            }
        }
        assert_eq!(serves.get("\"a\""), Some(&Some("tests".to_owned())), "{serves:?}");
        assert_eq!(serves.get("\"b\""), Some(&None), "{serves:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipeline_graph_becomes_an_event_and_a_bad_one_a_note() {
        use crate::solver::events::EventKind;
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let mut events = engine.subscribe();
        let graph = json!({"name": "ci", "nodes": [
            {"id": "in_src", "label": "src: Directory", "kind": "input"},
            {"id": "o_log", "label": "log = src.entries()", "kind": "output", "serves": "log"}],
            "edges": [{"from": "in_src", "to": "o_log"}]});
        let bad = json!({"name": "ci", "nodes": [], "edges": [{"from": "a", "to": "b"}]});
        for (ext, expect_graph) in [(graph, true), (bad, false), (json!(42), false)] {
            let req = Request {
                query: "{ directory { entries } }".to_owned(),
                extensions: json!({ "pipeline": ext }).as_object().cloned(),
                ..Request::default()
            };
            let v = run_request(&engine, req).await;
            assert_eq!(
                v,
                json!({"data": {"directory": {"entries": []}}}),
                "the request runs either way"
            );
            let mut seen = None;
            while let Ok(ev) = events.try_recv() {
                match ev.kind {
                    EventKind::Graph(g) => seen = Some(Ok(g)),
                    EventKind::Log(line) if ev.op == "engine" => seen = Some(Err(line)),
                    _ => {}
                }
            }
            match seen {
                Some(Ok(g)) if expect_graph => {
                    assert_eq!((g.name.as_str(), g.nodes.len(), g.edges.len()), ("ci", 2, 1));
                    assert_eq!(g.nodes[1].serves.as_deref(), Some("log"));
                }
                Some(Err(note)) if !expect_graph => {
                    assert!(note.contains("pipeline graph was left out"), "{note}");
                }
                other => panic!("unexpected: {other:?}"),
            }
        }
    }

    /// `levels` fragments, each spreading the next `copies` times at one place.
    fn spreads(levels: usize, copies: usize) -> String {
        let mut doc = String::from(r#"{ directory { withNewFile(path: "f", contents: "hi") { ...F0 } } }"#);
        for i in 0..levels {
            let spread = format!(" ...F{}", i + 1);
            doc.push_str(&format!(" fragment F{i} on Directory {{{} }}", spread.repeat(copies)));
        }
        doc.push_str(&format!(
            " fragment F{levels} on Directory {{ entries f: file(path: \"f\") {{ contents }} }}"
        ));
        doc
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_spreads_are_collected_once() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        // 3^40 expansions if each spread were followed.
        let v = run(&engine, &spreads(40, 3), json!({})).await;
        assert_eq!(
            v,
            json!({ "data": { "directory": { "withNewFile": { "entries": ["f"], "f": { "contents": "hi" } } } } })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merged_fields_with_the_same_spreads_collect_them_once() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        // Every level has two fields with one response key, each spreading the next level: the response stays
        // one chain, and its sub-selections are collected once per level.
        let levels = 40;
        let mut doc = String::from("{ directory { ...F0 } }");
        for i in 0..levels {
            doc.push_str(&format!(
                " fragment F{i} on Directory {{ d: withNewDirectory(path: \"x\") {{ ...F{n} }} d: withNewDirectory(path: \"x\") {{ ...F{n} }} }}",
                n = i + 1
            ));
        }
        doc.push_str(&format!(" fragment F{levels} on Directory {{ entries }}"));
        let v = run(&engine, &doc, json!({})).await;
        let mut at = &v["data"]["directory"];
        for _ in 0..levels {
            at = &at["d"];
        }
        assert_eq!(at["entries"], json!(["x/"]), "{v}");
        assert!(v.get("errors").is_none(), "{v}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_many_fields_stop_the_request_with_an_error_naming_the_limit() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        // Distinct keys at every level: 2^20 leaves, far above the limit.
        let doubling = |levels: usize| {
            let mut doc = String::from("{ directory { ...F0 } }");
            for i in 0..levels {
                doc.push_str(&format!(
                    " fragment F{i} on Directory {{ a: withNewDirectory(path: \"x\") {{ ...F{n} }} b: withNewDirectory(path: \"x\") {{ ...F{n} }} }}",
                    n = i + 1
                ));
            }
            doc.push_str(&format!(" fragment F{levels} on Directory {{ __typename }}"));
            doc
        };
        let v = run(&engine, &doubling(20), json!({})).await;
        let errors = v["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "one error says it: {errors:?}");
        assert!(
            errors[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exec::MAX_FIELDS")),
            "{errors:?}"
        );
        // Below the limit, the same shape answers in full.
        let v = run(&engine, &doubling(12), json!({})).await;
        assert!(v.get("errors").is_none(), "{}", v["errors"]);
        assert_eq!(
            v["data"]["directory"]["b"]["a"]["b"]["b"]["a"]["a"]["b"]["a"]["a"]["a"]["b"]["b"]["__typename"],
            "Directory"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_variables_fail_the_request_before_any_field_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let doc = r#"query($p: String!, $drop: [String!]!) {
            directory { withNewFile(path: $p, contents: "x") { withoutFiles(paths: $drop) { entries } } }
        }"#;
        for (vars, name) in [
            (json!({ "drop": [] }), "$p"),
            (json!({ "p": 1, "drop": [] }), "$p"),
            (json!({ "p": "a", "drop": [true] }), "$drop"),
        ] {
            let v = run(&engine, doc, vars.clone()).await;
            assert!(v.get("data").is_none(), "{vars} → {v}");
            let message = v["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains(&format!("Variable \"{name}\"")), "{vars} → {v}");
        }
        assert_eq!(engine.computed.load(Ordering::Relaxed), 0, "nothing was evaluated");
        let v = run(&engine, doc, json!({ "p": "a", "drop": "a" })).await;
        assert_eq!(
            v,
            json!({ "data": { "directory": { "withNewFile": { "withoutFiles": { "entries": [] } } } } })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skip_and_include_read_coerced_variables() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let doc = r#"query($yes: Boolean!, $no: Boolean = false) {
            a: version @include(if: $yes) b: version @skip(if: $yes) c: version @include(if: $no)
        }"#;
        let v = run(&engine, doc, json!({ "yes": true })).await;
        let keys: Vec<&String> = v["data"].as_object().expect("data").keys().collect();
        assert_eq!(keys, ["a"], "{v}");
        let v = run(&engine, doc, json!({ "yes": "true" })).await;
        assert!(v.get("data").is_none(), "a string is no Boolean: {v}");
    }

    /// The `data` of a query that must succeed.
    async fn data(engine: &Arc<Engine>, query: &str) -> Value {
        let v = run(engine, query, json!({})).await;
        assert!(v.get("errors").is_none(), "{query}: {v}");
        v["data"].clone()
    }

    /// The first error message of a query that must fail.
    async fn error(engine: &Arc<Engine>, query: &str) -> String {
        let v = run(engine, query, json!({})).await;
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{query}: no error in {v}"))
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn directory_edits_are_pure_tree_work() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(
            &engine,
            r#"{ directory {
                withNewFile(path: "a/b.txt", contents: "one\ntwo\nthree\n", permissions: 384) {
                withNewDirectory(path: "c/d") { withSymlink(target: "a/b.txt", linkName: "l") {
                    entries glob(pattern: "**/*.txt")
                    b: file(path: "a/b.txt") { contents size name
                        tail: contents(offsetLines: 1) head: contents(limitLines: 1) }
                    via: file(path: "l") { contents }
                    stat(path: "a/b.txt") { fileType permissions size name }
                    link: stat(path: "l", doNotFollowSymlinks: true) { fileType }
                    exists(path: "c/d", expectedType: DIRECTORY_TYPE)
                    missing: exists(path: "nope")
                    withoutFiles(paths: ["a/b.txt", "l"]) { entries }
                    sub: directory(path: "c") { name entries }
                } } } } }"#,
        )
        .await;
        let d = &v["directory"]["withNewFile"]["withNewDirectory"]["withSymlink"];
        assert_eq!(d["entries"], json!(["a/", "c/", "l"]));
        assert_eq!(d["glob"], json!(["a/b.txt"]));
        assert_eq!(d["b"]["contents"], "one\ntwo\nthree\n");
        assert_eq!(
            (d["b"]["size"].clone(), d["b"]["name"].clone()),
            (json!(14), json!("b.txt"))
        );
        assert_eq!(
            (d["b"]["tail"].clone(), d["b"]["head"].clone()),
            (json!("two\nthree\n"), json!("one\n"))
        );
        assert_eq!(d["via"]["contents"], "one\ntwo\nthree\n");
        assert_eq!(
            d["stat"],
            json!({ "fileType": "REGULAR", "permissions": 384, "size": 14, "name": "b.txt" })
        );
        assert_eq!(d["link"]["fileType"], "SYMLINK");
        assert_eq!((d["exists"].clone(), d["missing"].clone()), (json!(true), json!(false)));
        assert_eq!(d["withoutFiles"]["entries"], json!(["a/", "c/"]));
        assert_eq!(d["sub"], json!({ "name": "c/", "entries": ["d/"] }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn directories_combine_filter_and_diff() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let base = data(
            &engine,
            r#"{ directory { withNewFile(path: "x", contents: "1") { id } } }"#,
        )
        .await;
        let id = base["directory"]["withNewFile"]["id"].as_str().expect("id").to_owned();
        let q = format!(
            r#"{{ directory {{ withNewFile(path: "y.md", contents: "2") {{
                withDirectory(path: "sub", source: "{id}") {{ entries(path: "sub") }}
                merged: withDirectory(path: "", source: "{id}", exclude: ["*.md"]) {{ entries }}
                filter(include: ["*.md"]) {{ entries }}
                withFile(path: "copy", source: "{file}", permissions: 493) {{ stat(path: "copy") {{ permissions }} }}
                diff(other: "{id}") {{ entries }}
            }} }} }}"#,
            file = data(&engine, r#"{ file(name: "f", contents: "z") { id } }"#).await["file"]["id"]
                .as_str()
                .expect("id"),
        );
        let v = data(&engine, &q).await;
        let d = &v["directory"]["withNewFile"];
        assert_eq!(d["withDirectory"]["entries"], json!(["x"]));
        assert_eq!(d["merged"]["entries"], json!(["x", "y.md"]));
        assert_eq!(d["filter"]["entries"], json!(["y.md"]));
        assert_eq!(d["withFile"]["stat"]["permissions"], 493);
        assert_eq!(d["diff"]["entries"], json!(["x"]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_are_renamed_retimed_and_hashed() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(
            &engine,
            r#"{ file(name: "a.txt", contents: "hi") {
                withName(name: "b.txt") { name contents }
                plain: digest(excludeMetadata: true)
                full: digest
                renamed: withName(name: "c") { full: digest plain: digest(excludeMetadata: true) }
                withTimestamps(timestamp: 0) { digest }
            } }"#,
        )
        .await;
        let f = &v["file"];
        assert_eq!(f["withName"], json!({ "name": "b.txt", "contents": "hi" }));
        assert_eq!(f["plain"], f["renamed"]["plain"], "contents alone");
        assert_ne!(f["full"], f["renamed"]["full"], "the name is metadata");
        assert_ne!(f["full"], f["withTimestamps"]["digest"], "so is the time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_names_are_bare_names() {
        // As Dagger's `TestNewFileInvalid`: the error comes when the field is selected, even for an `id`.
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        for q in [
            r#"{ file(name: "dir/some-file", contents: "x") { id } }"#,
            r#"{ file(name: "/abs", contents: "x") { contents } }"#,
            r#"{ file(name: "ok", contents: "x") { withName(name: "a/b") { id } } }"#,
        ] {
            let message = error(&engine, q).await;
            assert!(message.contains("must not contain a directory"), "{q}: {message}");
        }
        let long = error(
            &engine,
            &format!(r#"{{ file(name: "{}", contents: "x") {{ id }} }}"#, "n".repeat(256)),
        )
        .await;
        assert!(long.contains("255"), "{long}");
        let v = data(
            &engine,
            r#"{ file(name: "some-file", contents: "x") { name withName(name: "other") { name } } }"#,
        )
        .await;
        assert_eq!(
            v["file"],
            json!({ "name": "some-file", "withName": { "name": "other" } })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secrets_keep_their_plaintext_out_of_ids_and_the_cache_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(
            &engine,
            r#"{ setSecret(name: "token", plaintext: "s3cr3t-value") { id name plaintext } }"#,
        )
        .await;
        assert_eq!(v["setSecret"]["name"], "token");
        assert_eq!(v["setSecret"]["plaintext"], "s3cr3t-value");
        assert!(!v["setSecret"]["id"].as_str().expect("id").contains("s3cr3t"));
        let mut stack = vec![dir.path().join("cache")];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).expect("read").flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains("s3cr3t-value"),
                        "{}",
                        path.display()
                    );
                }
            }
        }
        let missing = error(
            &engine,
            r#"{ secret(uri: "env://DAGGER_RS_TEST_NO_SUCH_VAR") { plaintext } }"#,
        )
        .await;
        assert!(missing.contains("DAGGER_RS_TEST_NO_SUCH_VAR"), "{missing}");
        let bad = error(&engine, r#"{ secret(uri: "vault://x") { name } }"#).await;
        assert!(bad.contains("env://NAME"), "{bad}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn container_state_fields_and_records_need_no_runtime() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(
            &engine,
            r#"{ container { withEnvVariable(name: "A", value: "1") { withWorkdir(path: "/src") {
                withLabel(name: "k", value: "v") { withExposedPort(port: 8080, description: "web") {
                    workdir envVariable(name: "A") label(name: "k")
                    envVariables { name value }
                    labels { name value }
                    exposedPorts { port protocol description }
                    withoutEnvVariable(name: "A") { envVariables { name } }
                } } } } } }"#,
        )
        .await;
        let c = &v["container"]["withEnvVariable"]["withWorkdir"]["withLabel"]["withExposedPort"];
        assert_eq!(
            (c["workdir"].clone(), c["envVariable"].clone()),
            (json!("/src"), json!("1"))
        );
        assert_eq!(c["label"], "v");
        assert_eq!(c["envVariables"], json!([{ "name": "A", "value": "1" }]));
        assert_eq!(c["labels"], json!([{ "name": "k", "value": "v" }]));
        assert_eq!(
            c["exposedPorts"],
            json!([{ "port": 8080, "protocol": "TCP", "description": "web" }])
        );
        assert_eq!(c["withoutEnvVariable"]["envVariables"], json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_are_checked_for_type_and_existence() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(&engine, r#"{ file(name: "f", contents: "x") { id } }"#).await;
        let file_id = v["file"]["id"].as_str().expect("id").to_owned();
        let wrong = error(
            &engine,
            &format!(r#"{{ directory {{ withDirectory(path: "x", source: "{file_id}") {{ entries }} }} }}"#),
        )
        .await;
        assert!(wrong.contains("File") && wrong.contains("Directory"), "{wrong}");
        let unknown_id = format!("File:{}", crate::model::ids::Digest::of(b"never made"));
        let unknown = error(
            &engine,
            &format!(r#"{{ directory {{ withFile(path: "x", source: "{unknown_id}") {{ entries }} }} }}"#),
        )
        .await;
        assert!(unknown.contains("unknown ID"), "{unknown}");
        let loaded = data(
            &engine,
            &format!(r#"{{ node(id: "{file_id}") {{ __typename ... on File {{ contents }} }} }}"#),
        )
        .await;
        assert_eq!(loaded["node"], json!({ "__typename": "File", "contents": "x" }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn legacy_loaders_load_objects_of_their_own_type_only() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let v = data(
            &engine,
            r#"{ directory { withNewFile(path: "a", contents: "x") { id file(path: "a") { id } } } }"#,
        )
        .await;
        let dir_id = v["directory"]["withNewFile"]["id"].as_str().expect("id").to_owned();
        let file_id = v["directory"]["withNewFile"]["file"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let loaded = data(
            &engine,
            &format!(
                r#"{{ loadDirectoryFromID(id: "{dir_id}") {{ __typename entries }}
                    loadFileFromID(id: "{file_id}") {{ contents id }}
                    node(id: "{dir_id}") {{ ... on Directory {{ entries }} }} }}"#
            ),
        )
        .await;
        assert_eq!(
            loaded["loadDirectoryFromID"],
            json!({ "__typename": "Directory", "entries": ["a"] })
        );
        assert_eq!(loaded["loadFileFromID"], json!({ "contents": "x", "id": file_id }));
        assert_eq!(loaded["node"]["entries"], json!(["a"]), "`node` still loads");
        // Chained builders on a loaded object, with an object argument given as a legacy-typed ID.
        let chained = data(
            &engine,
            &format!(
                r#"{{ loadDirectoryFromID(id: "{dir_id}") {{ withFile(path: "b", source: "{file_id}") {{ entries }} }} }}"#
            ),
        )
        .await;
        assert_eq!(chained["loadDirectoryFromID"]["withFile"]["entries"], json!(["a", "b"]));
        // An ID of another type names both types.
        let wrong = error(
            &engine,
            &format!(r#"{{ loadContainerFromID(id: "{file_id}") {{ id }} }}"#),
        )
        .await;
        assert!(wrong.contains("`File`") && wrong.contains("`Container`"), "{wrong}");
        let garbled = error(&engine, r#"{ loadFileFromID(id: "nonsense") { id } }"#).await;
        assert!(garbled.contains("not an ID of this engine"), "{garbled}");
        let unknown_id = format!("File:{}", crate::model::ids::Digest::of(b"never made"));
        let unknown = error(
            &engine,
            &format!(r#"{{ loadFileFromID(id: "{unknown_id}") {{ id }} }}"#),
        )
        .await;
        assert!(unknown.contains("unknown ID"), "{unknown}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unimplemented_fields_say_so() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let message = error(
            &engine,
            r#"{ git(url: "https://example.com/x.git") { tag(name: "v1") { tree { entries } } } }"#,
        )
        .await;
        assert!(message.contains("is not supported by this engine yet"), "{message}");
        // An argument the engine cannot honour is refused, never ignored.
        let v = run(&engine, "{ container { asService { id } } }", json!({})).await;
        let service = v["data"]["container"]["asService"]["id"]
            .as_str()
            .expect("a service ID")
            .to_owned();
        for (field, query) in [
            (
                "Container.from(registryService:)",
                format!(r#"{{ container {{ from(address: "busybox", registryService: "{service}") {{ id }} }} }}"#),
            ),
            (
                "Container.publish(registryService:)",
                format!(r#"{{ container {{ publish(address: "127.0.0.1:9/x:y", registryService: "{service}") }} }}"#),
            ),
        ] {
            let message = error(&engine, &query).await;
            assert!(
                message.contains(field) && message.contains("is not supported by this engine yet"),
                "{message}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_directories_follow_gitignore_negations_anchors_and_directory_patterns() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = engine(&dir);
        let proj = dir.path().join("proj");
        // A repository: gitignore rules apply under the nearest directory holding `.git`.
        std::fs::create_dir_all(proj.join(".git")).expect("mkdir");
        for (path, text) in [
            (
                ".gitignore",
                "# logs\n*.log\n!keep.log\nbuild/\n/root-only.txt\n.git/\n",
            ),
            ("a.log", "x"),
            ("keep.log", "x"),
            ("build/out", "x"),
            ("sub/build/out", "x"),
            ("sub/root-only.txt", "x"),
            ("sub/deep.log", "x"),
            ("root-only.txt", "x"),
            ("src/main.rs", "x"),
        ] {
            let p = proj.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let v = data(
            &engine,
            r#"{ host { directory(path: "proj", gitignore: true) { entries sub: entries(path: "sub") } } }"#,
        )
        .await;
        let d = &v["host"]["directory"];
        assert_eq!(d["entries"], json!([".gitignore", "keep.log", "src/", "sub/"]));
        assert_eq!(d["sub"], json!(["root-only.txt"]));
        let v = data(&engine, r#"{ host { directory(path: "proj") { entries } } }"#).await;
        assert_eq!(
            v["host"]["directory"]["entries"].as_array().map(Vec::len),
            Some(8),
            "{v}"
        );
    }
}
