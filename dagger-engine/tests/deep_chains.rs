//! Chains of calls far longer than any real pipeline are evaluated without growing the native stack: a cold
//! 10,000-call chain answers, and so does one built across requests from IDs.

use dagger_engine::{Config, Session};
use serde_json::{Value, json};

async fn start(cache: &tempfile::TempDir) -> Session {
    Session::start(Config::for_dir(cache.path())).await.expect("engine")
}

async fn query(session: &Session, query: &str) -> Value {
    let body = raw(session, query).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &body[..body.len().min(500)]))
}

/// The body of a response, as text: a 10,000-level response is deeper than `serde_json` parses by default.
async fn raw(session: &Session, query: &str) -> String {
    reqwest::Client::new()
        .post(format!("{}/query", session.url()))
        .basic_auth(&session.token, Some(""))
        .body(json!({ "query": query }).to_string())
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

/// `{ directory { withNewFile(…) { withNewFile(…) { … { <leaf> } } } } }` with `n` calls: every call writes
/// the same file with new contents, so each result is small and only the chain is long.
fn chain(n: usize, leaf: &str) -> String {
    let mut q = String::from("{ directory { ");
    for i in 0..n {
        q.push_str(&format!("withNewFile(path: \"f\", contents: \"{i}\") {{ "));
    }
    q.push_str(leaf);
    for _ in 0..n {
        q.push_str(" }");
    }
    q.push_str(" } }");
    q
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_ten_thousand_call_chain_is_evaluated() {
    let cache = tempfile::tempdir().expect("cache");
    let session = start(&cache).await;
    let body = raw(&session, &chain(10_000, "file(path: \"f\") { contents }")).await;
    let expected = format!(
        "{{\"data\":{{\"directory\":{}{{\"file\":{{\"contents\":\"9999\"}}}}{}}}}}",
        "{\"withNewFile\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(
        body == expected,
        "{}…{}",
        &body[..body.len().min(300)],
        &body[body.len().saturating_sub(300)..]
    );
    assert_eq!(
        session.engine.computed.load(std::sync::atomic::Ordering::Relaxed),
        10_002,
        "each call once (and the file read)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_built_across_requests_from_ids_is_evaluated() {
    let cache = tempfile::tempdir().expect("cache");
    let session = start(&cache).await;
    // 20 requests of 100 calls, each continuing from the last one's ID: nothing is evaluated until the end.
    let mut id = String::new();
    for r in 0..20 {
        let mut q = if id.is_empty() {
            String::from("{ directory { ")
        } else {
            format!("{{ node(id: \"{id}\") {{ ... on Directory {{ ")
        };
        for i in 0..100 {
            q.push_str(&format!("withNewFile(path: \"f\", contents: \"{}\") {{ ", r * 100 + i));
        }
        q.push_str("id");
        q.push_str(&" }".repeat(101));
        q.push_str(if r == 0 { " }" } else { " } }" });
        let v = query(&session, &q).await;
        let mut inner = v["data"]
            .as_object()
            .and_then(|m| m.values().next())
            .unwrap_or_else(|| panic!("{v}"));
        while let Some(next) = inner.get("withNewFile") {
            inner = next;
        }
        id = inner["id"].as_str().unwrap_or_else(|| panic!("no id: {v}")).to_owned();
    }
    let v = query(
        &session,
        &format!("{{ node(id: \"{id}\") {{ ... on Directory {{ file(path: \"f\") {{ contents }} }} }} }}"),
    )
    .await;
    assert_eq!(v["data"]["node"]["file"]["contents"], "1999", "{v}");
}
