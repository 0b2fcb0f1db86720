//! Running services for the session: starting a container service (its own bindings first, then its
//! process, then its health check), a host service (listeners on the bridge forwarding to the client host's
//! loopback), a tunnel (listeners on the host's loopback forwarding to a service), and binding services to
//! a container's exec.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Weak};

use serde_json::{Map, Value, json};

use crate::model::ids::Digest;
use crate::ops::container::state::ContainerState;
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::PortForward;
use crate::ops::service::def::{Forward, ServiceDef, ServiceKind, TUNNEL_HOST, forwards, hostname};
use crate::ops::value::Evaluated;
use crate::solver::events::{Event, EventKind, OpInfo, Role};
use crate::worker::network::Mode;
use crate::worker::network::inside::Inside;
use crate::worker::service::{AllowGuard, ContainerService, Reach, Running, ServiceError, ServiceLease, Upstream};

/// The ports a service exposes, as `Port` records (a tunnel's are known once it runs: it is started).
pub(crate) async fn port_records(
    engine: &Arc<Engine>,
    def: &ServiceDef,
    d: &Digest,
) -> Result<Vec<Map<String, Value>>, OpError> {
    let record = |port: u16, description: Option<String>| {
        let mut m = Map::new();
        m.insert("port".into(), json!(port));
        m.insert("protocol".into(), json!("TCP"));
        m.insert("description".into(), json!(description));
        m.insert("experimentalSkipHealthcheck".into(), json!(false));
        m
    };
    Ok(match &def.what {
        ServiceKind::Container { container, .. } => {
            crate::ops::container::state::records(container, "exposedPorts").unwrap_or_default()
        }
        ServiceKind::Host { ports } => ports.iter().map(|f| record(f.frontend, None)).collect(),
        ServiceKind::Tunnel { .. } => {
            let running = Box::pin(start(engine, d)).await?;
            running
                .ports
                .iter()
                .map(|p| record(*p, Some(format!("tunnel {TUNNEL_HOST}:{p}"))))
                .collect()
        }
    })
}

/// The port numbers of a service, in order.
pub(crate) async fn port_numbers(engine: &Arc<Engine>, def: &ServiceDef, d: &Digest) -> Result<Vec<u16>, OpError> {
    Ok(port_records(engine, def, d)
        .await?
        .iter()
        .filter_map(|r| r.get("port").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect())
}

/// Starts service `d` (when it is not running) and keeps it until `stop` or the end of the session.
pub(crate) async fn start(engine: &Arc<Engine>, d: &Digest) -> Result<Arc<Running>, OpError> {
    let (lease, _) = acquire(engine, d).await?;
    let running = lease.running().clone();
    engine.services.keep(lease);
    Ok(running)
}

/// `Service.up`: forwards the service's ports to the client host's loopback (the same numbers unless
/// `random` or `ports` say otherwise) and returns when the service stops.
pub(crate) async fn up(
    engine: &Arc<Engine>,
    def: &ServiceDef,
    d: &Digest,
    ports: &[PortForward],
    random: bool,
) -> Result<(), OpError> {
    if let ServiceKind::Tunnel { .. } = def.what {
        let running = start(engine, d).await?;
        running.wait().await;
        return Ok(());
    }
    let mut forwards = forwards("Service.up", ports)?;
    if forwards.is_empty() {
        forwards = port_numbers(engine, def, d)
            .await?
            .into_iter()
            .map(|p| Forward {
                frontend: if random { 0 } else { p },
                backend: p,
            })
            .collect();
    }
    if forwards.is_empty() {
        return Err(OpError::new(
            "`Service.up`: the service exposes no ports to forward: expose one with `withExposedPort`, or give `ports`",
        ));
    }
    let (lease, _) = acquire(engine, d).await?;
    let upstream = lease.running().clone();
    let tunnel = open_tunnel(lease, &forwards).await?;
    for p in &tunnel.ports {
        engine.emit_log("Service", d, format!("tunnel {TUNNEL_HOST}:{p} is open"));
    }
    upstream.wait().await;
    drop(tunnel);
    Ok(())
}

/// Listens on the client host's loopback for each of `forwards`, passing connections to the service of
/// `lease` (held until the tunnel is dropped).
async fn open_tunnel(lease: ServiceLease, forwards: &[Forward]) -> Result<Running, OpError> {
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    for f in forwards {
        let reach = &lease.running().reach;
        let Some(upstream) = reach.upstream(f.backend) else {
            return Err(OpError::new(match reach {
                Reach::Host => "a tunnel leads to a service containers reach, not to another tunnel".to_owned(),
                _ => format!("the service forwards no port {} to tunnel to", f.backend),
            }));
        };
        let listener = tokio::net::TcpListener::bind((TUNNEL_HOST, f.frontend))
            .await
            .map_err(|e| OpError::new(format!("cannot listen on {TUNNEL_HOST}:{}: {e}", f.frontend)))?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(f.frontend);
        ports.push(port);
        listeners.push((listener, upstream));
    }
    let task = crate::worker::service::spawn_forwarders(listeners, Box::new(lease), None);
    Ok(Running::task(Reach::Host, ports, task, None))
}

/// A lease on the running instance of service `d`, starting it when needed, and the service's hostname.
pub(crate) async fn acquire(engine: &Arc<Engine>, d: &Digest) -> Result<(ServiceLease, String), OpError> {
    let value = engine.eval(d).await?;
    let Evaluated::Service(def) = &*value else {
        return Err(OpError::new("`service` is not a service"));
    };
    let def = (**def).clone();
    let host = hostname(&def, d);
    let (e, key, name) = (engine.clone(), d.clone(), host.clone());
    let started = engine
        .services
        .acquire(d, move || async move {
            let begun = std::time::Instant::now();
            e.send_event(Event {
                info: Some(Box::new(OpInfo {
                    detail: format!("{name}: {}", what_runs(&def)),
                    args: [("hostname".to_owned(), json!(name))].into_iter().collect(),
                    inputs: Vec::new(),
                    role: Role::Work,
                })),
                ..Event::new("Service", short(&key), EventKind::Started)
            });
            let result = match &def.what {
                ServiceKind::Container {
                    container,
                    args,
                    privileged,
                } => start_container(&e, &key, &name, container, args.clone(), *privileged).await,
                ServiceKind::Host { ports } => start_host(&e, ports).await,
                ServiceKind::Tunnel {
                    upstream,
                    ports,
                    native,
                } => start_tunnel(&e, upstream, ports, *native).await,
            };
            match result {
                Ok(r) => {
                    let at = r.address().map(|a| format!(" at {a}")).unwrap_or_default();
                    let ms = u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX);
                    e.emit_log("Service", &key, format!("{name} is ready{at} ({ms} ms)"));
                    if matches!(def.what, ServiceKind::Container { .. }) {
                        // Its process's exit ends it, as events say (see `start_container`).
                        Ok(r)
                    } else {
                        let (events, key) = (Arc::downgrade(&e), key.clone());
                        Ok(r.on_drop(move || {
                            if let Some(e) = events.upgrade() {
                                let ms = u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX);
                                e.emit_event("Service", &key, EventKind::Done(ms));
                            }
                        }))
                    }
                }
                Err(err) => {
                    e.emit_event("Service", &key, EventKind::Failed(format!("service {name} {err}")));
                    Err(err)
                }
            }
        })
        .await;
    match started {
        Ok(lease) => Ok((lease, host)),
        Err(e) => Err(OpError::new(format!("service {host} {e}"))),
    }
}

/// What runs for a service, as its progress events say: a command, or the ports it forwards.
fn what_runs(def: &ServiceDef) -> String {
    let ports = |ports: &[Forward], to: &str| {
        let each: Vec<String> = ports
            .iter()
            .map(|f| format!("{} → {to}:{}", f.frontend, f.backend))
            .collect();
        each.join(", ")
    };
    match &def.what {
        ServiceKind::Container { args, .. } => args.join(" "),
        ServiceKind::Host { ports: p } => format!("forwards {}", ports(p, "localhost")),
        ServiceKind::Tunnel { upstream, .. } => {
            format!("tunnel to {}", crate::ops::service::def::hostname_of(upstream))
        }
    }
}

/// The services a container binds, started (or shared) for one exec or service: the leases, held until it
/// ends, and the names its hosts file gives their addresses.
pub(crate) struct Bindings {
    /// Dropped when the dependent is done.
    _leases: Vec<ServiceLease>,
    /// Each alias and service hostname, with the service's address.
    pub(crate) hosts: Vec<(String, Ipv4Addr)>,
    /// Rootless: each bound service's loopback address in the dependent's namespace, with its ports and
    /// where a connection to each goes.
    forwards: Vec<(Ipv4Addr, Vec<(u16, Upstream)>)>,
}

/// A dependent's connection to the services it binds, while it lives: its permissions with the host
/// services it binds, and (rootless) the forwarders in its namespace.
pub(crate) struct Connected {
    _allowed: Vec<AllowGuard>,
    _forwarders: Option<AbortOnDrop>,
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bindings {
    /// Connects the dependent whose network namespace is mounted at `netns` to the services it binds, until
    /// the returned value is dropped. As root, the host services it binds accept connections from its
    /// address on the bridge, `address`. Rootless, the engine listens inside its namespace on each bound
    /// service's loopback address (what its hosts file names) and ports, and passes each connection to the
    /// service: connecting from inside the service's namespace, or, for a host service, to the client host's
    /// loopback.
    pub(crate) async fn connect(&self, netns: &Path, address: Option<Ipv4Addr>) -> Result<Connected, OpError> {
        let allowed = match address {
            Some(ip) => self._leases.iter().filter_map(|l| l.running().allow(ip)).collect(),
            None => Vec::new(),
        };
        if self.forwards.is_empty() {
            return Ok(Connected {
                _allowed: allowed,
                _forwarders: None,
            });
        }
        let fail = |e: String| OpError::new(format!("cannot connect the container to the services it binds: {e}"));
        let inside = Inside::enter(netns).await.map_err(fail)?;
        let mut listeners = Vec::new();
        for (at, ports) in &self.forwards {
            let addresses: Vec<SocketAddr> = ports.iter().map(|(p, _)| SocketAddr::from((*at, *p))).collect();
            let made = inside.listen(&addresses).await.map_err(fail)?;
            listeners.extend(made.into_iter().zip(ports.iter().map(|(_, u)| u.clone())));
        }
        let task = crate::worker::service::spawn_forwarders(listeners, Box::new(()), None);
        Ok(Connected {
            _allowed: allowed,
            _forwarders: Some(AbortOnDrop(task)),
        })
    }
}

/// The loopback address of the `n`th service (from 0) a container binds, in its network namespace
/// (rootless): `127.0.0.2` on, skipping addresses that end in `.0` or `.255`; `127.0.0.1` stays the
/// container's own `localhost`. `None` past the end of `127.0.0.0/8`.
pub(crate) fn loopback_address(n: usize) -> Option<Ipv4Addr> {
    (2u32..0x00ff_ffff)
        .filter(|v| v & 0xff != 0 && v & 0xff != 0xff)
        .nth(n)
        .map(|v| Ipv4Addr::from(0x7f00_0000 | v))
}

/// The TCP ports a container reaches a service on when the engine forwards them (rootless): a container
/// service's exposed ports, a host service's frontends. Refused by name: a service with none (nothing to
/// reach), and UDP ports (not forwarded).
fn forwarded_ports(def: &ServiceDef, running: &Running, alias: &str) -> Result<Vec<u16>, OpError> {
    let ports: Vec<u16> = match &def.what {
        ServiceKind::Container { container, .. } => {
            if let Some((p, _, _)) = container.config.ports.iter().find(|(_, proto, _)| proto != "TCP") {
                return Err(OpError::new(format!(
                    "`withServiceBinding(alias: \"{alias}\")`: the service exposes UDP port {p} \
                     (`withExposedPort(protocol: UDP)`), and in rootless mode containers reach services through \
                     TCP forwarders only: expose TCP ports, or run the engine as root"
                )));
            }
            container
                .config
                .ports
                .iter()
                .filter_map(|(p, _, _)| u16::try_from(*p).ok())
                .collect()
        }
        _ => running.ports.clone(),
    };
    if ports.is_empty() {
        return Err(OpError::new(format!(
            "`withServiceBinding(alias: \"{alias}\")`: the service exposes no ports, and in rootless mode \
             containers reach a service on its exposed ports only: expose them with `withExposedPort`"
        )));
    }
    Ok(ports)
}

/// Starts (or joins) every service `st` binds, all at once. As root a container reaches each at its address
/// on the bridge; rootless, at a loopback address of its own namespace ([`loopback_address`]), one per
/// service, where [`Bindings::connect`] forwards the service's ports.
pub(crate) async fn bind(engine: &Arc<Engine>, st: &ContainerState) -> Result<Bindings, OpError> {
    let starts = st.services.iter().map(|b| async move {
        let (lease, own) = acquire(engine, &b.service)
            .await
            .map_err(|e| OpError::new(format!("{} (bound as `{}`)", e.message, b.alias)))?;
        Ok::<_, OpError>((b, lease, own))
    });
    let mut leases = Vec::new();
    let mut hosts = Vec::new();
    let mut forwards: Vec<(Ipv4Addr, Vec<(u16, Upstream)>)> = Vec::new();
    // Rootless: the loopback address each service got, by ID.
    let mut given: Vec<(Digest, Ipv4Addr)> = Vec::new();
    for (b, lease, own) in futures_util::future::try_join_all(starts).await? {
        let ip = match &lease.running().reach {
            Reach::Bridge(ip) => *ip,
            Reach::Host => {
                return Err(OpError::new(format!(
                    "the service bound as `{}` is a tunnel to the client's host: containers reach the host with \
                     `Host.service`",
                    b.alias
                )));
            }
            Reach::Inside(..) | Reach::HostLoopback(_) => match given.iter().find(|(d, _)| *d == b.service) {
                Some((_, ip)) => *ip,
                None => {
                    let value = engine.eval(&b.service).await?;
                    let Evaluated::Service(def) = &*value else {
                        return Err(OpError::new("`service` is not a service"));
                    };
                    let ports = forwarded_ports(def, lease.running(), &b.alias)?;
                    let ip = loopback_address(given.len()).ok_or_else(|| {
                        OpError::new("`withServiceBinding`: too many services bound to one container")
                    })?;
                    let reach = &lease.running().reach;
                    let upstreams = ports
                        .iter()
                        .filter_map(|p| reach.upstream(*p).map(|u| (*p, u)))
                        .collect();
                    given.push((b.service.clone(), ip));
                    forwards.push((ip, upstreams));
                    ip
                }
            },
        };
        leases.push(lease);
        for n in [(b.alias.clone(), ip), (own, ip)] {
            if !hosts.contains(&n) {
                hosts.push(n);
            }
        }
    }
    Ok(Bindings {
        _leases: leases,
        hosts,
        forwards,
    })
}

/// Why services cannot run here, when they cannot: they need container networking (the session's bridge,
/// or rootless, `slirp4netns`).
fn need_network(engine: &Engine) -> Result<(), OpError> {
    match engine.network.current_mode() {
        Mode::Bridge | Mode::Slirp => Ok(()),
        Mode::None => Err(OpError::new(format!(
            "services need container networking (the session's bridge, or slirp4netns in rootless mode), and \
             containers get loopback only here ({}): unset DAGGER_RS_NETWORK=none, or fix what keeps the network \
             from being set up",
            engine
                .network
                .setup_error()
                .unwrap_or_else(|| "DAGGER_RS_NETWORK=none".to_owned())
        ))),
    }
}

/// Starts a container service: its own bindings first, then its process, and waits until it is ready.
async fn start_container(
    engine: &Arc<Engine>,
    d: &Digest,
    host: &str,
    st: &ContainerState,
    argv: Vec<String>,
    privileged: bool,
) -> Result<Running, ServiceError> {
    let other = |e: OpError| ServiceError::Other(e.message);
    need_network(engine).map_err(other)?;
    let runtime = engine.runtime().map_err(other)?.clone();
    let deps = Box::pin(bind(engine, st)).await.map_err(other)?;
    let process = crate::ops::container::process::service_process(engine, d, st, host, argv, privileged, &deps.hosts)
        .await
        .map_err(other)?;
    // As root, at its address on the bridge; rootless, at its own address inside its namespace, where the
    // engine connects from inside.
    let reach = match (process.address, process.own_address) {
        (Some(ip), _) => Reach::Bridge(ip),
        (None, Some(own)) => Reach::Inside(
            Inside::enter(&process.netns)
                .await
                .map_err(|e| ServiceError::Other(format!("cannot reach the service's network: {e}")))?,
            own,
        ),
        (None, None) => {
            return Err(ServiceError::Other(
                "the service got no network besides loopback".into(),
            ));
        }
    };
    let allowed = deps.connect(&process.netns, process.address).await.map_err(other)?;
    let ports: Vec<u16> = st
        .config
        .ports
        .iter()
        .filter_map(|(p, _, _)| u16::try_from(*p).ok())
        .collect();
    let checks = st
        .config
        .ports
        .iter()
        .filter(|(p, proto, _)| proto == "TCP" && !st.unchecked_ports.contains(&(*p, proto.clone())))
        .filter_map(|(p, _, _)| u16::try_from(*p).ok())
        .collect();
    let events: Weak<Engine> = Arc::downgrade(engine);
    let (key, secrets) = (d.clone(), process.secrets.clone());
    let on_line: crate::worker::runtime::LineSink = Arc::new(move |line: &str, _| {
        if let Some(e) = events.upgrade() {
            let line = crate::ops::container::process::scrub(line.as_bytes(), &secrets);
            e.emit_log("Service", &key, String::from_utf8_lossy(&line).into_owned());
        }
    });
    let (events, key, begun) = (Arc::downgrade(engine), d.clone(), std::time::Instant::now());
    let on_exit = Box::new(move |result: Result<i32, String>| {
        let Some(e) = events.upgrade() else { return };
        match result {
            Ok(code) => {
                e.emit_log("Service", &key, format!("exited with code {code}"));
                let ms = u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX);
                e.emit_event("Service", &key, EventKind::Done(ms));
            }
            Err(why) => e.emit_event("Service", &key, EventKind::Failed(why)),
        }
    });
    let svc = ContainerService {
        req: process.req,
        keep: Box::new((process.keep, allowed, deps)),
        reach,
        checks,
        ports,
        on_line,
        on_exit,
    };
    crate::worker::service::run_container(&runtime, svc).await
}

/// Starts a service that forwards to ports of the client host's loopback: as root, listeners in a network
/// namespace of their own on the bridge, connecting out from the engine's. Rootless nothing runs until a
/// container binds it: the forwarders [`Bindings::connect`] runs in that container's namespace connect out
/// from the engine's (the host's) namespace.
async fn start_host(engine: &Arc<Engine>, ports: &[Forward]) -> Result<Running, ServiceError> {
    need_network(engine).map_err(|e| ServiceError::Other(e.message))?;
    let fronts: Vec<u16> = ports.iter().map(|f| f.frontend).collect();
    if engine.network.current_mode() == Mode::Slirp {
        let reach = Reach::HostLoopback(ports.iter().map(|f| (f.frontend, f.backend)).collect());
        return Ok(Running::task(reach, fronts, tokio::spawn(std::future::pending()), None));
    }
    let netns = engine
        .network
        .take()
        .await
        .map_err(|e| ServiceError::Other(format!("cannot set up the service's network: {e}")))?;
    let address = netns
        .address()
        .ok_or_else(|| ServiceError::Other("the service got no address on the bridge".into()))?;
    let listeners = crate::worker::service::listen_in(&netns.path(), &fronts)
        .await
        .map_err(ServiceError::Other)?;
    let listeners = listeners
        .into_iter()
        .zip(ports)
        .map(|(l, f)| (l, Upstream::Direct(SocketAddr::from((Ipv4Addr::LOCALHOST, f.backend)))))
        .collect();
    // Only the containers that bind the service may connect: the client's host ports are not for every
    // container on the bridge.
    let allowed = crate::worker::service::Allowed::default();
    let task = crate::worker::service::spawn_forwarders(listeners, Box::new(netns), Some(allowed.clone()));
    Ok(Running::task(Reach::Bridge(address), fronts, task, Some(allowed)))
}

/// Starts a tunnel: the upstream service, then listeners on the client host's loopback.
async fn start_tunnel(
    engine: &Arc<Engine>,
    upstream: &Digest,
    ports: &[Forward],
    native: bool,
) -> Result<Running, ServiceError> {
    let other = |e: OpError| ServiceError::Other(e.message);
    let value = engine.eval(upstream).await.map_err(other)?;
    let Evaluated::Service(def) = &*value else {
        return Err(ServiceError::Other("`service` is not a service".into()));
    };
    let mut forwards = ports.to_vec();
    if forwards.is_empty() {
        forwards = port_numbers(engine, def, upstream)
            .await
            .map_err(other)?
            .into_iter()
            .map(|p| Forward {
                frontend: if native { p } else { 0 },
                backend: p,
            })
            .collect();
    }
    if forwards.is_empty() {
        return Err(ServiceError::Other(
            "the service exposes no ports to tunnel: expose one with `withExposedPort`, or give `ports`".into(),
        ));
    }
    let (lease, _) = Box::pin(acquire(engine, upstream)).await.map_err(other)?;
    open_tunnel(lease, &forwards).await.map_err(other)
}

/// The first characters of a digest, which name an operation in events.
fn short(d: &Digest) -> String {
    d.as_str().get(..12).unwrap_or(d.as_str()).to_owned()
}

#[cfg(test)]
mod tests {
    //! What needs no runtime: the refusal to run services without container networking, the loopback
    //! addresses and ports of rootless bindings.

    use super::*;
    use crate::ops::op::testing::engine;

    #[tokio::test]
    async fn services_without_container_networking_are_refused_with_the_reason() {
        let tmp = tempfile::tempdir().expect("dir");
        let mut e = engine(&tmp);
        Arc::get_mut(&mut e).expect("the only reference").network =
            Arc::new(crate::worker::network::Network::loopback_only());
        let err = need_network(&e).expect_err("loopback only");
        assert!(
            err.message.contains("services need container networking"),
            "{}",
            err.message
        );
        assert!(err.message.contains("DAGGER_RS_NETWORK=none"), "{}", err.message);
        let err = start_host(
            &e,
            &[Forward {
                frontend: 80,
                backend: 8080,
            }],
        )
        .await
        .expect_err("no bridge");
        assert!(err.to_string().contains("container networking"), "{err}");
        // With a network of their own per container, as root or not, services run.
        for mode in [Mode::Bridge, Mode::Slirp] {
            Arc::get_mut(&mut e).expect("the only reference").network =
                Arc::new(crate::worker::network::Network::fixed(mode));
            assert!(need_network(&e).is_ok(), "{mode:?}");
        }
    }

    #[tokio::test]
    async fn a_rootless_host_service_runs_nothing_until_a_container_binds_it() {
        let tmp = tempfile::tempdir().expect("dir");
        let mut e = engine(&tmp);
        Arc::get_mut(&mut e).expect("the only reference").network =
            Arc::new(crate::worker::network::Network::fixed(Mode::Slirp));
        let running = start_host(
            &e,
            &[Forward {
                frontend: 80,
                backend: 8080,
            }],
        )
        .await
        .expect("a host service");
        assert_eq!(running.ports, [80]);
        assert!(running.address().is_none(), "no address of its own");
        assert!(
            matches!(&running.reach, Reach::HostLoopback(p) if p == &[(80, 8080)]),
            "{:?}",
            running.reach
        );
    }

    #[test]
    fn rootless_bindings_get_loopback_addresses_past_localhost() {
        assert_eq!(loopback_address(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(loopback_address(1), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(loopback_address(252), Some(Ipv4Addr::new(127, 0, 0, 254)));
        assert_eq!(
            loopback_address(253),
            Some(Ipv4Addr::new(127, 0, 1, 1)),
            "no .255, no .0"
        );
        let all: Vec<Ipv4Addr> = (0..2000).filter_map(loopback_address).collect();
        assert_eq!(all.len(), 2000);
        assert!(all.iter().all(|a| a.is_loopback() && *a != Ipv4Addr::LOCALHOST));
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "each service its own");
        assert_eq!(loopback_address(usize::MAX), None);
    }

    #[tokio::test]
    async fn rootless_bindings_forward_exposed_tcp_ports_and_refuse_the_rest_by_name() {
        let mut st = ContainerState::default();
        let container = |st: &ContainerState| ServiceDef {
            what: ServiceKind::Container {
                container: Box::new(st.clone()),
                args: vec!["serve".into()],
                privileged: false,
            },
            hostname: None,
        };
        let running = Running::task(Reach::Host, vec![80], tokio::spawn(async {}), None);
        let err = forwarded_ports(&container(&st), &running, "db").expect_err("no ports");
        assert!(
            err.message.contains("withServiceBinding(alias: \"db\")"),
            "{}",
            err.message
        );
        assert!(err.message.contains("withExposedPort"), "{}", err.message);
        st.config.ports.push((5432, "TCP".into(), None));
        st.config.ports.push((8080, "TCP".into(), None));
        assert_eq!(
            forwarded_ports(&container(&st), &running, "db").map_err(|e| e.message),
            Ok(vec![5432, 8080])
        );
        st.config.ports.push((53, "UDP".into(), None));
        let err = forwarded_ports(&container(&st), &running, "db").expect_err("UDP");
        assert!(err.message.contains("UDP port 53"), "{}", err.message);
        assert!(err.message.contains("rootless"), "{}", err.message);
        // A host service: the ports containers connect to.
        let host = ServiceDef {
            what: ServiceKind::Host {
                ports: vec![Forward {
                    frontend: 80,
                    backend: 8080,
                }],
            },
            hostname: None,
        };
        assert_eq!(
            forwarded_ports(&host, &running, "h").map_err(|e| e.message),
            Ok(vec![80])
        );
    }

    #[test]
    fn progress_events_say_what_a_service_runs() {
        let def = |what| ServiceDef { what, hostname: None };
        assert_eq!(
            what_runs(&def(ServiceKind::Host {
                ports: vec![Forward {
                    frontend: 80,
                    backend: 8080
                }]
            })),
            "forwards 80 → localhost:8080"
        );
        assert_eq!(
            what_runs(&def(ServiceKind::Container {
                container: Box::default(),
                args: vec!["httpd".into(), "-f".into()],
                privileged: false,
            })),
            "httpd -f"
        );
    }
}
