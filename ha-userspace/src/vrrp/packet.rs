//! VRRP advertisements on the wire: VRRPv3 (RFC 5798, IPv4) and VRRPv2
//! (RFC 3768, with authentication types 0 and 1), parsed and built.
//!
//! Parsing never panics: every malformed input is rejected with a
//! [`Reject`] reason that the I/O layer counts. Parsing starts at the IPv4
//! header (what a raw socket delivers), because the TTL and the addresses
//! are part of what must be checked.

use std::fmt;
use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP IPv4 multicast group.
pub const MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// TTL every VRRP packet is sent with and must arrive with.
pub const TTL: u8 = 255;
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
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// v2 authentication (always `None` for v3).
    pub auth: Auth,
}

/// An advertisement with the IP facts of its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// IP source (the sender's primary address).
    pub src: Ipv4Addr,
    /// IP destination.
    pub dst: Ipv4Addr,
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
    /// TTL other than 255.
    Ttl,
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
    pub const ALL: [Reject; 11] = [
        Reject::Truncated,
        Reject::NotVrrp,
        Reject::Ttl,
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
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let advert = parse_vrrp(&pkt[ihl..end], src, dst, expect)?;
    Ok(Received { src, dst, advert })
}

/// Parses the VRRP part (after the IP header).
pub fn parse_vrrp(
    v: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    expect: &Expect,
) -> Result<Advert, Reject> {
    if v.len() < 8 {
        return Err(Reject::Truncated);
    }
    let version = match v[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(Reject::Version),
    };
    if version != expect.version {
        return Err(Reject::Version);
    }
    if v[0] & 0x0f != TYPE_ADVERT {
        return Err(Reject::Type);
    }
    let vrid = v[1];
    let priority = v[2];
    let count = v[3] as usize;
    let addrs_len = count * 4;
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
        .chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
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
    /// and `dst` are needed for the v3 checksum's pseudo-header.
    pub fn build(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 4 * self.addresses.len() + AUTH_LEN);
        let ver = match self.version {
            Version::V2 => 2,
            Version::V3 => 3,
        };
        v.push((ver << 4) | TYPE_ADVERT);
        v.push(self.vrid);
        v.push(self.priority);
        v.push(self.addresses.len().min(255) as u8);
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
        for a in self.addresses.iter().take(255) {
            v.extend_from_slice(&a.octets());
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

    /// A whole IPv4 packet (header with TTL 255, TOS 0xc0 as keepalived
    /// sends, protocol 112) carrying this advertisement.
    pub fn build_ip(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let body = self.build(src, dst);
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

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&src.octets());
    h[4..8].copy_from_slice(&dst.octets());
    h[9] = IPPROTO_VRRP;
    h[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    h
}

/// Internet checksum over `a` then `b` (both even-length except `b`'s tail).
/// Over data that includes a correct checksum, the result is 0.
fn checksum(a: &[u8], b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in a.chunks(2).chain(b.chunks(2)) {
        let w = match chunk {
            [x, y] => u16::from_be_bytes([*x, *y]),
            [x] => u16::from_be_bytes([*x, 0]),
            _ => 0,
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests;
