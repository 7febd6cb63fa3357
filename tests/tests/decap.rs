//! The backend side's decapsulation program through `BPF_PROG_TEST_RUN`:
//! what the load balancer's program encapsulates (and what the kernel's
//! own tunnels send) comes out as the client's packet byte for byte;
//! malformed, truncated and foreign tunnel packets pass untouched; and a
//! random-frame property test: no frame but a well-formed tunnel packet
//! for a configured VIP is ever altered. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ha_common::decap::DecapStat;
use ha_common::Stat;
use halb::dataplane::decap::{Decap, DecapConf};
use halb::dataplane::{BackendSpec, Encap, Tunnel};
use halb_lab::frame::{checksum, Frame, Frame6};
use halb_lab::harness::{run_once, ula, Harness, CLIENT_MAC, LB_MAC, VIP, VIP6, XDP_PASS, XDP_TX};
use proptest::prelude::*;

const GUE_PORT: u16 = 6080;
const BACKEND4: [u8; 4] = [10, 78, 0, 21];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT: [u8; 4] = [10, 77, 0, 10];

fn backend6() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xfd, 0x78]);
    a[15] = 0x21;
    a
}

/// The program, serving both VIPs on a host with both backend addresses.
struct Backend {
    d: Decap,
}

impl Backend {
    fn new() -> Self {
        let mut d = Decap::load(DecapConf {
            ipip: true,
            gue_port: Some(GUE_PORT),
        })
        .expect("the verifier accepts the decapsulation program");
        let vips = [IpAddr::from(VIP), IpAddr::from(VIP6)];
        let local = [IpAddr::from(BACKEND4), IpAddr::from(backend6())];
        d.set_addresses(&vips, &local).expect("addresses");
        Self { d }
    }

    fn run(&mut self, data: &[u8]) -> (u32, Vec<u8>) {
        run_once(self.d.program().expect("program"), data)
    }

    fn stat(&self, s: DecapStat) -> u64 {
        self.d
            .stats()
            .expect("stats")
            .into_iter()
            .find(|(k, _)| *k == s)
            .map_or(0, |(_, c)| c.packets)
    }

    /// Runs a frame: always passed; counted as `stat`; the output.
    fn expect(&mut self, data: &[u8], stat: DecapStat) -> Vec<u8> {
        let before = self.stat(stat);
        let (rc, out) = self.run(data);
        assert_eq!(rc, XDP_PASS, "the decapsulation program always passes");
        assert_eq!(self.stat(stat), before + 1, "counted as {stat:?}");
        if !matches!(stat, DecapStat::Ipip | DecapStat::Gue) {
            assert_eq!(out, data, "not decapsulated, not modified");
        }
        out
    }
}

/// What the load balancer's program sends for `client` (a frame to a
/// VIP) in `encap` mode to the backend (IPv6 when `six`).
fn encapsulated(client: &[u8], encap: Encap, six: bool) -> Vec<u8> {
    let mut h = if six { Harness::dual() } else { Harness::new() };
    let (addr, source): (IpAddr, IpAddr) = if six {
        (
            Ipv6Addr::from(backend6()).into(),
            Ipv6Addr::from(ula(2)).into(),
        )
    } else {
        (
            Ipv4Addr::from(BACKEND4).into(),
            Ipv4Addr::new(10, 77, 0, 2).into(),
        )
    };
    for s in h.specs.iter_mut() {
        s.encap = encap;
        s.backends = vec![BackendSpec {
            addr,
            mac: Some(ROUTER_MAC),
            tunnel: Some(Tunnel { source, mtu: 1500 }),
            weight: 1,
            healthy: true,
        }];
    }
    h.apply();
    let (rc, out) = h.run(client);
    assert_eq!(rc, XDP_TX);
    assert!(h.stat(Stat::TxFlowMiss) + h.stat(Stat::TxRing) >= 1);
    out
}

fn client4() -> Vec<u8> {
    Frame::tcp(CLIENT, VIP, 40000, 80)
        .macs(CLIENT_MAC, LB_MAC)
        .payload(b"GET / HTTP/1.1\r\n\r\n".to_vec())
        .build()
}

fn client6() -> Vec<u8> {
    Frame6::udp(ula(0x10), VIP6, 40000, 53)
        .macs(CLIENT_MAC, LB_MAC)
        .payload(vec![0x42; 40])
        .build()
}

/// The decapsulated frame must be the client's IP packet byte for byte,
/// behind the outer frame's MAC addresses and the inner EtherType.
fn assert_restored(out: &[u8], outer: &[u8], client: &[u8]) {
    assert_eq!(out[0..12], outer[0..12], "the outer MACs stay");
    assert_eq!(out[12..], client[12..], "EtherType and IP packet restored");
}

#[test]
fn what_the_load_balancer_encapsulates_comes_out_byte_for_byte() {
    let mut b = Backend::new();
    for (client, six_inner) in [(client4(), false), (client6(), true)] {
        for encap in [Encap::Ipip, Encap::Gue { port: GUE_PORT }] {
            // IPv4 outer for an IPv4 client; IPv6 outer for both.
            for six_outer in [false, true] {
                if six_inner && !six_outer {
                    continue;
                }
                let outer = encapsulated(&client, encap, six_outer);
                assert!(outer.len() > client.len());
                let stat = if encap == Encap::Ipip {
                    DecapStat::Ipip
                } else {
                    DecapStat::Gue
                };
                let out = b.expect(&outer, stat);
                assert_restored(&out, &outer, &client);
            }
        }
    }
}

/// An IPv4 outer header (id and flags as the kernel's ipip device sends
/// them) around `inner` (an IP packet), to `dst`.
fn outer4(proto: u8, dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
    let mut f = ROUTER_MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x31]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 63, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[10, 77, 0, 2]);
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(inner);
    f
}

fn gue(port: u16, sum: u16, inner: &[u8]) -> Vec<u8> {
    let mut u = vec![0xc0, 0x01];
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
    u.extend_from_slice(&sum.to_be_bytes());
    u.extend_from_slice(inner);
    u
}

#[test]
fn congestion_marked_on_the_outer_header_reaches_the_inner_one() {
    let mut b = Backend::new();
    // ECT(0) inside, CE outside: the inner packet leaves with CE and a
    // right checksum.
    let mut client = client4();
    client[15] = 0x02;
    client[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&client[14..34]);
    client[24..26].copy_from_slice(&sum.to_be_bytes());
    let mut outer = outer4(4, BACKEND4, &client[14..]);
    outer[15] = 0x03;
    outer[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&outer[14..34]);
    outer[24..26].copy_from_slice(&sum.to_be_bytes());
    let out = b.expect(&outer, DecapStat::Ipip);
    assert_eq!(out[15] & 3, 3, "CE carried to the inner header");
    assert_eq!(checksum(&out[14..34]), 0, "the inner checksum adjusted");
    assert_eq!(out[34..], client[34..]);
    // Not ECN-capable inside: left as it is.
    let plain = client4();
    let mut outer = outer4(4, BACKEND4, &plain[14..]);
    outer[15] = 0x03;
    let out = b.expect(&outer, DecapStat::Ipip);
    assert_restored(&out, &outer, &plain);
    // IPv6 inside IPv6, ECT(1) inside.
    let mut six = client6();
    six[15] |= 0x10;
    let mut outer = encapsulated(&six, Encap::Ipip, true);
    outer[15] |= 0x30;
    let out = b.expect(&outer, DecapStat::Ipip);
    assert_eq!((out[15] >> 4) & 3, 3);
}

#[test]
fn the_kernels_ipip_format_decapsulates_too() {
    let mut b = Backend::new();
    let client = client4();
    let outer = outer4(4, BACKEND4, &client[14..]);
    let out = b.expect(&outer, DecapStat::Ipip);
    assert_restored(&out, &outer, &client);
    // A load balancer's health check through the tunnel: to this host itself.
    let probe = Frame::tcp([10, 77, 0, 2], BACKEND4, 40000, 80)
        .tcp_flags(0x02)
        .build();
    let outer = outer4(4, BACKEND4, &probe[14..]);
    let out = b.expect(&outer, DecapStat::Ipip);
    assert_restored(&out, &outer, &probe);
    // To this host with another inner source than the outer one: a forged
    // source smuggled through the tunnel, left alone.
    let forged = Frame::tcp([10, 0, 0, 5], BACKEND4, 40000, 161).build();
    b.expect(&outer4(4, BACKEND4, &forged[14..]), DecapStat::PassNotOurs);
}

#[test]
fn foreign_malformed_and_truncated_tunnel_packets_pass_untouched() {
    let mut b = Backend::new();
    let client = client4();
    let inner = &client[14..];
    // Not for this host, not for a served VIP.
    b.expect(&outer4(4, [10, 78, 0, 99], inner), DecapStat::PassNotOurs);
    let other_vip = Frame::tcp(CLIENT, [10, 77, 0, 101], 1, 80).build();
    b.expect(
        &outer4(4, BACKEND4, &other_vip[14..]),
        DecapStat::PassNotOurs,
    );
    // GUE: another port is no tunnel; a checksum or a wrong length is malformed.
    b.expect(
        &outer4(17, BACKEND4, &gue(6081, 0, inner)),
        DecapStat::PassNotTunnel,
    );
    b.expect(
        &outer4(17, BACKEND4, &gue(GUE_PORT, 0x1234, inner)),
        DecapStat::PassMalformed,
    );
    let mut long = gue(GUE_PORT, 0, inner);
    long[5] = long[5].wrapping_add(1);
    b.expect(&outer4(17, BACKEND4, &long), DecapStat::PassMalformed);
    b.expect(
        &outer4(17, BACKEND4, &gue(GUE_PORT, 0, inner)),
        DecapStat::Gue,
    );
    // Inner version not what protocol 4 names; inner length off by one.
    let six = client6();
    b.expect(&outer4(4, BACKEND4, &six[14..]), DecapStat::PassMalformed);
    let mut short = inner.to_vec();
    short[3] = short[3].wrapping_sub(1);
    b.expect(&outer4(4, BACKEND4, &short), DecapStat::PassMalformed);
    // Outer options, an outer fragment.
    let mut opts = outer4(4, BACKEND4, inner);
    opts[14] = 0x46;
    b.expect(&opts, DecapStat::PassMalformed);
    let mut frag = outer4(4, BACKEND4, inner);
    frag[20] = 0x20;
    b.expect(&frag, DecapStat::PassMalformed);
    // Plain traffic to the host and to the VIP.
    b.expect(&client, DecapStat::PassNotTunnel);
    b.expect(
        &Frame::udp(CLIENT, BACKEND4, 5, 53).build(),
        DecapStat::PassNotTunnel,
    );
    // Every truncation of a good tunnel frame.
    for encap in [Encap::Ipip, Encap::Gue { port: GUE_PORT }] {
        let good = encapsulated(&client, encap, false);
        for n in 14..good.len() {
            let (rc, out) = b.run(&good[..n]);
            assert_eq!(rc, XDP_PASS);
            assert_eq!(out, good[..n], "a frame cut at {n} is not modified");
        }
    }
}

/// The oracle: the frame the program must produce for `f`, or None when
/// it must leave `f` alone (the rules of `ha-ebpf/src/decap.rs`).
fn expected(f: &[u8]) -> Option<Vec<u8>> {
    if f.len() < 14 {
        return None;
    }
    let ip = &f[14..];
    let (off, inner_len, want, local, outer_src) = match f[12..14] {
        [0x08, 0x00] => {
            if ip.len() < 20 || ip[0] != 0x45 {
                return None;
            }
            let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            let (off, want) = match ip[9] {
                4 => (20, 4),
                41 => (20, 6),
                17 => (28, 0),
                _ => return None,
            };
            if frag != 0 || tot > ip.len() || tot < off + 20 {
                return None;
            }
            if off == 28 && !gue_ok(&ip[20..], tot - 20) {
                return None;
            }
            (off, tot - off, want, ip[16..20] == BACKEND4, &ip[12..16])
        }
        [0x86, 0xdd] => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let (off, want) = match ip[6] {
                4 => (40, 4),
                41 => (40, 6),
                17 => (48, 0),
                _ => return None,
            };
            if 40 + plen > ip.len() || plen < off - 40 + 20 {
                return None;
            }
            if off == 48 && !gue_ok(&ip[40..], plen) {
                return None;
            }
            (
                off,
                40 + plen - off,
                want,
                ip[24..40] == backend6(),
                &ip[8..24],
            )
        }
        _ => return None,
    };
    if !local {
        return None;
    }
    let inner = &ip[off..];
    if inner.len() < 20 {
        return None;
    }
    let v = inner[0] >> 4;
    if want != 0 && v != want {
        return None;
    }
    let et = match v {
        4 => {
            let len = u16::from_be_bytes([inner[2], inner[3]]) as usize;
            // To a VIP, or to this host from the outer source itself.
            let to = &inner[16..20];
            let to_us = to == BACKEND4 && &inner[12..16] == outer_src;
            if inner[0] & 0x0f < 5 || len != inner_len || (to != VIP && !to_us) {
                return None;
            }
            [0x08, 0x00]
        }
        6 => {
            if inner.len() < 40 {
                return None;
            }
            let plen = u16::from_be_bytes([inner[4], inner[5]]) as usize;
            let to = &inner[24..40];
            let to_us = to == backend6() && &inner[8..24] == outer_src;
            if 40 + plen != inner_len || (to != VIP6 && !to_us) {
                return None;
            }
            [0x86, 0xdd]
        }
        _ => return None,
    };
    let mut out = f[0..12].to_vec();
    out.extend_from_slice(&et);
    out.extend_from_slice(inner);
    // RFC 6040: CE on the outer header goes to an ECN-capable inner one.
    let outer_ecn = if f[12..14] == [0x08, 0x00] {
        ip[1] & 3
    } else {
        (ip[1] >> 4) & 3
    };
    if outer_ecn == 3 {
        let i = &mut out[14..];
        if v == 4 && matches!(i[1] & 3, 1 | 2) {
            i[1] |= 3;
            let ihl = (i[0] & 0x0f) as usize * 4;
            i[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&i[..ihl.min(i.len())]);
            i[10..12].copy_from_slice(&sum.to_be_bytes());
        } else if v == 6 && matches!((i[1] >> 4) & 3, 1 | 2) {
            i[1] |= 0x30;
        }
    }
    Some(out)
}

fn gue_ok(udp: &[u8], carried: usize) -> bool {
    udp.len() >= 8
        && u16::from_be_bytes([udp[2], udp[3]]) == GUE_PORT
        && u16::from_be_bytes([udp[4], udp[5]]) as usize == carried
        && udp[6..8] == [0, 0]
}

/// Good tunnel frames of every kind, to mutate.
fn bases() -> Vec<Vec<u8>> {
    let gue = Encap::Gue { port: GUE_PORT };
    vec![
        encapsulated(&client4(), Encap::Ipip, false),
        encapsulated(&client4(), Encap::Ipip, true),
        encapsulated(&client6(), Encap::Ipip, true),
        encapsulated(&client4(), gue, false),
        encapsulated(&client4(), gue, true),
        encapsulated(&client6(), gue, true),
    ]
}

fn mutated(bases: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(bases),
        prop::collection::vec((0..90usize, any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(mut f, flips, cut, tail)| {
            for (i, v) in flips {
                let i = i % f.len();
                f[i] = v;
            }
            if let Some(c) = cut {
                f.truncate(c.index(f.len() + 1).max(14));
            }
            f.extend(tail);
            f
        })
}

#[test]
fn no_frame_but_a_well_formed_tunnel_packet_for_a_served_vip_is_altered() {
    let b = std::cell::RefCell::new(Backend::new());
    // Base frames are built once (each needs a loaded balancer).
    let bases = bases();
    assert!(
        bases.iter().all(|f| expected(f).is_some()),
        "the bases are tunnel packets"
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    let strategy = prop_oneof![
        4 => mutated(bases),
        1 => prop::collection::vec(any::<u8>(), 14..200),
    ];
    let decapsulated = std::cell::Cell::new(0);
    let result = runner.run(&strategy, |f| {
        let (rc, out) = b.borrow_mut().run(&f);
        prop_assert_eq!(rc, XDP_PASS);
        match expected(&f) {
            Some(want) => {
                decapsulated.set(decapsulated.get() + 1);
                prop_assert_eq!(out, want, "decapsulated exactly: {:02x?}", f);
            }
            None => prop_assert_eq!(out, f.clone(), "not a tunnel packet, untouched: {:02x?}", f),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let n = decapsulated.get();
    assert!(n > 100, "enough well-formed cases: {n}");
}
