//! GraphQL execution: parse and validate with apollo-compiler, then resolve with our own executor.
//!
//! Why not a GraphQL server framework: async-graphql's parser has a fixed recursion limit of 64, but every
//! chained call is one nesting level and real pipelines chain hundreds; apollo-compiler's parser takes a
//! configurable limit and validates documents and answers introspection straight from the SDL. Its bundled
//! executor, though, resolves sibling fields one after another and its field errors carry no extensions, and
//! this engine needs both: sibling outputs of one request run concurrently, and a failed command is an
//! `EXEC_ERROR` with its exit code and output. So execution is ours: a small, concurrent resolver walk.

use std::sync::Arc;

use apollo_compiler::ExecutableDocument;
use apollo_compiler::ast::Value as AstValue;
use apollo_compiler::executable::{Field, Selection, SelectionSet};
use apollo_compiler::validation::Valid;
use futures_util::future::{BoxFuture, join_all};
use serde_json::{Map, Value, json};

use crate::core::{self, Obj, Resolved};
use crate::engine::Engine;
use crate::schema::served;

/// How deeply a document may nest (each chained call is one level).
pub const MAX_DEPTH: usize = 4096;
/// How many tokens a document may have.
pub const MAX_TOKENS: usize = 2_000_000;

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
}

/// An error of one field, with optional extensions (`_type: "EXEC_ERROR"`, …).
#[derive(Debug, Clone)]
pub struct FieldError {
    /// The message.
    pub message: String,
    /// Extra, typed details.
    pub extensions: Option<Map<String, Value>>,
}

impl FieldError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            extensions: None,
        }
    }
}

impl<E: std::fmt::Display> From<E> for FieldError {
    fn from(e: E) -> Self {
        FieldError::new(e.to_string())
    }
}

/// One request being executed.
pub struct Ctx<'a> {
    /// The engine (session).
    pub engine: &'a Arc<Engine>,
    doc: &'a Valid<ExecutableDocument>,
    vars: Map<String, Value>,
    errors: std::sync::Mutex<Vec<Value>>,
}

/// Executes a request and returns the response body.
pub async fn execute(engine: &Arc<Engine>, req: Request) -> Value {
    let served = served();
    let parsed = apollo_compiler::parser::Parser::new()
        .recursion_limit(MAX_DEPTH)
        .token_limit(MAX_TOKENS)
        .parse_executable(&served.schema, &req.query, "request.graphql");
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
    let doc = match validated {
        Ok(doc) => doc,
        Err(with_errors) => {
            let errors: Vec<Value> = with_errors
                .errors
                .iter()
                .map(|d| serde_json::to_value(d.to_json()).unwrap_or_else(|_| json!({"message": d.to_string()})))
                .collect();
            return json!({ "errors": errors });
        }
    };
    let op = match doc.operations.get(req.operation_name.as_deref()) {
        Ok(op) => op,
        Err(_) => {
            let msg = match &req.operation_name {
                Some(name) => format!("the document has no operation named `{name}`"),
                None => "the document has several operations; say which one with `operationName`".to_owned(),
            };
            return json!({ "errors": [{ "message": msg }] });
        }
    };
    let vars = req.variables.unwrap_or_default();

    // Introspection fields come from apollo-compiler, straight from the SDL.
    let mut data = Map::new();
    let mut errors: Vec<Value> = Vec::new();
    let wants_introspection = op.root_fields(&doc).any(|f| f.name == "__schema" || f.name == "__type");
    if wants_introspection {
        let raw_vars: apollo_compiler::response::JsonMap =
            serde_json::from_value(Value::Object(vars.clone())).unwrap_or_default();
        match apollo_compiler::request::coerce_variable_values(&served.schema, op, &raw_vars).and_then(|v| {
            apollo_compiler::introspection::partial_execute(&served.schema, &served.implementers, &doc, op, &v)
        }) {
            Ok(resp) => {
                if let Ok(Value::Object(r)) = serde_json::to_value(&resp) {
                    if let Some(Value::Object(d)) = r.get("data") {
                        data.extend(d.clone());
                    }
                    if let Some(Value::Array(e)) = r.get("errors") {
                        errors.extend(e.iter().cloned());
                    }
                }
            }
            Err(e) => return json!({ "errors": [{ "message": e.message().to_string() }] }),
        }
    }

    let ctx = Ctx {
        engine,
        doc: &doc,
        vars,
        errors: std::sync::Mutex::new(Vec::new()),
    };
    let root = Obj::query();
    let own = exec_selection(&ctx, &root, &op.selection_set, Vec::new()).await;
    for (k, v) in own {
        // Introspection keys were filled above; ours fill the rest.
        data.entry(k).or_insert(v);
    }
    errors.extend(ctx.errors.into_inner().unwrap_or_default());
    let mut body = Map::new();
    body.insert("data".into(), Value::Object(data));
    if !errors.is_empty() {
        body.insert("errors".into(), Value::Array(errors));
    }
    Value::Object(body)
}

type Path = Vec<Value>;

/// The fields of a selection set that apply to an object of `type_name`, grouped by response key.
fn collect<'d>(ctx: &Ctx<'d>, set: &'d SelectionSet, type_name: &str, out: &mut Vec<(String, Vec<&'d Field>)>) {
    for sel in &set.selections {
        match sel {
            Selection::Field(f) => {
                if skipped(ctx, &f.directives) {
                    continue;
                }
                let key = f.response_key().to_string();
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, fs)) => fs.push(f),
                    None => out.push((key, vec![f])),
                }
            }
            Selection::InlineFragment(inline) => {
                if skipped(ctx, &inline.directives) {
                    continue;
                }
                let applies = match &inline.type_condition {
                    None => true,
                    Some(t) => applies_to(t.as_str(), type_name),
                };
                if applies {
                    collect(ctx, &inline.selection_set, type_name, out);
                }
            }
            Selection::FragmentSpread(spread) => {
                if skipped(ctx, &spread.directives) {
                    continue;
                }
                if let Some(frag) = ctx.doc.fragments.get(&spread.fragment_name)
                    && applies_to(frag.type_condition().as_str(), type_name)
                {
                    collect(ctx, &frag.selection_set, type_name, out);
                }
            }
        }
    }
}

fn applies_to(condition: &str, type_name: &str) -> bool {
    condition == type_name
        || served()
            .implementers
            .get(condition)
            .is_some_and(|i| i.objects.iter().any(|o| o.as_str() == type_name))
}

/// `@skip(if: true)` or `@include(if: false)`.
fn skipped(ctx: &Ctx<'_>, directives: &apollo_compiler::executable::DirectiveList) -> bool {
    let flag = |name: &str| {
        directives
            .get(name)
            .and_then(|d| d.specified_argument_by_name("if"))
            .map(|v| to_json(ctx, v) == Value::Bool(true))
    };
    flag("skip") == Some(true) || flag("include") == Some(false)
}

fn exec_selection<'a>(
    ctx: &'a Ctx<'a>,
    obj: &'a Obj,
    set: &'a SelectionSet,
    path: Path,
) -> BoxFuture<'a, Map<String, Value>> {
    Box::pin(async move {
        let mut fields = Vec::new();
        collect(ctx, set, &obj.type_name, &mut fields);
        // Sibling fields run concurrently: the outputs of one request are evaluated side by side.
        let values = join_all(fields.iter().map(|(key, fs)| {
            let mut p = path.clone();
            p.push(Value::String(key.clone()));
            exec_field(ctx, obj, fs, p)
        }))
        .await;
        fields.into_iter().map(|(k, _)| k).zip(values).collect()
    })
}

fn exec_field<'a>(ctx: &'a Ctx<'a>, obj: &'a Obj, fields: &'a [&'a Field], path: Path) -> BoxFuture<'a, Value> {
    Box::pin(async move {
        let field = fields[0];
        let name = field.name.as_str();
        if name == "__typename" {
            return Value::String(obj.type_name.clone());
        }
        if name == "__schema" || name == "__type" {
            return Value::Null;
        }
        let args = match coerce_args(ctx, field) {
            Ok(a) => a,
            Err(e) => {
                ctx.error(e, &path);
                return Value::Null;
            }
        };
        match core::resolve(ctx, obj, field, args).await {
            Ok(resolved) => complete(ctx, fields, resolved, path).await,
            Err(e) => {
                ctx.error(e, &path);
                Value::Null
            }
        }
    })
}

fn complete<'a>(ctx: &'a Ctx<'a>, fields: &'a [&'a Field], resolved: Resolved, path: Path) -> BoxFuture<'a, Value> {
    Box::pin(async move {
        match resolved {
            Resolved::Null => Value::Null,
            Resolved::Leaf(v) => v,
            Resolved::Obj(o) => {
                // Merge the sub-selections of every field with this response key.
                let mut out = Map::new();
                for f in fields {
                    let o2 = o.clone();
                    let map = exec_selection(ctx, &o2, &f.selection_set, path.clone()).await;
                    out.extend(map);
                }
                Value::Object(out)
            }
            Resolved::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let mut p = path.clone();
                    p.push(json!(i));
                    out.push(complete(ctx, fields, item, p).await);
                }
                Value::Array(out)
            }
        }
    })
}

impl Ctx<'_> {
    fn error(&self, e: FieldError, path: &Path) {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(e.message));
        err.insert("path".into(), Value::Array(path.clone()));
        if let Some(ext) = e.extensions {
            err.insert("extensions".into(), Value::Object(ext));
        }
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(Value::Object(err));
        }
    }
}

/// The field's arguments as JSON, defaults applied, variables substituted.
fn coerce_args(ctx: &Ctx<'_>, field: &Field) -> Result<Map<String, Value>, FieldError> {
    let mut out = Map::new();
    for def in &field.definition.arguments {
        let given = field.arguments.iter().find(|a| a.name == def.name);
        let value = match given {
            Some(a) => to_json(ctx, &a.value),
            None => match &def.default_value {
                Some(d) => to_json(ctx, d),
                None => continue,
            },
        };
        out.insert(def.name.to_string(), value);
    }
    Ok(out)
}

fn to_json(ctx: &Ctx<'_>, v: &AstValue) -> Value {
    match v {
        AstValue::Null => Value::Null,
        AstValue::Enum(n) => Value::String(n.to_string()),
        AstValue::Variable(n) => ctx.vars.get(n.as_str()).cloned().unwrap_or(Value::Null),
        AstValue::String(s) => Value::String(s.clone()),
        AstValue::Float(f) => f.try_to_f64().ok().map(|f| json!(f)).unwrap_or(Value::Null),
        AstValue::Int(i) => i.as_str().parse::<i64>().map(|i| json!(i)).unwrap_or(Value::Null),
        AstValue::Boolean(b) => Value::Bool(*b),
        AstValue::List(items) => Value::Array(items.iter().map(|i| to_json(ctx, i)).collect()),
        AstValue::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.to_string(), to_json(ctx, v))).collect())
        }
    }
}
