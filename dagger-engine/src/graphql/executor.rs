//! GraphQL execution: parse and validate with apollo-compiler, then resolve with our own executor.
//!
//! Why not a GraphQL server framework: async-graphql's parser has a fixed recursion limit of 64, but every
//! chained call is one nesting level and real pipelines chain hundreds; apollo-compiler's parser takes a
//! configurable limit and validates documents and answers introspection straight from the SDL. Its bundled
//! executor, though, resolves sibling fields one after another and its field errors carry no extensions, and
//! this engine needs both: sibling outputs of one request run concurrently, and a failed command is an
//! `EXEC_ERROR` with its exit code and output. So execution is ours: a small, concurrent resolver walk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use apollo_compiler::ast::Type;
use apollo_compiler::executable::{Field, Selection, SelectionSet};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Node};
use futures_util::future::{BoxFuture, Either, join_all};
use serde_json::{Map, Value, json};

use crate::graphql::error::FieldError;
use crate::graphql::schema::Served;

/// How deeply a document may nest (each chained call is one level). Evaluation does not nest with the
/// chain (see `Engine::eval`); parsing, execution and the response do, on the request thread's large stack.
pub const MAX_DEPTH: usize = 16_384;
/// How many tokens a document may have.
pub const MAX_TOKENS: usize = 2_000_000;
/// How many selections one request may visit while collecting fields, over all the objects it executes on:
/// each field, fragment spread and inline fragment counts once per object it is collected for. It bounds the
/// work of a document whose fragments or lists multiply (each fragment is expanded once per selection set,
/// so repeating a spread costs nothing).
pub const MAX_FIELDS: usize = 100_000;

/// A GraphQL request body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The document.
    pub query: String,
    /// Which operation to run, when the document has several.
    #[serde(default)]
    pub operation_name: Option<String>,
    /// Variable values.
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
    /// Extensions of the request. This engine reads one: `serves`, a map from root response keys to what
    /// each serves for the client (`{"o0": "tests"}`), which the progress events of the operations those
    /// fields need carry ([`Event::serves`](crate::solver::events::Event::serves)). Others are ignored.
    #[serde(default)]
    pub extensions: Option<Map<String, Value>>,
}

/// Longest name of what a root field serves that is kept (longer ones are cut).
const SERVES_CHARS: usize = 200;

/// The `serves` extension of a request: root response key → name, names cut to [`SERVES_CHARS`]; entries
/// that are not strings are ignored.
fn serves_of(extensions: Option<&Map<String, Value>>) -> HashMap<String, Arc<str>> {
    let Some(Value::Object(map)) = extensions.and_then(|e| e.get("serves")) else {
        return HashMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let name: String = v.as_str()?.chars().take(SERVES_CHARS).collect();
            Some((k.clone(), Arc::from(name)))
        })
        .collect()
}

/// What a field resolved to.
#[derive(Debug)]
pub enum Resolved<O> {
    /// `null`.
    Null,
    /// A scalar or enum.
    Leaf(Value),
    /// An object, to complete with the field's selection set.
    Obj(O),
    /// A list.
    List(Vec<Resolved<O>>),
}

/// What the executor asks of the API it serves: the type of an object, and the value of one of its fields
/// (arguments already coerced to their declared types; `__typename` and introspection are answered by the
/// executor).
pub trait Resolver: Send + Sync {
    /// An object during execution.
    type Object: Send + Sync;
    /// The GraphQL type of `obj`.
    fn type_name<'o>(&self, obj: &'o Self::Object) -> &'o str;
    /// Resolves `field` of `obj`.
    fn resolve<'a>(
        &'a self,
        obj: &'a Self::Object,
        field: &'a Field,
        args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Resolved<Self::Object>, FieldError>>;
}

/// One request being executed.
struct Ctx<'a, R: Resolver> {
    resolver: &'a R,
    served: &'a Served,
    doc: &'a Valid<ExecutableDocument>,
    /// The variables, coerced to their declared types.
    vars: Map<String, Value>,
    errors: parking_lot::Mutex<Vec<Value>>,
    /// Selections visited so far (see [`MAX_FIELDS`]).
    visited: AtomicUsize,
    /// Whether the [`MAX_FIELDS`] error was recorded.
    over_budget: AtomicBool,
    /// What each root field serves (the request's `serves` extension).
    serves: HashMap<String, Arc<str>>,
}

/// A value of a response's `data`: objects keep the order of the query's selection, as GraphQL requires
/// (serde_json's own maps are sorted by key).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// A scalar, an enum value, `null`, or a `JSON` scalar's value.
    Json(Value),
    /// What apollo-compiler's introspection produced (its maps keep their order too).
    Introspection(apollo_compiler::response::JsonValue),
    /// An object: response keys in selection order.
    Object(Vec<(String, Data)>),
    /// A list.
    List(Vec<Data>),
}

impl Data {
    /// The same value as a `serde_json::Value` (whose objects sort their keys).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl serde::Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Data::Json(v) => v.serialize(serializer),
            Data::Introspection(v) => v.serialize(serializer),
            Data::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Data::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// A response body: `errors` (when there are any), then `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The errors, each with `message` and, for field errors, `locations`, `path` and maybe `extensions`.
    pub errors: Vec<Value>,
    /// `None` when the request failed before execution (no `data` key at all); `Some(Data::Json(Null))`
    /// when a non-null root field failed.
    pub data: Option<Data>,
}

impl Response {
    fn request_errors(errors: Vec<Value>) -> Self {
        Self { errors, data: None }
    }

    /// The body as a `serde_json::Value` (whose objects sort their keys; serialize `self` to keep the order).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl serde::Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        // The spec suggests `errors` first, so a reader of a long body sees them at once.
        if !self.errors.is_empty() {
            map.serialize_entry("errors", &self.errors)?;
        }
        if let Some(data) = &self.data {
            map.serialize_entry("data", data)?;
        }
        map.end()
    }
}

/// Executes a request against the schema `served`, resolving fields from `root` with `resolver`, and
/// returns the response body.
pub async fn execute<R: Resolver>(served: &Served, resolver: &R, root: R::Object, req: Request) -> Response {
    let doc = match parse(served, &req.query) {
        Ok(doc) => doc,
        Err(errors) => return Response::request_errors(errors),
    };
    let op = match doc.operations.get(req.operation_name.as_deref()) {
        Ok(op) => op,
        Err(_) => {
            let msg = match &req.operation_name {
                Some(name) => format!("the document has no operation named `{name}`"),
                None => "the document has several operations; say which one with `operationName`".to_owned(),
            };
            return Response::request_errors(vec![json!({ "message": msg })]);
        }
    };
    // Variables are checked and converted before any field runs (a bad one is a request error, no `data`).
    let vars = match crate::graphql::input::coerce_variables(
        &served.schema,
        &op.variables,
        &req.variables.unwrap_or_default(),
    ) {
        Ok(v) => v,
        Err(messages) => {
            return Response::request_errors(messages.into_iter().map(|m| json!({ "message": m })).collect());
        }
    };
    let serves = serves_of(req.extensions.as_ref());
    let (introspected, mut errors) = match introspect(served, &doc, op, &vars) {
        Ok(found) => found,
        Err(errors) => return Response::request_errors(errors),
    };

    let ctx = Ctx {
        resolver,
        served,
        doc: &doc,
        vars,
        errors: parking_lot::Mutex::new(Vec::new()),
        visited: AtomicUsize::new(0),
        over_budget: AtomicBool::new(false),
        serves,
    };
    let data = match exec_selection(&ctx, &root, vec![&op.selection_set], Path::default()).await {
        Ok(mut fields) => {
            // Introspection keys hold a placeholder in their place in the selection; fill them in.
            for (k, slot) in &mut fields {
                if let Some(v) = introspected.get(k.as_str()) {
                    *slot = Data::Introspection(v.clone());
                }
            }
            Data::Object(fields)
        }
        // A non-null root field failed: the spec makes the whole `data` null.
        Err(Bubble) => Data::Json(Value::Null),
    };
    errors.extend(ctx.errors.into_inner());
    Response {
        errors,
        data: Some(data),
    }
}

/// Parses and validates a document, within the depth and token limits; `Err` holds the request errors.
fn parse(served: &Served, query: &str) -> Result<Valid<ExecutableDocument>, Vec<Value>> {
    let parsed = apollo_compiler::parser::Parser::new()
        .recursion_limit(MAX_DEPTH)
        .token_limit(MAX_TOKENS)
        .parse_executable(&served.schema, query, "request.graphql");
    #[allow(clippy::result_large_err)]
    let validated = parsed.and_then(|d| match d.validate(&served.schema) {
        Ok(v) => Ok(v),
        // apollo-compiler's field-merging validation stops at a fixed nesting depth (128), far below real
        // pipeline chains. Building the document already checked every field and argument name against
        // the schema, so a document whose only problem is its depth is executed as built.
        Err(e) if e.errors.iter().all(|d| d.to_string().contains("too much recursion")) => {
            Ok(Valid::assume_valid(e.partial))
        }
        Err(e) => Err(e),
    });
    validated.map_err(|with_errors| {
        with_errors
            .errors
            .iter()
            .map(|d| serde_json::to_value(d.to_json()).unwrap_or_else(|_| json!({"message": d.to_string()})))
            .collect()
    })
}

/// The introspection fields of `op` (`__schema`, `__type`), answered by apollo-compiler straight from the
/// SDL, with the errors they raised; `Err` holds a request error.
fn introspect(
    served: &Served,
    doc: &Valid<ExecutableDocument>,
    op: &apollo_compiler::executable::Operation,
    vars: &Map<String, Value>,
) -> Result<(apollo_compiler::response::JsonMap, Vec<Value>), Vec<Value>> {
    if !op.root_fields(doc).any(|f| f.name == "__schema" || f.name == "__type") {
        return Ok(Default::default());
    }
    let raw_vars: apollo_compiler::response::JsonMap =
        serde_json::from_value(Value::Object(vars.clone())).unwrap_or_default();
    match apollo_compiler::request::coerce_variable_values(&served.schema, op, &raw_vars).and_then(|v| {
        apollo_compiler::introspection::partial_execute(&served.schema, &served.implementers, doc, op, &v)
    }) {
        Ok(resp) => Ok((
            resp.data.unwrap_or_default(),
            resp.errors
                .iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
        )),
        Err(e) => Err(vec![json!({ "message": e.message().to_string() })]),
    }
}

/// A response path (`["directory", "file", "contents"]`), shared between levels: each level adds one node
/// pointing at its parent, so a chain of 10,000 calls holds 10,000 nodes, not 10,000 copies of growing
/// vectors.
#[derive(Clone, Default)]
struct Path(Option<Arc<PathNode>>);

struct PathNode {
    parent: Path,
    key: Value,
}

impl Path {
    /// This path with one more key (a response key or a list index).
    fn child(&self, key: Value) -> Path {
        Path(Some(Arc::new(PathNode {
            parent: self.clone(),
            key,
        })))
    }

    /// The path as the JSON list an error carries, root first.
    fn to_json(&self) -> Value {
        let mut keys = Vec::new();
        let mut cur = self.0.as_ref();
        while let Some(node) = cur {
            keys.push(node.key.clone());
            cur = node.parent.0.as_ref();
        }
        keys.reverse();
        Value::Array(keys)
    }
}

impl Drop for PathNode {
    // Iterative, so dropping the path of a very deep field does not recurse once per level.
    fn drop(&mut self) {
        let mut next = self.parent.0.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                Ok(mut n) => next = n.parent.0.take(),
                Err(_) => break,
            }
        }
    }
}

/// A null that travels up to the nearest nullable position, as the GraphQL spec's error propagation says:
/// the error behind it is already recorded, so whoever receives it only turns it into `null`.
struct Bubble;

/// The fields of some selection sets that apply to an object of `type_name`, grouped by response key, in the
/// order they first appear (the response keeps the query's order), as the spec's CollectFields does.
///
/// Each fragment is expanded once for all the sets (`visited`), and a field node reached twice is kept once,
/// so spreading a fragment repeatedly adds no work. Every selection visited counts towards [`MAX_FIELDS`];
/// `Err` once the request has used it up (the error is recorded once).
struct Collector<'c, 'd, R: Resolver> {
    ctx: &'c Ctx<'d, R>,
    type_name: &'c str,
    visited: HashSet<&'d str>,
    out: Vec<(String, Vec<&'d Node<Field>>)>,
    /// Where each response key is in `out`.
    index: std::collections::HashMap<&'d str, usize>,
    /// The field nodes already in `out` (by address).
    seen: HashSet<usize>,
}

impl<'d, R: Resolver> Collector<'_, 'd, R> {
    fn collect(&mut self, set: &'d SelectionSet) -> Result<(), Bubble> {
        for sel in &set.selections {
            self.ctx.spend()?;
            match sel {
                Selection::Field(f) => {
                    if skipped(self.ctx, &f.directives) {
                        continue;
                    }
                    if !self.seen.insert(&**f as *const Field as usize) {
                        continue;
                    }
                    let key = f.response_key().as_str();
                    match self.index.get(key) {
                        Some(&i) => self.out[i].1.push(f),
                        None => {
                            self.index.insert(key, self.out.len());
                            self.out.push((key.to_owned(), vec![f]));
                        }
                    }
                }
                Selection::InlineFragment(inline) => {
                    if skipped(self.ctx, &inline.directives) {
                        continue;
                    }
                    let applies = match &inline.type_condition {
                        None => true,
                        Some(t) => applies_to(self.ctx.served, t.as_str(), self.type_name),
                    };
                    if applies {
                        self.collect(&inline.selection_set)?;
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if skipped(self.ctx, &spread.directives) || !self.visited.insert(spread.fragment_name.as_str()) {
                        continue;
                    }
                    if let Some(frag) = self.ctx.doc.fragments.get(&spread.fragment_name)
                        && applies_to(self.ctx.served, frag.type_condition().as_str(), self.type_name)
                    {
                        self.collect(&frag.selection_set)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn applies_to(served: &Served, condition: &str, type_name: &str) -> bool {
    condition == type_name
        || served
            .implementers
            .get(condition)
            .is_some_and(|i| i.objects.iter().any(|o| o.as_str() == type_name))
}

/// `@skip(if: true)` or `@include(if: false)`.
fn skipped<R: Resolver>(ctx: &Ctx<'_, R>, directives: &apollo_compiler::executable::DirectiveList) -> bool {
    let flag = |name: &str| {
        let value = directives.get(name)?.specified_argument_by_name("if")?;
        let coerced = crate::graphql::input::coerce_literal(
            &ctx.served.schema,
            &Type::NonNullNamed(apollo_compiler::name!("Boolean")),
            value,
            &ctx.vars,
            &mut String::new(),
        );
        Some(matches!(coerced, Ok(Some(Value::Bool(true)))))
    };
    flag("skip") == Some(true) || flag("include") == Some(false)
}

/// Executes the merged selection sets `sets` on `obj`; `Err` when a non-null field of it came out null.
fn exec_selection<'a, R: Resolver>(
    ctx: &'a Ctx<'a, R>,
    obj: &'a R::Object,
    sets: Vec<&'a SelectionSet>,
    path: Path,
) -> BoxFuture<'a, Result<Vec<(String, Data)>, Bubble>> {
    Box::pin(async move {
        let mut collector = Collector {
            ctx,
            type_name: ctx.resolver.type_name(obj),
            visited: HashSet::new(),
            out: Vec::new(),
            index: std::collections::HashMap::new(),
            seen: HashSet::new(),
        };
        for set in sets {
            collector.collect(set)?;
        }
        let fields = collector.out;
        // Sibling fields run concurrently: the outputs of one request are evaluated side by side.
        // A root field the client named runs with that name, for the progress events of what it needs.
        let root = path.0.is_none();
        let values = join_all(fields.iter().map(|(key, fs)| {
            let field = exec_field(ctx, obj, fs, path.child(Value::String(key.clone())));
            match ctx.serves.get(key).filter(|_| root) {
                Some(serves) => Either::Left(crate::solver::events::with_serves(Some(serves.clone()), field)),
                None => Either::Right(field),
            }
        }))
        .await;
        let mut out = Vec::with_capacity(fields.len());
        let mut bubbled = false;
        for ((key, _), value) in fields.into_iter().zip(values) {
            match value {
                Ok(v) => out.push((key, v)),
                Err(Bubble) => bubbled = true,
            }
        }
        if bubbled { Err(Bubble) } else { Ok(out) }
    })
}

/// Resolves and completes one response key; `Err` when it is null and its type says it must not be.
fn exec_field<'a, R: Resolver>(
    ctx: &'a Ctx<'a, R>,
    obj: &'a R::Object,
    fields: &'a [&'a Node<Field>],
    path: Path,
) -> BoxFuture<'a, Result<Data, Bubble>> {
    Box::pin(async move {
        let field = fields[0];
        let name = field.name.as_str();
        if name == "__typename" {
            return Ok(Data::Json(Value::String(ctx.resolver.type_name(obj).to_owned())));
        }
        if name == "__schema" || name == "__type" {
            // Filled in from apollo-compiler's introspection by `execute`.
            return Ok(Data::Json(Value::Null));
        }
        let ty = &field.definition.ty;
        let resolved = match coerce_args(ctx, field) {
            Ok(args) => ctx.resolver.resolve(obj, field, args).await,
            Err(e) => Err(e),
        };
        let value = match resolved {
            Ok(resolved) => complete(ctx, ty, fields, resolved, path).await,
            Err(e) => {
                ctx.error(e, field, &path);
                Err(Bubble)
            }
        };
        nullable_or_bubble(ty, value)
    })
}

/// A null at a nullable position stops the bubbling there.
fn nullable_or_bubble(ty: &Type, value: Result<Data, Bubble>) -> Result<Data, Bubble> {
    match value {
        Err(Bubble) if !ty.is_non_null() => Ok(Data::Json(Value::Null)),
        other => other,
    }
}

fn complete<'a, R: Resolver>(
    ctx: &'a Ctx<'a, R>,
    ty: &'a Type,
    fields: &'a [&'a Node<Field>],
    resolved: Resolved<R::Object>,
    path: Path,
) -> BoxFuture<'a, Result<Data, Bubble>> {
    Box::pin(async move {
        let field = fields[0];
        let value = match resolved {
            Resolved::Null | Resolved::Leaf(Value::Null) => {
                if ty.is_non_null() {
                    let message = format!("`{}` returned null, but its type `{ty}` is non-null", field.name);
                    ctx.error(FieldError::new(message), field, &path);
                    Err(Bubble)
                } else {
                    Ok(Data::Json(Value::Null))
                }
            }
            Resolved::Leaf(v) => Ok(Data::Json(v)),
            Resolved::Obj(o) => {
                // Every field with this response key contributes its sub-selection.
                let sets = fields.iter().map(|f| &f.selection_set).collect();
                exec_selection(ctx, &o, sets, path).await.map(Data::Object)
            }
            Resolved::List(items) => {
                let item_ty = ty.item_type();
                let mut out = Vec::with_capacity(items.len());
                let mut bubbled = false;
                for (i, item) in items.into_iter().enumerate() {
                    match complete(ctx, item_ty, fields, item, path.child(json!(i))).await {
                        Ok(v) => out.push(v),
                        Err(Bubble) => bubbled = true,
                    }
                }
                if bubbled { Err(Bubble) } else { Ok(Data::List(out)) }
            }
        };
        nullable_or_bubble(ty, value)
    })
}

impl<R: Resolver> Ctx<'_, R> {
    /// Records a field error with the field's position in the document and its response path.
    fn error(&self, e: FieldError, field: &Node<Field>, path: &Path) {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(e.message));
        if let Some(start) = field.location().and_then(|l| l.line_column(&self.doc.sources)) {
            err.insert(
                "locations".into(),
                json!([{ "line": start.line, "column": start.column }]),
            );
        }
        err.insert("path".into(), path.to_json());
        if let Some(ext) = e.extensions {
            err.insert("extensions".into(), Value::Object(ext));
        }
        self.errors.lock().push(Value::Object(err));
    }
}

/// The field's arguments as JSON, as the spec's CoerceArgumentValues makes them: literals checked against
/// their types and converted, variables substituted, defaults applied, required ones present.
fn coerce_args<R: Resolver>(ctx: &Ctx<'_, R>, field: &Field) -> Result<Map<String, Value>, FieldError> {
    let schema = &ctx.served.schema;
    let mut out = Map::new();
    let owner = field.definition.name.as_str();
    for def in &field.definition.arguments {
        let invalid = |e: crate::graphql::input::Invalid| FieldError::new(e.for_argument(owner, def.name.as_str()));
        let given = match field.arguments.iter().find(|a| a.name == def.name) {
            Some(a) => crate::graphql::input::coerce_literal(schema, &def.ty, &a.value, &ctx.vars, &mut String::new())
                .map_err(invalid)?,
            None => None,
        };
        let value = match given {
            Some(v) => v,
            None => match &def.default_value {
                Some(d) => {
                    match crate::graphql::input::coerce_literal(schema, &def.ty, d, &Map::new(), &mut String::new())
                        .map_err(invalid)?
                    {
                        Some(v) => v,
                        None => continue,
                    }
                }
                None if def.ty.is_non_null() => {
                    return Err(FieldError::new(format!(
                        "Argument \"{}\" of `{owner}` is required (type {}) but was not given",
                        def.name, def.ty
                    )));
                }
                None => continue,
            },
        };
        out.insert(def.name.to_string(), value);
    }
    Ok(out)
}

impl<R: Resolver> Ctx<'_, R> {
    /// Counts one visited selection; `Err` (recording the error once) when the request has used up
    /// [`MAX_FIELDS`].
    fn spend(&self) -> Result<(), Bubble> {
        if self.visited.fetch_add(1, Ordering::Relaxed) < MAX_FIELDS {
            return Ok(());
        }
        if !self.over_budget.swap(true, Ordering::Relaxed) {
            self.errors.lock().push(json!({
                "message": format!(
                    "the request selects more than {MAX_FIELDS} fields (exec::MAX_FIELDS, counting each field and \
                     fragment once for every object it applies to): split it into smaller requests"
                ),
            }));
        }
        Err(Bubble)
    }
}

#[cfg(test)]
mod tests {
    //! The executor on a toy API: no engine, no containers.

    use parking_lot::Mutex;

    use super::*;

    const SDL: &str = r#"
        type Query {
            hero: Character!
            greet(name: String! = "you", times: Int = 1): String!
            nothing: String
            missing: String!
            items: [Item!]!
            maybeItems: [Item!]
            item(id: Int!): Item
        }
        interface Character { name: String! }
        type Human implements Character { name: String! height: Int friends: [Human!]! }
        type Item implements Character { name: String! id: Int! label: String! broken: String! note: String }
    "#;

    #[derive(Debug)]
    enum Toy {
        Query,
        Human(&'static str),
        Item(i64),
    }

    /// Answers the toy schema and records every field it resolves.
    #[derive(Default)]
    struct ToyResolver {
        resolved: Mutex<Vec<String>>,
        /// Each field resolved, with what it served (`Type.field@serves`).
        served: Mutex<Vec<String>>,
    }

    impl Resolver for ToyResolver {
        type Object = Toy;

        fn type_name<'o>(&self, obj: &'o Toy) -> &'o str {
            match obj {
                Toy::Query => "Query",
                Toy::Human(_) => "Human",
                Toy::Item(_) => "Item",
            }
        }

        fn resolve<'a>(
            &'a self,
            obj: &'a Toy,
            field: &'a Field,
            args: Map<String, Value>,
        ) -> BoxFuture<'a, Result<Resolved<Toy>, FieldError>> {
            Box::pin(async move {
                let name = field.name.as_str();
                self.resolved.lock().push(format!("{}.{name}", self.type_name(obj)));
                let serves = crate::solver::events::current_serves().unwrap_or_default();
                self.served
                    .lock()
                    .push(format!("{}.{name}@{serves}", self.type_name(obj)));
                let leaf = |v: Value| Ok(Resolved::Leaf(v));
                match (obj, name) {
                    (Toy::Query, "hero") => Ok(Resolved::Obj(Toy::Human("Luke"))),
                    (Toy::Query, "greet") => {
                        let who = args["name"].as_str().unwrap_or_default();
                        let times = args.get("times").and_then(Value::as_i64).unwrap_or(0);
                        leaf(json!(format!("hello {who}").repeat(times as usize)))
                    }
                    (Toy::Query, "nothing" | "missing") => Ok(Resolved::Null),
                    (Toy::Query, "items" | "maybeItems") => {
                        Ok(Resolved::List((1..=3).map(Toy::Item).map(Resolved::Obj).collect()))
                    }
                    (Toy::Query, "item") => Ok(Resolved::Obj(Toy::Item(args["id"].as_i64().unwrap_or_default()))),
                    (Toy::Human(n), "name") => leaf(json!(n)),
                    (Toy::Human(_), "height") => leaf(json!(172)),
                    (Toy::Human(_), "friends") => Ok(Resolved::List(vec![
                        Resolved::Obj(Toy::Human("Leia")),
                        Resolved::Obj(Toy::Human("Han")),
                    ])),
                    (Toy::Item(i), "id") => leaf(json!(i)),
                    (Toy::Item(i), "label" | "name") => leaf(json!(format!("item {i}"))),
                    (Toy::Item(i), "broken") if *i == 2 => Err(FieldError::new("item 2 is broken")),
                    (Toy::Item(_), "broken") => leaf(json!("fine")),
                    (Toy::Item(_), "note") => Ok(Resolved::Null),
                    (_, other) => Err(FieldError::new(format!("no field {other}"))),
                }
            })
        }
    }

    fn served() -> Served {
        Served::parse(SDL, "toy.graphql").expect("toy schema")
    }

    async fn run_with(resolver: &ToyResolver, query: &str, variables: Value) -> Response {
        let req = Request {
            query: query.to_owned(),
            operation_name: None,
            variables: variables.as_object().cloned(),
            extensions: None,
        };
        execute(&served(), resolver, Toy::Query, req).await
    }

    #[tokio::test]
    async fn root_fields_named_by_the_serves_extension_resolve_under_that_name() {
        let resolver = ToyResolver::default();
        let req = Request {
            query: r#"{ a: hero { name ... on Human { friends { name } } } b: item(id: 2) { label } greet(name: "x", times: 1) }"#
                .to_owned(),
            extensions: Some(
                json!({"serves": {"a": "tests", "b": "lint[clippy]", "zzz": "unused", "greet": 3}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            ..Request::default()
        };
        let response = execute(&served(), &resolver, Toy::Query, req).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let mut seen = resolver.served.lock().clone();
        seen.sort();
        assert_eq!(
            seen,
            [
                "Human.friends@tests",
                "Human.name@tests",
                "Human.name@tests",
                "Human.name@tests",
                "Item.label@lint[clippy]",
                "Query.greet@",
                "Query.hero@tests",
                "Query.item@lint[clippy]",
            ]
        );
    }

    #[test]
    fn the_serves_extension_keeps_strings_and_cuts_long_names() {
        let long = "x".repeat(500);
        let ext = json!({"serves": {"a": long, "b": null, "c": "ok"}});
        let serves = serves_of(ext.as_object());
        assert_eq!(serves.len(), 2);
        assert_eq!(serves["a"].len(), SERVES_CHARS);
        assert_eq!(&*serves["c"], "ok");
        assert!(serves_of(None).is_empty());
        assert!(serves_of(json!({"serves": "nope"}).as_object()).is_empty());
    }

    async fn run(query: &str, variables: Value) -> Value {
        run_with(&ToyResolver::default(), query, variables).await.to_json()
    }

    /// The response body as text, to check the order of keys (serde_json's maps sort them).
    async fn text(query: &str) -> String {
        let response = run_with(&ToyResolver::default(), query, json!({})).await;
        serde_json::to_string(&response).expect("serialize")
    }

    #[tokio::test]
    async fn named_and_inline_fragments_apply_by_type_condition() {
        let v = run(
            r#"{ hero { ...Names ... on Human { height friends { ...Names } } ... on Item { label } } }
               fragment Names on Character { name __typename }"#,
            json!({}),
        )
        .await;
        assert_eq!(
            v,
            json!({ "data": { "hero": {
                "name": "Luke", "__typename": "Human", "height": 172,
                "friends": [{ "name": "Leia", "__typename": "Human" }, { "name": "Han", "__typename": "Human" }],
            } } })
        );
    }

    #[tokio::test]
    async fn fields_keep_the_order_of_the_selection_and_merge_by_response_key() {
        let body = text(
            r#"{ hero { ... on Human { height } name ... on Human { name height } } z: greet a: greet(name: "b") }"#,
        )
        .await;
        assert_eq!(
            body,
            r#"{"data":{"hero":{"height":172,"name":"Luke"},"z":"hello you","a":"hello b"}}"#
        );
    }

    #[tokio::test]
    async fn aliases_name_fields_called_with_different_arguments() {
        let v = run(
            r#"{ one: greet(name: "x") two: greet(name: "y", times: 2) greet }"#,
            json!({}),
        )
        .await;
        assert_eq!(
            v,
            json!({ "data": { "one": "hello x", "two": "hello yhello y", "greet": "hello you" } })
        );
    }

    #[tokio::test]
    async fn skip_and_include_drop_fields_before_they_are_resolved() {
        let resolver = ToyResolver::default();
        let v = run_with(
            &resolver,
            r#"query($on: Boolean!) {
                a: greet @include(if: $on)
                b: greet @skip(if: $on)
                c: greet @include(if: false)
                hero @skip(if: true) { name }
                ... @include(if: $on) { d: greet(name: "d") }
                ...Frag @skip(if: $on)
            }
            fragment Frag on Query { e: greet }"#,
            json!({ "on": true }),
        )
        .await
        .to_json();
        assert_eq!(v, json!({ "data": { "a": "hello you", "d": "hello d" } }));
        let resolved = resolver.resolved.lock().clone();
        assert_eq!(
            resolved,
            ["Query.greet", "Query.greet"],
            "skipped fields are never resolved"
        );
    }

    #[tokio::test]
    async fn variables_are_coerced_defaulted_and_required() {
        let doc = r#"query($n: String!, $t: Int = 2) { greet(name: $n, times: $t) }"#;
        assert_eq!(
            run(doc, json!({ "n": "v" })).await,
            json!({ "data": { "greet": "hello vhello v" } })
        );
        assert_eq!(
            run(doc, json!({ "n": "v", "t": 1 })).await,
            json!({ "data": { "greet": "hello v" } })
        );
        for bad in [json!({}), json!({ "n": 3 }), json!({ "n": "v", "t": "many" })] {
            let v = run(doc, bad.clone()).await;
            assert!(v.get("data").is_none(), "{bad} is a request error: {v}");
            assert!(
                v["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Variable")),
                "{v}"
            );
        }
    }

    #[tokio::test]
    async fn a_null_bubbles_to_the_nearest_nullable_position() {
        // A nullable object with a failing non-null field becomes null; its siblings stay.
        let v = run(r#"{ item(id: 2) { id broken } greet }"#, json!({})).await;
        assert_eq!(v["data"], json!({ "item": null, "greet": "hello you" }), "{v}");
        assert_eq!(v["errors"][0]["message"], "item 2 is broken");
        assert_eq!(v["errors"][0]["path"], json!(["item", "broken"]));
        assert_eq!(v["errors"][0]["locations"], json!([{ "line": 1, "column": 20 }]));

        // In a nullable list of non-null items, the failing item takes the whole list down.
        let v = run(r#"{ maybeItems { id broken } greet }"#, json!({})).await;
        assert_eq!(v["data"], json!({ "maybeItems": null, "greet": "hello you" }), "{v}");
        assert_eq!(v["errors"][0]["path"], json!(["maybeItems", 1, "broken"]));

        // Through non-null positions up to the root: `data` itself is null.
        let v = run(r#"{ items { id broken } greet }"#, json!({})).await;
        assert_eq!(v["data"], Value::Null, "{v}");
        assert_eq!(v["errors"].as_array().map(Vec::len), Some(1), "{v}");
    }

    #[tokio::test]
    async fn null_is_an_error_only_where_the_type_is_non_null() {
        let v = run(r#"{ nothing item(id: 1) { note } }"#, json!({})).await;
        assert_eq!(v, json!({ "data": { "nothing": null, "item": { "note": null } } }));
        let v = run(r#"{ missing }"#, json!({})).await;
        assert_eq!(v["data"], Value::Null, "{v}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("`missing` returned null")),
            "{v}"
        );
    }

    #[tokio::test]
    async fn invalid_documents_and_unknown_operations_are_request_errors() {
        let v = run(r#"{ hero { weight } }"#, json!({})).await;
        assert!(v.get("data").is_none(), "{v}");
        let req = Request {
            query: "query A { greet } query B { greet }".to_owned(),
            operation_name: Some("C".to_owned()),
            variables: None,
            extensions: None,
        };
        let v = execute(&served(), &ToyResolver::default(), Toy::Query, req)
            .await
            .to_json();
        assert!(v.get("data").is_none(), "{v}");
        assert!(
            v["errors"][0]["message"].as_str().is_some_and(|m| m.contains("`C`")),
            "{v}"
        );
    }

    #[tokio::test]
    async fn arguments_are_checked_against_their_types_before_the_resolver_runs() {
        let resolver = ToyResolver::default();
        for doc in [
            r#"query($i: Int) { item(id: $i) { id } }"#,
            r#"{ item(id: "one") { id } }"#,
            r#"{ greet(times: 1) item { id } }"#,
        ] {
            let v = run_with(&resolver, doc, json!({ "i": 1 })).await.to_json();
            assert!(v.get("data").is_none(), "{doc}: {v}");
            assert!(v["errors"][0]["message"].is_string(), "{doc}: {v}");
        }
        assert!(resolver.resolved.lock().is_empty(), "the resolver never ran");
        let v = run_with(
            &resolver,
            r#"query($i: Int!) { item(id: $i) { id } }"#,
            json!({ "i": 7 }),
        )
        .await;
        assert_eq!(v.to_json(), json!({ "data": { "item": { "id": 7 } } }));
    }
}
