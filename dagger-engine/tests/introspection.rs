//! The schema clients see is the contract: the full introspection query (the one SDKs such as the Python SDK
//! send before anything else) over real HTTP must answer exactly what the SDL in `schema/core.graphql` says,
//! as read by apollo-compiler here: every type, field, argument (type and default), enum value, input
//! field, interface, possible type, directive and description.

use apollo_compiler::Schema;
use apollo_compiler::ast::{DirectiveList, Type};
use apollo_compiler::schema::{ExtendedType, InputValueDefinition};
use dagger_engine::{Config, Session};

use serde_json::{Value, json};

const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    description
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives {
      name
      description
      isRepeatable
      locations
      args(includeDeprecated: true) { ...InputValue }
    }
  }
}
fragment FullType on __Type {
  kind
  name
  description
  specifiedByURL
  fields(includeDeprecated: true) {
    name
    description
    args(includeDeprecated: true) { ...InputValue }
    type { ...TypeRef }
    isDeprecated
    deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name
  description
  type { ...TypeRef }
  defaultValue
  isDeprecated
  deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

fn description(d: &Option<apollo_compiler::Node<str>>) -> Value {
    d.as_ref().map_or(Value::Null, |s| json!(s.to_string()))
}

/// `isDeprecated` and `deprecationReason`, from a `@deprecated` directive.
fn deprecation(directives: &DirectiveList) -> (Value, Value) {
    match directives.get("deprecated") {
        None => (json!(false), Value::Null),
        Some(d) => {
            let reason = d
                .specified_argument_by_name("reason")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "No longer supported".to_owned());
            (json!(true), json!(reason))
        }
    }
}

fn named(kind: &str, name: &str) -> Value {
    json!({ "kind": kind, "name": name, "ofType": null })
}

fn kind_of(schema: &Schema, name: &str) -> &'static str {
    match schema.types.get(name) {
        Some(ExtendedType::Scalar(_)) => "SCALAR",
        Some(ExtendedType::Object(_)) => "OBJECT",
        Some(ExtendedType::Interface(_)) => "INTERFACE",
        Some(ExtendedType::Union(_)) => "UNION",
        Some(ExtendedType::Enum(_)) => "ENUM",
        Some(ExtendedType::InputObject(_)) => "INPUT_OBJECT",
        None => "UNKNOWN",
    }
}

/// A type reference as `TypeRef` selects it.
fn type_ref(schema: &Schema, ty: &Type) -> Value {
    let wrap = |kind: &str, inner: Value| json!({ "kind": kind, "name": null, "ofType": inner });
    match ty {
        Type::Named(n) => named(kind_of(schema, n), n),
        Type::NonNullNamed(n) => wrap("NON_NULL", named(kind_of(schema, n), n)),
        Type::List(inner) => wrap("LIST", type_ref(schema, inner)),
        Type::NonNullList(inner) => wrap("NON_NULL", wrap("LIST", type_ref(schema, inner))),
    }
}

fn input_value(schema: &Schema, v: &InputValueDefinition) -> Value {
    let (is_deprecated, reason) = deprecation(&v.directives);
    json!({
        "name": v.name.as_str(),
        "description": description(&v.description),
        "type": type_ref(schema, &v.ty),
        "defaultValue": v.default_value.as_ref().map(|d| d.serialize().no_indent().to_string()),
        "isDeprecated": is_deprecated,
        "deprecationReason": reason,
    })
}

/// What the introspection query must answer, derived from the SDL alone.
fn expected(schema: &Schema) -> Value {
    let mut types = Vec::new();
    for (name, def) in &schema.types {
        let kind = kind_of(schema, name);
        let mut t = json!({
            "kind": kind,
            "name": name.as_str(),
            "description": def.description().map_or(Value::Null, |s| json!(s.to_string())),
            "specifiedByURL": null,
            "fields": null,
            "inputFields": null,
            "interfaces": null,
            "enumValues": null,
            "possibleTypes": null,
        });
        let fields = |fields: &mut dyn Iterator<Item = &apollo_compiler::schema::FieldDefinition>| -> Value {
            fields
                .map(|f| {
                    let (is_deprecated, reason) = deprecation(&f.directives);
                    json!({
                        "name": f.name.as_str(),
                        "description": description(&f.description),
                        "args": f.arguments.iter().map(|a| input_value(schema, a)).collect::<Vec<_>>(),
                        "type": type_ref(schema, &f.ty),
                        "isDeprecated": is_deprecated,
                        "deprecationReason": reason,
                    })
                })
                .collect::<Vec<_>>()
                .into()
        };
        let interfaces = |names: &mut dyn Iterator<Item = &apollo_compiler::Name>| -> Value {
            names.map(|n| named("INTERFACE", n)).collect::<Vec<_>>().into()
        };
        match def {
            ExtendedType::Scalar(s) => {
                t["specifiedByURL"] = s
                    .directives
                    .get("specifiedBy")
                    .and_then(|d| d.specified_argument_by_name("url"))
                    .and_then(|v| v.as_str().map(|u| json!(u)))
                    .unwrap_or(Value::Null);
            }
            ExtendedType::Object(o) => {
                t["fields"] = fields(&mut o.fields.values().map(|f| &***f));
                t["interfaces"] = interfaces(&mut o.implements_interfaces.iter().map(|c| &c.name));
            }
            ExtendedType::Interface(i) => {
                t["fields"] = fields(&mut i.fields.values().map(|f| &***f));
                t["interfaces"] = interfaces(&mut i.implements_interfaces.iter().map(|c| &c.name));
                // Every object type that declares the interface, in schema order.
                t["possibleTypes"] = schema
                    .types
                    .iter()
                    .filter(|(_, d)| match d {
                        ExtendedType::Object(o) => o.implements_interfaces.iter().any(|c| c.name == *name),
                        _ => false,
                    })
                    .map(|(n, _)| named("OBJECT", n))
                    .collect::<Vec<_>>()
                    .into();
            }
            ExtendedType::Union(u) => {
                t["possibleTypes"] = u
                    .members
                    .iter()
                    .map(|m| named("OBJECT", &m.name))
                    .collect::<Vec<_>>()
                    .into();
            }
            ExtendedType::Enum(e) => {
                t["enumValues"] = e
                    .values
                    .values()
                    .map(|v| {
                        let (is_deprecated, reason) = deprecation(&v.directives);
                        json!({
                            "name": v.value.as_str(),
                            "description": description(&v.description),
                            "isDeprecated": is_deprecated,
                            "deprecationReason": reason,
                        })
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
            ExtendedType::InputObject(i) => {
                t["inputFields"] = i
                    .fields
                    .values()
                    .map(|f| input_value(schema, f))
                    .collect::<Vec<_>>()
                    .into();
            }
        }
        types.push(t);
    }
    let directives: Vec<Value> = schema
        .directive_definitions
        .values()
        .map(|d| {
            json!({
                "name": d.name.as_str(),
                "description": description(&d.description),
                "isRepeatable": d.repeatable,
                "locations": d.locations.iter().map(|l| l.name()).collect::<Vec<_>>(),
                "args": d.arguments.iter().map(|a| input_value(schema, a)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let root = |op: &Option<apollo_compiler::schema::ComponentName>| match op {
        Some(n) => json!({ "name": n.name.as_str() }),
        None => Value::Null,
    };
    json!({
        "__schema": {
            "description": description(&schema.schema_definition.description),
            "queryType": root(&schema.schema_definition.query),
            "mutationType": root(&schema.schema_definition.mutation),
            "subscriptionType": root(&schema.schema_definition.subscription),
            "types": types,
            "directives": directives,
        }
    })
}

/// Every leaf of a JSON value as `path = value`, one per line, for a readable diff.
fn flatten(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                // Name objects by their `name` where they have one: `types[Container].fields[withExec]`.
                flatten(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let label = item
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), |n| format!("{i}:{n}"));
                flatten(item, &format!("{path}[{label}]"), out);
            }
            if items.is_empty() {
                out.push(format!("{path} = []"));
            }
        }
        leaf => out.push(format!("{path} = {leaf}")),
    }
}

fn diff(expected: &Value, actual: &Value) -> String {
    let (mut e, mut a) = (Vec::new(), Vec::new());
    flatten(expected, "", &mut e);
    flatten(actual, "", &mut a);
    let es: std::collections::BTreeSet<&String> = e.iter().collect();
    let as_: std::collections::BTreeSet<&String> = a.iter().collect();
    let mut report = Vec::new();
    for line in e.iter().filter(|l| !as_.contains(l)).take(40) {
        report.push(format!("- {line}"));
    }
    for line in a.iter().filter(|l| !es.contains(l)).take(40) {
        report.push(format!("+ {line}"));
    }
    if report.is_empty() {
        report.push("(same leaves, different structure)".to_owned());
    }
    report.join("\n")
}

#[tokio::test]
async fn full_introspection_equals_the_sdl() {
    let cache = tempfile::tempdir().expect("cache");
    let session = Session::start(Config::for_dir(cache.path())).await.expect("engine");
    let body = reqwest::Client::new()
        .post(format!("{}/query", session.url()))
        .basic_auth(&session.token, Some(""))
        .body(json!({ "query": INTROSPECTION, "operationName": "IntrospectionQuery" }).to_string())
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let response: Value = serde_json::from_str(&body).expect("JSON");
    assert!(response.get("errors").is_none(), "no errors: {}", response["errors"]);
    let actual = &response["data"];

    let schema = Schema::parse_and_validate(dagger_engine::schema::SDL, "core.graphql").expect("the SDL is valid");
    let expected = expected(&schema);
    // Sanity: the walk covers the contract and the built-in types.
    let names: Vec<&str> = expected["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "Query",
        "Container",
        "Directory",
        "BuildArg",
        "FileType",
        "JSON",
        "String",
        "__Type",
    ] {
        assert!(names.contains(&name), "{name} is in the schema");
    }
    // The legacy ID view of the official 0.21 SDKs is served: a scalar and a root loader per node type.
    for name in ["ContainerID", "DirectoryID", "FileID", "SecretID", "StatID"] {
        assert!(names.contains(&name), "{name} is in the schema");
    }
    let query = expected["__schema"]["types"]
        .as_array()
        .and_then(|types| types.iter().find(|t| t["name"] == "Query"))
        .expect("Query");
    let loader = query["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["name"] == "loadContainerFromID"))
        .expect("Query.loadContainerFromID");
    assert_eq!(loader["description"], "Load a Container from its ID.");
    assert_eq!(
        loader["args"][0]["type"],
        json!({ "kind": "NON_NULL", "name": null, "ofType": { "kind": "SCALAR", "name": "ContainerID", "ofType": null } })
    );
    assert!(
        *actual == expected,
        "introspection differs from the SDL (- expected, + served):\n{}",
        diff(&expected, actual)
    );
}
