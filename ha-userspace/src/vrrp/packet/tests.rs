//! Packet tests: round trips, every rejection reason, and a property test
//! that the parser never panics and accepts only what it could have built.

use proptest::prelude::*;

use super::*;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// An IPv6 router's link-local source.
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

fn ip4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn v3_6() -> Advert {
    Advert {
        version: Version::V3,
        vrid: 61,
        priority: 150,
        interval_cs: 10,
        addresses: vec![
            "fd77::100".parse().expect("address"),
            "fd77::101".parse().expect("address"),
        ],
        auth: Auth::None,
    }
}

fn v3() -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 10,
        addresses: vec![ip4(Ipv4Addr::new(10, 77, 0, 100))],
        auth: Auth::None,
    }
}

fn v2() -> Advert {
    Advert {
        version: Version::V2,
        vrid: 51,
        priority: 100,
        interval_cs: 100,
        addresses: vec![
            ip4(Ipv4Addr::new(10, 77, 0, 100)),
            ip4(Ipv4Addr::new(10, 77, 0, 101)),
        ],
        auth: Auth::simple("secret"),
    }
}

fn expect(a: &Advert) -> Expect {
    Expect {
        version: a.version,
        vrid: a.vrid,
        auth: a.auth.clone(),
        interval_cs: a.interval_cs,
        link_local_source: true,
    }
}

#[test]
fn round_trips() {
    for a in [v3(), v2()] {
        let pkt = a.build_ip(SRC, MULTICAST);
        let r = parse(&pkt, &expect(&a)).expect("parses");
        assert_eq!(r.advert, a);
        assert_eq!((r.src, r.dst), (ip4(SRC), ip4(MULTICAST)));
    }
}

#[test]
fn v3_bytes_are_as_rfc_5798_lays_them_out() {
    let b = v3().build(ip4(SRC), ip4(MULTICAST));
    assert_eq!(&b[..6], &[0x31, 51, 150, 1, 0x00, 10]);
    assert_eq!(&b[8..], &[10, 77, 0, 100]);
    // The checksum covers the pseudo-header: another destination breaks it.
    let mut pkt = v3().build_ip(SRC, MULTICAST);
    pkt[19] = 19;
    let sum = 0u16; // recompute the IP header checksum so only VRRP's is wrong
    pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    let ipsum = super::checksum(&[], &pkt[..20]);
    pkt[10..12].copy_from_slice(&ipsum.to_be_bytes());
    assert_eq!(parse(&pkt, &expect(&v3())), Err(Reject::Checksum));
}

#[test]
fn v2_bytes_are_as_rfc_3768_lays_them_out() {
    let b = v2().build(ip4(SRC), ip4(MULTICAST));
    assert_eq!(&b[..6], &[0x21, 51, 100, 2, 1, 1]);
    assert_eq!(&b[16..], b"secret\0\0");
}

fn reject(a: &Advert, e: &Expect, mangle: impl Fn(&mut Vec<u8>)) -> Reject {
    let mut pkt = a.build_ip(SRC, MULTICAST);
    mangle(&mut pkt);
    parse(&pkt, e).expect_err("rejected")
}

/// Rewrites the VRRP checksum after a mangle, so that the intended reason shows.
fn fix_sum(pkt: &mut [u8], version: Version) {
    pkt[26] = 0;
    pkt[27] = 0;
    let body = &pkt[20..];
    let sum = match version {
        Version::V3 => super::checksum(&pseudo_header(ip4(SRC), ip4(MULTICAST), body.len()), body),
        Version::V2 => super::checksum(&[], body),
    };
    pkt[26..28].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn every_malformation_has_its_reason() {
    let a = v3();
    let e = expect(&a);
    assert_eq!(reject(&a, &e, |p| p.truncate(10)), Reject::Truncated);
    assert_eq!(reject(&a, &e, |p| p.truncate(25)), Reject::Truncated);
    assert_eq!(reject(&a, &e, |p| p[9] = 17), Reject::NotVrrp);
    assert_eq!(reject(&a, &e, |p| p[0] = 0x65), Reject::NotVrrp);
    assert_eq!(reject(&a, &e, |p| p[8] = 64), Reject::Ttl);
    assert_eq!(reject(&a, &e, |p| p[8] = 1), Reject::Ttl);
    assert_eq!(
        reject(&a, &e, |p| {
            p[20] = 0x21;
            fix_sum(p, Version::V3)
        }),
        Reject::Version
    );
    assert_eq!(
        reject(&a, &e, |p| {
            p[20] = 0x32;
            fix_sum(p, Version::V3)
        }),
        Reject::Type
    );
    assert_eq!(
        reject(&a, &e, |p| {
            p[21] = 52;
            fix_sum(p, Version::V3)
        }),
        Reject::Vrid
    );
    // Address count says 2, one address present.
    assert_eq!(
        reject(&a, &e, |p| {
            p[23] = 2;
            fix_sum(p, Version::V3)
        }),
        Reject::Truncated
    );
    // Count 0.
    assert_eq!(
        reject(&a, &e, |p| {
            p[23] = 0;
            fix_sum(p, Version::V3)
        }),
        Reject::Length
    );
    // Trailing garbage inside the IP total length.
    assert_eq!(
        reject(&a, &e, |p| {
            p.extend_from_slice(&[0, 0, 0, 0]);
            let total = p.len() as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            fix_sum(p, Version::V3)
        }),
        Reject::Length
    );
    assert_eq!(reject(&a, &e, |p| p[29] ^= 1), Reject::Checksum);
}

#[test]
fn v2_checks_auth_and_interval() {
    let a = v2();
    let e = expect(&a);
    let other_pass = Expect {
        auth: Auth::simple("other"),
        ..e.clone()
    };
    assert_eq!(reject(&a, &other_pass, |_| {}), Reject::Auth);
    let no_auth = Expect {
        auth: Auth::None,
        ..e.clone()
    };
    assert_eq!(reject(&a, &no_auth, |_| {}), Reject::Auth);
    assert_eq!(
        reject(&a, &e, |p| {
            p[24] = 2;
            fix_sum(p, Version::V2)
        }),
        Reject::Auth
    );
    let slower = Expect {
        interval_cs: 200,
        ..e.clone()
    };
    assert_eq!(reject(&a, &slower, |_| {}), Reject::Interval);
    // v3 expected, v2 received.
    let v3e = expect(&v3());
    assert_eq!(reject(&a, &v3e, |_| {}), Reject::Version);
}

#[test]
fn ipv6_round_trips_with_16_byte_addresses() {
    let a = v3_6();
    let pkt = a.build_ip6(SRC6, MULTICAST6);
    assert_eq!(pkt.len(), 40 + 8 + 32);
    assert_eq!(pkt[0] >> 4, 6);
    assert_eq!(
        (pkt[6], pkt[7]),
        (IPPROTO_VRRP, 255),
        "next header, hop limit"
    );
    assert_eq!(&pkt[40..46], &[0x31, 61, 150, 2, 0x00, 10]);
    assert_eq!(
        &pkt[48..64],
        &"fd77::100".parse::<Ipv6Addr>().expect("a").octets()
    );
    let r = parse_ip6(&pkt, &expect(&a)).expect("parses");
    assert_eq!(r.advert, a);
    assert_eq!((r.src, r.dst), (IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6)));
    // What the socket hands over: the VRRP part and the header's facts.
    let r = parse6(&pkt[40..], SRC6, MULTICAST6, 255, &expect(&a)).expect("parses");
    assert_eq!(r.advert, a);
}

/// Known answers from another implementation: scapy's VRRPv3 layer over
/// IPv6 (fe80::2 → ff02::12) and IPv4 (10.77.0.2 → 224.0.0.18).
#[test]
fn adverts_match_scapys_bytes_checksum_included() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let v6 = v3_6().build(IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6));
    assert_eq!(
        hex(&v6),
        "313d9602000a3d95fd770000000000000000000000000100fd770000000000000000000000000101"
    );
    let v4 = v3().build(ip4(SRC), ip4(MULTICAST));
    assert_eq!(hex(&v4), "31339601000a43320a4d0064");
}

#[test]
fn ipv6_checksum_covers_the_ipv6_pseudo_header() {
    let a = v3_6();
    let body = a.build(IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6));
    // RFC 8200 §8.1: source, destination, 32-bit length, 3 zero bytes, 112.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&SRC6.octets());
    pseudo.extend_from_slice(&MULTICAST6.octets());
    pseudo.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 112]);
    assert_eq!(crate::net::checksum(&[&pseudo, &body]), 0);
    // The IPv4 pseudo-header's sum is another: a v4 checksum would fail.
    let v4_sum = a.build(ip4(SRC), ip4(MULTICAST));
    assert_ne!(v4_sum[6..8], body[6..8]);
    // Another source or destination breaks it.
    let other = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    let e = expect(&a);
    assert_eq!(
        parse6(&body, other, MULTICAST6, 255, &e),
        Err(Reject::Checksum)
    );
    assert_eq!(parse6(&body, SRC6, other, 255, &e), Err(Reject::Checksum));
    let mut flipped = body.clone();
    flipped[20] ^= 4;
    assert_eq!(
        parse6(&flipped, SRC6, MULTICAST6, 255, &e),
        Err(Reject::Checksum)
    );
}

#[test]
fn ipv6_hop_limit_source_version_and_length_rules() {
    let a = v3_6();
    let e = expect(&a);
    let body = a.build(IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6));
    let p6 = |b: &[u8], src: Ipv6Addr, hops: u8, e: &Expect| parse6(b, src, MULTICAST6, hops, e);
    // Hop limit 255 only (a routed packet is not from the link).
    for hops in [0, 1, 64, 254] {
        assert_eq!(p6(&body, SRC6, hops, &e), Err(Reject::Ttl));
    }
    // A multicast advert from a global or ULA address is refused...
    let global = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
    let from_global = a.build(IpAddr::V6(global), IpAddr::V6(MULTICAST6));
    assert_eq!(p6(&from_global, global, 255, &e), Err(Reject::Source));
    // ...unless the instance has unicast peers (checked by address).
    let unicast = Expect {
        link_local_source: false,
        ..e.clone()
    };
    assert!(p6(&from_global, global, 255, &unicast).is_ok());
    // VRRPv2 has no IPv6.
    let mut v2 = a.clone();
    v2.version = Version::V2;
    let b2 = v2.build(IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6));
    assert_eq!(p6(&b2, SRC6, 255, &expect(&v2)), Err(Reject::Version));
    // 4-byte addresses in an IPv6 packet: the count no longer fits.
    let v4ish = v3().build(IpAddr::V6(SRC6), IpAddr::V6(MULTICAST6));
    assert_eq!(v4ish[3], 0, "IPv4 addresses are not put in an IPv6 advert");
    let mut short = body.clone();
    short.truncate(8 + 16);
    assert_eq!(p6(&short, SRC6, 255, &e), Err(Reject::Truncated));
    let mut long = body.clone();
    long.extend_from_slice(&[0; 16]);
    assert_eq!(p6(&long, SRC6, 255, &e), Err(Reject::Length));
    assert_eq!(p6(&body[..7], SRC6, 255, &e), Err(Reject::Truncated));
    // Whole packets: not IPv6, another next header, a payload beyond the end.
    let pkt = a.build_ip6(SRC6, MULTICAST6);
    let mut bad = pkt.clone();
    bad[0] = 0x45;
    assert_eq!(parse_ip6(&bad, &e), Err(Reject::NotVrrp));
    let mut bad = pkt.clone();
    bad[6] = 58;
    assert_eq!(parse_ip6(&bad, &e), Err(Reject::NotVrrp));
    let mut bad = pkt.clone();
    bad[5] += 1;
    assert_eq!(parse_ip6(&bad, &e), Err(Reject::Truncated));
    assert_eq!(parse_ip6(&pkt[..39], &e), Err(Reject::Truncated));
}

fn any_advert6() -> impl Strategy<Value = Advert> {
    (
        any::<u8>(),
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(any::<u128>(), 1..16),
    )
        .prop_map(|(vrid, priority, cs, addrs)| Advert {
            version: Version::V3,
            vrid,
            priority,
            interval_cs: cs,
            addresses: addrs
                .into_iter()
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .collect(),
            auth: Auth::None,
        })
}

fn any_advert() -> impl Strategy<Value = Advert> {
    (
        prop_oneof![Just(Version::V2), Just(Version::V3)],
        any::<u8>(),
        any::<u8>(),
        1u16..=40,
        prop::collection::vec(any::<u32>(), 1..20),
        prop::option::of(prop::array::uniform8(any::<u8>())),
    )
        .prop_map(|(version, vrid, priority, secs, addrs, pass)| Advert {
            version,
            vrid,
            priority,
            interval_cs: if version == Version::V2 {
                secs * 100
            } else {
                secs * 7
            },
            addresses: addrs.into_iter().map(|a| ip4(Ipv4Addr::from(a))).collect(),
            auth: match (version, pass) {
                (Version::V2, Some(p)) => Auth::Simple(p),
                _ => Auth::None,
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn built_packets_round_trip(a in any_advert()) {
        let pkt = a.build_ip(SRC, MULTICAST);
        prop_assert_eq!(
            parse(&pkt, &expect(&a)),
            Ok(Received { src: ip4(SRC), dst: ip4(MULTICAST), advert: a })
        );
    }

    #[test]
    fn ipv6_built_packets_round_trip_and_a_flipped_bit_is_caught(
        a in any_advert6(), at in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let pkt = a.build_ip6(SRC6, MULTICAST6);
        prop_assert_eq!(&parse_ip6(&pkt, &expect(&a)).map(|r| r.advert), &Ok(a.clone()));
        let mut bad = pkt.clone();
        let i = at.index(bad.len());
        bad[i] ^= 1 << bit;
        // Traffic class and flow label are not covered: the same advert.
        if let Ok(r) = parse_ip6(&bad, &expect(&a)) {
            prop_assert_eq!(r.advert, a);
            prop_assert!(i < 4, "a flip at byte {} was accepted", i);
        }
    }

    #[test]
    fn ipv6_parser_never_panics_on_noise(
        bytes in prop::collection::vec(any::<u8>(), 0..200), hops in any::<u8>(),
    ) {
        let _ = parse6(&bytes, SRC6, MULTICAST6, hops, &expect(&v3_6()));
        let _ = parse_ip6(&bytes, &expect(&v3_6()));
    }

    #[test]
    fn parser_never_panics_on_noise(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = parse(&bytes, &expect(&v3()));
        let _ = parse(&bytes, &expect(&v2()));
    }

    #[test]
    fn a_flipped_bit_is_never_accepted_as_a_different_advert(
        a in any_advert(), at in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut pkt = a.build_ip(SRC, MULTICAST);
        let i = at.index(pkt.len());
        pkt[i] ^= 1 << bit;
        // A flip in a field the checksum does not cover (IP header fields
        // other than TTL/protocol/addresses) may still parse: then it must
        // parse to the very same advertisement.
        if let Ok(r) = parse(&pkt, &expect(&a)) {
            prop_assert_eq!(r.advert, a);
        }
    }
}
