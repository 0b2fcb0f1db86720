//! What a container is — layers, image configuration, mounts, platform, the last exec's result, secret
//! variables, registry credentials — and the edits of it that need no filesystem (environment, workdir,
//! user, entrypoint, labels, ports, …): pure functions of the state and the arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::ids::Digest;
use crate::model::tree::{FileEntry, Tree, normalize};
use crate::ops::error::OpError;
use crate::ops::fields::{ContainerField, NetworkProtocol};

/// The image configuration a container carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageConfig {
    /// `NAME=value` pairs, in order.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory (empty: `/`).
    #[serde(default)]
    pub workdir: String,
    /// The user (`name`, `uid`, `name:group`, `uid:gid`; empty: root).
    #[serde(default)]
    pub user: String,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The default arguments.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exposed ports: port, protocol (`TCP`/`UDP`), description.
    #[serde(default)]
    pub ports: Vec<(i64, String, Option<String>)>,
}

/// What is mounted at a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m")]
pub(crate) enum MountSource {
    /// A directory snapshot (writable unless `read_only`).
    Dir {
        /// Its contents.
        tree: Tree,
        /// Mounted read-only.
        read_only: bool,
        /// Owner, when given.
        owner: Option<(u32, u32)>,
    },
    /// A single file.
    File {
        /// Its contents.
        entry: FileEntry,
        /// Owner, when given.
        owner: Option<(u32, u32)>,
    },
    /// A cache volume.
    Cache {
        /// The volume's key.
        key: String,
        /// `SHARED`, `PRIVATE` or `LOCKED`.
        sharing: String,
        /// What a new volume starts with.
        seed: Option<Tree>,
        /// Owner of a new volume's root.
        owner: Option<(u32, u32)>,
    },
    /// A fresh tmpfs.
    Temp {
        /// Size limit in bytes.
        size: Option<u64>,
    },
}

/// A secret mounted as a file. Secret mounts are kept apart from the other mounts, as in Dagger: another
/// mount at the same path neither replaces nor is replaced by one, reading a path back never shows a
/// secret, and an exec mounts the secrets last, so it sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecretMount {
    /// The absolute container path.
    pub path: String,
    /// The secret object.
    pub secret: Digest,
    /// Permission bits.
    pub mode: u32,
    /// Owner, when given.
    pub owner: Option<(u32, u32)>,
}

/// The result of the last `withExec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecResult {
    /// Exit code.
    pub exit_code: i32,
    /// Standard output (a blob).
    pub stdout: Digest,
    /// Standard error (a blob).
    pub stderr: Digest,
    /// Both, interleaved (a blob).
    pub combined: Digest,
}

/// Everything a container is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContainerState {
    /// Layer directory names under the store's `layers/`, bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The image configuration.
    #[serde(default)]
    pub config: ImageConfig,
    /// Mounts by absolute path, in the order they were added (secrets apart, in `secret_mounts`).
    #[serde(default)]
    pub mounts: Vec<(String, MountSource)>,
    /// Secrets mounted as files, in the order they were added.
    #[serde(default)]
    pub secret_mounts: Vec<SecretMount>,
    /// The platform (`linux/amd64`).
    #[serde(default)]
    pub platform: String,
    /// The image it came from (`imageRef`).
    #[serde(default)]
    pub image_ref: String,
    /// The last exec's result.
    #[serde(default)]
    pub exec: Option<ExecResult>,
    /// Environment variables whose value is a secret.
    #[serde(default)]
    pub secret_env: Vec<(String, Digest)>,
    /// Registry credentials: address, user name, secret.
    #[serde(default)]
    pub registry_auth: Vec<(String, String, Digest)>,
    /// Exposed ports whose health check is skipped when the container runs as a service: port, protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked_ports: Vec<(i64, String)>,
    /// Services bound to the container (`withServiceBinding`): each exec starts them first and reaches each
    /// under its alias. The service's ID is part of the container's identity; its address is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceBinding>,
}

/// A service bound to a container under an alias.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceBinding {
    /// The host name execs reach the service at.
    pub alias: String,
    /// The service object.
    pub service: Digest,
}

impl ContainerState {
    /// Whether every layer is still on disk (a pruned cache may have removed some).
    pub(crate) fn intact(&self, store: &crate::store::Store) -> bool {
        self.layers.iter().all(|l| layers_dir(store).join(l).is_dir())
    }

    pub(crate) fn env_value(&self, name: &str) -> Option<String> {
        self.config
            .env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
    }

    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        self.config
            .env
            .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(name));
        self.config.env.push(format!("{name}={value}"));
    }

    /// An absolute, normalized container path for `path` (relative ones resolve against the workdir).
    pub(crate) fn abs(&self, path: &str) -> Result<String, OpError> {
        let joined = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", self.workdir())
        };
        Ok(format!("/{}", normalize(&joined)?))
    }

    pub(crate) fn workdir(&self) -> &str {
        if self.config.workdir.is_empty() {
            "/"
        } else {
            &self.config.workdir
        }
    }

    /// The mount holding `path`, and the rest of the path inside it.
    pub(crate) fn mount_at(&self, path: &str) -> Option<(&str, &MountSource, String)> {
        self.mounts.iter().rev().find_map(|(m, src)| {
            let rest = if path == m {
                ""
            } else {
                path.strip_prefix(m.as_str())?.strip_prefix('/')?
            };
            Some((m.as_str(), src, rest.to_owned()))
        })
    }

    /// Removes the mount at exactly `path`, and the secret mounted there (the last of each, as Dagger's
    /// `withoutMount` does); mounts below it stay.
    pub(crate) fn unmount(&mut self, path: &str) {
        if let Some(i) = self.mounts.iter().rposition(|(m, _)| m == path) {
            self.mounts.remove(i);
        }
        if let Some(i) = self.secret_mounts.iter().rposition(|s| s.path == path) {
            self.secret_mounts.remove(i);
        }
    }

    pub(crate) fn add_mount(&mut self, path: String, src: MountSource) {
        // A mount replaces any mount at or below its path.
        self.mounts
            .retain(|(m, _)| m != &path && !m.starts_with(&format!("{}/", path.trim_end_matches('/'))));
        self.mounts.push((path, src));
    }
}

/// The name of the layer a call makes (a file operation or an exec): its digest salted with
/// [`OPS_EPOCH`](crate::ops::epoch::OPS_EPOCH), so a layer an engine with other operations made under the
/// same call is never reused.
pub(crate) fn layer_name(d: &Digest) -> String {
    Digest::of(format!("{}/layer/{d}", crate::ops::epoch::OPS_EPOCH).as_bytes()).to_string()
}

/// Where layers live.
pub(crate) fn layers_dir(store: &crate::store::Store) -> PathBuf {
    store.root().join("layers")
}

/// Expands `$NAME` and `${NAME}` from the container's environment as Go's `os.Expand` (which Dagger uses)
/// does: unset variables expand to nothing, a `$` followed by no name stays, `${}` and an unclosed `${` are
/// dropped, and `$0`…`$9`, `$*`, `$#`, `$$`, `$@`, `$!`, `$?`, `$-` are one-character names. A name that is
/// a secret variable of the container is an error: its value must never land in a path or an argument.
pub(crate) fn expand(text: &str, state: &ContainerState) -> Result<String, OpError> {
    fn special(c: u8) -> bool {
        matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9')
    }
    fn alnum(c: u8) -> bool {
        c == b'_' || c.is_ascii_alphanumeric()
    }
    /// The name after a `$` and how many bytes it takes (a name of `""` with a width: bad syntax, dropped).
    fn shell_name(s: &[u8]) -> (&[u8], usize) {
        if s[0] == b'{' {
            if s.len() > 2 && special(s[1]) && s[2] == b'}' {
                return (&s[1..2], 3);
            }
            return match s.iter().skip(1).position(|&c| c == b'}') {
                Some(0) => (&[], 2),
                Some(i) => (&s[1..=i], i + 2),
                None => (&[], 1),
            };
        }
        if special(s[0]) {
            return (&s[..1], 1);
        }
        let n = s.iter().take_while(|&&c| alnum(c)).count();
        (&s[..n], n)
    }
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let (mut i, mut j) = (0, 0);
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.extend_from_slice(&bytes[i..j]);
            let (name, w) = shell_name(&bytes[j + 1..]);
            if name.is_empty() {
                if w == 0 {
                    out.push(b'$');
                }
            } else {
                let name = String::from_utf8_lossy(name);
                if state.secret_env.iter().any(|(n, _)| *n == name) {
                    return Err(OpError::new(format!(
                        "expand cannot be used with secret env variable {name:?}"
                    )));
                }
                out.extend_from_slice(state.env_value(&name).unwrap_or_default().as_bytes());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.extend_from_slice(&bytes[i.min(bytes.len())..]);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `text` expanded (see [`expand`]) when `expand_it`, else as it is.
pub(crate) fn expand_if(text: &str, state: &ContainerState, expand_it: bool) -> Result<String, OpError> {
    if expand_it {
        expand(text, state)
    } else {
        Ok(text.to_owned())
    }
}

/// A path argument, expanded from the environment when `expand`, made absolute against the workdir.
pub(crate) fn path_in(state: &ContainerState, path: &str, expand_it: bool) -> Result<String, OpError> {
    state.abs(&expand_if(path, state, expand_it)?)
}

/// The records behind `envVariables`, `labels` and `exposedPorts`.
pub(crate) fn records(st: &ContainerState, field: &str) -> Option<Vec<Map<String, Value>>> {
    let pair = |n: &str, v: &str| {
        let mut m = Map::new();
        m.insert("name".into(), json!(n));
        m.insert("value".into(), json!(v));
        m
    };
    Some(match field {
        "envVariables" => st
            .config
            .env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                pair(k, v)
            })
            .collect(),
        "labels" => st.config.labels.iter().map(|(k, v)| pair(k, v)).collect(),
        "exposedPorts" => st
            .config
            .ports
            .iter()
            .map(|(port, protocol, description)| {
                let mut m = Map::new();
                m.insert("port".into(), json!(port));
                m.insert("protocol".into(), json!(protocol));
                m.insert("description".into(), json!(description));
                let skipped = st
                    .unchecked_ports
                    .iter()
                    .any(|(p, proto)| p == port && proto == protocol);
                m.insert("experimentalSkipHealthcheck".into(), json!(skipped));
                m
            })
            .collect(),
        _ => return None,
    })
}

/// An edit of a container's state alone.
pub(crate) type StateEdit = Box<dyn FnOnce(&mut ContainerState) -> Result<(), OpError> + Send>;

/// The edit `field` makes to the state alone (`withEnvVariable`, `withWorkdir`, `withUser`, `withLabel`,
/// `withExposedPort`, …); the field back when it is not one of them.
// The field is handed back by value when it is not this group's: once per call, not worth a box.
#[allow(clippy::result_large_err)]
pub(crate) fn edit(field: ContainerField) -> Result<StateEdit, ContainerField> {
    use ContainerField as F;
    fn boxed(f: impl FnOnce(&mut ContainerState) -> Result<(), OpError> + Send + 'static) -> StateEdit {
        Box::new(f)
    }
    Ok(match field {
        F::WithEnvVariable(a) => boxed(move |st| {
            let value = expand_if(&a.value, st, a.expand)?;
            st.set_env(&a.name, &value);
            Ok(())
        }),
        F::WithoutEnvVariable(a) => boxed(move |st| {
            st.config
                .env
                .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(a.name.as_str()));
            Ok(())
        }),
        F::WithSecretVariable(a) => boxed(move |st| {
            st.secret_env.retain(|(n, _)| *n != a.name);
            st.secret_env.push((a.name, a.secret));
            Ok(())
        }),
        F::WithoutSecretVariable(a) => boxed(move |st| {
            st.secret_env.retain(|(n, _)| *n != a.name);
            Ok(())
        }),
        F::WithWorkdir(a) => boxed(move |st| {
            st.config.workdir = path_in(st, &a.path, a.expand)?;
            Ok(())
        }),
        F::WithoutWorkdir => boxed(|st| {
            st.config.workdir.clear();
            Ok(())
        }),
        F::WithUser(a) => boxed(move |st| {
            st.config.user = a.name;
            Ok(())
        }),
        F::WithoutUser => boxed(|st| {
            st.config.user.clear();
            Ok(())
        }),
        F::WithEntrypoint(a) => boxed(move |st| {
            st.config.entrypoint = a.args;
            if !a.keep_default_args {
                st.config.cmd.clear();
            }
            Ok(())
        }),
        F::WithoutEntrypoint(a) => boxed(move |st| {
            st.config.entrypoint.clear();
            if !a.keep_default_args {
                st.config.cmd.clear();
            }
            Ok(())
        }),
        F::WithDefaultArgs(a) => boxed(move |st| {
            st.config.cmd = a.args;
            Ok(())
        }),
        F::WithoutDefaultArgs => boxed(|st| {
            st.config.cmd.clear();
            Ok(())
        }),
        F::WithLabel(a) => boxed(move |st| {
            st.config.labels.insert(a.name, a.value);
            Ok(())
        }),
        F::WithoutLabel(a) => boxed(move |st| {
            st.config.labels.remove(&a.name);
            Ok(())
        }),
        F::WithExposedPort(a) => {
            boxed(move |st| with_exposed_port(st, a.port, a.protocol, a.description, a.experimental_skip_healthcheck))
        }
        F::WithoutExposedPort(a) => boxed(move |st| {
            let protocol = a.protocol.as_str();
            st.config
                .ports
                .retain(|(p, proto, _)| !(*p == a.port && proto == protocol));
            st.unchecked_ports
                .retain(|(p, proto)| !(*p == a.port && proto == protocol));
            Ok(())
        }),
        F::WithServiceBinding(a) => boxed(move |st| with_service_binding(st, a.alias, a.service)),
        F::WithRegistryAuth(a) => boxed(move |st| {
            st.registry_auth.retain(|(addr, _, _)| *addr != a.address);
            st.registry_auth.push((a.address, a.username, a.secret));
            Ok(())
        }),
        other => return Err(other),
    })
}

/// `withExposedPort`: a port in range, replacing the same port and protocol.
fn with_exposed_port(
    st: &mut ContainerState,
    port: i64,
    protocol: NetworkProtocol,
    description: Option<String>,
    skip_healthcheck: bool,
) -> Result<(), OpError> {
    if !(1..=65535).contains(&port) {
        return Err(OpError::new(format!("port {port} is out of range (1-65535)")));
    }
    let protocol = protocol.as_str().to_owned();
    st.config
        .ports
        .retain(|(p, proto, _)| !(*p == port && *proto == protocol));
    st.unchecked_ports
        .retain(|(p, proto)| !(*p == port && *proto == protocol));
    if skip_healthcheck {
        st.unchecked_ports.push((port, protocol.clone()));
    }
    st.config.ports.push((port, protocol, description));
    Ok(())
}

/// `withServiceBinding`: the alias must be a host name; a binding under the same alias is replaced.
fn with_service_binding(st: &mut ContainerState, alias: String, service: Digest) -> Result<(), OpError> {
    check_host_name(&alias).map_err(|why| OpError::new(format!("service alias `{alias}` {why}")))?;
    st.services.retain(|b| b.alias != alias);
    st.services.push(ServiceBinding { alias, service });
    Ok(())
}

/// Whether `name` can be written in a hosts file and looked up: dot-separated labels of letters, digits and
/// `-` (not at either end of a label), at most 63 characters each and 253 in all. The reason when not.
pub(crate) fn check_host_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name: it must have 1 to 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("is not a host name: use letters, digits, `-` and `.` (labels of 1 to 63 characters, no `-` at either end)")
    }
}

/// The platform containers get when none is asked for.
pub(crate) fn default_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        "riscv64" => "linux/riscv64",
        "s390x" => "linux/s390x",
        "powerpc64" => "linux/ppc64le",
        _ => "linux/amd64",
    }
}

#[cfg(test)]
mod tests {
    //! Pure state edits: no engine, no filesystem, no root.

    use super::*;

    /// Applies `field` with `args` to `st`; `Ok(false)` when it is not a state edit.
    fn apply(st: &mut ContainerState, field: &str, args: Value) -> Result<bool, OpError> {
        let field = ContainerField::parse(field, args.as_object().expect("object")).map_err(OpError::from)?;
        match edit(field) {
            Ok(e) => e(st).map(|()| true),
            Err(_) => Ok(false),
        }
    }

    fn edited(fields: &[(&str, Value)]) -> ContainerState {
        let mut st = ContainerState::default();
        for (field, args) in fields {
            assert_eq!(
                apply(&mut st, field, args.clone()).map_err(|e| e.message),
                Ok(true),
                "{field}"
            );
        }
        st
    }

    #[test]
    fn env_variables_replace_by_name_and_expand_from_the_environment() {
        let st = edited(&[
            ("withEnvVariable", json!({ "name": "A", "value": "1" })),
            ("withEnvVariable", json!({ "name": "B", "value": "x" })),
            (
                "withEnvVariable",
                json!({ "name": "A", "value": "$B-${B}-$NONE-$", "expand": true }),
            ),
            ("withEnvVariable", json!({ "name": "C", "value": "$A" })),
        ]);
        assert_eq!(st.config.env, ["B=x", "A=x-x--$", "C=$A"]);
        assert_eq!(st.env_value("A").as_deref(), Some("x-x--$"));
        let st = {
            let mut st = st;
            apply(&mut st, "withoutEnvVariable", json!({ "name": "B" })).expect("edit");
            st
        };
        assert_eq!(st.config.env, ["A=x-x--$", "C=$A"]);
        let names: Vec<Value> = records(&st, "envVariables")
            .expect("records")
            .iter()
            .map(|r| r["name"].clone())
            .collect();
        assert_eq!(names, [json!("A"), json!("C")]);
    }

    #[test]
    fn workdir_resolves_against_the_previous_one_and_paths_against_it() {
        let mut st = edited(&[
            ("withWorkdir", json!({ "path": "/src" })),
            ("withWorkdir", json!({ "path": "app/../lib" })),
        ]);
        assert_eq!(st.workdir(), "/src/lib");
        assert_eq!(st.abs("x/y").map_err(|e| e.message), Ok("/src/lib/x/y".to_owned()));
        assert_eq!(st.abs("/etc").map_err(|e| e.message), Ok("/etc".to_owned()));
        apply(&mut st, "withoutWorkdir", json!({})).expect("edit");
        assert_eq!(st.workdir(), "/");
    }

    #[test]
    fn entrypoint_clears_default_args_unless_asked_to_keep_them() {
        let st = edited(&[
            ("withDefaultArgs", json!({ "args": ["a", "b"] })),
            (
                "withEntrypoint",
                json!({ "args": ["sh", "-c"], "keepDefaultArgs": true }),
            ),
        ]);
        assert_eq!(
            (st.config.entrypoint.as_slice(), st.config.cmd.as_slice()),
            (
                &["sh".to_owned(), "-c".to_owned()][..],
                &["a".to_owned(), "b".to_owned()][..]
            )
        );
        let mut st = st;
        apply(&mut st, "withEntrypoint", json!({ "args": ["bash"] })).expect("edit");
        assert!(st.config.cmd.is_empty());
        apply(&mut st, "withDefaultArgs", json!({ "args": ["x"] })).expect("edit");
        apply(&mut st, "withoutEntrypoint", json!({ "keepDefaultArgs": true })).expect("edit");
        assert_eq!(
            (st.config.entrypoint.len(), st.config.cmd.as_slice()),
            (0, &["x".to_owned()][..])
        );
    }

    #[test]
    fn user_labels_and_secret_variables() {
        let mut st = edited(&[
            ("withUser", json!({ "name": "1000:1000" })),
            ("withLabel", json!({ "name": "a", "value": "1" })),
            ("withLabel", json!({ "name": "a", "value": "2" })),
            ("withLabel", json!({ "name": "b", "value": "3" })),
            (
                "withSecretVariable",
                json!({ "name": "TOKEN", "secret": { "$id": Digest::of(b"one") } }),
            ),
            (
                "withSecretVariable",
                json!({ "name": "TOKEN", "secret": { "$id": Digest::of(b"two") } }),
            ),
        ]);
        assert_eq!(st.config.user, "1000:1000");
        assert_eq!(st.config.labels.get("a").map(String::as_str), Some("2"));
        assert_eq!(st.secret_env, [("TOKEN".to_owned(), Digest::of(b"two"))]);
        for (field, args) in [
            ("withoutUser", json!({})),
            ("withoutLabel", json!({ "name": "a" })),
            ("withoutSecretVariable", json!({ "name": "TOKEN" })),
        ] {
            apply(&mut st, field, args).expect("edit");
        }
        assert_eq!(st.config.user, "");
        assert_eq!(st.config.labels.keys().collect::<Vec<_>>(), ["b"]);
        assert!(st.secret_env.is_empty());
        let missing = apply(&mut st, "withSecretVariable", json!({ "name": "X" })).expect_err("no secret");
        assert!(missing.message.contains("`secret`: missing"), "{}", missing.message);
    }

    #[test]
    fn exposed_ports_are_checked_and_replaced_by_port_and_protocol() {
        let mut st = edited(&[
            ("withExposedPort", json!({ "port": 80 })),
            ("withExposedPort", json!({ "port": 80, "protocol": "UDP" })),
            ("withExposedPort", json!({ "port": 80, "description": "web" })),
        ]);
        assert_eq!(
            st.config.ports,
            [
                (80, "UDP".to_owned(), None),
                (80, "TCP".to_owned(), Some("web".to_owned()))
            ]
        );
        for port in [0, 65536, -1] {
            let err = apply(&mut st, "withExposedPort", json!({ "port": port })).expect_err("out of range");
            assert!(err.message.contains("out of range"), "{}", err.message);
        }
        let ports = records(&st, "exposedPorts").expect("records");
        assert_eq!(ports[1]["description"], "web");
        assert_eq!(ports[1]["experimentalSkipHealthcheck"], false);
        apply(
            &mut st,
            "withExposedPort",
            json!({ "port": 53, "protocol": "UDP", "experimentalSkipHealthcheck": true }),
        )
        .expect("edit");
        let ports = records(&st, "exposedPorts").expect("records");
        assert_eq!(
            (
                ports[2]["port"].clone(),
                ports[2]["experimentalSkipHealthcheck"].clone()
            ),
            (json!(53), json!(true))
        );
        // Exposed again without skipping: checked again.
        apply(&mut st, "withExposedPort", json!({ "port": 53, "protocol": "UDP" })).expect("edit");
        assert!(st.unchecked_ports.is_empty());
        // Removed by port and protocol (TCP unless said); a port not declared changes nothing.
        apply(
            &mut st,
            "withExposedPort",
            json!({ "port": 9, "experimentalSkipHealthcheck": true }),
        )
        .expect("edit");
        apply(&mut st, "withoutExposedPort", json!({ "port": 80 })).expect("edit");
        apply(&mut st, "withoutExposedPort", json!({ "port": 53, "protocol": "UDP" })).expect("edit");
        apply(&mut st, "withoutExposedPort", json!({ "port": 9 })).expect("edit");
        apply(&mut st, "withoutExposedPort", json!({ "port": 1234 })).expect("edit");
        assert_eq!(st.config.ports, [(80, "UDP".to_owned(), None)]);
        assert!(st.unchecked_ports.is_empty(), "{:?}", st.unchecked_ports);
    }

    #[test]
    fn service_bindings_replace_by_alias_and_need_a_host_name() {
        let (one, two) = (Digest::of(b"one"), Digest::of(b"two"));
        let mut st = edited(&[
            (
                "withServiceBinding",
                json!({ "alias": "db", "service": { "$id": one } }),
            ),
            (
                "withServiceBinding",
                json!({ "alias": "web", "service": { "$id": one } }),
            ),
            (
                "withServiceBinding",
                json!({ "alias": "db", "service": { "$id": two } }),
            ),
        ]);
        let bound: Vec<(&str, &Digest)> = st.services.iter().map(|b| (b.alias.as_str(), &b.service)).collect();
        assert_eq!(bound, [("web", &one), ("db", &two)]);
        for bad in ["", "a b", "-db", "db-", "x/y", &"a".repeat(64)] {
            let err = apply(
                &mut st,
                "withServiceBinding",
                json!({ "alias": bad, "service": { "$id": one } }),
            )
            .expect_err(bad);
            assert!(err.message.contains("is not a host name"), "{bad}: {}", err.message);
        }
        assert_eq!(check_host_name("db.internal-1"), Ok(()));
    }

    #[test]
    fn containers_without_services_keep_their_stored_form() {
        // Results on disk from before services had no such fields; a container without them is stored as
        // before, so its form (and what older results read back as) does not change.
        let json = serde_json::to_value(ContainerState::default()).expect("json");
        assert!(
            json.get("services").is_none() && json.get("unchecked_ports").is_none(),
            "{json}"
        );
        let back: ContainerState = serde_json::from_value(json).expect("back");
        assert_eq!(back, ContainerState::default());
    }

    #[test]
    fn other_fields_are_not_state_edits() {
        let mut st = ContainerState::default();
        let d = json!({ "$id": Digest::of(b"x") });
        for (field, args) in [
            ("withExec", json!({ "args": ["true"] })),
            ("withNewFile", json!({ "path": "/f" })),
            ("withMountedCache", json!({ "path": "/c", "cache": d })),
            ("from", json!({ "address": "busybox" })),
        ] {
            assert_eq!(apply(&mut st, field, args).map_err(|e| e.message), Ok(false), "{field}");
        }
        assert_eq!(st, ContainerState::default());
    }

    #[test]
    fn paths_expand_only_when_asked_and_resolve_against_the_workdir() {
        let mut st = ContainerState::default();
        st.set_env("DIR", "data");
        st.config.workdir = "/srv".into();
        assert_eq!(
            path_in(&st, "$DIR/x", true).map_err(|e| e.message),
            Ok("/srv/data/x".to_owned())
        );
        assert_eq!(
            path_in(&st, "${DIR}", false).map_err(|e| e.message),
            Ok("/srv/${DIR}".to_owned())
        );
        assert_eq!(
            path_in(&st, "/abs/../etc", false).map_err(|e| e.message),
            Ok("/etc".to_owned())
        );
        let ex = |t: &str| expand(t, &st).map_err(|e| e.message);
        assert_eq!(ex("a-$NOPE-b"), Ok("a--b".into()), "unset variables expand to nothing");
        assert_eq!(ex("cost: 5$"), Ok("cost: 5$".into()), "a lone `$` stays");
        // As Go's os.Expand: bad syntax is dropped, special names take one character.
        assert_eq!(ex("${}x${DIR"), Ok("xDIR".into()));
        assert_eq!(ex("$1$DIR-$%"), Ok("data-$%".into()));
        assert_eq!(ex("${DIR}/${#}"), Ok("data/".into()));
    }

    #[test]
    fn expanding_a_secret_variable_is_an_error() {
        // Dagger's `TestEnvExpand` (container_test.go): a secret's value must never reach a path or an argument.
        let mut st = ContainerState::default();
        st.set_env("DIR", "data");
        st.secret_env.push(("TOKEN".into(), Digest::of(b"secret")));
        let want = Err("expand cannot be used with secret env variable \"TOKEN\"".to_owned());
        assert_eq!(expand("/x/${TOKEN}", &st).map_err(|e| e.message), want);
        assert_eq!(path_in(&st, "$TOKEN/$DIR", true).map_err(|e| e.message), want);
        assert_eq!(
            path_in(&st, "$TOKEN/$DIR", false).map_err(|e| e.message),
            Ok("/$TOKEN/$DIR".to_owned()),
            "without `expand` nothing is looked up"
        );
        let err = apply(
            &mut st,
            "withEnvVariable",
            json!({ "name": "X", "value": "${TOKEN}", "expand": true }),
        )
        .expect_err("a secret");
        assert_eq!(Err(err.message), want);
    }

    #[test]
    fn layers_of_calls_are_named_by_the_call_and_the_epoch_of_the_operations() {
        let d = Digest::of(b"call");
        assert_eq!(layer_name(&d), layer_name(&d), "one call, one layer");
        assert_ne!(
            layer_name(&d),
            d.to_string(),
            "not the bare call digest an older engine used"
        );
        assert_ne!(layer_name(&d), layer_name(&Digest::of(b"other")));
    }

    #[test]
    fn mounts_replace_what_is_at_or_below_their_path() {
        let mut st = ContainerState::default();
        st.add_mount("/a/b".into(), MountSource::Temp { size: None });
        st.add_mount("/a/bc".into(), MountSource::Temp { size: None });
        st.add_mount("/a".into(), MountSource::Temp { size: Some(1) });
        let paths: Vec<&str> = st.mounts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/a"]);
        let (at, _, rest) = st.mount_at("/a/x/y").expect("mount");
        assert_eq!((at, rest.as_str()), ("/a", "x/y"));
        assert!(st.mount_at("/ab").is_none());
    }
}
