//! The path MTU of the tunnels to routed backends beyond their first hop:
//! what an ICMP "fragmentation needed" (IPv4) or "packet too big" (ICMPv6)
//! about one of the node's own tunnel packets says (pure), and the raw
//! ICMP sockets that read them (thin I/O). Without a tunnel device the
//! kernel has nothing to apply such an error to; the agent applies it to
//! the backend's MTU in the data plane.

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

/// A router's report that the node's tunnel packets from `source` to
/// `backend` do not fit: the path takes `mtu` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig {
    /// The tunnel's outer destination (a routed backend).
    pub backend: IpAddr,
    /// The tunnel's outer source (the node).
    pub source: IpAddr,
    /// The MTU the router reported.
    pub mtu: u16,
}

/// Outer protocols of halb's tunnels: IPv4 inside, IPv6 inside, GUE.
const TUNNEL_PROTOCOLS: [u8; 3] = [4, 41, 17];

/// The smallest MTU believed: IPv4's minimum reassembly size less its
/// header room as the kernel's `min_pmtu`, and IPv6's minimum link MTU.
pub fn floor(v6: bool) -> u16 {
    if v6 {
        1280
    } else {
        552
    }
}

/// An ICMPv4 message (`icmp`, after the IP header): a "fragmentation
/// needed" quoting an IPv4 tunnel packet (protocol 4, 41 or UDP) with a
/// usable MTU. None for anything else.
pub fn parse4(icmp: &[u8]) -> Option<TooBig> {
    if icmp.len() < 8 + 20 || icmp[0] != 3 || icmp[1] != 4 {
        return None;
    }
    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
    let q = &icmp[8..];
    if q[0] >> 4 != 4 || ((q[0] & 0x0f) as usize) < 5 || !TUNNEL_PROTOCOLS.contains(&q[9]) {
        return None;
    }
    if mtu < floor(false) {
        return None;
    }
    Some(TooBig {
        backend: IpAddr::V4(Ipv4Addr::new(q[16], q[17], q[18], q[19])),
        source: IpAddr::V4(Ipv4Addr::new(q[12], q[13], q[14], q[15])),
        mtu,
    })
}

/// An ICMPv6 message: a "packet too big" quoting an IPv6 tunnel packet
/// (next header 4, 41 or UDP) with a usable MTU.
pub fn parse6(icmp: &[u8]) -> Option<TooBig> {
    if icmp.len() < 8 + 40 || icmp[0] != 2 || icmp[1] != 0 {
        return None;
    }
    let mtu = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
    let q = &icmp[8..];
    if q[0] >> 4 != 6 || !TUNNEL_PROTOCOLS.contains(&q[6]) {
        return None;
    }
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
    if mtu < floor(true) {
        return None;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&q[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    Some(TooBig {
        backend: addr(24),
        source: addr(8),
        mtu,
    })
}

/// The raw ICMP and ICMPv6 sockets (every ICMP message the node receives
/// is copied to them).
pub struct PmtuSockets {
    v4: AsyncFd<Socket>,
    v6: AsyncFd<Socket>,
}

impl PmtuSockets {
    /// Opens both sockets (needs CAP_NET_RAW).
    pub fn open() -> std::io::Result<Self> {
        let open = |d: Domain, p: Protocol| -> std::io::Result<AsyncFd<Socket>> {
            let s = Socket::new(d, Type::RAW, Some(p))?;
            s.set_nonblocking(true)?;
            // SAFETY: the socket is owned by the AsyncFd from here on and
            // closed only when it is dropped, after deregistration.
            unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)
        };
        Ok(Self {
            v4: open(Domain::IPV4, Protocol::ICMPV4)?,
            v6: open(Domain::IPV6, Protocol::ICMPV6)?,
        })
    }

    /// The next report about a tunnel packet.
    pub async fn next(&self) -> std::io::Result<TooBig> {
        let (mut b4, mut b6) = (vec![0u8; 2048], vec![0u8; 2048]);
        loop {
            let (v6, n) = tokio::select! {
                r = recv(&self.v4, &mut b4) => (false, r?),
                r = recv(&self.v6, &mut b6) => (true, r?),
            };
            let buf = if v6 { &b6 } else { &b4 };
            let data = &buf[..n.min(buf.len())];
            let found = if v6 {
                parse6(data)
            } else {
                // An IPv4 raw socket delivers the IP header too.
                let ihl = data.first().map_or(0, |b| (b & 0x0f) as usize * 4);
                data.get(ihl..).and_then(parse4)
            };
            if let Some(t) = found {
                return Ok(t);
            }
        }
    }
}

async fn recv(fd: &AsyncFd<Socket>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            // SAFETY: recv writes at most buf.len() initialised bytes.
            let uninit = unsafe {
                std::slice::from_raw_parts_mut(
                    buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                    buf.len(),
                )
            };
            inner.get_ref().recv(uninit)
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag_needed(mtu: u16, proto: u8) -> Vec<u8> {
        let mut m = vec![3, 4, 0, 0, 0, 0];
        m.extend_from_slice(&mtu.to_be_bytes());
        let mut q = vec![0x45, 0, 5, 0xdc, 0, 0, 0x40, 0, 63, proto, 0, 0];
        q.extend_from_slice(&[10, 77, 0, 2, 10, 78, 0, 31]);
        m.extend_from_slice(&q);
        m.extend_from_slice(&[0; 8]);
        m
    }

    #[test]
    fn a_fragmentation_needed_about_a_tunnel_packet_names_the_backend() {
        let t = parse4(&frag_needed(1300, 4)).expect("about a tunnel packet");
        assert_eq!(t.backend, IpAddr::V4(Ipv4Addr::new(10, 78, 0, 31)));
        assert_eq!(t.source, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(t.mtu, 1300);
        assert!(parse4(&frag_needed(1300, 17)).is_some(), "GUE");
        assert!(
            parse4(&frag_needed(1300, 6)).is_none(),
            "not a tunnel: the kernel's"
        );
        assert!(parse4(&frag_needed(0, 4)).is_none(), "no MTU given");
        assert!(parse4(&frag_needed(100, 4)).is_none(), "below the floor");
        let mut other = frag_needed(1300, 4);
        other[1] = 1;
        assert!(parse4(&other).is_none(), "host unreachable is no MTU");
        assert!(parse4(&frag_needed(1300, 4)[..20]).is_none(), "cut short");
    }

    #[test]
    fn a_packet_too_big_about_an_ipv6_tunnel_packet_names_the_backend() {
        let mut m = vec![2, 0, 0, 0, 0, 0, 0x05, 0x14];
        let mut q = vec![0x60, 0, 0, 0, 0x05, 0xb4, 41, 63];
        q.extend_from_slice(&"fd77::2".parse::<Ipv6Addr>().expect("a").octets());
        q.extend_from_slice(&"fd78::31".parse::<Ipv6Addr>().expect("a").octets());
        m.extend_from_slice(&q);
        let t = parse6(&m).expect("about a tunnel packet");
        assert_eq!(t.mtu, 1300);
        assert_eq!(t.backend, "fd78::31".parse::<IpAddr>().expect("a"));
        m[6] = 0x04; // 1024
        assert!(parse6(&m).is_none(), "below IPv6's minimum MTU");
        m[6] = 0x05;
        m[8 + 6] = 6;
        assert!(parse6(&m).is_none(), "not a tunnel packet");
    }
}
