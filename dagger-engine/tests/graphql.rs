//! GraphQL response rules, checked on the raw HTTP bodies: errors carry `locations` and `path`, `data` keeps
//! the order of the query's selection, and a failed non-null field nulls its nearest nullable ancestor.

use dagger_engine::{Config, Session};

use serde_json::{Value, json};

struct Env {
    session: Session,
    _cache: tempfile::TempDir,
}

async fn start() -> Env {
    let cache = tempfile::tempdir().expect("cache");
    let session = Session::start(Config::for_dir(cache.path())).await.expect("engine");
    Env { session, _cache: cache }
}

impl Env {
    /// The raw body of a query.
    async fn raw(&self, query: &str) -> String {
        reqwest::Client::new()
            .post(format!("{}/query", self.session.url()))
            .basic_auth(&self.session.token, Some(""))
            .body(json!({ "query": query }).to_string())
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    async fn query(&self, query: &str) -> Value {
        let body = self.raw(query).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }
}

#[tokio::test]
async fn field_errors_carry_the_location_and_path_of_the_field() {
    let env = start().await;
    let doc = "{\n  directory {\n    file(path: \"missing.txt\") {\n      contents\n    }\n  }\n}";
    let v = env.query(doc).await;
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["locations"], json!([{ "line": 4, "column": 7 }]), "{v}");
    assert_eq!(errors[0]["path"], json!(["directory", "file", "contents"]), "{v}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| m.contains("missing.txt")),
        "{v}"
    );
}

#[tokio::test]
async fn paths_use_response_keys_and_locations_count_columns_from_one() {
    let env = start().await;
    // `Directory.stat` of a missing path fails at `name`, inside aliased fields.
    let doc = r#"{ d: directory { withNewFile(path: "a", contents: "x") { s: stat(path: "nope") { name } } } }"#;
    let v = env.query(doc).await;
    assert_eq!(v["errors"][0]["path"], json!(["d", "withNewFile", "s", "name"]), "{v}");
    let column = doc.find("name").expect("name") + 1;
    assert_eq!(
        v["errors"][0]["locations"],
        json!([{ "line": 1, "column": column }]),
        "{v}"
    );
}

#[tokio::test]
async fn data_keys_keep_the_order_of_the_selection() {
    let env = start().await;
    let body = env
        .raw(r#"{ zeta: version directory { withNewFile(path: "f", contents: "x") { size: entries name } } alpha: defaultPlatform mid: version }"#)
        .await;
    let pos = |key: &str| {
        body.find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("`{key}` in {body}"))
    };
    assert!(pos("zeta") < pos("directory"), "{body}");
    assert!(pos("directory") < pos("alpha"), "{body}");
    assert!(pos("alpha") < pos("mid"), "{body}");
    assert!(pos("size") < pos("name"), "{body}");
    // Introspection fields take their place in the order too.
    let body = env
        .raw("{ version __typename __schema { queryType { name } } defaultPlatform }")
        .await;
    assert!(pos_in(&body, "version") < pos_in(&body, "__typename"), "{body}");
    assert!(pos_in(&body, "__typename") < pos_in(&body, "__schema"), "{body}");
    assert!(pos_in(&body, "__schema") < pos_in(&body, "defaultPlatform"), "{body}");
}

fn pos_in(body: &str, key: &str) -> usize {
    body.find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("`{key}` in {body}"))
}

#[tokio::test]
async fn a_failed_non_null_field_nulls_its_nearest_nullable_ancestor() {
    let env = start().await;
    // `Stat.name` is `String!` and `Directory.stat` is nullable: the null stops at `stat`.
    let v = env
        .query(r#"{ version directory { entries stat(path: "nope") { name size } } }"#)
        .await;
    assert_eq!(
        v["data"],
        json!({ "version": v["data"]["version"], "directory": { "entries": [], "stat": null } }),
        "{v}"
    );
    assert!(v["data"]["version"].is_string(), "{v}");
    // Two failing siblings under one nullable parent: both are reported, the parent is null once.
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{v}");

    // Every field from `contents` up to the root is non-null: `data` itself becomes null.
    let v = env
        .query(r#"{ directory { file(path: "missing") { contents } } }"#)
        .await;
    assert_eq!(v["data"], Value::Null, "{v}");
    assert!(
        v.as_object().is_some_and(|o| o.contains_key("data")),
        "`data` is present, as null: {v}"
    );

    // `node` is nullable: an unknown ID nulls only it.
    let v = env
        .query(&format!(
            r#"{{ version node(id: "Directory:{}") {{ id }} }}"#,
            "0".repeat(64)
        ))
        .await;
    assert_eq!(v["data"]["node"], Value::Null, "{v}");
    assert!(v["data"]["version"].is_string(), "{v}");
    assert_eq!(v["errors"][0]["path"], json!(["node"]), "{v}");
}

#[tokio::test]
async fn request_errors_have_no_data_and_point_at_the_bad_token() {
    let env = start().await;
    let v = env.query("{\n  version\n  nope\n}").await;
    assert!(
        v.get("data").is_none(),
        "a document that does not validate is not executed: {v}"
    );
    assert_eq!(v["errors"][0]["locations"], json!([{ "line": 3, "column": 3 }]), "{v}");
}
