//! VRRP advertisements on the wire: VRRPv3 (RFC 5798) over IPv4 and IPv6,
//! and VRRPv2 (RFC 3768, IPv4 only, with authentication types 0 and 1),
//! parsed and built.
//!
//! Parsing never panics: every malformed input is rejected with a
//! [`Reject`] reason that the I/O layer counts. IPv4 parsing starts at the
//! IP header (what a raw IPv4 socket delivers); an IPv6 raw socket delivers
//! the VRRP part only, so [`parse6`] takes the header's facts (addresses,
//! hop limit) beside it. Either way the TTL or hop limit, the addresses and
//! the pseudo-header checksum are checked here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::checksum as inet_checksum;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP IPv4 multicast group.
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The VRRP IPv6 multicast group (RFC 5798 §5.1.2.2).
pub const MULTICAST6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL (IPv4) or hop limit (IPv6) every VRRP packet is sent with and must
/// arrive with.
pub const TTL: u8 = 255;

/// The VRRP multicast group of `addr`'s family.
pub fn multicast_for(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(MULTICAST),
        IpAddr::V6(_) => IpAddr::V6(MULTICAST6),
    }
}
/// VRRP packet type: advertisement (the only one).
const TYPE_ADVERT: u8 = 1;
/// VRRPv2 authentication data length.
const AUTH_LEN: usize = 8;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768.
    V2,
    /// RFC 5798.
    V3,
}

impl Version {
    /// From the config's number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

/// VRRPv2 authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Type 0.
    None,
    /// Type 1: simple text password, up to 8 bytes (zero padded).
    Simple([u8; AUTH_LEN]),
}

impl Auth {
    /// Simple password auth from a string (at most 8 bytes; validated by config).
    pub fn simple(pass: &str) -> Self {
        let mut b = [0u8; AUTH_LEN];
        for (d, s) in b.iter_mut().zip(pass.as_bytes()) {
            *d = *s;
        }
        Auth::Simple(b)
    }
}

/// One advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Sender's priority (0: the master is leaving).
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: seconds × 100).
    pub interval_cs: u16,
    /// The virtual addresses, all of the packet's family.
    pub addresses: Vec<IpAddr>,
    /// v2 authentication (always `None` for v3).
    pub auth: Auth,
}

/// An advertisement with the IP facts of its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// IP source (the sender's primary or link-local address).
    pub src: IpAddr,
    /// IP destination.
    pub dst: IpAddr,
    /// The advertisement.
    pub advert: Advert,
}

/// Why a packet was rejected: one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Shorter than its headers say, or than any VRRP packet.
    Truncated,
    /// Not IPv4, not protocol 112, or a bad IP header.
    NotVrrp,
    /// TTL or hop limit other than 255.
    Ttl,
    /// IPv6 multicast advert whose source is not link-local (RFC 5798
    /// §5.1.2.1).
    Source,
    /// VRRP version other than the configured one.
    Version,
    /// Type other than ADVERTISEMENT.
    Type,
    /// Another virtual router's packet.
    Vrid,
    /// Address count does not match the length.
    Length,
    /// Checksum mismatch.
    Checksum,
    /// v2 authentication type or data mismatch.
    Auth,
    /// v2 advertisement interval differs from ours (RFC 3768 discards).
    Interval,
    /// From a source that is not a configured unicast peer.
    NotPeer,
}

impl Reject {
    /// Every reason, for reporting.
    pub const ALL: [Reject; 12] = [
        Reject::Truncated,
        Reject::NotVrrp,
        Reject::Ttl,
        Reject::Source,
        Reject::Version,
        Reject::Type,
        Reject::Vrid,
        Reject::Length,
        Reject::Checksum,
        Reject::Auth,
        Reject::Interval,
        Reject::NotPeer,
    ];

    /// Name for logs, JSON and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::NotVrrp => "not_vrrp",
            Reject::Ttl => "ttl",
            Reject::Source => "source",
            Reject::Version => "version",
            Reject::Type => "type",
            Reject::Vrid => "vrid",
            Reject::Length => "length",
            Reject::Checksum => "checksum",
            Reject::Auth => "auth",
            Reject::Interval => "interval",
            Reject::NotPeer => "not_peer",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the receiver expects; anything else is rejected.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// v2 authentication.
    pub auth: Auth,
    /// v2: our interval in centiseconds (must match); ignored for v3.
    pub interval_cs: u16,
    /// IPv6: the source must be link-local (multicast instances; unicast
    /// peers are checked by address instead).
    pub link_local_source: bool,
}

/// Parses an IPv4 packet carrying VRRP (as a raw socket delivers it).
pub fn parse(pkt: &[u8], expect: &Expect) -> Result<Received, Reject> {
    if pkt.len() < 20 {
        return Err(Reject::Truncated);
    }
    if pkt[0] >> 4 != 4 {
        return Err(Reject::NotVrrp);
    }
    let ihl = (pkt[0] & 0x0f) as usize * 4;
    if ihl < 20 || pkt.len() < ihl {
        return Err(Reject::Truncated);
    }
    if pkt[9] != IPPROTO_VRRP {
        return Err(Reject::NotVrrp);
    }
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    // Raw sockets may hand the total length in host order on some systems;
    // on Linux it is as on the wire. Accept what fits.
    let end = if total >= ihl && total <= pkt.len() {
        total
    } else {
        pkt.len()
    };
    if pkt[8] != TTL {
        return Err(Reject::Ttl);
    }
    let src = IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]));
    let advert = parse_vrrp(&pkt[ihl..end], src, dst, expect)?;
    Ok(Received { src, dst, advert })
}

/// Parses the VRRP part of an IPv6 packet, given its header's source,
/// destination and hop limit (as an IPv6 raw socket reports them).
pub fn parse6(
    v: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    expect: &Expect,
) -> Result<Received, Reject> {
    if hop_limit != TTL {
        return Err(Reject::Ttl);
    }
    if expect.link_local_source && !src.is_unicast_link_local() {
        return Err(Reject::Source);
    }
    let (src, dst) = (IpAddr::V6(src), IpAddr::V6(dst));
    let advert = parse_vrrp(v, src, dst, expect)?;
    Ok(Received { src, dst, advert })
}

/// Parses a whole IPv6 packet carrying VRRP (no extension headers; what
/// tests and packet captures hold).
pub fn parse_ip6(pkt: &[u8], expect: &Expect) -> Result<Received, Reject> {
    if pkt.len() < 40 {
        return Err(Reject::Truncated);
    }
    if pkt[0] >> 4 != 6 || pkt[6] != IPPROTO_VRRP {
        return Err(Reject::NotVrrp);
    }
    let payload = u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
    if 40 + payload > pkt.len() {
        return Err(Reject::Truncated);
    }
    let addr = |o: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&pkt[o..o + 16]);
        Ipv6Addr::from(a)
    };
    parse6(&pkt[40..40 + payload], addr(8), addr(24), pkt[7], expect)
}

/// Parses the VRRP part (after the IP header); `src`'s family is the
/// packet's.
pub fn parse_vrrp(v: &[u8], src: IpAddr, dst: IpAddr, expect: &Expect) -> Result<Advert, Reject> {
    if v.len() < 8 {
        return Err(Reject::Truncated);
    }
    let version = match v[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(Reject::Version),
    };
    // VRRPv2 has no IPv6 (RFC 3768 is IPv4 only).
    if version != expect.version || (version == Version::V2 && src.is_ipv6()) {
        return Err(Reject::Version);
    }
    if v[0] & 0x0f != TYPE_ADVERT {
        return Err(Reject::Type);
    }
    let vrid = v[1];
    let priority = v[2];
    let count = v[3] as usize;
    let width = if src.is_ipv6() { 16 } else { 4 };
    let addrs_len = count * width;
    let want = 8 + addrs_len + if version == Version::V2 { AUTH_LEN } else { 0 };
    if count == 0 || v.len() < want {
        return Err(if v.len() < want {
            Reject::Truncated
        } else {
            Reject::Length
        });
    }
    // Extra bytes beyond the addresses (and v2 auth data) are a length error.
    if v.len() != want {
        return Err(Reject::Length);
    }
    let sum = match version {
        Version::V3 => checksum(&pseudo_header(src, dst, v.len()), v),
        Version::V2 => checksum(&[], v),
    };
    if sum != 0 {
        return Err(Reject::Checksum);
    }
    if vrid != expect.vrid {
        return Err(Reject::Vrid);
    }
    let (interval_cs, auth) = match version {
        Version::V3 => (u16::from_be_bytes([v[4] & 0x0f, v[5]]), Auth::None),
        Version::V2 => {
            let auth = match v[4] {
                0 => Auth::None,
                1 => {
                    let mut b = [0u8; AUTH_LEN];
                    b.copy_from_slice(&v[8 + addrs_len..8 + addrs_len + AUTH_LEN]);
                    Auth::Simple(b)
                }
                _ => return Err(Reject::Auth),
            };
            if auth != expect.auth {
                return Err(Reject::Auth);
            }
            let cs = v[5] as u16 * 100;
            if cs != expect.interval_cs {
                return Err(Reject::Interval);
            }
            (cs, auth)
        }
    };
    let addresses = v[8..8 + addrs_len]
        .chunks_exact(width)
        .map(|c| match <[u8; 16]>::try_from(c) {
            Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
            Err(_) => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
        })
        .collect();
    Ok(Advert {
        version,
        vrid,
        priority,
        interval_cs,
        addresses,
        auth,
    })
}

impl Advert {
    /// The VRRP part of the packet (no IP header), checksum filled in. `src`
    /// and `dst` are needed for the v3 checksum's pseudo-header; addresses
    /// of another family than theirs are left out.
    pub fn build(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 16 * self.addresses.len() + AUTH_LEN);
        let addrs: Vec<&IpAddr> = self
            .addresses
            .iter()
            .filter(|a| a.is_ipv6() == src.is_ipv6())
            .take(255)
            .collect();
        let ver = match self.version {
            Version::V2 => 2,
            Version::V3 => 3,
        };
        v.push((ver << 4) | TYPE_ADVERT);
        v.push(self.vrid);
        v.push(self.priority);
        v.push(addrs.len() as u8);
        match self.version {
            Version::V3 => {
                let i = self.interval_cs & 0x0fff;
                v.push((i >> 8) as u8);
                v.push(i as u8);
            }
            Version::V2 => {
                v.push(match self.auth {
                    Auth::None => 0,
                    Auth::Simple(_) => 1,
                });
                v.push((self.interval_cs / 100).clamp(1, 255) as u8);
            }
        }
        v.extend_from_slice(&[0, 0]);
        for a in addrs {
            match a {
                IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            match &self.auth {
                Auth::None => v.extend_from_slice(&[0; AUTH_LEN]),
                Auth::Simple(b) => v.extend_from_slice(b),
            }
        }
        let sum = match self.version {
            Version::V3 => checksum(&pseudo_header(src, dst, v.len()), &v),
            Version::V2 => checksum(&[], &v),
        };
        v[6..8].copy_from_slice(&sum.to_be_bytes());
        v
    }

    /// A whole IPv6 packet (hop limit 255, traffic class 0xc0 as keepalived
    /// sends, next header 112) carrying this advertisement.
    pub fn build_ip6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let body = self.build(IpAddr::V6(src), IpAddr::V6(dst));
        let mut p = vec![0x6c, 0, 0, 0];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(&[IPPROTO_VRRP, TTL]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&body);
        p
    }

    /// A whole IPv4 packet (header with TTL 255, TOS 0xc0 as keepalived
    /// sends, protocol 112) carrying this advertisement.
    pub fn build_ip(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let body = self.build(IpAddr::V4(src), IpAddr::V4(dst));
        let total = (20 + body.len()) as u16;
        let mut p = vec![0x45, 0xc0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, TTL, IPPROTO_VRRP, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let sum = checksum(&[], &p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(&body);
        p
    }
}

/// The v3 checksum's pseudo-header: RFC 791's for IPv4, RFC 8200 §8.1's
/// for IPv6.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&[0, IPPROTO_VRRP]);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => h.extend_from_slice(&crate::net::pseudo_header6(
            &v6_octets(s),
            &v6_octets(d),
            len,
            IPPROTO_VRRP,
        )),
    }
    h
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Internet checksum over `a` then `b`; over data that includes a correct
/// checksum, the result is 0.
fn checksum(a: &[u8], b: &[u8]) -> u16 {
    inet_checksum(&[a, b])
}

#[cfg(test)]
mod tests;
