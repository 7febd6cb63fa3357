//! A VIP service as the agent names it (address of either family, port,
//! protocol), and how it maps onto the program's keys.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ha_common::{vip_filter_bit, vip_filter_bit6, VipKey, VipKey6, FAMILY_IPV6, IPPROTO_TCP};

/// An address, port and protocol; with port and protocol 0, an address
/// marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    /// VIP address.
    pub addr: IpAddr,
    /// Port, host order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl Service {
    /// A service.
    pub fn new(addr: impl Into<IpAddr>, port: u16, proto: u8) -> Self {
        Self {
            addr: addr.into(),
            port,
            proto,
        }
    }

    /// The address marker of `addr`.
    pub fn marker(addr: IpAddr) -> Self {
        Self::new(addr, 0, 0)
    }

    /// The program's identity of the service (its IPv4 map key, or for
    /// IPv6 the digest identity, see [`ha_common::VipKey`]).
    pub fn key(&self) -> VipKey {
        match self.addr {
            IpAddr::V4(a) => VipKey::new(a.octets(), self.port, self.proto),
            IpAddr::V6(a) => VipKey6::new(a.octets(), self.port, self.proto).identity(),
        }
    }

    /// Its key in the IPv6 map (None for IPv4).
    pub fn key6(&self) -> Option<VipKey6> {
        match self.addr {
            IpAddr::V4(_) => None,
            IpAddr::V6(a) => Some(VipKey6::new(a.octets(), self.port, self.proto)),
        }
    }

    /// The service of an IPv6 map key.
    pub fn from_key6(k: &VipKey6) -> Self {
        let mut o = [0u8; 16];
        for (i, w) in k.addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Self::new(Ipv6Addr::from(o), u16::from_be(k.port), k.proto)
    }

    /// The service of an IPv4 map key.
    pub fn from_key(k: &VipKey) -> Self {
        Self::new(
            Ipv4Addr::from(k.addr.to_ne_bytes()),
            u16::from_be(k.port),
            k.proto,
        )
    }
}

/// The pre-filter slot of a VIP address.
pub fn filter_bit(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => vip_filter_bit(u32::from_ne_bytes(a.octets())),
        IpAddr::V6(a) => vip_filter_bit6(ha_common::addr6_words(a.octets())),
    }
}

/// An address as [`ha_common::BackendInfo::addr`] holds it.
pub fn addr_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            o
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address in a [`ha_common::BackendInfo`]: IPv6 when the backend is
/// flagged so ([`ha_common::BACKEND_F_ADDR6`]) or serves an IPv6 service.
pub fn backend_addr(b: &ha_common::BackendInfo) -> IpAddr {
    if b.vip.family == FAMILY_IPV6 || b.flags & ha_common::BACKEND_F_ADDR6 != 0 {
        IpAddr::V6(Ipv6Addr::from(b.addr))
    } else {
        let o = b.addr;
        IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
    }
}

impl fmt::Display for Service {
    /// `10.77.0.100:80/tcp`, `[fd77::100]:80/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.proto == IPPROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_families_differ() {
        let v6: Ipv6Addr = "fd77::100".parse().expect("addr");
        let s = Service::new(v6, 443, IPPROTO_TCP);
        let k6 = s.key6().expect("v6");
        assert_eq!(Service::from_key6(&k6), s);
        assert_eq!(s.key().family, FAMILY_IPV6);
        let s4 = Service::new(Ipv4Addr::new(10, 77, 0, 100), 80, IPPROTO_TCP);
        assert_eq!(Service::from_key(&s4.key()), s4);
        assert!(s4.key6().is_none());
        assert_eq!(s.to_string(), "[fd77::100]:443/tcp");
        assert_eq!(s4.to_string(), "10.77.0.100:80/tcp");
        let info = |addr: IpAddr, key: VipKey, flags| ha_common::BackendInfo {
            addr: addr_octets(addr),
            vip: key,
            flags,
            ..Default::default()
        };
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(backend_addr(&info(v4, s4.key(), 0)), v4);
        assert_eq!(backend_addr(&info(v6.into(), s.key(), 0)), IpAddr::V6(v6));
        // An IPv4 service's IPv6 backend (IPv4 in IPv6).
        let flagged = info(v6.into(), s4.key(), ha_common::BACKEND_F_ADDR6);
        assert_eq!(backend_addr(&flagged), IpAddr::V6(v6));
    }
}
