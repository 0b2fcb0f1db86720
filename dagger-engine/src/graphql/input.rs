//! Input coercion, as the GraphQL spec (October 2021) defines it: variable values from the request's JSON
//! (§6.1.2 CoerceVariableValues) and argument values written in the document (§6.4.1 CoerceArgumentValues),
//! both against the schema's input types (§3.5 scalars, §3.9 enums, §3.10 input objects, §3.11 lists, §3.12
//! non-null).
//!
//! Scalars: `Int` is a whole number that fits 32 bits, `Float` any finite number, `String` a string,
//! `Boolean` a boolean, `ID` a string or an integer (made a string). The schema's own scalars (`JSON`,
//! `Platform`) travel as strings; `Void` takes no value but null. A value that is not a list where a list is
//! expected becomes a list of one; an input object gets its fields' defaults and may not carry unknown fields.

use apollo_compiler::Schema;
use apollo_compiler::ast::{Type, Value as AstValue, VariableDefinition};
use apollo_compiler::schema::ExtendedType;
use serde_json::{Map, Value};

/// Why a value does not fit its type: where inside the value (`[0].name`), what was there, what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The position inside the value, empty at its top (`[2]`, `.backend`).
    pub at: String,
    /// The offending value, as JSON (literals are shown as their JSON equivalent).
    pub value: String,
    /// The type expected there, as GraphQL writes it (`[String!]`, `Int!`).
    pub expected: String,
    /// More detail, when the type alone does not say it.
    pub reason: Option<String>,
}

impl Invalid {
    fn new(at: &str, value: String, expected: &Type, reason: Option<String>) -> Self {
        Self {
            at: at.to_owned(),
            value,
            expected: expected.to_string(),
            reason,
        }
    }

    /// The message for a variable: `Variable "$args" got invalid value 5 at "$args[0]"; expected type String!`.
    pub fn for_variable(&self, name: &str, whole: &Value) -> String {
        let mut m = format!("Variable \"${name}\" got invalid value {}", short(&whole.to_string()));
        if !self.at.is_empty() {
            m.push_str(&format!(" at \"${name}{}\" (there: {})", self.at, short(&self.value)));
        }
        m.push_str(&format!("; expected type {}", self.expected));
        if let Some(r) = &self.reason {
            m.push_str(&format!(": {r}"));
        }
        m
    }

    /// The message for an argument written in the document.
    pub fn for_argument(&self, field: &str, arg: &str) -> String {
        let mut m = format!(
            "Argument \"{arg}\" of `{field}` has invalid value {}",
            short(&self.value)
        );
        if !self.at.is_empty() {
            m.push_str(&format!(" at \"{arg}{}\"", self.at));
        }
        m.push_str(&format!("; expected type {}", self.expected));
        if let Some(r) = &self.reason {
            m.push_str(&format!(": {r}"));
        }
        m
    }
}

/// A value shown in a message, cut to a readable length.
fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Coerces the request's `variables` against the operation's variable definitions (§6.1.2): each provided
/// value is checked and converted, a missing one takes its default, and a missing non-null one without a
/// default is an error; so is a variable of an unknown or non-input type. Values for undeclared variables are
/// dropped. Each error message names the variable.
pub fn coerce_variables(
    schema: &Schema,
    definitions: &[apollo_compiler::Node<VariableDefinition>],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut out = Map::new();
    let mut errors = Vec::new();
    for def in definitions {
        let name = def.name.as_str();
        let named = def.ty.inner_named_type();
        match schema.types.get(named) {
            None => {
                errors.push(format!(
                    "Variable \"${name}\" has the unknown type `{}`: use a type of the schema",
                    def.ty
                ));
                continue;
            }
            Some(t) if !t.is_input_type() => {
                errors.push(format!(
                    "Variable \"${name}\" has type `{}`, which is not an input type: use a scalar, an enum or an \
                     input object",
                    def.ty
                ));
                continue;
            }
            Some(_) => {}
        }
        match given.get(name) {
            Some(value) => match coerce_json(schema, &def.ty, value, &mut String::new()) {
                Ok(v) => {
                    out.insert(name.to_owned(), v);
                }
                Err(e) => errors.push(e.for_variable(name, value)),
            },
            None => match &def.default_value {
                Some(default) => match coerce_literal(schema, &def.ty, default, &Map::new(), &mut String::new()) {
                    Ok(Some(v)) => {
                        out.insert(name.to_owned(), v);
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(format!(
                        "Variable \"${name}\" has an invalid default value {}; expected type {}",
                        short(&e.value),
                        e.expected
                    )),
                },
                None if def.ty.is_non_null() => errors.push(format!(
                    "Variable \"${name}\" of required type {} was not provided: give it in `variables`",
                    def.ty
                )),
                None => {}
            },
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn type_error(at: &str, value: &Value, ty: &Type, reason: Option<String>) -> Invalid {
    Invalid::new(at, short(&value.to_string()), ty, reason)
}

/// Coerces a JSON value (a variable's) to `ty`; `at` is the position inside the whole value, for messages.
pub fn coerce_json(schema: &Schema, ty: &Type, value: &Value, at: &mut String) -> Result<Value, Invalid> {
    if value.is_null() {
        if ty.is_non_null() {
            return Err(type_error(at, value, ty, Some("a non-null type takes no null".into())));
        }
        return Ok(Value::Null);
    }
    match ty {
        Type::List(item) | Type::NonNullList(item) => match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{i}]"));
                    out.push(coerce_json(schema, item, v, at)?);
                    at.truncate(len);
                }
                Ok(Value::Array(out))
            }
            // One value where a list is expected is a list of that one value.
            other => Ok(Value::Array(vec![coerce_json(schema, item, other, at)?])),
        },
        Type::Named(name) | Type::NonNullNamed(name) => {
            let bad = |reason: Option<String>| type_error(at, value, ty, reason);
            match schema.types.get(name) {
                Some(ExtendedType::Scalar(_)) => scalar_json(name.as_str(), value).map_err(bad),
                Some(ExtendedType::Enum(e)) => match value.as_str() {
                    Some(s) if e.values.contains_key(s) => Ok(value.clone()),
                    _ => Err(bad(Some(format!("one of {}", enum_values(e))))),
                },
                Some(ExtendedType::InputObject(o)) => {
                    let Value::Object(fields) = value else {
                        return Err(bad(Some("an object".into())));
                    };
                    if let Some(unknown) = fields.keys().find(|k| !o.fields.contains_key(k.as_str())) {
                        return Err(bad(Some(format!("`{name}` has no field `{unknown}`"))));
                    }
                    let mut out = Map::new();
                    for (fname, fdef) in &o.fields {
                        let len = at.len();
                        at.push_str(&format!(".{fname}"));
                        match fields.get(fname.as_str()) {
                            Some(v) => {
                                out.insert(fname.to_string(), coerce_json(schema, &fdef.ty, v, at)?);
                            }
                            None => match &fdef.default_value {
                                Some(d) => {
                                    if let Some(v) = coerce_literal(schema, &fdef.ty, d, &Map::new(), at)? {
                                        out.insert(fname.to_string(), v);
                                    }
                                }
                                None if fdef.ty.is_non_null() => {
                                    return Err(Invalid::new(
                                        at,
                                        "nothing".into(),
                                        &fdef.ty,
                                        Some(format!("the field `{name}.{fname}` is required")),
                                    ));
                                }
                                None => {}
                            },
                        }
                        at.truncate(len);
                    }
                    Ok(Value::Object(out))
                }
                _ => Err(bad(Some(format!("`{name}` is not an input type")))),
            }
        }
    }
}

fn enum_values(e: &apollo_compiler::schema::EnumType) -> String {
    e.values.keys().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// A scalar from JSON; `Err` carries an optional detail.
fn scalar_json(name: &str, value: &Value) -> Result<Value, Option<String>> {
    match name {
        "Int" => int_of(value).map(Value::from),
        "Float" => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => Err(None),
        },
        "String" => match value {
            Value::String(_) => Ok(value.clone()),
            _ => Err(None),
        },
        "Boolean" => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err(None),
        },
        "ID" => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Value::String(n.to_string())),
            _ => Err(Some("a string or an integer".into())),
        },
        "Void" => Err(Some("`Void` takes no value but null".into())),
        // The schema's own scalars (`JSON`, `Platform`) are strings on the wire.
        _ => match value {
            Value::String(_) => Ok(value.clone()),
            _ => Err(Some(format!("`{name}` values are strings"))),
        },
    }
}

/// A JSON number that is a whole 32-bit integer (`3` and `3.0` are, `3.5` and `2^31` are not).
fn int_of(value: &Value) -> Result<i64, Option<String>> {
    let Value::Number(n) = value else { return Err(None) };
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX) + 1.0 => Some(f as i64),
        _ => None,
    };
    match whole {
        Some(i) if i32::try_from(i).is_ok() => Ok(i),
        Some(_) => Err(Some("it does not fit a 32-bit Int".into())),
        None => Err(Some("not a whole number".into())),
    }
}

/// Coerces a value written in the document to `ty`, substituting the (already coerced) `vars`.
///
/// `Ok(None)` means "no value": a variable that was not provided (so a default, if any, applies).
pub fn coerce_literal(
    schema: &Schema,
    ty: &Type,
    value: &AstValue,
    vars: &Map<String, Value>,
    at: &mut String,
) -> Result<Option<Value>, Invalid> {
    let shown = |v: &AstValue| short(&v.to_string());
    if let AstValue::Variable(name) = value {
        // Variables were coerced to their declared type, and validation checked that type fits here; only
        // null in a non-null position remains to check (a nullable variable with a default may be null).
        return match vars.get(name.as_str()) {
            None => Ok(None),
            Some(Value::Null) if ty.is_non_null() => Err(Invalid::new(
                at,
                format!("${name} = null"),
                ty,
                Some("a non-null type takes no null".into()),
            )),
            Some(v) => Ok(Some(v.clone())),
        };
    }
    if let AstValue::Null = value {
        if ty.is_non_null() {
            return Err(Invalid::new(
                at,
                "null".into(),
                ty,
                Some("a non-null type takes no null".into()),
            ));
        }
        return Ok(Some(Value::Null));
    }
    match ty {
        Type::List(item) | Type::NonNullList(item) => coerce_list(schema, item, value, vars, at).map(Some),
        Type::Named(name) | Type::NonNullNamed(name) => {
            let bad = |reason: Option<String>| Invalid::new(at, shown(value), ty, reason);
            match schema.types.get(name) {
                Some(ExtendedType::Scalar(_)) => scalar_literal(name.as_str(), value).map(Some).map_err(bad),
                Some(ExtendedType::Enum(e)) => match value {
                    AstValue::Enum(v) if e.values.contains_key(v) => Ok(Some(Value::String(v.to_string()))),
                    _ => Err(bad(Some(format!("one of {}", enum_values(e))))),
                },
                Some(ExtendedType::InputObject(o)) => {
                    let AstValue::Object(fields) = value else {
                        return Err(bad(Some("an object".into())));
                    };
                    if let Some((unknown, _)) = fields.iter().find(|(k, _)| !o.fields.contains_key(k)) {
                        return Err(bad(Some(format!("`{name}` has no field `{unknown}`"))));
                    }
                    coerce_input_object(schema, name.as_str(), o, fields, vars, at).map(Some)
                }
                _ => Err(bad(Some(format!("`{name}` is not an input type")))),
            }
        }
    }
}

/// A list literal as a list of `item` (a single value is a list of one, as the spec's input coercion says).
fn coerce_list(
    schema: &Schema,
    item: &Type,
    value: &AstValue,
    vars: &Map<String, Value>,
    at: &mut String,
) -> Result<Value, Invalid> {
    let one = |v: &AstValue, at: &mut String| -> Result<Value, Invalid> {
        // An unprovided variable inside a list is null there.
        let v = coerce_literal(schema, item, v, vars, at)?.unwrap_or(Value::Null);
        if v.is_null() && item.is_non_null() {
            return Err(Invalid::new(
                at,
                "null".into(),
                item,
                Some("a non-null type takes no null".into()),
            ));
        }
        Ok(v)
    };
    let AstValue::List(items) = value else {
        return Ok(Value::Array(vec![one(value, at)?]));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let len = at.len();
        at.push_str(&format!("[{i}]"));
        out.push(one(v, at)?);
        at.truncate(len);
    }
    Ok(Value::Array(out))
}

/// The fields of an input object literal of type `name`, defaults applied and required ones checked.
fn coerce_input_object(
    schema: &Schema,
    name: &str,
    o: &apollo_compiler::schema::InputObjectType,
    fields: &[(apollo_compiler::Name, apollo_compiler::Node<AstValue>)],
    vars: &Map<String, Value>,
    at: &mut String,
) -> Result<Value, Invalid> {
    let mut out = Map::new();
    for (fname, fdef) in &o.fields {
        let len = at.len();
        at.push_str(&format!(".{fname}"));
        let given = match fields.iter().find(|(k, _)| k == fname) {
            Some((_, v)) => coerce_literal(schema, &fdef.ty, v, vars, at)?,
            None => None,
        };
        let v = match given {
            Some(v) => Some(v),
            None => match &fdef.default_value {
                Some(d) => coerce_literal(schema, &fdef.ty, d, &Map::new(), at)?,
                None => None,
            },
        };
        match v {
            Some(v) => {
                out.insert(fname.to_string(), v);
            }
            None if fdef.ty.is_non_null() => {
                return Err(Invalid::new(
                    at,
                    "nothing".into(),
                    &fdef.ty,
                    Some(format!("the field `{name}.{fname}` is required")),
                ));
            }
            None => {}
        }
        at.truncate(len);
    }
    Ok(Value::Object(out))
}

/// A scalar from a literal.
fn scalar_literal(name: &str, value: &AstValue) -> Result<Value, Option<String>> {
    match (name, value) {
        ("Int", AstValue::Int(i)) => i
            .try_to_i32()
            .map(Value::from)
            .map_err(|_| Some("it does not fit a 32-bit Int".into())),
        ("Float", AstValue::Int(i)) => i.try_to_f64().map(Value::from).map_err(|_| Some("too large".into())),
        ("Float", AstValue::Float(f)) => f.try_to_f64().map(Value::from).map_err(|_| Some("too large".into())),
        ("String", AstValue::String(s)) => Ok(Value::String(s.clone())),
        ("Boolean", AstValue::Boolean(b)) => Ok(Value::Bool(*b)),
        ("ID", AstValue::String(s)) => Ok(Value::String(s.clone())),
        ("ID", AstValue::Int(i)) => Ok(Value::String(i.as_str().to_owned())),
        ("Int" | "Float" | "String" | "Boolean" | "ID", _) => Err(None),
        ("Void", _) => Err(Some("`Void` takes no value but null".into())),
        (_, AstValue::String(s)) => Ok(Value::String(s.clone())),
        (_, _) => Err(Some(format!("`{name}` values are strings"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_compiler::ExecutableDocument;
    use apollo_compiler::validation::Valid;
    use serde_json::json;

    const SDL: &str = r#"
        scalar JSON
        scalar Void
        enum Kind { A B }
        input Pair { left: Int!, right: Int = 7, label: String }
        input Outer { pairs: [Pair!]!, kind: Kind = A }
        type Query {
            f(
                i: Int, fl: Float, s: String, b: Boolean, id: ID, j: JSON, k: Kind,
                grid: [[Int!]], p: Pair, o: Outer, req: String!, list: [String!]
            ): Int
        }
    "#;

    fn schema() -> Valid<Schema> {
        Schema::parse_and_validate(SDL, "test.graphql").expect("schema")
    }

    /// Coerces `vars` for an operation declaring `decls`.
    fn vars(decls: &str, given: Value) -> Result<Map<String, Value>, Vec<String>> {
        let schema = schema();
        let doc = ExecutableDocument::parse(&schema, format!("query Q{decls} {{ __typename }}"), "q.graphql")
            .expect("document");
        let op = doc.operations.get(Some("Q")).expect("operation");
        let given = given.as_object().cloned().unwrap_or_default();
        coerce_variables(&schema, &op.variables, &given)
    }

    fn one(decl: &str, value: Value) -> Result<Value, String> {
        vars(&format!("($v: {decl})"), json!({ "v": value }))
            .map(|m| m.get("v").cloned().unwrap_or(Value::Null))
            .map_err(|e| e.join("\n"))
    }

    #[test]
    fn scalars_take_only_their_own_values() {
        assert_eq!(one("Int", json!(3)), Ok(json!(3)));
        assert_eq!(one("Int", json!(3.0)), Ok(json!(3)));
        assert!(one("Int", json!(3.5)).is_err());
        assert!(one("Int", json!(1u64 << 31)).is_err());
        assert!(one("Int", json!("3")).is_err());
        assert_eq!(one("Float", json!(3)), Ok(json!(3)));
        assert_eq!(one("Float", json!(2.5)), Ok(json!(2.5)));
        assert!(one("Float", json!("2.5")).is_err());
        assert_eq!(one("String", json!("x")), Ok(json!("x")));
        assert!(one("String", json!(1)).is_err());
        assert!(one("String", json!(["x"])).is_err());
        assert_eq!(one("Boolean", json!(true)), Ok(json!(true)));
        assert!(one("Boolean", json!(1)).is_err());
        assert_eq!(one("ID", json!(12)), Ok(json!("12")));
        assert_eq!(one("ID", json!("a")), Ok(json!("a")));
        assert!(one("ID", json!(1.5)).is_err());
        assert_eq!(one("JSON", json!("{\"a\":1}")), Ok(json!("{\"a\":1}")));
        assert!(one("JSON", json!({"a": 1})).is_err());
        assert!(one("Void", json!("x")).is_err());
        assert_eq!(one("Void", Value::Null), Ok(Value::Null));
        assert_eq!(one("Kind", json!("B")), Ok(json!("B")));
        assert!(one("Kind", json!("C")).is_err());
        assert!(one("Kind", json!(1)).is_err());
    }

    #[test]
    fn lists_wrap_single_values_and_check_every_item() {
        assert_eq!(one("[String!]", json!("a")), Ok(json!(["a"])));
        assert_eq!(one("[String!]", json!(["a", "b"])), Ok(json!(["a", "b"])));
        let e = one("[String!]", json!(["a", 1])).expect_err("an Int in a [String!]");
        assert!(
            e.contains("Variable \"$v\"") && e.contains("\"$v[1]\"") && e.contains("String!"),
            "{e}"
        );
        assert!(one("[String!]", json!(["a", null])).is_err());
        assert_eq!(one("[String]", json!(["a", null])), Ok(json!(["a", null])));
        assert_eq!(one("[[Int!]]", json!(1)), Ok(json!([[1]])));
        assert_eq!(one("[[Int!]]", json!([1, [2, 3]])), Ok(json!([[1], [2, 3]])));
        assert!(one("[[Int!]]", json!([[1, "x"]])).is_err());
        assert!(one("[String!]!", Value::Null).is_err());
    }

    #[test]
    fn input_objects_get_defaults_and_refuse_unknown_or_missing_fields() {
        assert_eq!(one("Pair", json!({ "left": 1 })), Ok(json!({ "left": 1, "right": 7 })));
        assert_eq!(
            one("Outer", json!({ "pairs": { "left": 1, "label": "x" } })),
            Ok(json!({ "pairs": [{ "left": 1, "right": 7, "label": "x" }], "kind": "A" }))
        );
        let e = one("Pair", json!({ "right": 1 })).expect_err("missing left");
        assert!(e.contains("Pair.left"), "{e}");
        let e = one("Pair", json!({ "left": 1, "up": 2 })).expect_err("unknown field");
        assert!(e.contains("no field `up`"), "{e}");
        let e = one("Outer", json!({ "pairs": [{ "left": "1" }] })).expect_err("a string for an Int");
        assert!(e.contains("$v.pairs[0].left"), "{e}");
        assert!(one("Pair", json!([1])).is_err());
    }

    #[test]
    fn missing_variables_take_defaults_or_are_refused_when_required() {
        assert_eq!(
            vars("($a: String = \"d\")", json!({})),
            Ok(Map::from_iter([("a".into(), json!("d"))]))
        );
        assert_eq!(vars("($a: String)", json!({})), Ok(Map::new()));
        assert_eq!(
            vars("($a: String = \"d\")", json!({ "a": null })),
            Ok(Map::from_iter([("a".into(), Value::Null)]))
        );
        let e = vars("($a: String!)", json!({})).expect_err("required");
        assert!(e[0].contains("Variable \"$a\"") && e[0].contains("String!"), "{e:?}");
        let e = vars("($a: String!)", json!({ "a": null })).expect_err("null for a non-null");
        assert!(e[0].contains("Variable \"$a\""), "{e:?}");
        // Every bad variable is reported, each by name.
        let e = vars("($a: Int, $b: Kind)", json!({ "a": "x", "b": "Z" })).expect_err("two bad");
        assert_eq!(e.len(), 2, "{e:?}");
        // Unknown and non-input variable types.
        let e = vars("($a: Nope)", json!({ "a": 1 })).expect_err("unknown type");
        assert!(e[0].contains("unknown type"), "{e:?}");
        let e = vars("($a: Query)", json!({})).expect_err("output type");
        assert!(e[0].contains("not an input type"), "{e:?}");
        // Values for undeclared variables are dropped.
        assert_eq!(vars("", json!({ "x": 1 })), Ok(Map::new()));
    }

    /// The coerced value of argument `arg` as written in `{ f(…) }`, with `vars`.
    fn literal(args: &str, arg: &str, vars: Value) -> Result<Option<Value>, Invalid> {
        let schema = schema();
        let doc = ExecutableDocument::parse(&schema, format!("{{ f({args}) }}"), "q.graphql").expect("document");
        let op = doc.operations.get(None).expect("operation");
        let apollo_compiler::executable::Selection::Field(field) = &op.selection_set.selections[0] else {
            panic!("a field")
        };
        let def = field.definition.argument_by_name(arg).expect("argument");
        let value = &field.arguments.iter().find(|a| a.name == arg).expect("given").value;
        let vars = vars.as_object().cloned().unwrap_or_default();
        coerce_literal(&schema, &def.ty, value, &vars, &mut String::new())
    }

    #[test]
    fn literals_are_checked_and_converted() {
        assert_eq!(literal("fl: 3", "fl", json!({})), Ok(Some(json!(3.0))));
        assert_eq!(literal("id: 12", "id", json!({})), Ok(Some(json!("12"))));
        assert_eq!(literal("k: B", "k", json!({})), Ok(Some(json!("B"))));
        assert!(literal("k: \"B\"", "k", json!({})).is_err());
        assert!(literal("i: 3000000000", "i", json!({})).is_err());
        assert!(literal("i: 1.5", "i", json!({})).is_err());
        assert!(literal("s: 1", "s", json!({})).is_err());
        assert_eq!(literal("list: \"a\"", "list", json!({})), Ok(Some(json!(["a"]))));
        assert_eq!(literal("grid: 1", "grid", json!({})), Ok(Some(json!([[1]]))));
        assert_eq!(
            literal("p: {left: 1}", "p", json!({})),
            Ok(Some(json!({ "left": 1, "right": 7 })))
        );
        let e = literal("o: {pairs: [{left: 1}, {left: \"x\"}]}", "o", json!({})).expect_err("bad nested");
        assert_eq!(e.at, ".pairs[1].left");
        assert!(literal("p: {left: 1, up: 2}", "p", json!({})).is_err());
        assert!(literal("p: {right: 2}", "p", json!({})).is_err());
        assert!(literal("req: null", "req", json!({})).is_err());
        // Variables inside literals: substituted; an unprovided one is "no value" at the top, null in a list.
        assert_eq!(literal("s: $x", "s", json!({ "x": "v" })), Ok(Some(json!("v"))));
        assert_eq!(literal("s: $x", "s", json!({})), Ok(None));
        assert_eq!(
            literal("list: [\"a\", $x]", "list", json!({ "x": "b" })),
            Ok(Some(json!(["a", "b"])))
        );
        assert!(literal("list: [\"a\", $x]", "list", json!({})).is_err());
        assert!(literal("req: $x", "req", json!({ "x": null })).is_err());
        assert_eq!(
            literal("p: {left: $x}", "p", json!({ "x": 4 })),
            Ok(Some(json!({ "left": 4, "right": 7 })))
        );
    }
}
