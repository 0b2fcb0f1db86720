//! What a service is (its definition, a value like any other) and the pure steps about it: its hostname,
//! derived from its ID, its endpoint, the command line of a container service, forwarded ports.

use serde::{Deserialize, Serialize};

use crate::model::ids::Digest;
use crate::ops::container::state::{ContainerState, expand};
use crate::ops::error::OpError;
use crate::ops::fields::{ContainerAsService, NetworkProtocol, PortForward};

/// What a service is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceDef {
    /// What runs.
    pub(crate) what: ServiceKind,
    /// The hostname `withHostname` gave, if any.
    #[serde(default)]
    pub(crate) hostname: Option<String>,
}

/// What runs for a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(crate) enum ServiceKind {
    /// A container's process (`Container.asService`).
    Container {
        /// The container.
        container: Box<ContainerState>,
        /// The command line.
        args: Vec<String>,
        /// Run with every capability (`insecureRootCapabilities`).
        privileged: bool,
    },
    /// Ports of the client's host, reached from containers (`Host.service`).
    Host {
        /// The ports: what containers connect to, and the host's port it is forwarded to.
        ports: Vec<Forward>,
    },
    /// A service's ports on the client host's loopback (`Host.tunnel`).
    Tunnel {
        /// The service.
        upstream: Digest,
        /// The ports; a frontend of 0 is chosen when the tunnel starts.
        ports: Vec<Forward>,
        /// When `ports` is empty: forward every exposed port to the same number (else to free ones).
        native: bool,
    },
}

/// One forwarded TCP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Forward {
    /// The port that accepts connections (0: any free port).
    pub(crate) frontend: u16,
    /// The port connections go to.
    pub(crate) backend: u16,
}

/// Where a tunnel listens: the client host's loopback only.
pub(crate) const TUNNEL_HOST: &str = "127.0.0.1";

/// The hostname of the service whose ID is `d`: the first 64 bits of the digest in lowercase base32 (the
/// "extended hex" alphabet, no padding), 13 characters that make a valid host name label.
pub(crate) fn hostname_of(d: &Digest) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let hex = d.as_str();
    let bits = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    // 64 bits in 5-bit groups, the last group padded with a zero bit.
    (0..13)
        .map(|i| {
            let shift = 64i32 - 5 * (i + 1);
            let group = if shift >= 0 { bits >> shift } else { bits << -shift };
            ALPHABET[(group & 0x1f) as usize] as char
        })
        .collect()
}

/// The hostname of service `def`, the object `d`.
pub(crate) fn hostname(def: &ServiceDef, d: &Digest) -> String {
    match (&def.hostname, &def.what) {
        (Some(h), _) => h.clone(),
        (None, ServiceKind::Tunnel { .. }) => TUNNEL_HOST.to_owned(),
        (None, _) => hostname_of(d),
    }
}

/// `Service.endpoint`: `host:port`, or `scheme://host:port`; the first port when none is given.
pub(crate) fn endpoint(host: &str, ports: &[u16], port: Option<i64>, scheme: &str) -> Result<String, OpError> {
    let port = match port {
        Some(p) => p,
        None => i64::from(*ports.first().ok_or_else(|| {
            OpError::new("the service exposes no ports: give `endpoint` a `port`, or expose one with `withExposedPort`")
        })?),
    };
    Ok(if scheme.is_empty() {
        format!("{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

/// `Container.asService`: the command line as Dagger makes it. With `args`, they are the command (behind
/// the entrypoint when `useEntrypoint`); without, the container's default command: its entrypoint and
/// default arguments.
pub(crate) fn service_command(st: &ContainerState, a: &ContainerAsService) -> Result<Vec<String>, OpError> {
    if a.experimental_privileged_nesting {
        return Err(OpError::new(
            "`Container.asService(experimentalPrivilegedNesting: true)` is not supported by this engine yet",
        ));
    }
    if a.args.is_empty() && st.config.cmd.is_empty() && st.config.entrypoint.is_empty() {
        return Err(OpError::new(
            "no service command has been set: give `asService` its `args`, or give the container default arguments \
             (`withDefaultArgs`) or an entrypoint",
        ));
    }
    let mut argv = if a.args.is_empty() {
        st.config.cmd.clone()
    } else if a.expand {
        a.args.iter().map(|arg| expand(arg, st)).collect::<Result<_, _>>()?
    } else {
        a.args.clone()
    };
    if a.args.is_empty() || a.use_entrypoint {
        let mut full = st.config.entrypoint.clone();
        full.append(&mut argv);
        argv = full;
    }
    Ok(argv)
}

/// The TCP ports of a forwarding argument (`Host.service`, `Host.tunnel`, `Service.up`), checked: in range,
/// and TCP (UDP is not forwarded).
pub(crate) fn forwards(field: &str, ports: &[PortForward]) -> Result<Vec<Forward>, OpError> {
    let port = |p: i64| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| OpError::new(format!("`{field}`: port {p} is out of range (1-65535)")))
    };
    ports
        .iter()
        .map(|f| {
            if f.protocol != NetworkProtocol::Tcp {
                return Err(OpError::new(format!(
                    "`{field}`: forwarding {} ports is not supported by this engine yet; only TCP ports are",
                    f.protocol.as_str()
                )));
            }
            let backend = port(f.backend)?;
            Ok(Forward {
                frontend: match f.frontend {
                    Some(p) => port(p)?,
                    None => backend,
                },
                backend,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Hostnames, endpoints, command lines, port arguments: no engine, no runtime.

    use serde_json::{Value, json};

    use super::*;
    use crate::ops::container::state::check_host_name;

    fn as_service_args(v: Value) -> ContainerAsService {
        ContainerAsService::parse(v.as_object().expect("object")).expect("arguments")
    }

    #[test]
    fn hostnames_are_13_base32_characters_of_the_id() {
        let d = Digest::parse(&format!("{}{}", "0123456789abcdef", "0".repeat(48))).expect("digest");
        assert_eq!(hostname_of(&d), "04hkaps9lf6uu", "as base32hex writes 0123456789abcdef");
        let other = hostname_of(&Digest::of(b"another service"));
        assert_eq!(other.len(), 13);
        assert_eq!(check_host_name(&other), Ok(()));
        assert_eq!(hostname_of(&Digest::of(b"x")), hostname_of(&Digest::of(b"x")), "stable");
    }

    #[test]
    fn endpoints_use_the_port_given_or_the_first_exposed_one() {
        assert_eq!(
            endpoint("db", &[5432, 80], None, "").map_err(|e| e.message),
            Ok("db:5432".into())
        );
        assert_eq!(
            endpoint("db", &[5432], Some(8080), "http").map_err(|e| e.message),
            Ok("http://db:8080".into())
        );
        let none = endpoint("db", &[], None, "").expect_err("no ports");
        assert!(none.message.contains("exposes no ports"), "{}", none.message);
        assert_eq!(
            endpoint("db", &[], Some(1), "").map_err(|e| e.message),
            Ok("db:1".into())
        );
    }

    #[test]
    fn the_service_command_follows_args_the_entrypoint_and_default_args() {
        let mut st = ContainerState::default();
        st.config.entrypoint = vec!["/init".into()];
        st.config.cmd = vec!["serve".into()];
        st.set_env("PORT", "80");
        let cmd = |v: Value| service_command(&st, &as_service_args(v)).map_err(|e| e.message);
        assert_eq!(
            cmd(json!({})),
            Ok(vec!["/init".into(), "serve".into()]),
            "the image's own command"
        );
        assert_eq!(cmd(json!({ "args": ["httpd"] })), Ok(vec!["httpd".into()]));
        assert_eq!(
            cmd(json!({ "args": ["httpd", "-p", "$PORT"], "useEntrypoint": true, "expand": true })),
            Ok(vec!["/init".into(), "httpd".into(), "-p".into(), "80".into()])
        );
        let nesting = cmd(json!({ "args": ["x"], "experimentalPrivilegedNesting": true })).expect_err("refused");
        assert!(nesting.contains("experimentalPrivilegedNesting"), "{nesting}");
        let none = service_command(&ContainerState::default(), &as_service_args(json!({}))).expect_err("none");
        assert!(
            none.message.starts_with("no service command has been set"),
            "{}",
            none.message
        );
    }

    #[test]
    fn forwarded_ports_are_tcp_in_range_with_the_backend_as_the_default_frontend() {
        let parse = |v: Value| {
            let ports: Vec<PortForward> = v
                .as_array()
                .expect("array")
                .iter()
                .map(|p| crate::ops::args::Arg::from_value(p).expect("port"))
                .collect();
            forwards("Host.service", &ports).map_err(|e| e.message)
        };
        assert_eq!(
            parse(json!([{ "backend": 80 }, { "frontend": 8080, "backend": 80 }])),
            Ok(vec![
                Forward {
                    frontend: 80,
                    backend: 80
                },
                Forward {
                    frontend: 8080,
                    backend: 80
                }
            ])
        );
        assert!(parse(json!([{ "backend": 70000 }])).is_err_and(|e| e.contains("out of range")));
        assert!(parse(json!([{ "backend": 53, "protocol": "UDP" }])).is_err_and(|e| e.contains("UDP")));
    }
}
