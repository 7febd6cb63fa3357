//! How backends are reached, resolved on a task of its own: backend MAC
//! addresses from the kernel's neighbour table (DSR), and for routed
//! backends (encapsulating VIPs) the kernel's route to them, its source
//! address and MTU, and the next hop's MAC. The kernel is asked to ARP (or
//! ND) for what is missing, and waiting for the answers (up to a second,
//! more for a powered-off backend) never holds up the agent's loop. The
//! loop gets a new [`Reach`] whenever it changes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Mode;
use crate::dataplane::Tunnel;
use crate::net::{Netlink, RouteTo};

/// Backend address → MAC.
pub type Macs = HashMap<IpAddr, [u8; 6]>;

/// How a routed backend is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// The next hop's MAC (the backend's own when it is on the link).
    pub mac: [u8; 6],
    /// The outer source and MTU.
    pub tunnel: Tunnel,
}

/// Routed backend address → its path.
pub type Paths = HashMap<IpAddr, Path>;

/// The backends to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Backends of DSR VIPs: their own MAC.
    pub on_link: Vec<IpAddr>,
    /// Backends of encapsulating VIPs: their route.
    pub routed: Vec<IpAddr>,
}

impl Wanted {
    /// Whether `addr` is wanted at all.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.on_link.contains(addr) || self.routed.contains(addr)
    }
}

/// What is known of how to reach the backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// MACs of on-link backends.
    pub macs: Macs,
    /// Paths of routed backends.
    pub paths: Paths,
}

impl Reach {
    /// How backend `addr` of a VIP of `mode` is reached: the MAC to send
    /// to, and under encapsulation the tunnel. A DSR backend needs its own
    /// MAC; an encapsulated one its route, without which it has no MAC
    /// either and gets nothing.
    pub fn hop(&self, mode: Mode, addr: IpAddr) -> (Option<[u8; 6]>, Option<Tunnel>) {
        if mode.tunnels() {
            match self.paths.get(&addr) {
                Some(p) => (Some(p.mac), Some(p.tunnel)),
                None => (None, None),
            }
        } else {
            (self.macs.get(&addr).copied(), None)
        }
    }

    /// Whether backend `addr` of a VIP of `mode` can be sent to.
    pub fn reachable(&self, mode: Mode, addr: IpAddr) -> bool {
        self.hop(mode, addr).0.is_some()
    }

    /// The wanted backends not reachable now.
    pub fn missing(&self, wanted: &Wanted) -> Vec<IpAddr> {
        let u = self.unresolved(wanted);
        u.on_link.into_iter().chain(u.routed).collect()
    }

    /// The part of `wanted` not reachable now, kept apart by kind.
    pub fn unresolved(&self, wanted: &Wanted) -> Wanted {
        let on_link = wanted.on_link.iter().filter(|a| !self.macs.contains_key(a));
        let routed = wanted.routed.iter().filter(|a| !self.paths.contains_key(a));
        Wanted {
            on_link: on_link.copied().collect(),
            routed: routed.copied().collect(),
        }
    }
}

/// Logs once that backend `a` gets no traffic, with `why` when its route is
/// the reason (else it answers no ARP or ND).
pub fn warn_unreachable(a: IpAddr, why: Option<&Unreachable>) {
    match why {
        Some(reason) => tracing::warn!(
            backend = %a,
            "routed backend unreachable ({reason}); it gets no traffic"
        ),
        None => tracing::warn!(
            backend = %a,
            "no MAC address for backend (no ARP or ND reply); it gets no traffic"
        ),
    }
}

/// How long answers to one round of ARP requests are waited for.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The smallest outer MTU halb encapsulates into: an IPv6 link's minimum
/// (RFC 8200), and an IPv4 path's conventional minimum (RFC 791's 576).
fn min_mtu(addr: IpAddr) -> u32 {
    if addr.is_ipv6() {
        1280
    } else {
        576
    }
}

/// Why a routed backend cannot be reached (logged once per backend and
/// reason; the backend gets no traffic meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// No route (or the lookup failed).
    NoRoute(String),
    /// The route leaves through another interface: XDP sends out of its own.
    OtherInterface(u32),
    /// The route has no source address of the backend's family.
    NoSource,
    /// The next hop did not answer ARP / ND.
    NoNeighbour(IpAddr),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::NoRoute(e) => write!(f, "{e}"),
            Unreachable::OtherInterface(i) => write!(
                f,
                "the route to it leaves through interface index {i}, and the XDP \
                 program sends only out of the interface it runs on"
            ),
            Unreachable::NoSource => write!(f, "the route to it has no source address"),
            Unreachable::NoNeighbour(hop) => write!(f, "next hop {hop} answers no ARP or ND"),
        }
    }
}

/// The route lookups of one round: the next hop to resolve, the tunnel,
/// or why not.
async fn routes(
    netlink: &Netlink,
    ifindex: u32,
    link_mtu: u32,
    routed: &[IpAddr],
) -> HashMap<IpAddr, Result<(IpAddr, Tunnel), Unreachable>> {
    let mut out = HashMap::new();
    for &addr in routed {
        let r = match netlink.route_to(addr).await {
            Ok(to) => route_path(addr, &to, ifindex, link_mtu),
            Err(e) => Err(Unreachable::NoRoute(e.to_string())),
        };
        out.insert(addr, r);
    }
    out
}

/// The next hop and tunnel of routed backend `addr` from the kernel's
/// route to it (pure: unit-tested).
pub fn route_path(
    addr: IpAddr,
    to: &RouteTo,
    ifindex: u32,
    link_mtu: u32,
) -> Result<(IpAddr, Tunnel), Unreachable> {
    if to.oif != ifindex {
        return Err(Unreachable::OtherInterface(to.oif));
    }
    let Some(source) = to.source.filter(|s| s.is_ipv6() == addr.is_ipv6()) else {
        return Err(Unreachable::NoSource);
    };
    // A route MTU above the link's cannot be sent either.
    let link = if link_mtu > 0 { link_mtu } else { u32::MAX };
    let mtu = to
        .mtu
        .filter(|m| *m > 0)
        .unwrap_or(link)
        .min(link)
        .clamp(min_mtu(addr), u16::MAX as u32) as u16;
    Ok((to.gateway.unwrap_or(addr), Tunnel { source, mtu }))
}

/// One resolution round: the neighbour table, with the kernel asked to
/// resolve what is missing and its answers awaited up to [`ANSWER_WAIT`];
/// routed backends through their routes. None when the table could not
/// be read at all: "no answer" is not "no neighbours", and must never
/// take every backend out. The reasons routed backends are unreachable
/// come back beside.
pub async fn resolve(
    netlink: &Netlink,
    ifindex: u32,
    link_mtu: u32,
    wanted: &Wanted,
) -> Option<(Reach, HashMap<IpAddr, Unreachable>)> {
    let routes = routes(netlink, ifindex, link_mtu, &wanted.routed).await;
    let hops: Vec<IpAddr> = routes
        .values()
        .filter_map(|r| r.as_ref().ok().map(|(hop, _)| *hop))
        .collect();
    let mut need: Vec<IpAddr> = wanted.on_link.iter().chain(&hops).copied().collect();
    need.sort();
    need.dedup();
    let mut table = match netlink.neighbours(ifindex).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("neighbour dump failed (backend MACs kept as they were): {e}");
            return None;
        }
    };
    let missing: Vec<IpAddr> = need
        .iter()
        .filter(|a| !table.contains_key(a))
        .copied()
        .collect();
    if !missing.is_empty() {
        for a in &missing {
            if let Err(e) = netlink.probe_neighbour(ifindex, *a).await {
                tracing::debug!("probe {a}: {e}");
            }
        }
        let end = tokio::time::Instant::now() + ANSWER_WAIT;
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        while tokio::time::Instant::now() < end {
            poll.tick().await;
            if let Ok(t) = netlink.neighbours(ifindex).await {
                table = t;
            }
            if missing.iter().all(|a| table.contains_key(a)) {
                break;
            }
        }
    }
    let macs = wanted
        .on_link
        .iter()
        .filter_map(|a| table.get(a).map(|m| (*a, *m)))
        .collect();
    let mut paths = Paths::new();
    let mut why = HashMap::new();
    for (addr, r) in routes {
        match r {
            Ok((hop, tunnel)) => match table.get(&hop) {
                Some(mac) => {
                    paths.insert(addr, Path { mac: *mac, tunnel });
                }
                None => {
                    why.insert(addr, Unreachable::NoNeighbour(hop));
                }
            },
            Err(e) => {
                why.insert(addr, e);
            }
        }
    }
    Some((Reach { macs, paths }, why))
}

/// How soon a round follows one that left a backend without a MAC.
pub const MISSING_RETRY: Duration = Duration::from_secs(1);

/// The resolver task's handles.
pub struct Resolver {
    wanted: watch::Sender<Wanted>,
}

impl Resolver {
    /// Starts resolving `wanted` every `every` (and at once when the wanted
    /// set changes), sending each changed [`Reach`] on `tx`, beginning from
    /// `known`. The interface `link`'s MTU is read again every round (a
    /// route without its own MTU has the link's).
    pub fn start(
        netlink: Netlink,
        link: crate::net::Link,
        wanted: Wanted,
        known: Reach,
        every: Duration,
        tx: mpsc::Sender<Reach>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        // What is missing now was reported by the caller already.
        let mut warned: HashSet<IpAddr> = known.missing(&wanted).into_iter().collect();
        let (wtx, mut wrx) = watch::channel(wanted);
        // While a backend has no MAC, ask again sooner than `every`: a node
        // that boots cannot send ND (or ARP) until its own address is
        // usable, and a backend must not wait a whole refresh for that.
        let pace = move |missing: bool| {
            if missing {
                every.min(MISSING_RETRY)
            } else {
                every
            }
        };
        let mut wait = pace(!warned.is_empty());
        let ifindex = link.index;
        let task = tokio::spawn(async move {
            let mut last = known;
            let mut link_mtu = link.mtu;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = wrx.changed() => if r.is_err() { return },
                }
                let wanted = wrx.borrow_and_update().clone();
                if let Ok(l) = netlink.link(&link.name).await {
                    link_mtu = l.mtu;
                }
                let Some((reach, why)) = resolve(&netlink, ifindex, link_mtu, &wanted).await else {
                    wait = every;
                    continue;
                };
                let missing = reach.missing(&wanted);
                wait = pace(!missing.is_empty());
                warned.retain(|a| missing.contains(a));
                for a in missing {
                    if warned.insert(a) {
                        warn_unreachable(a, why.get(&a));
                    }
                }
                if reach != last {
                    last = reach.clone();
                    if tx.send(reach).await.is_err() {
                        return;
                    }
                }
            }
        });
        (Self { wanted: wtx }, task)
    }

    /// The backends to resolve changed (a reload).
    pub fn want(&self, wanted: Wanted) {
        self.wanted.send_if_modified(|w| {
            if *w != wanted {
                *w = wanted;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(gateway: Option<&str>, oif: u32, source: Option<&str>, mtu: Option<u32>) -> RouteTo {
        RouteTo {
            gateway: gateway.map(|g| g.parse().expect("gateway")),
            oif,
            source: source.map(|s| s.parse().expect("source")),
            mtu,
        }
    }

    #[test]
    fn a_routed_backend_goes_through_its_gateway_from_the_route_source() {
        let b: IpAddr = "10.78.0.21".parse().expect("addr");
        let r = route_path(
            b,
            &to(Some("10.77.0.1"), 3, Some("10.77.0.2"), None),
            3,
            1500,
        );
        let (hop, t) = r.expect("reachable");
        assert_eq!(hop, "10.77.0.1".parse::<IpAddr>().expect("hop"));
        assert_eq!(t.source, "10.77.0.2".parse::<IpAddr>().expect("src"));
        assert_eq!(t.mtu, 1500, "the link's MTU without a route MTU");
        // On the link: the backend is its own next hop; a route MTU wins.
        let (hop, t) =
            route_path(b, &to(None, 3, Some("10.77.0.2"), Some(1400)), 3, 1500).expect("reachable");
        assert_eq!(hop, b);
        assert_eq!(t.mtu, 1400);
    }

    #[test]
    fn routes_that_cannot_carry_the_tunnel_are_refused_with_the_reason() {
        let b: IpAddr = "10.78.0.21".parse().expect("addr");
        assert_eq!(
            route_path(b, &to(Some("10.9.0.1"), 7, Some("10.9.0.2"), None), 3, 1500),
            Err(Unreachable::OtherInterface(7))
        );
        assert_eq!(
            route_path(b, &to(None, 3, None, None), 3, 1500),
            Err(Unreachable::NoSource)
        );
        assert_eq!(
            route_path(b, &to(None, 3, Some("fd77::2"), None), 3, 1500),
            Err(Unreachable::NoSource),
            "a source of the other family is none"
        );
        let six: IpAddr = "fd78::21".parse().expect("addr");
        let (_, t) =
            route_path(six, &to(None, 3, Some("fd77::2"), Some(1000)), 3, 1500).expect("reachable");
        assert_eq!(t.mtu, 1280, "never below IPv6's minimum MTU");
    }

    #[test]
    fn reach_tells_dsr_and_routed_backends_apart() {
        let a: IpAddr = "10.77.0.21".parse().expect("addr");
        let mut r = Reach::default();
        r.macs.insert(a, [2, 0, 0, 0, 0, 0x21]);
        assert!(r.reachable(Mode::Dsr, a));
        assert!(!r.reachable(Mode::Ipip, a), "a MAC is no route");
        let tunnel = Tunnel {
            source: "10.77.0.2".parse().expect("src"),
            mtu: 1500,
        };
        r.paths.insert(
            a,
            Path {
                mac: [2, 0, 0, 0, 0, 1],
                tunnel,
            },
        );
        assert_eq!(
            r.hop(Mode::Gue, a),
            (Some([2, 0, 0, 0, 0, 1]), Some(tunnel))
        );
        assert_eq!(r.hop(Mode::Dsr, a), (Some([2, 0, 0, 0, 0, 0x21]), None));
        let w = Wanted {
            on_link: vec![a],
            routed: vec!["10.78.0.9".parse().expect("addr")],
        };
        assert_eq!(
            r.missing(&w),
            vec!["10.78.0.9".parse::<IpAddr>().expect("addr")]
        );
    }
}
