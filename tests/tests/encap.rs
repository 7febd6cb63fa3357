//! The XDP program's routed-backend paths through `BPF_PROG_TEST_RUN`:
//! IP in IP and GUE with IPv4 and IPv6 outer headers (every outer field,
//! the inner packet byte for byte), the ICMP "too big" answers for packets
//! that do not fit the tunnel, and ICMP errors that follow their flow to
//! its backend. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ha_common::Stat;
use halb::dataplane::{BackendSpec, Encap, Tunnel};
use halb_lab::frame::{checksum, Frame, Frame6};
use halb_lab::harness::{
    backend_mac, ula, Harness, CLIENT_MAC, LB_MAC, VIP, VIP6, XDP_DROP, XDP_PASS, XDP_TX,
};

/// The router's MAC: the next hop of every routed backend.
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The node's own addresses (the outer sources).
const LB4: [u8; 4] = [10, 77, 0, 2];
const CLIENT: [u8; 4] = [10, 77, 0, 10];
const CLIENT6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const GUE_PORT: u16 = 6080;

fn lb6() -> [u8; 16] {
    ula(2)
}

/// Routed backend `i`: 10.78.0.2i, or fd78::2i.
fn routed(i: u8, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfd, 0x78]);
        a[15] = 0x20 + i;
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 78, 0, 20 + i))
    }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Spec `spec` encapsulated with `encap` to three routed backends of the
/// family `v6`, through the router, with outer MTU `mtu`.
fn tunnel(h: &mut Harness, spec: usize, encap: Encap, v6: bool, mtu: u16) -> Vec<IpAddr> {
    let source = if v6 {
        IpAddr::V6(Ipv6Addr::from(lb6()))
    } else {
        IpAddr::V4(Ipv4Addr::from(LB4))
    };
    let addrs: Vec<IpAddr> = (1..=3).map(|i| routed(i, v6)).collect();
    // Removed and added again: a new VIP has no changed slots.
    let mut s = h.specs.remove(spec);
    h.apply();
    s.encap = encap;
    s.backends = addrs
        .iter()
        .map(|&addr| BackendSpec {
            addr,
            mac: Some(ROUTER_MAC),
            tunnel: Some(Tunnel { source, mtu }),
            weight: 1,
            healthy: true,
        })
        .collect();
    h.specs.insert(spec, s);
    h.apply();
    addrs
}

/// The inner IP packet's length (its header's length field).
fn ip_len(frame: &[u8]) -> usize {
    if frame[14] >> 4 == 4 {
        u16::from_be_bytes([frame[16], frame[17]]) as usize
    } else {
        40 + u16::from_be_bytes([frame[18], frame[19]]) as usize
    }
}

/// What an encapsulated frame must be: Ethernet to the router from us,
/// the outer header (every field), GUE's UDP header, then the original IP
/// packet unchanged. Returns the outer destination and, for GUE, the
/// source port.
fn check_encapsulated(out: &[u8], sent: &[u8], gue: bool, outer6: bool) -> (Vec<u8>, Option<u16>) {
    assert_eq!(out[0..6], ROUTER_MAC, "to the next hop");
    assert_eq!(out[6..12], LB_MAC, "from this interface");
    let inner = &sent[14..];
    let inner_len = ip_len(sent);
    let inner_v6 = sent[14] >> 4 == 6;
    let tos = if inner_v6 {
        (sent[14] << 4) | (sent[15] >> 4)
    } else {
        sent[15]
    };
    let udp_len = if gue { 8 } else { 0 };
    let nh = match (gue, inner_v6) {
        (true, _) => 17,
        (false, true) => 41,
        (false, false) => 4,
    };
    let (dst, at) = if outer6 {
        assert_eq!(out[12..14], [0x86, 0xdd]);
        let ip = &out[14..54];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!((ip[0] << 4) | (ip[1] >> 4), tos, "traffic class copied");
        let label = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
        assert_ne!(label, 0, "a flow label from the flow hash");
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        assert_eq!(plen, inner_len + udp_len, "payload length");
        assert_eq!(ip[6], nh, "next header");
        assert_eq!(ip[7], 64, "hop limit");
        assert_eq!(ip[8..24], lb6(), "outer source");
        (ip[24..40].to_vec(), 54)
    } else {
        assert_eq!(out[12..14], [0x08, 0x00]);
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[1], tos, "TOS copied");
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        assert_eq!(total, inner_len + 20 + udp_len, "total length");
        assert_eq!(ip[4..6], [0, 0], "identification 0");
        assert_eq!(ip[6..8], [0x40, 0], "DF, no fragment offset");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(ip[9], nh, "protocol");
        assert_eq!(checksum(ip), 0, "header checksum");
        assert_eq!(ip[12..16], LB4, "outer source");
        (ip[16..20].to_vec(), 34)
    };
    let mut sport = None;
    let at = if gue {
        let udp = &out[at..at + 8];
        let sp = u16::from_be_bytes([udp[0], udp[1]]);
        assert!(
            sp >= 0xc000,
            "source port from the flow, in 49152-65535: {sp}"
        );
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), GUE_PORT);
        let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        assert_eq!(len, inner_len + 8, "UDP length");
        assert_eq!(udp[6..8], [0, 0], "UDP checksum 0");
        sport = Some(sp);
        at + 8
    } else {
        at
    };
    assert_eq!(
        &out[at..],
        inner,
        "the inner packet is the client's, unchanged"
    );
    (dst, sport)
}

fn tcp4(sport: u16) -> Frame {
    Frame::tcp(CLIENT, VIP, sport, 80).macs(CLIENT_MAC, LB_MAC)
}

fn tcp6(sport: u16) -> Frame6 {
    Frame6::tcp(CLIENT6, VIP6, sport, 80).macs(CLIENT_MAC, LB_MAC)
}

/// A frame with its TOS (IPv4, checksum fixed) or traffic class set.
fn with_tos(mut f: Vec<u8>, tos: u8) -> Vec<u8> {
    if f[14] >> 4 == 4 {
        f[15] = tos;
        f[24] = 0;
        f[25] = 0;
        let ihl = (f[14] & 0x0f) as usize * 4;
        let sum = checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
    } else {
        f[14] = 0x60 | (tos >> 4);
        f[15] = (tos << 4) | (f[15] & 0x0f);
    }
    f
}

#[test]
fn ipip_and_gue_over_ipv4_are_exact_and_spread_over_the_backends() {
    for encap in [Encap::Ipip, Encap::Gue { port: GUE_PORT }] {
        let gue = encap != Encap::Ipip;
        let mut h = Harness::new();
        let tcp_backends = tunnel(&mut h, 0, encap, false, 1500);
        let udp_backends = tunnel(&mut h, 1, encap, false, 1500);
        let mut seen = std::collections::HashMap::new();
        let mut ports = std::collections::HashSet::new();
        for sport in 1000..1300u16 {
            let sent = with_tos(tcp4(sport).payload(vec![7; 100]).build(), 0xb8);
            let out = h.expect(&sent, XDP_TX, Stat::TxRing);
            let (dst, gport) = check_encapsulated(&out, &sent, gue, false);
            assert!(tcp_backends.iter().any(|b| octets(*b) == dst), "{dst:?}");
            let again = h.expect(&sent, XDP_TX, Stat::TxRing);
            assert_eq!(
                out, again,
                "a flow's packets take one tunnel, one source port"
            );
            *seen.entry(dst).or_insert(0) += 1;
            ports.extend(gport);
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen.values().all(|&n| n >= 60), "{seen:?}");
        if gue {
            assert!(
                ports.len() > 250,
                "source ports vary per flow: {}",
                ports.len()
            );
        }
        let sent = Frame::udp(CLIENT, VIP, 4000, 53)
            .macs(CLIENT_MAC, LB_MAC)
            .payload(vec![1; 30])
            .build();
        let out = h.expect(&sent, XDP_TX, Stat::TxRing);
        let (dst, _) = check_encapsulated(&out, &sent, gue, false);
        assert!(udp_backends.iter().any(|b| octets(*b) == dst));
        // A SYN is a new flow, encapsulated the same way.
        let syn = tcp4(999).tcp_flags(0x02).build();
        let out = h.expect(&syn, XDP_TX, Stat::TxNewFlow);
        check_encapsulated(&out, &syn, gue, false);
    }
}

#[test]
fn ipv6_in_ipv6_and_ipv4_in_ipv6_are_exact() {
    for encap in [Encap::Ipip, Encap::Gue { port: GUE_PORT }] {
        let gue = encap != Encap::Ipip;
        let mut h = Harness::dual();
        // IPv6 VIP (spec 2) to IPv6 backends; IPv4 VIP (spec 0) to IPv6 backends.
        let six = tunnel(&mut h, 2, encap, true, 1500);
        let six_udp = tunnel(&mut h, 3, encap, true, 1500);
        let four_in_six = tunnel(&mut h, 0, encap, true, 1500);
        // UDP inside IPv6 outside too.
        let sent = Frame6::udp(CLIENT6, VIP6, 4000, 53)
            .macs(CLIENT_MAC, LB_MAC)
            .payload(vec![3; 30])
            .build();
        let out = h.expect(&sent, XDP_TX, Stat::TxRing);
        let (dst, _) = check_encapsulated(&out, &sent, gue, true);
        assert!(six_udp.iter().any(|b| octets(*b) == dst));
        for sport in 2000..2050u16 {
            let sent = with_tos(tcp6(sport).payload(vec![9; 64]).build(), 0x28);
            let out = h.expect(&sent, XDP_TX, Stat::TxRing);
            let (dst, _) = check_encapsulated(&out, &sent, gue, true);
            assert!(six.iter().any(|b| octets(*b) == dst));
            let sent = tcp4(sport).build();
            let out = h.expect(&sent, XDP_TX, Stat::TxRing);
            let (dst, _) = check_encapsulated(&out, &sent, gue, true);
            assert!(four_in_six.iter().any(|b| octets(*b) == dst));
        }
    }
}

#[test]
fn encapsulated_packets_count_for_their_backend() {
    let mut h = Harness::new();
    tunnel(&mut h, 0, Encap::Ipip, false, 1500);
    let total = |h: &Harness| -> u64 {
        (0..16)
            .map(|id| {
                h.writer
                    .store()
                    .backend_counter(id)
                    .expect("counter")
                    .packets
            })
            .sum()
    };
    let before = total(&h);
    for sport in 0..10u16 {
        h.expect(&tcp4(3000 + sport).build(), XDP_TX, Stat::TxRing);
    }
    let after = total(&h);
    assert_eq!(after - before, 10);
}

#[test]
fn a_packet_too_big_for_the_tunnel_gets_fragmentation_needed_with_df_and_is_dropped_without() {
    for (encap, over) in [(Encap::Ipip, 20u16), (Encap::Gue { port: GUE_PORT }, 28)] {
        let mut h = Harness::new();
        tunnel(&mut h, 0, encap, false, 1500);
        // 1500 bytes of IP: fits the link, not the tunnel.
        let big = tcp4(5000).payload(vec![0xab; 1460]).frag(0x4000).build();
        assert_eq!(ip_len(&big), 1500);
        let out = h.expect(&big, XDP_TX, Stat::TxTooBig);
        assert_eq!(
            out.len(),
            14 + 20 + 8 + 64,
            "header, ICMP header, 64 quoted bytes"
        );
        assert_eq!(out[0..6], CLIENT_MAC, "back to the sender");
        assert_eq!(out[6..12], LB_MAC);
        assert_eq!(out[12..14], [0x08, 0x00]);
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 92);
        assert_eq!(ip[9], 1, "ICMP");
        assert_eq!(checksum(ip), 0, "IP checksum");
        assert_eq!(ip[12..16], VIP, "from the VIP");
        assert_eq!(ip[16..20], CLIENT, "to the client");
        let icmp = &out[34..];
        assert_eq!(
            icmp[0..2],
            [3, 4],
            "destination unreachable, fragmentation needed"
        );
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(
            u16::from_be_bytes([icmp[6], icmp[7]]),
            1500 - over,
            "the MTU inside the tunnel"
        );
        assert_eq!(icmp[8..], big[14..14 + 64], "the original packet quoted");
        // Just fitting: sent.
        let fits = tcp4(5001)
            .payload(vec![0xab; 1460 - over as usize])
            .frag(0x4000)
            .build();
        let out = h.expect(&fits, XDP_TX, Stat::TxRing);
        assert_eq!(out.len(), fits.len() + over as usize);
        // Without DF: dropped (XDP cannot fragment).
        let no_df = tcp4(5002).payload(vec![0xab; 1460]).build();
        h.expect(&no_df, XDP_DROP, Stat::DropTooBig);
    }
}

#[test]
fn an_ipv6_packet_too_big_for_the_tunnel_gets_packet_too_big() {
    let mut h = Harness::dual();
    tunnel(&mut h, 2, Encap::Ipip, true, 1500);
    let big = tcp6(5000).payload(vec![0xcd; 1440]).build();
    assert_eq!(ip_len(&big), 1500);
    let out = h.expect(&big, XDP_TX, Stat::TxTooBig);
    assert_eq!(out.len(), 14 + 40 + 8 + 128);
    assert_eq!(out[0..6], CLIENT_MAC);
    assert_eq!(out[6..12], LB_MAC);
    assert_eq!(out[12..14], [0x86, 0xdd]);
    let ip = &out[14..54];
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 136);
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(ip[8..24], VIP6, "from the VIP");
    assert_eq!(ip[24..40], CLIENT6, "to the client");
    let icmp = &out[54..];
    assert_eq!(icmp[0..2], [2, 0], "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1460,
        "the MTU inside the tunnel"
    );
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(checksum(&pseudo), 0, "ICMPv6 checksum");
    assert_eq!(icmp[8..], big[14..14 + 128], "the original packet quoted");
}

/// An ICMP error from a router (10.77.0.1) to the VIP, quoting the reply
/// a backend sent from the VIP's port 80 to the client's `cport`.
fn frag_needed(kind: u8, code: u8, quoted_src: [u8; 4], vport: u16, cport: u16) -> Vec<u8> {
    let quoted = Frame::tcp(quoted_src, CLIENT, vport, cport).build();
    let mut body = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
    body.extend_from_slice(&quoted[14..14 + 28]);
    let sum = checksum(&body);
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    Frame::raw_ip([10, 77, 0, 1], VIP, 1, body)
        .macs(CLIENT_MAC, LB_MAC)
        .build()
}

#[test]
fn icmp_errors_for_a_vip_flow_go_to_the_flows_backend() {
    let mut h = Harness::new();
    for cport in 6000..6040u16 {
        let flow = h.expect(&tcp4(cport).build(), XDP_TX, Stat::TxRing);
        for (kind, code) in [(3, 4), (3, 1), (11, 0)] {
            let err = frag_needed(kind, code, VIP, 80, cport);
            let out = h.expect(&err, XDP_TX, Stat::TxIcmp);
            assert_eq!(out[0..6], flow[0..6], "the flow's backend");
            assert_eq!(out[6..12], LB_MAC);
            assert_eq!(out[12..], err[12..], "DSR: only the MACs change");
        }
    }
    // In changed slots the flow table answers, and nothing is recorded.
    h.mark_all_changed();
    let flow = h.expect(&tcp4(7000).tcp_flags(0x02).build(), XDP_TX, Stat::TxNewFlow);
    let out = h.expect(&frag_needed(3, 4, VIP, 80, 7000), XDP_TX, Stat::TxIcmp);
    assert_eq!(out[0..6], flow[0..6]);
    let recorded = h.writer.store().flow_stats().expect("flow stats");
    h.expect(&frag_needed(3, 4, VIP, 80, 7001), XDP_TX, Stat::TxIcmp);
    assert_eq!(
        h.writer.store().flow_stats().expect("flow stats"),
        recorded,
        "an ICMP error records no flow"
    );
    // Echo, errors about other ports or not from the VIP: the kernel's.
    let echo = Frame::raw_ip(CLIENT, VIP, 1, vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0])
        .macs(CLIENT_MAC, LB_MAC)
        .build();
    h.expect(&echo, XDP_PASS, Stat::PassVipOtherProto);
    h.expect(
        &frag_needed(3, 4, VIP, 81, 6000),
        XDP_PASS,
        Stat::PassVipOtherProto,
    );
    h.expect(
        &frag_needed(3, 4, [10, 77, 0, 99], 80, 6000),
        XDP_PASS,
        Stat::PassVipOtherProto,
    );
    let mut short = frag_needed(3, 4, VIP, 80, 6000);
    short.truncate(14 + 20 + 8 + 20);
    short[16..18].copy_from_slice(&48u16.to_be_bytes());
    h.expect(&short, XDP_PASS, Stat::PassVipOtherProto);
}

#[test]
fn icmp_errors_for_a_tunnelled_flow_are_encapsulated_to_its_backend() {
    let mut h = Harness::new();
    tunnel(&mut h, 0, Encap::Gue { port: GUE_PORT }, false, 1500);
    for cport in 6000..6020u16 {
        let flow = h.expect(&tcp4(cport).build(), XDP_TX, Stat::TxRing);
        let (backend, _) = check_encapsulated(&flow, &tcp4(cport).build(), true, false);
        let err = frag_needed(3, 4, VIP, 80, cport);
        let out = h.expect(&err, XDP_TX, Stat::TxIcmp);
        let (dst, _) = check_encapsulated(&out, &err, true, false);
        assert_eq!(dst, backend, "the flow's backend");
    }
}

#[test]
fn icmpv6_errors_for_a_vip_flow_go_to_the_flows_backend() {
    let h = Harness::dual();
    let router: [u8; 16] = ula(1);
    for cport in 6000..6030u16 {
        let flow = h.expect(&tcp6(cport).build(), XDP_TX, Stat::TxRing);
        assert!((4..=6).any(|i| flow[0..6] == backend_mac(i)));
        for kind in [2u8, 1, 3] {
            let quoted = Frame6::tcp(VIP6, CLIENT6, 80, cport).build();
            let mut body = vec![kind, 0, 0, 0, 0, 0, 0x05, 0x00];
            body.extend_from_slice(&quoted[14..]);
            let err = Frame6::raw_ip(router, VIP6, 58, body)
                .macs(CLIENT_MAC, LB_MAC)
                .build();
            let out = h.expect(&err, XDP_TX, Stat::TxIcmp);
            assert_eq!(out[0..6], flow[0..6], "the flow's backend");
            assert_eq!(out[12..], err[12..]);
        }
    }
    // Neighbour solicitation to the VIP stays the kernel's.
    let ns = Frame6::raw_ip(CLIENT6, VIP6, 58, vec![135, 0, 0, 0, 0, 0, 0, 0])
        .macs(CLIENT_MAC, LB_MAC)
        .build();
    h.expect(&ns, XDP_PASS, Stat::PassVipOtherProto);
}
