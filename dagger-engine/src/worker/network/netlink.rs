//! The few rtnetlink requests container networking makes — look up, add, bring up and delete links, add an
//! address and a default route — as `netlink-packet-route` messages on a synchronous `netlink-sys` socket.
//!
//! A socket works in the network namespace its thread was in when it was opened, for its whole life: a socket
//! opened before a thread unshares its network namespace still speaks for the host. Requests are sent one at
//! a time and each waits for the kernel's acknowledgement, so an error belongs to the request that caused it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A failed request: what was asked, and the kernel's answer (`errno`).
#[derive(Debug)]
pub(crate) struct NetlinkError {
    /// The request, in `ip`'s words (`link add drsv5 type veth peer name eth0`).
    pub(crate) request: String,
    /// The kernel's answer.
    pub(crate) error: std::io::Error,
}

impl NetlinkError {
    /// Whether the kernel answered `errno` (`libc`'s `EEXIST`, `ENODEV`, …).
    pub(crate) fn is(&self, errno: i32) -> bool {
        self.error.raw_os_error() == Some(errno)
    }
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `ip`'s wording, which people (and the benchmark harness) recognize.
        write!(f, "`{}` failed: RTNETLINK answers: {}", self.request, self.error)?;
        if self.is(EPERM) {
            write!(f, " (the engine needs root)")?;
        }
        Ok(())
    }
}

impl From<NetlinkError> for String {
    fn from(e: NetlinkError) -> String {
        e.to_string()
    }
}

/// `EPERM`.
pub(crate) const EPERM: i32 = 1;
/// `ENODEV`.
pub(crate) const ENODEV: i32 = 19;

type Result<T> = std::result::Result<T, NetlinkError>;

/// A route netlink socket in the network namespace of the thread that opened it.
pub(crate) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl").field("fd", &self.socket.as_raw_fd()).finish()
    }
}

impl Rtnl {
    /// A socket for the calling thread's current network namespace.
    pub(crate) fn open() -> std::result::Result<Self, String> {
        let fail = |e: std::io::Error| format!("cannot open a netlink socket: {e}");
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        socket.bind_auto().map_err(fail)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
        Ok(Self {
            socket,
            sequence: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `message` and waits for the kernel's acknowledgement; returns the replies before it.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let fail = |error: std::io::Error| NetlinkError { request: what(), error };
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(fail)?;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(fail)?;
            if n > self.buf.len() {
                return Err(fail(std::io::Error::other("a reply larger than the receive buffer")));
            }
            let mut at = 0;
            while at < self.buf.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..])
                    .map_err(|e| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(fail(std::io::Error::other("an empty netlink reply")));
                }
                at += (len + 3) & !3;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(fail(e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The index of link `name`, `None` when there is none.
    pub(crate) fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(message), 0, &|| {
            format!("link show {name}")
        }) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.is(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link add <name> type bridge`.
    pub(crate) fn add_bridge(&mut self, name: &str) -> Result<()> {
        let message = bridge_message(name);
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("link add {name} type bridge"),
        )
        .map(drop)
    }

    /// `ip link add <host> master <controller> up type veth peer name <peer> netns <peer_ns>`: one request.
    pub(crate) fn add_veth(&mut self, host: &str, controller: u32, peer: &str, peer_ns: BorrowedFd<'_>) -> Result<()> {
        let message = veth_message(host, controller, peer, peer_ns);
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("link add {host} type veth peer name {peer}"),
        )
        .map(drop)
    }

    /// `ip link set <name> up`.
    pub(crate) fn set_up(&mut self, name: &str) -> Result<()> {
        self.request(RouteNetlinkMessage::SetLink(up_message(name)), 0, &|| {
            format!("link set {name} up")
        })
        .map(drop)
    }

    /// `ip addr add <address>/<prefix> dev <index>`.
    pub(crate) fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewAddress(address_message(index, address, prefix)),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("addr add {address}/{prefix} dev #{index}"),
        )
        .map(drop)
    }

    /// `ip route add default via <gateway>`.
    pub(crate) fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewRoute(default_route_message(gateway)),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("route add default via {gateway}"),
        )
        .map(drop)
    }

    /// `ip link delete <name>`; `false` when there was no such link.
    pub(crate) fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::DelLink(message), 0, &|| {
            format!("link delete {name}")
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.is(ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A new link of `kind` named `name`.
fn new_link(name: &str, kind: InfoKind) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(name.to_owned()));
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    message
}

fn bridge_message(name: &str) -> LinkMessage {
    new_link(name, InfoKind::Bridge)
}

/// The host end `host` on bridge `controller` and up; its peer `peer` created in the namespace `peer_ns`.
fn veth_message(host: &str, controller: u32, peer: &str, peer_ns: BorrowedFd<'_>) -> LinkMessage {
    let mut peer_message = LinkMessage::default();
    peer_message.attributes.push(LinkAttribute::IfName(peer.to_owned()));
    peer_message
        .attributes
        .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
    let mut message = LinkMessage::default();
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    message.attributes.push(LinkAttribute::IfName(host.to_owned()));
    message.attributes.push(LinkAttribute::Controller(controller));
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
    ]));
    message
}

fn up_message(name: &str) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    message.attributes.push(LinkAttribute::IfName(name.to_owned()));
    message
}

fn address_message(index: u32, address: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix;
    message.header.index = index;
    message.attributes.push(AddressAttribute::Local(IpAddr::V4(address)));
    message.attributes.push(AddressAttribute::Address(IpAddr::V4(address)));
    message
}

fn default_route_message(gateway: Ipv4Addr) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    message.header.kind = RouteType::Unicast;
    message
        .attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    /// `message` as the kernel reads it: serialized, then parsed back.
    fn wire(message: &LinkMessage) -> LinkMessage {
        let mut bytes = vec![0u8; message.buffer_len()];
        message.emit(&mut bytes);
        LinkMessage::parse(bytes.as_slice()).expect("parses")
    }

    #[test]
    fn the_veth_is_up_on_the_bridge_and_its_peer_is_made_inside_the_namespace() {
        let ns = std::fs::File::open("/proc/self/ns/net").expect("a namespace file");
        use std::os::fd::AsFd;
        let m = wire(&veth_message("drsv2a", 7, "eth0", ns.as_fd()));
        assert!(m.header.flags.contains(LinkFlags::Up) && m.header.change_mask.contains(LinkFlags::Up));
        assert!(m.attributes.contains(&LinkAttribute::IfName("drsv2a".into())));
        assert!(m.attributes.contains(&LinkAttribute::Controller(7)));
        let info = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("link info");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Veth)));
        let peer = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
                _ => None,
            })
            .expect("the peer");
        assert!(peer.attributes.contains(&LinkAttribute::IfName("eth0".into())));
        assert!(
            peer.attributes.contains(&LinkAttribute::NetNsFd(ns.as_raw_fd())),
            "the peer goes straight into the namespace: {peer:?}"
        );
    }

    #[test]
    fn the_address_and_route_are_those_ip_would_add() {
        let a = address_message(3, Ipv4Addr::new(10, 87, 1, 2), 16);
        assert_eq!(
            (a.header.family, a.header.prefix_len, a.header.index),
            (AddressFamily::Inet, 16, 3)
        );
        let local = IpAddr::V4(Ipv4Addr::new(10, 87, 1, 2));
        assert!(a.attributes.contains(&AddressAttribute::Local(local)));
        assert!(a.attributes.contains(&AddressAttribute::Address(local)));
        let r = default_route_message(Ipv4Addr::new(10, 87, 0, 1));
        assert_eq!(r.header.destination_prefix_length, 0, "the default route");
        assert_eq!(r.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(r.header.kind, RouteType::Unicast);
        assert!(
            r.attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                    10, 87, 0, 1
                ))))
        );
    }

    #[test]
    fn links_are_looked_up_by_name_without_privileges() {
        let mut rtnl = Rtnl::open().expect("a netlink socket");
        assert_eq!(rtnl.link_index("lo").expect("lo"), Some(1), "loopback is link 1");
        assert_eq!(rtnl.link_index("drs-nosuch").expect("no such link"), None);
        // Several requests on one socket: each reply is matched to its request.
        assert_eq!(rtnl.link_index("lo").expect("lo again"), Some(1));
    }

    #[test]
    fn a_refused_request_names_itself_and_the_kernels_answer() {
        let mut rtnl = Rtnl::open().expect("a netlink socket");
        // No link has this index: as root the kernel answers "no such device", otherwise "not permitted".
        let e = rtnl
            .add_address(0x7fff_fff0, Ipv4Addr::new(10, 87, 0, 9), 16)
            .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.starts_with("`addr add 10.87.0.9/16 dev #2147483632` failed: RTNETLINK answers: "),
            "{text}"
        );
        assert!(e.is(ENODEV) || e.is(EPERM), "{text}");
        if e.is(EPERM) {
            assert!(text.ends_with("(the engine needs root)"), "{text}");
        }
        match rtnl.delete_link("drs-nosuch") {
            Ok(deleted) => assert!(!deleted, "deleting a missing link is no error"),
            Err(e) => assert!(e.is(EPERM), "{e}"),
        }
    }
}
