//! Packet tests: round trips, every rejection reason, and a property test
//! that the parser never panics and accepts only what it could have built.

use proptest::prelude::*;

use super::*;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn v3() -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 10,
        addresses: vec![Ipv4Addr::new(10, 77, 0, 100)],
        auth: Auth::None,
    }
}

fn v2() -> Advert {
    Advert {
        version: Version::V2,
        vrid: 51,
        priority: 100,
        interval_cs: 100,
        addresses: vec![Ipv4Addr::new(10, 77, 0, 100), Ipv4Addr::new(10, 77, 0, 101)],
        auth: Auth::simple("secret"),
    }
}

fn expect(a: &Advert) -> Expect {
    Expect {
        version: a.version,
        vrid: a.vrid,
        auth: a.auth.clone(),
        interval_cs: a.interval_cs,
    }
}

#[test]
fn round_trips() {
    for a in [v3(), v2()] {
        let pkt = a.build_ip(SRC, MULTICAST);
        let r = parse(&pkt, &expect(&a)).expect("parses");
        assert_eq!(r.advert, a);
        assert_eq!((r.src, r.dst), (SRC, MULTICAST));
    }
}

#[test]
fn v3_bytes_are_as_rfc_5798_lays_them_out() {
    let b = v3().build(SRC, MULTICAST);
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
    let b = v2().build(SRC, MULTICAST);
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
        Version::V3 => super::checksum(&pseudo_header(SRC, MULTICAST, body.len()), body),
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
            addresses: addrs.into_iter().map(Ipv4Addr::from).collect(),
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
        prop_assert_eq!(parse(&pkt, &expect(&a)), Ok(Received { src: SRC, dst: MULTICAST, advert: a }));
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
