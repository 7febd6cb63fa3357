//! Random and mutated frames through the XDP program (`BPF_PROG_TEST_RUN`),
//! checking what must hold for every frame whatever its bytes:
//! - the action is `XDP_TX`, `XDP_PASS` or `XDP_DROP` (never `ABORTED`
//!   with consistent maps);
//! - a frame that is not sent on is not modified;
//! - a sent frame differs from its input only in the two MAC addresses;
//! - only a well-formed TCP/UDP packet to a configured VIP service, sent to
//!   this interface's MAC, is ever sent on: to a backend's MAC;
//! - every frame bumps exactly one reason counter.
//!
//! Needs root.

use ha_common::{Stat, IPPROTO_TCP, IPPROTO_UDP};
use halb_lab::frame::{nh, Frame, Frame6};
use halb_lab::harness::{
    backend_mac, ula, Harness, CLIENT_MAC, LB_MAC, VIP, VIP6, XDP_DROP, XDP_PASS, XDP_TX,
};
use proptest::prelude::*;

/// Whether `f` is an IPv4 ICMP error to the VIP, sent to the interface's
/// MAC, that quotes a packet of one of its services (the program hands
/// those to the quoted flow's backend).
fn icmp_error_for_service(f: &[u8]) -> bool {
    let Some((ip, ihl)) = unfragmented4(f) else {
        return false;
    };
    if ip[9] != 1 || ip[16..20] != VIP || ip.len() < ihl + 36 {
        return false;
    }
    let (icmp, q) = (&ip[ihl..], &ip[ihl + 8..]);
    let sport = u16::from_be_bytes([q[20], q[21]]);
    [3, 11].contains(&icmp[0])
        && q[0] == 0x45
        && q[12..16] == VIP
        && matches!((q[9], sport), (IPPROTO_TCP, 80) | (IPPROTO_UDP, 53))
}

/// The IPv4 packet of `f` and its header length, when `f` is sent to the
/// interface's MAC and the packet's version, header and total length are
/// consistent with the frame and it is no fragment.
fn unfragmented4(f: &[u8]) -> Option<(&[u8], usize)> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[0..6] != LB_MAC {
        return None;
    }
    let ip = &f[14..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] >> 4 != 4 || ihl < 20 || tot > ip.len() || tot < ihl || frag != 0 {
        return None;
    }
    Some((ip, ihl))
}

/// Whether `f` is a frame the program may send on: a well-formed IPv4
/// TCP/UDP packet to a service of the harness (TCP 80 or UDP 53 on the VIP),
/// unfragmented, addressed to the interface's MAC.
fn forwardable(f: &[u8]) -> bool {
    if f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[0..6] == LB_MAC {
        return forwardable6(&f[14..]);
    }
    let Some((ip, ihl)) = unfragmented4(f) else {
        return false;
    };
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let proto = ip[9];
    let l4min = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return false,
    };
    if tot < ihl + l4min {
        return false;
    }
    if ip[16..20] != VIP {
        return false;
    }
    let dport = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
    matches!((proto, dport), (IPPROTO_TCP, 80) | (IPPROTO_UDP, 53))
}

/// The IPv6 counterpart: version 6, a payload length that is not 0 and
/// fits, up to 4 hop-by-hop/routing (no segments left)/destination-options
/// headers inside it, then TCP or UDP to a service on the IPv6 VIP.
fn forwardable6(ip: &[u8]) -> bool {
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[0] >> 4 != 6 || plen == 0 || 40 + plen > ip.len() || ip[24..40] != VIP6 {
        return false;
    }
    let (mut next, mut off) = (ip[6], 40usize);
    for _ in 0..4 {
        if ![nh::HOP_BY_HOP, nh::ROUTING, nh::DEST_OPTS].contains(&next) {
            break;
        }
        if off + 8 > ip.len() || (next == nh::ROUTING && ip[off + 3] != 0) {
            return false;
        }
        next = ip[off];
        off += (ip[off + 1] as usize + 1) * 8;
    }
    let l4min = match next {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return false,
    };
    if off + l4min > 40 + plen || off + l4min > ip.len() {
        return false;
    }
    let dport = u16::from_be_bytes([ip[off + 2], ip[off + 3]]);
    matches!((next, dport), (IPPROTO_TCP, 80) | (IPPROTO_UDP, 53))
}

fn total(h: &Harness) -> u64 {
    Stat::ALL.iter().map(|s| h.stat(*s)).sum()
}

fn check(h: &Harness, data: &[u8]) -> Result<(), TestCaseError> {
    let before = total(h);
    let (rc, out) = h.run(data);
    prop_assert_eq!(total(h), before + 1, "exactly one reason counted");
    prop_assert!(
        [XDP_TX, XDP_PASS, XDP_DROP].contains(&rc),
        "action {} for {:02x?}",
        rc,
        data
    );
    if rc == XDP_TX {
        prop_assert!(
            forwardable(data) || icmp_error_for_service(data),
            "sent on: {:02x?}",
            data
        );
        prop_assert_eq!(out.len(), data.len());
        prop_assert_eq!(&out[12..], &data[12..], "only MACs change");
        prop_assert_eq!(&out[6..12], &LB_MAC[..]);
        // Each family's services have their own backends.
        let family = if data[12..14] == [0x86, 0xdd] {
            4..=6
        } else {
            1..=3
        };
        prop_assert!(family.into_iter().any(|i| out[0..6] == backend_mac(i)));
    } else {
        prop_assert_eq!(&out[..], data, "not sent on, not modified");
    }
    Ok(())
}

/// A valid frame of the harness's services (or near them) to mutate.
fn base() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop_oneof![Just(80u16), Just(53u16), Just(81u16), any::<u16>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u8>(),
        prop_oneof![Just(VIP), Just([10, 77, 0, 9]), any::<[u8; 4]>()],
    )
        .prop_map(|(tcp, dport, sport, payload, flags, dst)| {
            let f = if tcp {
                Frame::tcp([10, 77, 0, 10], dst, sport, dport).tcp_flags(flags)
            } else {
                Frame::udp([10, 77, 0, 10], dst, sport, dport)
            };
            f.macs(CLIENT_MAC, LB_MAC).payload(payload).build()
        })
}

/// A valid IPv6 frame of the harness's services (or near them), with up
/// to five extension headers of the kinds the program knows.
fn base6() -> impl Strategy<Value = Vec<u8>> {
    let ext = prop_oneof![
        Just(nh::HOP_BY_HOP),
        Just(nh::ROUTING),
        Just(nh::DEST_OPTS),
        Just(nh::FRAGMENT)
    ];
    (
        any::<bool>(),
        prop_oneof![Just(80u16), Just(53u16), any::<u16>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..32),
        any::<u8>(),
        prop_oneof![Just(VIP6), Just(ula(0x99)), any::<[u8; 16]>()],
        prop::collection::vec((ext, any::<[u8; 6]>()), 0..6),
    )
        .prop_map(|(tcp, dport, sport, payload, flags, dst, exts)| {
            let src = ula(0x10);
            let mut f = if tcp {
                Frame6::tcp(src, dst, sport, dport).tcp_flags(flags)
            } else {
                Frame6::udp(src, dst, sport, dport)
            };
            for (kind, mut body) in exts {
                if kind == nh::ROUTING && body[1] % 2 == 0 {
                    body[1] = 0; // segments left 0 half the time
                }
                f = f.ext(kind, body);
            }
            f.macs(CLIENT_MAC, LB_MAC).payload(payload).build()
        })
}

/// ICMP messages to the VIP: errors quoting a packet of a service (or of
/// another port, or not from the VIP), and other types.
fn base_icmp() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(3u8), Just(11u8), Just(8u8), any::<u8>()],
        any::<u8>(),
        any::<bool>(),
        prop_oneof![Just(80u16), Just(53u16), any::<u16>()],
        any::<u16>(),
        prop_oneof![Just(VIP), any::<[u8; 4]>()],
    )
        .prop_map(|(kind, code, tcp, vport, cport, from)| {
            let quoted = if tcp {
                Frame::tcp(from, [10, 77, 0, 10], vport, cport).build()
            } else {
                Frame::udp(from, [10, 77, 0, 10], vport, cport).build()
            };
            let mut body = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
            body.extend_from_slice(&quoted[14..14 + 28]);
            Frame::raw_ip([10, 77, 0, 1], VIP, 1, body)
                .macs(CLIENT_MAC, LB_MAC)
                .build()
        })
}

/// Mutations: flip bytes, cut, extend.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![base(), base6(), base_icmp()],
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(mut f, flips, cut, tail)| {
            for (i, v) in flips {
                let i = i.index(f.len());
                f[i] = v;
            }
            if let Some(c) = cut {
                // A driver never hands XDP less than an Ethernet header (and
                // BPF_PROG_TEST_RUN refuses it).
                f.truncate(c.index(f.len() + 1).max(14));
            }
            f.extend(tail);
            f
        })
}

fn run_cases<S: Strategy<Value = Vec<u8>>>(strategy: S) {
    let h = Harness::dual();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, |data| check(&h, &data)) {
        panic!("{e}");
    }
}

#[test]
fn random_bytes_keep_the_invariants() {
    // At least an Ethernet header: a driver never hands XDP less (and
    // BPF_PROG_TEST_RUN refuses it).
    run_cases(prop::collection::vec(any::<u8>(), 14..128));
}

#[test]
fn ipv6_frames_keep_the_invariants_and_every_forwardable_one_is_sent() {
    let h = Harness::dual();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    let sent = std::cell::Cell::new(0u32);
    let result = runner.run(&base6(), |data| {
        check(&h, &data)?;
        if forwardable(&data) {
            prop_assert_eq!(h.run(&data).0, XDP_TX, "{:02x?}", data);
            sent.set(sent.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let sent = sent.get();
    assert!(sent > 100, "{sent} of 3000 frames were for a service");
}

#[test]
fn mutated_frames_keep_the_invariants() {
    run_cases(mutated());
}
