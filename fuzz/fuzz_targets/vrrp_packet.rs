//! The VRRP decoder (v2 and v3, IPv4 and IPv6) on arbitrary packets: it
//! never panics, and what it accepts builds back to a packet it accepts
//! the same way.
#![no_main]

use std::net::IpAddr;

use halb::vrrp::packet::{self, Auth, Expect, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let version = if sel & 1 == 0 {
        Version::V3
    } else {
        Version::V2
    };
    let auth = if sel & 2 == 0 {
        Auth::None
    } else {
        Auth::simple("secret")
    };
    let expect = Expect {
        version,
        vrid: sel >> 3,
        auth,
        interval_cs: 100,
        link_local_source: true,
    };
    // Bit 2 picks the family: a whole IPv4 packet, or a whole IPv6 one
    // (the parser then checks what the socket's control messages report).
    let parsed = if sel & 4 == 0 {
        packet::parse(pkt, &expect)
    } else {
        packet::parse_ip6(pkt, &expect)
    };
    if let Ok(r) = parsed {
        let again = match (r.src, r.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => r.advert.build_ip(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => r.advert.build_ip6(s, d),
            _ => panic!("an advert with addresses of two families"),
        };
        let back = if sel & 4 == 0 {
            packet::parse(&again, &expect)
        } else {
            packet::parse_ip6(&again, &expect)
        }
        .expect("a rebuilt advert parses");
        assert_eq!(back.advert, r.advert);
    }
});
