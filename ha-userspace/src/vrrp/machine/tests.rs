//! State-machine scenarios on a virtual clock (written as data where they
//! are sequences), and a two-node simulation run over thousands of random
//! event sequences, run once with IPv4 primaries and once with IPv6
//! link-local ones: the machine's logic is the same for both families
//! (RFC 5798), only the address compared on a priority tie differs.

/// Builds the scenario suite for one family.
macro_rules! scenarios {
    ($family:ident, $a:expr, $b:expr, $spoofed:expr) => {
        mod $family {
            use super::super::*;
            use std::net::IpAddr;

            const A: IpAddr = $a;
            const B: IpAddr = $b;

            #[allow(dead_code)]
            fn spoofed(n: u64) -> IpAddr {
                $spoofed(n)
            }

            include!("scenarios.rs");
        }
    };
}

scenarios!(
    ipv4,
    IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 2)),
    IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 3)),
    |n: u64| IpAddr::V4(std::net::Ipv4Addr::from(0x0a63_0000 + n as u32))
);
scenarios!(
    ipv6,
    IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
    IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3)),
    |n: u64| IpAddr::V6(std::net::Ipv6Addr::new(
        0xfe80, 0, 0, 0, 0, 0, 0x63, n as u16
    ))
);
