//! Thin I/O over the kernel's network configuration: links, addresses, routes and
//! the neighbour table through rtnetlink, and raw ARP frames. No protocol
//! logic lives here.

pub mod arp;
pub mod pmtu;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, CacheInfo};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;

/// The next message of a netlink dump; a failure names `what` was dumped.
async fn next_msg<T>(
    dump: &mut (impl futures_util::Stream<Item = Result<T, rtnetlink::Error>> + Unpin),
    what: &str,
) -> Result<Option<T>, NetError> {
    dump.try_next().await.map_err(|source| NetError::Request {
        what: what.into(),
        source,
    })
}

/// Errors from netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A request failed.
    #[error("netlink {what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// No such interface.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchLink(String),
    /// The kernel did not answer in time.
    #[error("netlink {0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
    /// The kernel has no route to the address.
    #[error("no route to {0}")]
    NoRoute(IpAddr),
}

/// Time any one netlink request may take.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a netlink request with the [`TIMEOUT`].
async fn limit<T>(
    what: impl Fn() -> String,
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(NetError::Timeout(what())),
    }
}

/// Runs one netlink request with the [`TIMEOUT`]; the kernel's answer
/// `-errno` for an errno in `fine` counts as done (already there, absent).
async fn request(
    what: impl Fn() -> String,
    fine: &[i32],
    fut: impl std::future::Future<Output = Result<(), rtnetlink::Error>>,
) -> Result<(), NetError> {
    limit(&what, async {
        match fut.await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if fine.iter().any(|f| e.raw_code() == -f) => {
                Ok(())
            }
            Err(source) => Err(NetError::Request {
                what: what(),
                source,
            }),
        }
    })
    .await
}

/// Facts about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MAC address (zero when the link has none).
    pub mac: [u8; 6],
    /// Administratively up and with carrier (`IFF_UP` and `IFF_LOWER_UP`).
    pub up: bool,
    /// Id of the attached XDP program, if any.
    pub xdp_prog: Option<u32>,
    /// MTU (0 when the message has none).
    pub mtu: u32,
}

/// The facts of link `name` in a link message (pure: fuzzed).
pub fn link_of(name: &str, msg: &LinkMessage) -> Link {
    let mut mac = [0u8; 6];
    let mut xdp_prog = None;
    let mut mtu = 0;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Xdp(x) => {
                for n in x {
                    if let LinkXdp::ProgId(id) = n {
                        xdp_prog = (*id != 0).then_some(*id);
                    }
                }
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    Link {
        index: msg.header.index,
        name: name.to_string(),
        mac,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
        xdp_prog,
        mtu,
    }
}

/// The address (IPv4 or IPv6) and MAC of a usable neighbour entry on
/// `ifindex` (reachable, stale, delay, probe, permanent or noarp), if this
/// message is one (pure: fuzzed).
pub fn neighbour_of(msg: &NeighbourMessage, ifindex: u32) -> Option<(IpAddr, [u8; 6])> {
    let usable = matches!(
        msg.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if msg.header.ifindex != ifindex || !usable {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                dst = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                dst = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some((dst?, mac?))
}

/// The answer of a route lookup ([`Netlink::route_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTo {
    /// The router to send through (None: the destination is on the link).
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: u32,
    /// The source address the kernel would use.
    pub source: Option<IpAddr>,
    /// The route's MTU, when it has one.
    pub mtu: Option<u32>,
}

/// A route-netlink connection (the connection task runs on tokio).
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection in the current network namespace; the returned
    /// task carries it (netlink stops working if it ends).
    pub fn open() -> Result<(Self, tokio::task::JoinHandle<()>), NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(conn);
        Ok((Self { handle }, task))
    }

    /// Looks an interface up by name.
    pub async fn link(&self, name: &str) -> Result<Link, NetError> {
        limit(|| format!("get link {name}"), self.link_inner(name)).await
    }

    async fn link_inner(&self, name: &str) -> Result<Link, NetError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_of(name, &msg)),
            Ok(None) => Err(NetError::NoSuchLink(name.to_string())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(NetError::NoSuchLink(name.to_string()))
            }
            Err(source) => Err(NetError::Request {
                what: format!("get link {name}"),
                source,
            }),
        }
    }

    /// The usable addresses on `ifindex` with their prefix lengths: IPv4
    /// first (primary first), then IPv6 (an address still in duplicate
    /// address detection, or that failed it, is left out: nothing can be
    /// sent from it).
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NetError> {
        limit(
            || "dump addresses".into(),
            self.addresses_inner(ifindex, false),
        )
        .await
    }

    /// [`Netlink::addresses`] that a node sends its own packets from: also
    /// without deprecated IPv6 addresses (VIPs are added deprecated) and
    /// temporary (privacy) ones, which change.
    pub async fn source_addresses(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, NetError> {
        limit(
            || "dump addresses".into(),
            self.addresses_inner(ifindex, true),
        )
        .await
    }

    async fn addresses_inner(
        &self,
        ifindex: u32,
        sources_only: bool,
    ) -> Result<Vec<(IpAddr, u8)>, NetError> {
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        loop {
            let Some(msg) = next_msg(&mut dump, "dump addresses").await? else {
                break;
            };
            if msg.header.index != ifindex {
                continue;
            }
            let mut bad = AddressFlags::Tentative | AddressFlags::Dadfailed;
            if sources_only {
                // IFA_F_SECONDARY is IFA_F_TEMPORARY for IPv6.
                bad |= AddressFlags::Deprecated | AddressFlags::Secondary;
            }
            let unusable = msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Flags(f) if f.intersects(bad)));
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Address(a @ IpAddr::V4(_))
                        if msg.header.family == AddressFamily::Inet =>
                    {
                        v4.push((*a, msg.header.prefix_len))
                    }
                    AddressAttribute::Address(a @ IpAddr::V6(_))
                        if msg.header.family == AddressFamily::Inet6 && !unusable =>
                    {
                        v6.push((*a, msg.header.prefix_len))
                    }
                    _ => {}
                }
            }
        }
        v4.extend(v6);
        Ok(v4)
    }

    /// Adds `addr/plen` to `ifindex`; already present is fine. An IPv6
    /// address (a VIP) is added without duplicate address detection
    /// (`nodad`): a VIP taking over must answer Neighbor Solicitations at
    /// once, and its previous holder, which may still have it, is exactly
    /// what DAD would find. It is also added deprecated (preferred lifetime
    /// 0, valid for ever): it takes traffic as any address, but the kernel
    /// never picks it as the source of the node's own packets (a Neighbor
    /// Solicitation to a backend from the VIP, which the backend holds
    /// too, would be answered to the backend itself).
    pub async fn add_address(&self, ifindex: u32, addr: IpAddr, plen: u8) -> Result<(), NetError> {
        let mut req = self.handle.address().add(ifindex, addr, plen);
        if addr.is_ipv6() {
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            let attrs = &mut req.message_mut().attributes;
            attrs.push(AddressAttribute::Flags(AddressFlags::Nodad));
            attrs.push(AddressAttribute::CacheInfo(lifetimes));
        }
        request(
            || format!("add address {addr}/{plen}"),
            &[libc::EEXIST],
            req.execute(),
        )
        .await
    }

    /// Removes `addr/plen` from `ifindex`; absent is fine.
    pub async fn del_address(&self, ifindex: u32, addr: IpAddr, plen: u8) -> Result<(), NetError> {
        limit(
            || format!("delete address {addr}/{plen}"),
            self.del_address_inner(ifindex, addr, plen),
        )
        .await
    }

    async fn del_address_inner(
        &self,
        ifindex: u32,
        addr: IpAddr,
        plen: u8,
    ) -> Result<(), NetError> {
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(addr)
            .set_prefix_length_filter(plen)
            .execute();
        loop {
            let Some(msg) = next_msg(&mut dump, "dump addresses").await? else {
                return Ok(());
            };
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENOENT => {}
                Err(source) => {
                    return Err(NetError::Request {
                        what: format!("delete address {addr}/{plen}"),
                        source,
                    })
                }
            }
        }
    }

    /// IPv4 (ARP) and IPv6 (ND) neighbours on `ifindex` that have a
    /// usable MAC address.
    pub async fn neighbours(&self, ifindex: u32) -> Result<HashMap<IpAddr, [u8; 6]>, NetError> {
        limit(|| "dump neighbours".into(), self.neighbours_inner(ifindex)).await
    }

    async fn neighbours_inner(&self, ifindex: u32) -> Result<HashMap<IpAddr, [u8; 6]>, NetError> {
        let mut out = HashMap::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut dump = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            loop {
                let Some(msg) = next_msg(&mut dump, "dump neighbours").await? else {
                    break;
                };
                if let Some((d, m)) = neighbour_of(&msg, ifindex) {
                    out.insert(d, m);
                }
            }
        }
        Ok(out)
    }

    /// Asks the kernel to resolve `addr` on `ifindex` (an ARP request, or
    /// an IPv6 Neighbor Solicitation, by the kernel's own neighbour state
    /// machine, `NTF_USE`); the answer shows up in [`Netlink::neighbours`]
    /// once the neighbour replies.
    pub async fn probe_neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<(), NetError> {
        let req = self
            .handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace();
        request(|| format!("probe neighbour {addr}"), &[], req.execute()).await
    }

    /// Sets `ifindex` administratively up.
    pub async fn set_up(&self, ifindex: u32) -> Result<(), NetError> {
        let req = self
            .handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(ifindex).up().build());
        request(|| format!("set link {ifindex} up"), &[], req.execute()).await
    }

    /// The routes (IPv4 and IPv6) of routing table `table` made with
    /// protocol `proto`: (destination, prefix length, output interface
    /// index or 0).
    pub async fn routes(&self, table: u32, proto: u8) -> Result<Vec<(IpAddr, u8, u32)>, NetError> {
        limit(|| format!("dump routes of table {table}"), async {
            let mut out = Vec::new();
            let msgs = [
                rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                    .table_id(table)
                    .build(),
                rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
                    .table_id(table)
                    .build(),
            ];
            for msg in msgs {
                let mut dump = self.handle.route().get(msg).execute();
                while let Some(m) = next_msg(&mut dump, "dump routes").await? {
                    if route_table(&m) != table || u8::from(m.header.protocol) != proto {
                        continue;
                    }
                    let oif = m
                        .attributes
                        .iter()
                        .find_map(|a| match a {
                            RouteAttribute::Oif(i) => Some(*i),
                            _ => None,
                        })
                        .unwrap_or(0);
                    for a in &m.attributes {
                        let d = match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => IpAddr::V4(*d),
                            RouteAttribute::Destination(RouteAddress::Inet6(d)) => IpAddr::V6(*d),
                            _ => continue,
                        };
                        out.push((d, m.header.destination_prefix_length, oif));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// The kernel's route to `addr` (a FIB lookup, as `ip route get`).
    pub async fn route_to(&self, addr: IpAddr) -> Result<RouteTo, NetError> {
        let msg = match addr {
            IpAddr::V4(a) => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let what = format!("route to {addr}");
        limit(|| what.clone(), async {
            let mut answer = self.handle.route().get(msg).execute();
            let Some(m) = next_msg(&mut answer, &what).await? else {
                return Err(NetError::NoRoute(addr));
            };
            let mut to = RouteTo {
                gateway: None,
                oif: 0,
                source: None,
                mtu: None,
            };
            let ip = |a: &RouteAddress| match a {
                RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
                RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
                _ => None,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Gateway(g) => to.gateway = ip(g),
                    RouteAttribute::Oif(i) => to.oif = *i,
                    RouteAttribute::PrefSource(s) => to.source = ip(s),
                    RouteAttribute::Metrics(ms) => {
                        for metric in ms {
                            if let rtnetlink::packet_route::route::RouteMetric::Mtu(v) = metric {
                                to.mtu = Some(*v);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(to)
        })
        .await
    }

    /// Adds (or replaces) the host route `addr/32` (or `/128`) `dev
    /// ifindex` in `table` with protocol `proto`.
    pub async fn add_host_route(
        &self,
        table: u32,
        proto: u8,
        addr: IpAddr,
        ifindex: u32,
    ) -> Result<(), NetError> {
        let req = self
            .handle
            .route()
            .add(host_route(table, proto, addr, ifindex))
            .replace();
        request(
            || format!("add route {addr}/{} table {table}", host_len(addr)),
            &[],
            req.execute(),
        )
        .await
    }

    /// Deletes the host route of `addr` in `table`; absent is fine.
    pub async fn del_host_route(
        &self,
        table: u32,
        proto: u8,
        addr: IpAddr,
        ifindex: u32,
    ) -> Result<(), NetError> {
        let req = self
            .handle
            .route()
            .del(host_route(table, proto, addr, ifindex));
        request(
            || format!("delete route {addr}/{} table {table}", host_len(addr)),
            &[libc::ESRCH, libc::ENOENT],
            req.execute(),
        )
        .await
    }
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`; over
/// data that includes a correct checksum, it is 0.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut hi = true;
    for b in parts.iter().flat_map(|p| p.iter()) {
        sum += if hi { (*b as u32) << 8 } else { *b as u32 };
        hi = !hi;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv6 pseudo-header (RFC 8200 §8.1) of a `len`-byte upper-layer
/// packet with `next_header` from `src` to `dst`, which its checksum
/// covers.
pub fn pseudo_header6(src: &[u8; 16], dst: &[u8; 16], len: usize, next_header: u8) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0..16].copy_from_slice(src);
    h[16..32].copy_from_slice(dst);
    h[32..36].copy_from_slice(&(len as u32).to_be_bytes());
    h[39] = next_header;
    h
}

/// An IPv6 link-local (fe80::/10) address; never an IPv4 one.
pub fn link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(a6) if a6.is_unicast_link_local())
}

/// The prefix length of a host route to `addr`: 32 or 128.
pub fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn host_route(table: u32, proto: u8, addr: IpAddr, ifindex: u32) -> RouteMessage {
    match addr {
        IpAddr::V4(a) => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .output_interface(ifindex)
            .table_id(table)
            .protocol(RouteProtocol::from(proto))
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(a) => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(ifindex)
            .table_id(table)
            .protocol(RouteProtocol::from(proto))
            .scope(RouteScope::Link)
            .build(),
    }
}

/// The table a route message is in (the 32-bit attribute wins over the
/// 8-bit header field).
fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(m.header.table as u32)
}
