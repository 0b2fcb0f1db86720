//! The contract `schema/core.graphql` against the Dagger v0.21 reference list
//! (`../shared/reference/dagger-core-api-v0.21.txt`): every type, field, argument (in order), type, default
//! and enum value of the reference must be in the SDL, spelled the same.

use std::collections::BTreeMap;

use apollo_compiler::Schema;
use apollo_compiler::schema::ExtendedType;

fn sdl() -> String {
    std::fs::read_to_string(xtask::workspace_root().join("schema/core.graphql")).expect("read schema/core.graphql")
}

fn reference() -> String {
    let path = xtask::workspace_root().join("../shared/reference/dagger-core-api-v0.21.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn schema() -> apollo_compiler::validation::Valid<Schema> {
    Schema::parse_and_validate(sdl(), "core.graphql").unwrap_or_else(|e| panic!("schema/core.graphql is invalid:\n{e}"))
}

/// Splits `a: T=x, b: [U!]=[]` at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0, String::new(), Vec::new());
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            out.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// `(name, type, default)` of one reference argument.
fn parse_arg(a: &str) -> (String, String, Option<String>) {
    let (name, rest) = a.split_once(':').expect("name: type");
    let (ty, default) = match rest.split_once('=') {
        Some((t, d)) => (t.trim().to_owned(), Some(d.trim().to_owned())),
        None => (rest.trim().to_owned(), None),
    };
    (name.trim().to_owned(), ty, default)
}

#[test]
fn every_reference_signature_is_in_the_sdl() {
    let schema = schema();
    let mut current: Option<String> = None;
    let mut checked = 0;
    let mut total = 0;
    let mut problems = Vec::new();
    for line in reference().lines() {
        if let Some(rest) = line.strip_prefix("## type ") {
            let name = rest.trim().to_owned();
            if !matches!(schema.types.get(name.as_str()), Some(ExtendedType::Object(_))) {
                problems.push(format!("type `{name}` is missing"));
            }
            current = Some(name);
            continue;
        }
        if line.starts_with("## ") {
            current = None;
        }
        let (Some(type_name), Some(sig)) = (&current, line.strip_prefix("  ")) else {
            continue;
        };
        if sig.starts_with("implemented by") {
            continue;
        }
        total += 1;
        let (head, ret) = sig
            .rsplit_once("): ")
            .map(|(h, r)| (format!("{h})"), r))
            .unwrap_or_else(|| {
                let (h, r) = sig.split_once(": ").expect("field: type");
                (h.to_owned(), r)
            });
        let (field_name, args) = match head.split_once('(') {
            Some((n, a)) => (n.to_owned(), split_args(a.trim_end_matches(')'))),
            None => (head.clone(), Vec::new()),
        };
        let Some(ExtendedType::Object(obj)) = schema.types.get(type_name.as_str()) else {
            continue;
        };
        let Some(field) = obj.fields.get(field_name.as_str()) else {
            problems.push(format!("`{type_name}.{field_name}` is missing"));
            continue;
        };
        checked += 1;
        if field.ty.to_string() != ret.trim() {
            problems.push(format!(
                "`{type_name}.{field_name}` returns `{}`, expected `{ret}`",
                field.ty
            ));
        }
        let ours: Vec<String> = field.arguments.iter().map(|a| a.name.to_string()).collect();
        let theirs: Vec<String> = args.iter().map(|a| parse_arg(a).0).collect();
        if ours != theirs {
            problems.push(format!(
                "`{type_name}.{field_name}` arguments are {ours:?}, expected {theirs:?}"
            ));
            continue;
        }
        for (arg, a) in field.arguments.iter().zip(&args) {
            let (name, ty, default) = parse_arg(a);
            if arg.ty.to_string() != ty {
                problems.push(format!(
                    "`{type_name}.{field_name}({name}:)` is `{}`, expected `{ty}`",
                    arg.ty
                ));
            }
            let our_default = arg.default_value.as_ref().map(|v| v.to_string());
            if our_default != default {
                problems.push(format!(
                    "`{type_name}.{field_name}({name}:)` defaults to {our_default:?}, expected {default:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(checked, total, "every reference field was compared");
    assert!(total > 100, "only {total} fields in the reference: is it complete?");
}

#[test]
fn enums_inputs_scalars_and_node_match() {
    let schema = schema();
    let mut problems = Vec::new();
    for line in reference().lines() {
        if let Some(rest) = line.strip_prefix("## enum ") {
            let (name, values) = rest.split_once(':').expect("enum: values");
            let expected: Vec<&str> = values.split('|').map(str::trim).collect();
            match schema.types.get(name.trim()) {
                Some(ExtendedType::Enum(e)) => {
                    let ours: Vec<&str> = e.values.keys().map(|k| k.as_str()).collect();
                    if ours != expected {
                        problems.push(format!("enum `{name}` is {ours:?}, expected {expected:?}"));
                    }
                }
                _ => problems.push(format!("enum `{name}` is missing")),
            }
        } else if let Some(rest) = line.strip_prefix("## input ") {
            let (name, body) = rest.split_once('{').expect("input { fields }");
            let name = name.trim();
            let fields = split_args(body.trim().trim_end_matches('}'));
            match schema.types.get(name) {
                Some(ExtendedType::InputObject(i)) => {
                    let ours: BTreeMap<String, (String, Option<String>)> = i
                        .fields
                        .iter()
                        .map(|(k, f)| {
                            (
                                k.to_string(),
                                (f.ty.to_string(), f.default_value.as_ref().map(|v| v.to_string())),
                            )
                        })
                        .collect();
                    let theirs: BTreeMap<String, (String, Option<String>)> = fields
                        .iter()
                        .map(|f| parse_arg(f))
                        .map(|(n, t, d)| (n, (t, d)))
                        .collect();
                    if ours != theirs {
                        problems.push(format!("input `{name}` is {ours:?}, expected {theirs:?}"));
                    }
                }
                _ => problems.push(format!("input `{name}` is missing")),
            }
        } else if let Some(name) = line.strip_prefix("## scalar ") {
            if !schema.types.contains_key(name.trim()) {
                problems.push(format!("scalar `{name}` is missing"));
            }
        } else if let Some(list) = line.strip_prefix("  implemented by (of the types below): ") {
            for name in list.split(',').map(str::trim) {
                match schema.types.get(name) {
                    Some(ExtendedType::Object(o)) if o.implements_interfaces.contains("Node") => {}
                    _ => problems.push(format!("`{name}` does not implement `Node`")),
                }
            }
        }
    }
    match schema.types.get("Query") {
        Some(ExtendedType::Object(q)) => match q.fields.get("node") {
            Some(f)
                if f.ty.to_string() == "Node" && f.arguments.len() == 1 && f.arguments[0].ty.to_string() == "ID!" => {}
            _ => problems.push("`Query.node(id: ID!): Node` is missing".to_owned()),
        },
        _ => problems.push("`Query` is missing".to_owned()),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_id_argument_names_its_object_type() {
    // Code generation turns `ID` arguments into typed object parameters; it needs to know which type.
    let schema = schema();
    let mut missing = Vec::new();
    for (type_name, ty) in &schema.types {
        let ExtendedType::Object(obj) = ty else { continue };
        for (field_name, field) in &obj.fields {
            for arg in &field.arguments {
                let is_id = arg.ty.inner_named_type().as_str() == "ID";
                if is_id
                    && !(type_name == "Query" && field_name == "node")
                    && arg.directives.get("expectedType").is_none()
                {
                    missing.push(format!("{type_name}.{field_name}({}:)", arg.name));
                }
            }
        }
    }
    assert!(missing.is_empty(), "ID arguments without @expectedType: {missing:?}");
}

#[test]
fn every_item_has_a_description() {
    // Descriptions become the rustdoc of the generated API and the documentation introspection serves: every
    // type, field, argument, enum value, input field, scalar, interface and directive of ours needs one.
    let schema = schema();
    let mut problems = Vec::new();
    let mut count = 0;
    let mut check = |what: String, description: Option<&str>| {
        count += 1;
        if description.is_none_or(|d| d.trim().is_empty()) {
            problems.push(what);
        }
    };
    for (name, directive) in &schema.directive_definitions {
        if directive.is_built_in() {
            continue;
        }
        check(format!("directive @{name}"), directive.description.as_deref());
        for arg in &directive.arguments {
            check(format!("@{name}({}:)", arg.name), arg.description.as_deref());
        }
    }
    for (type_name, ty) in &schema.types {
        if ty.is_built_in() {
            continue;
        }
        check(format!("type {type_name}"), ty.description().map(|d| &**d));
        let fields = match ty {
            ExtendedType::Object(o) => Some(&o.fields),
            ExtendedType::Interface(i) => Some(&i.fields),
            _ => None,
        };
        for (field_name, field) in fields.into_iter().flatten() {
            check(format!("{type_name}.{field_name}"), field.description.as_deref());
            for arg in &field.arguments {
                check(
                    format!("{type_name}.{field_name}({}:)", arg.name),
                    arg.description.as_deref(),
                );
            }
        }
        match ty {
            ExtendedType::Enum(e) => {
                for (value, def) in &e.values {
                    check(format!("{type_name}.{value}"), def.description.as_deref());
                }
            }
            ExtendedType::InputObject(i) => {
                for (field_name, field) in &i.fields {
                    check(format!("{type_name}.{field_name}"), field.description.as_deref());
                }
            }
            _ => {}
        }
    }
    eprintln!("{count} items checked");
    assert!(
        problems.is_empty(),
        "{} items without a description:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(count > 400, "only {count} items checked: is the walk complete?");
}

#[test]
fn the_legacy_id_view_has_a_scalar_and_a_loader_per_node_type() {
    // The official 0.21 SDKs (Python, TypeScript, Rust) send `loadFooFromID(id: FooID!)` for every object type
    // with an ID except the root; the v0.21 engine serves them to clients older than v0.22.0.
    let schema = schema();
    let Some(ExtendedType::Object(query)) = schema.types.get("Query") else {
        panic!("`Query` is missing");
    };
    let mut problems = Vec::new();
    let mut count = 0;
    for (name, ty) in &schema.types {
        let ExtendedType::Object(obj) = ty else { continue };
        if name == "Query" || !obj.implements_interfaces.contains("Node") {
            continue;
        }
        count += 1;
        let scalar = format!("{name}ID");
        if !matches!(schema.types.get(scalar.as_str()), Some(ExtendedType::Scalar(_))) {
            problems.push(format!("scalar `{scalar}` is missing"));
        }
        let loader = format!("load{name}FromID");
        match query.fields.get(loader.as_str()) {
            Some(f)
                if f.ty.to_string() == format!("{name}!")
                    && f.arguments.len() == 1
                    && f.arguments[0].name == "id"
                    && f.arguments[0].ty.to_string() == format!("{scalar}!")
                    && f.description.as_deref() == Some(&*format!("Load a {name} from its ID.")) => {}
            _ => problems.push(format!(
                "`Query.{loader}(id: {scalar}!): {name}!` (\"Load a {name} from its ID.\") is missing or differs"
            )),
        }
    }
    // Nothing else: every loader and every `FooID` scalar belongs to a node type.
    for field in query.fields.keys() {
        if let Some(object) = field.strip_prefix("load").and_then(|f| f.strip_suffix("FromID"))
            && !matches!(schema.types.get(object), Some(ExtendedType::Object(o)) if o.implements_interfaces.contains("Node") && object != "Query")
        {
            problems.push(format!("`Query.{field}` loads no node type"));
        }
    }
    for (name, ty) in &schema.types {
        if let (ExtendedType::Scalar(_), Some(object)) = (ty, name.strip_suffix("ID"))
            && !object.is_empty()
            && !matches!(schema.types.get(object), Some(ExtendedType::Object(o)) if o.implements_interfaces.contains("Node") && object != "Query")
        {
            problems.push(format!("scalar `{name}` names no node type"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(count, 14, "the node types of the reference, less `Query`");
}
