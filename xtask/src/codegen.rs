//! Generates the typed API (`dagger/src/gen.rs`) from the contract `schema/core.graphql`, and runs the
//! other generators on it (the engine's typed fields, [`crate::engine_fields`]).
//!
//! Mapping:
//! - an object type becomes a struct wrapping a selection, with one method per field;
//! - a field returning an object is a sync builder method; any other field is an `async` leaf;
//! - required arguments are parameters; optional ones (nullable, or with a default) go in a
//!   `<Type><Field>Opts` struct and a `<field>_opts` method;
//! - `ID` arguments marked `@expectedType(name: "T")` take the object `T` itself, resolved lazily;
//! - a field named `sync` (or any other non-`id` field returning `ID!`) returns the object, reloaded by ID;
//! - a list of objects is fetched as IDs and each element loaded with `node(id:)`;
//! - `Query.node` becomes one `load_<type>_from_id` method per type implementing `Node`; the legacy loader
//!   fields (`Query.loadContainerFromID`, for the official 0.21 SDKs) are skipped.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use apollo_compiler::ast::{self, Definition, Document, Type};

use crate::workspace_root;

/// The schema file, relative to the workspace root.
pub const SCHEMA: &str = "schema/core.graphql";
/// The generated file, relative to the workspace root.
pub const OUTPUT: &str = "dagger/src/gen.rs";
/// The leaf names the `pipeline!` macro knows, relative to the workspace root.
pub const LEAVES_OUTPUT: &str = "dagger-macros/src/leaves.rs";

/// Regenerates the files on disk.
pub fn write() -> Result<String, String> {
    let root = workspace_root();
    let mut written = Vec::new();
    for (rel, code) in generate_from_disk()? {
        let path = root.join(rel);
        std::fs::write(&path, code).map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(format!("wrote {}", written.join(", ")))
}

/// Fails when a file on disk differs from what the schema generates.
pub fn check() -> Result<String, String> {
    let root = workspace_root();
    for (rel, code) in generate_from_disk()? {
        let path = root.join(rel);
        let current = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if current != code {
            return Err(format!(
                "{rel} is stale: run `cargo run -p xtask -- codegen` and commit the result"
            ));
        }
    }
    Ok(format!(
        "{OUTPUT}, {LEAVES_OUTPUT} and {} are up to date",
        crate::engine_fields::OUTPUT
    ))
}

/// Generates and formats every generated file: `(path relative to the root, contents)`.
pub fn generate_from_disk() -> Result<Vec<(&'static str, String)>, String> {
    let root = workspace_root();
    let sdl = std::fs::read_to_string(root.join(SCHEMA)).map_err(|e| format!("reading {SCHEMA}: {e}"))?;
    let (api, leaves) = generate(&sdl)?;
    let engine = crate::engine_fields::generate(&parse_schema(&sdl)?)?;
    let config = root.join("rustfmt.toml");
    Ok(vec![
        (OUTPUT, rustfmt(&api, &config)?),
        (LEAVES_OUTPUT, rustfmt(&leaves, &config)?),
        (crate::engine_fields::OUTPUT, rustfmt(&engine, &config)?),
    ])
}

/// Formats code with the toolchain's `rustfmt`, as `cargo fmt` would.
pub fn rustfmt(code: &str, config: &std::path::Path) -> Result<String, String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--config-path"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustfmt (install it with `rustup component add rustfmt`): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("rustfmt has no stdin")?
        .write_all(code.as_bytes())
        .map_err(|e| format!("writing to rustfmt: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("running rustfmt: {e}"))?;
    if !out.status.success() {
        return Err(format!("rustfmt failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("rustfmt output: {e}"))
}

/// The kind of an argument or input field, as the generator maps it to Rust.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    Platform,
    Json,
    Enum(String),
    Input(String),
    Object(String),
    List(Box<Kind>),
}

/// The definitions of the contract schema the generators read.
pub(crate) struct Schema {
    pub(crate) objects: Vec<ast::ObjectTypeDefinition>,
    pub(crate) enums: Vec<ast::EnumTypeDefinition>,
    pub(crate) inputs: Vec<ast::InputObjectTypeDefinition>,
    pub(crate) object_names: BTreeSet<String>,
    pub(crate) enum_names: BTreeSet<String>,
    pub(crate) input_names: BTreeSet<String>,
    pub(crate) scalar_names: BTreeSet<String>,
}

/// Reads the object, enum and input definitions of an SDL document.
pub(crate) fn parse_schema(sdl: &str) -> Result<Schema, String> {
    let doc = Document::parse(sdl, SCHEMA).map_err(|e| format!("{SCHEMA} does not parse:\n{e}"))?;
    let mut schema = Schema {
        objects: Vec::new(),
        enums: Vec::new(),
        inputs: Vec::new(),
        object_names: BTreeSet::new(),
        enum_names: BTreeSet::new(),
        input_names: BTreeSet::new(),
        scalar_names: BTreeSet::new(),
    };
    for def in &doc.definitions {
        match def {
            Definition::ObjectTypeDefinition(o) => {
                schema.object_names.insert(o.name.to_string());
                schema.objects.push((**o).clone());
            }
            Definition::EnumTypeDefinition(e) => {
                schema.enum_names.insert(e.name.to_string());
                schema.enums.push((**e).clone());
            }
            Definition::InputObjectTypeDefinition(i) => {
                schema.input_names.insert(i.name.to_string());
                schema.inputs.push((**i).clone());
            }
            Definition::ScalarTypeDefinition(s) => {
                schema.scalar_names.insert(s.name.to_string());
            }
            _ => {}
        }
    }
    Ok(schema)
}

/// Generates unformatted Rust code for an SDL document: the API, and the macro crate's list of leaves.
pub fn generate(sdl: &str) -> Result<(String, String), String> {
    let schema = parse_schema(sdl)?;

    let mut body = String::new();
    let mut leaf_impls = Vec::new();
    for obj in &schema.objects {
        gen_object(&schema, obj, &mut body, &mut leaf_impls)?;
    }
    for e in &schema.enums {
        gen_enum(e, &mut body);
    }
    for i in &schema.inputs {
        gen_input(&schema, i, &mut body)?;
    }
    gen_leaf_traits(&schema, &leaf_impls, &mut body);
    let scalars: Vec<&str> = ["Id", "Json", "Platform"]
        .into_iter()
        .filter(|s| {
            body.contains(&format!("{s}>")) || body.contains(&format!("{s},")) || body.contains(&format!("{s} "))
        })
        .collect();
    let mut out = String::new();
    out.push_str(
        "// @generated by `cargo run -p xtask -- codegen` from schema/core.graphql. DO NOT EDIT.\n\
         //! The typed API, generated from the contract `schema/core.graphql`.\n\n\
         #![allow(clippy::too_many_arguments, clippy::redundant_closure, clippy::vec_init_then_push)]\n\n\
         use crate::core::{\n\
         Ctx, FromResponse, Leaf, LeafShape, Object, ToValue, decode_enum, decode_object_list, decode_own_id,\n\
         decode_sync, decode_value, object_arg,\n\
         };\n\
         use crate::error::Error;\n\
         use crate::querybuilder::{Selection, Value};\n\
",
    );
    let _ = writeln!(out, "use crate::scalars::{{{}}};\n", scalars.join(", "));
    out.push_str(&body);

    let mut leaves = String::from(
        "// @generated by `cargo run -p xtask -- codegen` from schema/core.graphql. DO NOT EDIT.\n\
         //! Leaf methods by object type, so `pipeline!` can check outputs and suggest names.\n\n\
         /// `(type, leaf methods)` for every object type, in schema order.\n\
         pub(crate) const LEAVES: &[(&str, &[&str])] = &[\n",
    );
    for obj in &schema.objects {
        let names: Vec<String> = leaf_impls
            .iter()
            .filter(|(_, t, _)| t == obj.name.as_str())
            .map(|(f, _, _)| format!("\"{f}\""))
            .collect();
        let _ = writeln!(leaves, "(\"{}\", &[{}]),", obj.name, names.join(", "));
    }
    leaves.push_str("];\n");
    Ok((out, leaves))
}

/// Writes `text` as `///` lines, then a last paragraph naming the GraphQL item (`tag`), so every generated
/// item is documented and traceable to the schema.
pub(crate) fn doc_tagged(out: &mut String, text: Option<&str>, tag: &str) {
    let mut full = text.unwrap_or("").trim().to_owned();
    if !full.is_empty() {
        full.push_str("\n\n");
    }
    full.push_str(tag);
    doc(out, Some(&full));
}

fn doc(out: &mut String, text: Option<&str>) {
    if let Some(text) = text {
        for line in text.trim().lines() {
            let line = line.trim_end();
            if line.is_empty() {
                out.push_str("///\n");
            } else {
                let _ = writeln!(out, "/// {line}");
            }
        }
    }
}

pub(crate) fn describe(d: &Option<apollo_compiler::Node<str>>) -> Option<&str> {
    d.as_deref()
}

fn gen_object(
    schema: &Schema,
    obj: &ast::ObjectTypeDefinition,
    out: &mut String,
    leaf_impls: &mut Vec<(String, String, String)>,
) -> Result<(), String> {
    let name = obj.name.as_str();
    let is_node = obj.implements_interfaces.iter().any(|i| i.as_str() == "Node");
    doc_tagged(out, describe(&obj.description), &format!("GraphQL type `{name}`."));
    let _ = writeln!(
        out,
        "#[derive(Clone, Debug)]\npub struct {name} {{\n    ctx: Ctx,\n}}\n\n\
         impl Object for {name} {{\n    const TYPE_NAME: &'static str = \"{name}\";\n\
         fn ctx(&self) -> &Ctx {{ &self.ctx }}\n\
         fn from_ctx(ctx: Ctx) -> Self {{ Self {{ ctx }} }}\n}}\n\n\
         impl From<&{name}> for {name} {{\n    fn from(value: &{name}) -> Self {{ value.clone() }}\n}}\n"
    );
    let mut opts_structs = String::new();
    let _ = writeln!(out, "impl {name} {{");
    if name == "Query" {
        for other in &schema.objects {
            let other_name = other.name.as_str();
            if other_name == "Query" || !other.implements_interfaces.iter().any(|i| i.as_str() == "Node") {
                continue;
            }
            let _ = writeln!(
                out,
                "/// Loads a `{other_name}` from its ID (with `node(id:)`); nothing is sent until a leaf runs.\n\
                 pub fn load_{}_from_id(&self, id: impl Into<Id>) -> {other_name} {{\n\
                 {other_name}::from_ctx(self.ctx.with_selection(Selection::load(\"{other_name}\", id.into())))\n}}\n",
                snake(other_name)
            );
        }
    }
    for field in &obj.fields {
        gen_field(schema, name, is_node, field, out, &mut opts_structs, leaf_impls)?;
    }
    out.push_str("}\n\n");
    out.push_str(&opts_structs);
    Ok(())
}

/// What a field returns, as the generator sees it.
enum Ret {
    /// An object: a builder method.
    Object(String),
    /// The object's own ID (`id`).
    OwnId,
    /// Another field returning the object's ID (`sync`): evaluate, then reload by ID.
    SyncId,
    /// A list of objects.
    ObjectList(String),
    /// Anything else: decoded into this Rust type.
    Leaf(String),
}

fn gen_field(
    schema: &Schema,
    type_name: &str,
    is_node: bool,
    field: &ast::FieldDefinition,
    out: &mut String,
    opts_structs: &mut String,
    leaf_impls: &mut Vec<(String, String, String)>,
) -> Result<(), String> {
    let fname = field.name.as_str();
    if type_name == "Query" && (fname == "node" || legacy_loader(fname).is_some()) {
        // Replaced by the typed `load_*_from_id` methods, which use `node(id:)`.
        return Ok(());
    }
    let ret = classify_return(schema, &field.ty, fname, is_node)?;
    let method = ident(&snake(fname));

    let mut required = Vec::new();
    let mut optional = Vec::new();
    for arg in &field.arguments {
        let kind = arg_kind(schema, type_name, fname, arg)?;
        let is_optional = !arg.ty.is_non_null() || arg.default_value.is_some();
        if is_optional {
            optional.push((arg, kind));
        } else {
            required.push((arg, kind));
        }
    }

    // The shared body: build the argument list in schema order, then select.
    let params: String = required
        .iter()
        .map(|(arg, kind)| format!(", {}: {}", ident(&snake(arg.name.as_str())), param_type(kind)))
        .collect();
    let (mut arg_code, args_expr) = if field.arguments.is_empty() {
        (String::new(), "vec![]")
    } else {
        (
            String::from("let mut gql_args: Vec<(&'static str, Value)> = Vec::new();\n"),
            "gql_args",
        )
    };
    for arg in &field.arguments {
        let aname = arg.name.as_str();
        let var = ident(&snake(aname));
        if let Some((_, kind)) = required.iter().find(|(a, _)| a.name == arg.name) {
            let _ = writeln!(
                arg_code,
                "let {var}: {} = {};\ngql_args.push((\"{aname}\", {}));",
                owned_type(kind),
                into_owned(kind, &var),
                own_value(kind, &var)
            );
        } else if let Some((_, kind)) = optional.iter().find(|(a, _)| a.name == arg.name) {
            let _ = writeln!(
                arg_code,
                "if let Some(v) = &opts.{var} {{ gql_args.push((\"{aname}\", {})); }}",
                ref_value(kind, "v")
            );
        }
    }

    let (ret_ty, body) = match &ret {
        Ret::Object(obj) => (
            obj.clone(),
            format!("{obj}::from_ctx(self.ctx.select(\"{fname}\", {args_expr}))"),
        ),
        Ret::OwnId => (
            "Leaf<Id>".to_owned(),
            format!("self.ctx.leaf(\"{fname}\", {args_expr}, LeafShape::OwnId, decode_own_id)"),
        ),
        Ret::SyncId => (
            format!("Leaf<{type_name}>"),
            format!("self.ctx.leaf(\"{fname}\", {args_expr}, LeafShape::Scalar, decode_sync::<{type_name}>)"),
        ),
        Ret::ObjectList(obj) => (
            format!("Leaf<Vec<{obj}>>"),
            format!("self.ctx.leaf(\"{fname}\", {args_expr}, LeafShape::ObjectList, decode_object_list::<{obj}>)"),
        ),
        Ret::Leaf(ty) => (
            format!("Leaf<{ty}>"),
            format!("self.ctx.leaf(\"{fname}\", {args_expr}, LeafShape::Scalar, decode_value::<{ty}>)"),
        ),
    };
    if let Some(out) = leaf_output(&ret, type_name) {
        leaf_impls.push((snake(fname), type_name.to_owned(), out));
    }

    // Docs: the field description, then the required arguments.
    let mut docs = describe(&field.description).unwrap_or("").trim().to_owned();
    let arg_docs: Vec<String> = required
        .iter()
        .map(|(arg, _)| {
            format!(
                "- `{}`: {}",
                snake(arg.name.as_str()),
                describe(&arg.description).map(one_line).unwrap_or_default()
            )
        })
        .collect();
    if !arg_docs.is_empty() {
        docs.push_str("\n\n# Arguments\n");
        docs.push_str(&arg_docs.join("\n"));
    }

    let call_required: String = required
        .iter()
        .map(|(arg, _)| format!("{}, ", ident(&snake(arg.name.as_str()))))
        .collect();
    if optional.is_empty() {
        doc_tagged(out, Some(&docs), &format!("GraphQL field `{type_name}.{fname}`."));
        let _ = writeln!(
            out,
            "pub fn {method}(&self{params}) -> {ret_ty} {{\n{arg_code}{body}\n}}\n"
        );
    } else {
        let opts_name = format!("{type_name}{}Opts", pascal(fname));
        let method_opts = format!("{}_opts", snake(fname));
        let mut short_docs = docs.clone();
        let _ = write!(
            short_docs,
            "\n\nOptional arguments keep their defaults; set them with [`Self::{method_opts}`]."
        );
        doc_tagged(out, Some(&short_docs), &format!("GraphQL field `{type_name}.{fname}`."));
        let _ = writeln!(
            out,
            "pub fn {method}(&self{params}) -> {ret_ty} {{\n\
             self.{method_opts}({call_required}{opts_name}::default())\n}}\n"
        );
        let mut opt_docs = docs;
        let _ = write!(
            opt_docs,
            "\n\nLike [`Self::{method}`], with the optional arguments in [`{opts_name}`]."
        );
        doc_tagged(out, Some(&opt_docs), &format!("GraphQL field `{type_name}.{fname}`."));
        let _ = writeln!(
            out,
            "pub fn {method_opts}(&self{params}, opts: {opts_name}) -> {ret_ty} {{\n{arg_code}{body}\n}}\n"
        );
        gen_opts(&opts_name, type_name, fname, &optional, opts_structs);
    }
    Ok(())
}

fn gen_opts(
    opts_name: &str,
    type_name: &str,
    fname: &str,
    optional: &[(&apollo_compiler::Node<ast::InputValueDefinition>, Kind)],
    out: &mut String,
) {
    let _ = writeln!(
        out,
        "/// Optional arguments of [`{type_name}::{}_opts`]; `None` leaves the engine's default.\n\
         #[derive(Clone, Debug, Default)]\npub struct {opts_name} {{",
        snake(fname)
    );
    let mut setters = String::new();
    for (arg, kind) in optional {
        let var = ident(&snake(arg.name.as_str()));
        let mut d = describe(&arg.description).unwrap_or("").trim().to_owned();
        if let Some(default) = &arg.default_value {
            let _ = write!(d, "\n\nDefault: `{default}`.");
        }
        doc_tagged(
            out,
            Some(&d),
            &format!("GraphQL argument `{type_name}.{fname}({}:)`.", arg.name),
        );
        let _ = writeln!(out, "pub {var}: Option<{}>,", owned_type(kind));
        let _ = writeln!(
            setters,
            "/// Sets [`{opts_name}::{}`].\npub fn {var}(mut self, value: {}) -> Self {{\n\
             self.{var} = Some({});\nself\n}}\n",
            var.trim_start_matches("r#"),
            param_type(kind),
            into_owned(kind, "value")
        );
    }
    let _ = writeln!(out, "}}\n\nimpl {opts_name} {{\n{setters}}}\n");
}

fn gen_enum(e: &ast::EnumTypeDefinition, out: &mut String) {
    let name = e.name.as_str();
    doc_tagged(out, describe(&e.description), &format!("GraphQL enum `{name}`."));
    let mut variants: Vec<(String, String)> = Vec::new();
    for v in &e.values {
        let gql = v.value.to_string();
        let mut rust = pascal(&gql);
        if variants.iter().any(|(r, _)| *r == rust) {
            // Two spellings of one value (an old name and its replacement): keep the second verbatim.
            rust = gql.clone();
        }
        variants.push((rust, gql));
    }
    let _ = writeln!(
        out,
        "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\n#[allow(non_camel_case_types, clippy::upper_case_acronyms)]\npub enum {name} {{"
    );
    for (v, (rust, _)) in e.values.iter().zip(&variants) {
        doc_tagged(out, describe(&v.description), &format!("GraphQL value `{}`.", v.value));
        let _ = writeln!(out, "{rust},");
    }
    out.push_str("}\n\n");
    let as_arms: String = variants
        .iter()
        .map(|(r, g)| format!("{name}::{r} => \"{g}\",\n"))
        .collect();
    let from_arms: String = variants
        .iter()
        .map(|(r, g)| format!("\"{g}\" => Some({name}::{r}),\n"))
        .collect();
    let _ = writeln!(
        out,
        "impl {name} {{\n\
         /// The value's GraphQL name.\npub fn as_graphql(&self) -> &'static str {{ match self {{ {as_arms} }} }}\n\
         /// The value with this GraphQL name, if any.\npub fn from_graphql(name: &str) -> Option<Self> {{ match name {{ {from_arms} _ => None, }} }}\n}}\n\n\
         impl std::fmt::Display for {name} {{\n\
         fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{ f.write_str(self.as_graphql()) }}\n}}\n\n\
         impl ToValue for {name} {{\n fn to_value(&self) -> Value {{ Value::Enum(self.as_graphql()) }}\n}}\n\n\
         impl FromResponse for {name} {{\n\
         fn from_response(value: serde_json::Value) -> Result<Self, Error> {{ decode_enum(value, Self::from_graphql) }}\n}}\n"
    );
}

fn gen_input(schema: &Schema, input: &ast::InputObjectTypeDefinition, out: &mut String) -> Result<(), String> {
    let name = input.name.as_str();
    doc_tagged(out, describe(&input.description), &format!("GraphQL input `{name}`."));
    let _ = writeln!(out, "#[derive(Clone, Debug, Default, PartialEq)]\npub struct {name} {{");
    let mut pushes = String::new();
    for f in &input.fields {
        let kind = kind_of(schema, name, f.name.as_str(), &f.ty, &f.directives)?;
        let var = ident(&snake(f.name.as_str()));
        let mut d = describe(&f.description).unwrap_or("").trim().to_owned();
        let fname = f.name.as_str();
        let tag = format!("GraphQL input field `{name}.{fname}`.");
        if f.ty.is_non_null() && f.default_value.is_none() {
            doc_tagged(out, Some(&d), &tag);
            let _ = writeln!(out, "pub {var}: {},", owned_type(&kind));
            let _ = writeln!(
                pushes,
                "{{ let v = &self.{var}; fields.push((\"{fname}\", {})); }}",
                ref_value(&kind, "v")
            );
        } else {
            if let Some(default) = &f.default_value {
                let _ = write!(d, "\n\n`None` means the default, `{default}`.");
            }
            doc_tagged(out, Some(&d), &tag);
            let _ = writeln!(out, "pub {var}: Option<{}>,", owned_type(&kind));
            let _ = writeln!(
                pushes,
                "if let Some(v) = &self.{var} {{ fields.push((\"{fname}\", {})); }}",
                ref_value(&kind, "v")
            );
        }
    }
    let _ = writeln!(
        out,
        "}}\n\nimpl ToValue for {name} {{\nfn to_value(&self) -> Value {{\n\
         let mut fields: Vec<(&'static str, Value)> = Vec::new();\n{pushes}Value::Input(fields)\n}}\n}}\n"
    );
    Ok(())
}

/// The Rust output type of a leaf, or `None` for builders.
fn leaf_output(ret: &Ret, type_name: &str) -> Option<String> {
    match ret {
        Ret::Object(_) => None,
        Ret::OwnId => Some("Id".to_owned()),
        Ret::SyncId => Some(type_name.to_owned()),
        Ret::ObjectList(obj) => Some(format!("Vec<{obj}>")),
        Ret::Leaf(ty) => Some(ty.clone()),
    }
}

/// Two traits per leaf name, for the `pipeline!` macro:
/// - `leaves::<leaf>` names the leaf's output type; it is implemented for *every* object type (with
///   `Output = Missing` where the leaf does not exist), so naming an output's type never fails by itself;
/// - `has::<leaf>` is implemented only where the leaf exists; the macro checks it once per output, and
///   `on_unimplemented` turns a miss into one readable error.
fn gen_leaf_traits(schema: &Schema, impls: &[(String, String, String)], out: &mut String) {
    let names: BTreeSet<&str> = impls.iter().map(|(f, _, _)| f.as_str()).collect();
    out.push_str(
        "/// Leaf output types by leaf name, for the `pipeline!` macro.\n\
         #[doc(hidden)]\n#[allow(non_camel_case_types)]\npub mod leaves {\n    use super::*;\n\n\
         /// The output type of a leaf that does not exist on a type (see `has`).\n\
         #[derive(Debug)]\npub enum Missing {}\n\n",
    );
    let mut has = String::from(
        "/// Which types have which leaves, for the `pipeline!` macro's checks.\n\
         #[doc(hidden)]\n#[allow(non_camel_case_types)]\npub mod has {\n    use super::*;\n\n",
    );
    for name in names {
        let trait_name = ident(name);
        let owners: Vec<&str> = impls
            .iter()
            .filter(|(f, _, _)| f == name)
            .map(|(_, t, _)| t.as_str())
            .collect();
        let _ = writeln!(
            out,
            "/// The output of the `{name}` leaf.\npub trait {trait_name} {{\n/// What the leaf returns.\ntype Output;\n}}\n"
        );
        for obj in &schema.objects {
            let t = obj.name.as_str();
            let o = impls
                .iter()
                .find(|(f, owner, _)| f == name && owner == t)
                .map_or("Missing", |(_, _, o)| o.as_str());
            let _ = writeln!(out, "impl {trait_name} for {t} {{\ntype Output = {o};\n}}\n");
        }
        let _ = writeln!(
            has,
            "/// Types with a `{name}` leaf.\n\
             #[diagnostic::on_unimplemented(\n\
             message = \"`{{Self}}` has no leaf `{name}`\",\n\
             label = \"no leaf `{name}` on this value\",\n\
             note = \"`{name}` is a leaf of: {}\"\n)]\n\
             pub trait {trait_name} {{}}\n",
            owners.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")
        );
        for t in owners {
            let _ = writeln!(has, "impl {trait_name} for {t} {{}}");
        }
    }
    out.push_str("}\n\n");
    out.push_str(&has);
    out.push_str("}\n");
}

fn classify_return(schema: &Schema, ty: &Type, fname: &str, is_node: bool) -> Result<Ret, String> {
    let base = ty.inner_named_type().as_str();
    let is_list = matches!(ty, Type::List(_) | Type::NonNullList(_));
    if schema.object_names.contains(base) {
        return Ok(if is_list {
            Ret::ObjectList(base.to_owned())
        } else {
            Ret::Object(base.to_owned())
        });
    }
    if base == "ID" && !is_list {
        return Ok(if fname == "id" {
            Ret::OwnId
        } else if is_node {
            Ret::SyncId
        } else {
            Ret::Leaf("Id".to_owned())
        });
    }
    Ok(Ret::Leaf(leaf_type(schema, ty)?))
}

fn leaf_type(schema: &Schema, ty: &Type) -> Result<String, String> {
    let inner = match ty {
        Type::Named(n) | Type::NonNullNamed(n) => {
            let n = n.as_str();
            match n {
                "String" => "String".to_owned(),
                "Int" => "i64".to_owned(),
                "Boolean" => "bool".to_owned(),
                "ID" => "Id".to_owned(),
                "Platform" => "Platform".to_owned(),
                "JSON" => "Json".to_owned(),
                // A `Void` leaf carries no value, null or not.
                "Void" => return Ok("()".to_owned()),
                other if schema.enum_names.contains(other) => other.to_owned(),
                other => return Err(format!("no Rust type for leaf type `{other}`")),
            }
        }
        Type::List(t) | Type::NonNullList(t) => format!("Vec<{}>", leaf_type(schema, t)?),
    };
    Ok(if ty.is_non_null() {
        inner
    } else {
        format!("Option<{inner}>")
    })
}

fn arg_kind(schema: &Schema, type_name: &str, field: &str, arg: &ast::InputValueDefinition) -> Result<Kind, String> {
    kind_of(
        schema,
        &format!("{type_name}.{field}"),
        arg.name.as_str(),
        &arg.ty,
        &arg.directives,
    )
}

pub(crate) fn kind_of(
    schema: &Schema,
    owner: &str,
    name: &str,
    ty: &Type,
    directives: &ast::DirectiveList,
) -> Result<Kind, String> {
    match ty {
        Type::List(t) | Type::NonNullList(t) => Ok(Kind::List(Box::new(kind_of(schema, owner, name, t, directives)?))),
        Type::Named(n) | Type::NonNullNamed(n) => Ok(match n.as_str() {
            "String" => Kind::Str,
            "Int" => Kind::Int,
            "Boolean" => Kind::Bool,
            "Platform" => Kind::Platform,
            "JSON" => Kind::Json,
            "ID" => {
                let expected = directives
                    .get("expectedType")
                    .and_then(|d| d.specified_argument_by_name("name"))
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| format!("`{owner}({name}:)` is an ID without @expectedType(name:)"))?;
                if !schema.object_names.contains(&expected) {
                    return Err(format!("`{owner}({name}:)` expects unknown type `{expected}`"));
                }
                Kind::Object(expected)
            }
            other if schema.enum_names.contains(other) => Kind::Enum(other.to_owned()),
            other if schema.input_names.contains(other) => Kind::Input(other.to_owned()),
            // A legacy `FooID` scalar names its object type itself.
            other => match legacy_id_type(schema, other) {
                Some(object) => Kind::Object(object.to_owned()),
                None => return Err(format!("`{owner}({name}:)` has unsupported type `{other}`")),
            },
        }),
    }
}

/// The object type a legacy ID scalar (`ContainerID`) names, if `scalar` is one.
pub(crate) fn legacy_id_type<'a>(schema: &Schema, scalar: &'a str) -> Option<&'a str> {
    scalar
        .strip_suffix("ID")
        .filter(|t| schema.object_names.contains(*t) && schema.scalar_names.contains(scalar))
}

/// The object type a legacy loader field of `Query` (`loadContainerFromID`) loads, if `field` is one. They are
/// the legacy ID view of the official 0.21 SDKs; this SDK loads objects with `node(id:)`.
pub(crate) fn legacy_loader(field: &str) -> Option<&str> {
    field
        .strip_prefix("load")
        .and_then(|rest| rest.strip_suffix("FromID"))
        .filter(|t| !t.is_empty())
}

/// The type a required parameter (or an opts setter) accepts.
fn param_type(kind: &Kind) -> String {
    match kind {
        Kind::Str => "impl Into<String>".to_owned(),
        Kind::Int => "i64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::Platform => "impl Into<Platform>".to_owned(),
        Kind::Json => "Json".to_owned(),
        Kind::Enum(n) | Kind::Input(n) => n.clone(),
        Kind::Object(n) => format!("impl Into<{n}>"),
        Kind::List(inner) => match &**inner {
            Kind::Str | Kind::Object(_) | Kind::Platform => {
                format!("impl IntoIterator<Item = {}>", param_type(inner))
            }
            other => format!("impl IntoIterator<Item = {}>", owned_type(other)),
        },
    }
}

/// The owned type stored in opts structs.
fn owned_type(kind: &Kind) -> String {
    match kind {
        Kind::Str => "String".to_owned(),
        Kind::Int => "i64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::Platform => "Platform".to_owned(),
        Kind::Json => "Json".to_owned(),
        Kind::Enum(n) | Kind::Input(n) | Kind::Object(n) => n.clone(),
        Kind::List(inner) => format!("Vec<{}>", owned_type(inner)),
    }
}

/// Converts a parameter of [`param_type`] into [`owned_type`].
fn into_owned(kind: &Kind, var: &str) -> String {
    match kind {
        Kind::Str | Kind::Platform | Kind::Object(_) => format!("{var}.into()"),
        Kind::List(inner) => match &**inner {
            Kind::Str | Kind::Object(_) | Kind::Platform => format!("{var}.into_iter().map(Into::into).collect()"),
            _ => format!("{var}.into_iter().collect()"),
        },
        _ => var.to_owned(),
    }
}

/// The `Value` for a variable `v` of an [`owned_type`], consuming it.
fn own_value(kind: &Kind, v: &str) -> String {
    match kind {
        Kind::Str => format!("Value::String({v})"),
        Kind::Int => format!("Value::Int({v})"),
        Kind::Bool => format!("Value::Bool({v})"),
        Kind::Platform | Kind::Json | Kind::Enum(_) | Kind::Input(_) => format!("{v}.to_value()"),
        Kind::Object(_) => format!("object_arg(&{v})"),
        Kind::List(inner) => format!(
            "Value::List({v}.into_iter().map(|v| {}).collect())",
            own_value(inner, "v")
        ),
    }
}

/// The `Value` for a reference `r` to an [`owned_type`].
fn ref_value(kind: &Kind, r: &str) -> String {
    match kind {
        Kind::Str => format!("Value::String({r}.clone())"),
        Kind::Int => format!("Value::Int(*{r})"),
        Kind::Bool => format!("Value::Bool(*{r})"),
        Kind::Platform | Kind::Json | Kind::Enum(_) | Kind::Input(_) => format!("{r}.to_value()"),
        Kind::Object(_) => format!("object_arg({r})"),
        Kind::List(inner) => format!("Value::List({r}.iter().map(|v| {}).collect())", ref_value(inner, "v")),
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `withExec` → `with_exec`, `OCIMediaTypes` → `oci_media_types`.
pub fn snake(name: &str) -> String {
    words(name).join("_")
}

/// `withExec` → `WithExec`, `REGULAR_TYPE` → `RegularType`, `OCIMediaTypes` → `OciMediaTypes`.
pub fn pascal(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Lowercase words of a camelCase, PascalCase or SCREAMING_CASE name; acronyms stay one word.
fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_uppercase() && !cur.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Escapes Rust keywords as raw identifiers.
pub(crate) fn ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
        "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
        "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become",
        "box", "do", "final", "macro", "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_loaders_are_skipped_and_legacy_ids_are_objects() {
        let sdl = r#"
            interface Node { id: ID! }
            type Query implements Node {
                node(id: ID!): Node
                loadFileFromID(id: FileID!): File!
                id: ID!
            }
            type File implements Node { id: ID! }
            scalar FileID
        "#;
        let (api, _) = generate(sdl).expect("generate");
        assert_eq!(
            api.matches("pub fn load_file_from_id(").count(),
            1,
            "one loader, through `node`: {api}"
        );
        assert!(!api.contains("\"loadFileFromID\""), "{api}");
        let schema = parse_schema(sdl).expect("parse");
        let ty = Type::NonNullNamed(apollo_compiler::Name::new("FileID").expect("name"));
        let kind = kind_of(
            &schema,
            "Query.loadFileFromID",
            "id",
            &ty,
            &ast::DirectiveList::default(),
        );
        assert!(matches!(kind, Ok(Kind::Object(ref t)) if t == "File"), "{kind:?}");
        let ty = Type::NonNullNamed(apollo_compiler::Name::new("FooID").expect("name"));
        assert!(kind_of(&schema, "Q.f", "id", &ty, &ast::DirectiveList::default()).is_err());
    }

    #[test]
    fn case_conversions() {
        assert_eq!(snake("withExec"), "with_exec");
        assert_eq!(snake("defaultPlatform"), "default_platform");
        assert_eq!(pascal("OCIMediaTypes"), "OciMediaTypes");
        assert_eq!(pascal("REGULAR_TYPE"), "RegularType");
        assert_eq!(pascal("EStarGZ"), "EStarGz");
        assert_eq!(pascal("GZIP"), "Gzip");
        assert_eq!(ident("ref"), "r#ref");
    }
}
