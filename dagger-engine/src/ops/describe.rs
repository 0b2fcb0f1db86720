//! How progress events describe a call of the core API ([`OpInfo`]): a few words for a person, its arguments
//! with secrets hidden, and its role (work, a setting folded into the next command, or a starting point).
//!
//! Secrets never show: an argument whose name says it is one (`plaintext`, `password`, `token`, `secret`,
//! …), the value of an environment variable whose name does, and any session secret's plaintext appearing
//! inside any argument are all `***`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::model::ids::Call;
use crate::ops::engine::Engine;
use crate::ops::fields::{ContainerField, Field, QueryField, ServiceField};
use crate::solver::events::{OpInfo, Role};

/// Details longer than this are cut (the report holds the arguments in full).
const DETAIL_MAX: usize = 120;

/// Describes `call`, a field of the type `owner`.
pub(crate) fn describe(engine: &Engine, owner: &str, call: &Call) -> OpInfo {
    let secrets = engine.secret_plaintexts();
    let args: BTreeMap<String, Value> = call
        .args
        .iter()
        .filter(|(k, _)| !k.starts_with('$') || k.as_str() == "$digest")
        .map(|(k, v)| (k.clone(), shown(k, v, &secrets)))
        .collect();
    let args = hide_secret_variables(args);
    OpInfo {
        detail: cut(&detail(&args)),
        role: role(owner, call),
        args,
        inputs: Vec::new(),
    }
}

/// Whether an argument or variable name says its value is a secret.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "plaintext",
        "password",
        "passwd",
        "passphrase",
        "token",
        "secret",
        "apikey",
        "api_key",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// An argument as events show it: object IDs as `#` and a short digest, secret-named strings as `***`, and
/// session secrets' plaintexts replaced inside every string.
fn shown(name: &str, v: &Value, secrets: &[String]) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.get("$id").is_some_and(Value::is_string) => {
            let d = m.get("$id").and_then(Value::as_str).unwrap_or_default();
            Value::String(format!("#{}", d.get(..12).unwrap_or(d)))
        }
        Value::String(_) if secret_name(name) => Value::String("***".into()),
        Value::String(s) => Value::String(scrub(s, secrets)),
        Value::Array(a) => Value::Array(a.iter().map(|x| shown(name, x, secrets)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), shown(k, x, secrets)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

/// `s` with every session secret replaced by `***`.
fn scrub(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_owned();
    for secret in secrets.iter().filter(|p| !p.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The value of an environment variable (`withEnvVariable(name, value)`) whose name says it is a secret, as
/// `***`.
fn hide_secret_variables(mut args: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let secret = args.get("name").and_then(Value::as_str).is_some_and(secret_name);
    if secret && let Some(v) = args.get_mut("value") {
        *v = Value::String("***".into());
    }
    args
}

/// What a call does in a few words, from its (already scrubbed) arguments: the command of an exec, an
/// address, `NAME=value`, a path, a name, a key, a port.
fn detail(args: &BTreeMap<String, Value>) -> String {
    let text = |k: &str| args.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(Value::Array(argv)) = args.get("args")
        && !argv.is_empty()
    {
        let words: Vec<String> = argv.iter().map(|w| quote(w.as_str().unwrap_or_default())).collect();
        return words.join(" ");
    }
    if let Some(a) = text("address") {
        return a.to_owned();
    }
    if let (Some(n), Some(v)) = (text("name"), args.get("value").and_then(Value::as_str)) {
        return format!("{n}={v}");
    }
    if let Some(p) = text("path") {
        return p.to_owned();
    }
    for k in ["name", "key", "uri", "url", "pattern", "alias", "hostname"] {
        if let Some(v) = text(k) {
            return v.to_owned();
        }
    }
    if let Some(port) = args.get("port").and_then(Value::as_i64) {
        return match text("protocol") {
            Some(proto) => format!("{port}/{}", proto.to_ascii_lowercase()),
            None => port.to_string(),
        };
    }
    if let Some(Value::Array(paths)) = args.get("paths") {
        let paths: Vec<&str> = paths.iter().filter_map(Value::as_str).collect();
        return paths.join(" ");
    }
    String::new()
}

/// A word of a command as a shell would need it: quoted when it holds anything but plain characters.
fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^*".contains(c));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// `s` cut to [`DETAIL_MAX`] characters, on one line.
fn cut(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= DETAIL_MAX {
        return one_line;
    }
    let mut out: String = one_line.chars().take(DETAIL_MAX - 1).collect();
    out.push('…');
    out
}

/// Whether a call is work, a setting, or a starting point: decided by the same groups of fields that
/// compute it (a container's state edits and mounts are settings).
fn role(owner: &str, call: &Call) -> Role {
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    match Field::parse(owner, &call.field, &args) {
        Ok(Field::Query(
            QueryField::Container(_)
            | QueryField::Directory
            | QueryField::Host
            | QueryField::CacheVolume(_)
            | QueryField::SetSecret(_)
            | QueryField::Secret(_),
        )) => Role::Root,
        // A service is only defined here: it runs when something needs it.
        Ok(Field::Container(ContainerField::AsService(_)) | Field::Service(ServiceField::WithHostname(_))) => {
            Role::Setting
        }
        Ok(Field::Container(f)) => {
            let setting = match crate::ops::container::state::edit(f) {
                Ok(_) => true,
                Err(f) => crate::ops::container::mounts::op(f).is_ok(),
            };
            if setting { Role::Setting } else { Role::Work }
        }
        _ => Role::Work,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ids::Digest;
    use crate::ops::op::testing::engine;

    fn call(field: &str, parent: Option<&Digest>, args: Value) -> Call {
        Call {
            type_name: "Container".into(),
            parent: parent.cloned(),
            field: field.into(),
            args: args.as_object().cloned().unwrap_or_default().into_iter().collect(),
        }
    }

    #[test]
    fn an_exec_is_shown_by_its_command_quoted_as_a_shell_would() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let info = describe(
            &e,
            "Container",
            &call("withExec", None, json!({ "args": ["sh", "-c", "echo 'hi' && exit 3"] })),
        );
        assert_eq!(info.detail, r#"sh -c 'echo '\''hi'\'' && exit 3'"#);
        assert_eq!(info.role, Role::Work);
    }

    #[test]
    fn images_paths_and_variables_are_shown_by_what_they_name() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let parent = Digest::of(b"parent");
        let from = describe(
            &e,
            "Container",
            &call(
                "from",
                None,
                json!({ "address": "busybox:latest", "$digest": "sha256:ab", "$mac": "m" }),
            ),
        );
        assert_eq!(from.detail, "busybox:latest");
        assert_eq!(from.args.get("$digest"), Some(&json!("sha256:ab")));
        assert!(!from.args.contains_key("$mac"), "keyed MACs are not shown");

        let dir = describe(
            &e,
            "Container",
            &call(
                "withDirectory",
                None,
                json!({ "path": "/src", "source": { "$id": parent.as_str() } }),
            ),
        );
        assert_eq!(dir.detail, "/src");
        assert_eq!(dir.args["source"], json!(format!("#{}", &parent.as_str()[..12])));
        assert_eq!(dir.role, Role::Work);

        let env = describe(
            &e,
            "Container",
            &call(
                "withEnvVariable",
                None,
                json!({ "name": "MODE", "value": "fast", "expand": false }),
            ),
        );
        assert_eq!((env.detail.as_str(), env.role), ("MODE=fast", Role::Setting));
        let mount = describe(
            &e,
            "Container",
            &call("withMountedTemp", None, json!({ "path": "/tmp/x" })),
        );
        assert_eq!((mount.detail.as_str(), mount.role), ("/tmp/x", Role::Setting));
        let port = describe(
            &e,
            "Container",
            &call("withExposedPort", None, json!({ "port": 8080, "protocol": "TCP" })),
        );
        assert_eq!((port.detail.as_str(), port.role), ("8080/tcp", Role::Setting));
        let root = describe(&e, "Query", &call("container", None, json!({})));
        assert_eq!((root.detail.as_str(), root.role), ("", Role::Root));
        let bind = describe(
            &e,
            "Container",
            &call(
                "withServiceBinding",
                None,
                json!({ "alias": "db", "service": { "$id": Digest::of(b"svc") } }),
            ),
        );
        assert_eq!((bind.detail.as_str(), bind.role), ("db", Role::Setting));
        let svc = describe(
            &e,
            "Container",
            &call("asService", None, json!({ "args": ["httpd", "-f"] })),
        );
        assert_eq!((svc.detail.as_str(), svc.role), ("httpd -f", Role::Setting));
    }

    #[test]
    fn secrets_are_never_shown() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        e.set_secret(&Digest::of(b"s"), "hunter2-plaintext".into());
        let exec = describe(
            &e,
            "Container",
            &call(
                "withExec",
                None,
                json!({ "args": ["login", "--password=hunter2-plaintext"] }),
            ),
        );
        assert_eq!(exec.detail, "login --password=***");
        assert_eq!(exec.args["args"], json!(["login", "--password=***"]));
        let env = describe(
            &e,
            "Container",
            &call(
                "withEnvVariable",
                None,
                json!({ "name": "API_TOKEN", "value": "abc123" }),
            ),
        );
        assert_eq!(env.detail, "API_TOKEN=***");
        let named = describe(
            &e,
            "Query",
            &call("setSecret", None, json!({ "name": "db", "plaintext": "oops" })),
        );
        assert_eq!(named.args["plaintext"], json!("***"));
        let text = serde_json::to_string(&[exec, env, named]).expect("json");
        assert!(
            !text.contains("hunter2") && !text.contains("abc123") && !text.contains("oops"),
            "{text}"
        );
    }

    #[test]
    fn long_details_are_cut_on_one_line() {
        let long = "x".repeat(500);
        let d = cut(&format!("a\nb {long}"));
        assert!(d.starts_with("a b x") && d.ends_with('…'), "{d}");
        assert_eq!(d.chars().count(), DETAIL_MAX);
    }
}
