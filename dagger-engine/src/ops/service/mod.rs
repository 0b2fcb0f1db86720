//! `Service`: its fields, and how services come to be. A service is a container run as a long-lived process that execs reach over the network
//! (`Container.asService`, bound with `Container.withServiceBinding`), a way from containers to ports of the
//! client's host (`Host.service`), and a way from the client's host to a service (`Host.tunnel`,
//! `Service.up`).
//!
//!
//! A service is a value like any other: its ID is the call that made it, and its hostname is derived from
//! that ID (a short base32 form of the digest), so it is the same in every session; `withHostname` replaces
//! it. Running one is the worker's job ([`crate::worker::service`]): one instance per service ID per session,
//! started when a dependent exec (or `start`) needs it, shared, and stopped after the last dependent.
//!
//! As root, a bound service is reached at its address on the session's bridge, which the exec's hosts file
//! gives its alias and hostname. Rootless, containers have a network each (served by its own `slirp4netns`)
//! and cannot reach each other: the hosts file names a loopback address of the exec's own namespace
//! (`127.0.0.2` on, one per service), where the engine listens on the service's exposed TCP ports and passes
//! each connection on from inside the service's namespace (see [`run::Bindings::connect`]).
//!
//! An exec that binds a service is cached like any other: its key holds the service's ID, never the address
//! the service got when it ran.

//!
//! [`def`] says what a service is (pure), [`run`](mod@run) runs them.

pub(crate) mod def;
pub(crate) mod run;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::ids::{Digest, format_id};
use crate::ops::container::state::check_host_name;
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::ServiceField;
use crate::ops::op::{Op, run};
use crate::ops::service::def::{ServiceDef, ServiceKind, endpoint, forwards, hostname};
use crate::ops::service::run::{port_numbers, start, up};
use crate::ops::value::Evaluated;

/// `Host.service`: containers reach the given ports of the client's host (its loopback only).
pub(crate) fn host_service(a: crate::ops::fields::HostService) -> Option<Op> {
    run(move |_| async move {
        if !matches!(a.host.as_str(), "localhost" | "127.0.0.1") {
            return Err(OpError::new(format!(
                "`Host.service(host: \"{}\")`: this engine forwards to the client host's loopback only; use \
                 `localhost` or `127.0.0.1`",
                a.host
            )));
        }
        if a.ports.is_empty() {
            return Err(OpError::new("`Host.service`: give at least one port to forward"));
        }
        Ok(Evaluated::Service(Box::new(ServiceDef {
            what: ServiceKind::Host {
                ports: forwards("Host.service", &a.ports)?,
            },
            hostname: None,
        })))
    })
}

/// `Host.tunnel`: a service's ports on the client host's loopback.
pub(crate) fn host_tunnel(a: crate::ops::fields::HostTunnel) -> Option<Op> {
    run(move |cx| async move {
        let Evaluated::Service(_) = &*cx.eval(&a.service).await? else {
            return Err(OpError::new("`service` is not a service"));
        };
        let mut ports = forwards("Host.tunnel", &a.ports)?;
        // A port given without a frontend gets a free one, unless `native`.
        for (f, given) in ports.iter_mut().zip(&a.ports) {
            if given.frontend.is_none() && !a.native {
                f.frontend = 0;
            }
        }
        Ok(Evaluated::Service(Box::new(ServiceDef {
            what: ServiceKind::Tunnel {
                upstream: a.service,
                ports,
                native: a.native,
            },
            hostname: None,
        })))
    })
}

/// The op computing a builder field of a service; `None` for a field this engine does not implement.
pub(crate) fn op(field: ServiceField) -> Option<Op> {
    match field {
        ServiceField::WithHostname(a) => run(move |cx| async move {
            let Evaluated::Service(def) = cx.parent()? else {
                return Err(OpError::new("internal error: expected a service"));
            };
            check_host_name(&a.hostname).map_err(|why| OpError::new(format!("hostname `{}` {why}", a.hostname)))?;
            let mut def = def.clone();
            def.hostname = Some(a.hostname);
            Ok(Evaluated::Service(def))
        }),
        _ => None,
    }
}

/// Computes a leaf of the service `def`, the object `d`.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    field: ServiceField,
    def: &ServiceDef,
    d: &Digest,
) -> Result<Value, OpError> {
    Ok(match field {
        ServiceField::Hostname => json!(hostname(def, d)),
        ServiceField::Endpoint(a) => {
            let ports = match a.port {
                Some(_) => Vec::new(),
                None => port_numbers(engine, def, d).await?,
            };
            json!(endpoint(&hostname(def, d), &ports, a.port, &a.scheme)?)
        }
        ServiceField::Start => {
            start(engine, d).await?;
            json!(format_id("Service", d))
        }
        ServiceField::Stop(a) => {
            engine.services.stop(d, a.kill).await;
            json!(format_id("Service", d))
        }
        ServiceField::Up(a) => {
            up(engine, def, d, &a.ports, a.random).await?;
            Value::Null
        }
        other => return Err(OpError::unsupported("Service", other.name())),
    })
}

#[cfg(test)]
mod tests {
    //! Service fields that need no runtime: hostnames, ports and endpoints of a service that is not running,
    //! `withHostname`, host services.

    use serde_json::Value;

    use super::*;
    use crate::ops::container::state::ContainerState;
    use crate::ops::fields::ContainerAsService;
    use crate::ops::op::testing::{self, engine, object};
    use crate::ops::service::def::{Forward, hostname_of, service_command};
    use crate::ops::service::run::port_records;

    #[tokio::test]
    async fn services_answer_their_hostname_ports_and_endpoint_without_running() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let mut st = ContainerState::default();
        for (port, description) in [(8080, Some("web".to_owned())), (9090, None)] {
            st.config.ports.push((port, "TCP".into(), description));
        }
        let a = ContainerAsService::parse(json!({ "args": ["httpd"] }).as_object().expect("o")).expect("args");
        let svc = Evaluated::Service(Box::new(ServiceDef {
            what: ServiceKind::Container {
                args: service_command(&st, &a).expect("command"),
                container: Box::new(st),
                privileged: false,
            },
            hostname: None,
        }));
        let d = object(&e, svc.clone());
        let Evaluated::Service(def) = &svc else {
            panic!("a service");
        };
        let read = |field: &str, args: Value| {
            let f = ServiceField::parse(field, args.as_object().expect("o")).expect("field");
            let (e, def, d) = (e.clone(), def.clone(), d.clone());
            async move { leaf(&e, f, &def, &d).await.map_err(|e| e.message) }
        };
        let host = hostname_of(&d);
        assert_eq!(read("hostname", json!({})).await, Ok(json!(host)));
        assert_eq!(read("endpoint", json!({})).await, Ok(json!(format!("{host}:8080"))));
        assert_eq!(
            read("endpoint", json!({ "port": 9090, "scheme": "http" })).await,
            Ok(json!(format!("http://{host}:9090")))
        );
        let ports = port_records(&e, def, &d).await.expect("ports");
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0]["port"].clone(), ports[0]["description"].clone()),
            (json!(8080), json!("web"))
        );
        let renamed = testing::apply(
            &e,
            svc.clone(),
            op(ServiceField::parse("withHostname", json!({ "hostname": "web" }).as_object().expect("o")).expect("f")),
        )
        .await
        .expect("withHostname");
        let Evaluated::Service(renamed) = renamed else {
            panic!("a service");
        };
        assert_eq!(hostname(&renamed, &d), "web");
        let bad = testing::apply(
            &e,
            svc,
            op(
                ServiceField::parse("withHostname", json!({ "hostname": "no way" }).as_object().expect("o"))
                    .expect("f"),
            ),
        )
        .await
        .expect_err("not a host name");
        assert!(bad.message.contains("is not a host name"), "{}", bad.message);
    }

    #[tokio::test]
    async fn host_services_forward_to_loopback_only() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let host = |v: Value| {
            let a = crate::ops::fields::HostService::parse(v.as_object().expect("o")).expect("args");
            let e = e.clone();
            async move {
                testing::apply(&e, Evaluated::Host, host_service(a))
                    .await
                    .map_err(|e| e.message)
            }
        };
        let v = host(json!({ "ports": [{ "frontend": 80, "backend": 8080 }] }))
            .await
            .expect("loopback");
        assert!(matches!(v, Evaluated::Service(def) if def.what == ServiceKind::Host {
            ports: vec![Forward { frontend: 80, backend: 8080 }]
        }));
        let err = host(json!({ "ports": [{ "backend": 80 }], "host": "example.com" }))
            .await
            .expect_err("remote");
        assert!(err.contains("loopback only"), "{err}");
    }
}
