//! The XDP program on crafted IPv6 frames through `BPF_PROG_TEST_RUN`:
//! IPv6 services beside IPv4 ones, the extension headers it walks and
//! those it refuses, and what it does with everything else. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ha_common::{FlowKey, Stat, IPPROTO_TCP};
use halb_lab::frame::{nh, Frame, Frame6};
use halb_lab::harness::{
    backend_mac, ula, Harness, CLIENT_MAC, LB_MAC, VIP, VIP6, XDP_DROP, XDP_PASS, XDP_TX,
};

const CLIENT6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

fn tcp6(dst: [u8; 16], dport: u16, sport: u16) -> Frame6 {
    Frame6::tcp(CLIENT6, dst, sport, dport).macs(CLIENT_MAC, LB_MAC)
}

fn is_v6_backend(mac: &[u8]) -> bool {
    (4..=6).any(|i| mac == backend_mac(i))
}

#[test]
fn ipv6_tcp_and_udp_are_forwarded_with_rewritten_macs_and_spread() {
    let h = Harness::dual();
    let udp = Frame6::udp(CLIENT6, VIP6, 40001, 53).macs(CLIENT_MAC, LB_MAC);
    let data = udp.build();
    let out = h.expect(&data, XDP_TX, Stat::TxRing);
    assert!(is_v6_backend(&out[0..6]), "{:02x?}", &out[0..6]);
    assert_eq!(out[6..12], LB_MAC);
    assert_eq!(out[12..], data[12..], "DSR leaves IP and L4 untouched");

    let mut seen = std::collections::HashMap::new();
    for sport in 1000..1300u16 {
        let d = tcp6(VIP6, 80, sport).build();
        let first = h.expect(&d, XDP_TX, Stat::TxRing);
        let again = h.expect(&d, XDP_TX, Stat::TxRing);
        assert_eq!(first[0..6], again[0..6], "same flow, same backend");
        assert!(is_v6_backend(&first[0..6]));
        assert_eq!(first[12..], d[12..]);
        *seen.entry(first[5]).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 60), "{seen:?}");
    // A SYN is a new flow.
    h.expect(
        &tcp6(VIP6, 80, 999).tcp_flags(0x02).build(),
        XDP_TX,
        Stat::TxNewFlow,
    );
}

#[test]
fn ipv4_and_ipv6_services_coexist_and_keep_to_their_backends() {
    let h = Harness::dual();
    for sport in 2000..2100u16 {
        let v4 = Frame::tcp([10, 77, 0, 10], VIP, sport, 80)
            .macs(CLIENT_MAC, LB_MAC)
            .build();
        let out = h.expect(&v4, XDP_TX, Stat::TxRing);
        assert!((1..=3).any(|i| out[0..6] == backend_mac(i)), "v4 to v4");
        let out = h.expect(&tcp6(VIP6, 80, sport).build(), XDP_TX, Stat::TxRing);
        assert!(is_v6_backend(&out[0..6]), "v6 to v6");
    }
    // The IPv4 VIP's address as an IPv4-mapped IPv6 address is no VIP.
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&VIP);
    h.expect(&tcp6(mapped, 80, 1).build(), XDP_PASS, Stat::PassNotVip);
}

#[test]
fn ipv6_that_is_not_for_a_vip_service_passes_untouched() {
    let h = Harness::dual();
    // Another address, another port, a service of the other protocol.
    h.expect(&tcp6(ula(0x99), 80, 1).build(), XDP_PASS, Stat::PassNotVip);
    h.expect(&tcp6(VIP6, 81, 1).build(), XDP_PASS, Stat::PassNotVip);
    let udp80 = Frame6::udp(CLIENT6, VIP6, 1, 80).macs(CLIENT_MAC, LB_MAC);
    h.expect(&udp80.build(), XDP_PASS, Stat::PassNotVip);
    // Neighbour discovery to the solicited-node group, a router
    // advertisement to all nodes, VRRP to ff02::12.
    let mut solicited = [0u8; 16];
    solicited[..2].copy_from_slice(&[0xff, 0x02]);
    solicited[11..].copy_from_slice(&[1, 0xff, 0, 1, 0]);
    let ns = Frame6::raw_ip(CLIENT6, solicited, 58, vec![135, 0, 0, 0, 0, 0, 0, 0]);
    h.expect(&ns.build(), XDP_PASS, Stat::PassNotVip);
    let mut all_nodes = [0u8; 16];
    all_nodes[..2].copy_from_slice(&[0xff, 0x02]);
    all_nodes[15] = 1;
    let ra = Frame6::raw_ip(CLIENT6, all_nodes, 58, vec![134, 0, 0, 0, 64, 0, 0, 0]);
    h.expect(&ra.build(), XDP_PASS, Stat::PassNotVip);
    let mut vrrp_group = all_nodes;
    vrrp_group[15] = 0x12;
    let vrrp = Frame6::raw_ip(
        CLIENT6,
        vrrp_group,
        112,
        vec![0x31, 1, 100, 1, 0, 100, 0, 0],
    );
    h.expect(&vrrp.build(), XDP_PASS, Stat::PassNotVip);
    // ICMPv6 to the VIP (ping, and an NS sent to it directly): the kernel's.
    let echo = Frame6::raw_ip(CLIENT6, VIP6, 58, vec![128, 0, 0, 0, 0, 1, 0, 1]);
    h.expect(
        &echo.macs(CLIENT_MAC, LB_MAC).build(),
        XDP_PASS,
        Stat::PassVipOtherProto,
    );
    // A VIP service frame sent to another MAC (flooded unknown unicast).
    let other = Frame6::tcp(CLIENT6, VIP6, 1, 80).macs(CLIENT_MAC, [2, 0, 0, 0, 0, 0x77]);
    h.expect(&other.build(), XDP_PASS, Stat::PassOtherHost);
}

#[test]
fn walked_extension_headers_are_forwarded_unchanged() {
    let h = Harness::dual();
    for f in [
        tcp6(VIP6, 80, 5000).ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0]),
        tcp6(VIP6, 80, 5001)
            .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0])
            .ext(nh::ROUTING, [0, 0, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0]),
    ] {
        let d = f.build();
        let out = h.expect(&d, XDP_TX, Stat::TxRing);
        assert!(is_v6_backend(&out[0..6]));
        assert_eq!(out[12..], d[12..], "extension headers left as they were");
    }
    // A flow is the same flow with or without a hop-by-hop header.
    let plain = h.run(&tcp6(VIP6, 80, 5002).build()).1;
    let hbh = h
        .run(
            &tcp6(VIP6, 80, 5002)
                .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
                .build(),
        )
        .1;
    assert_eq!(plain[0..6], hbh[0..6]);
}

#[test]
fn extension_headers_it_does_not_walk_are_dropped_at_a_vip_and_passed_elsewhere() {
    let h = Harness::dual();
    let five = |dst| {
        tcp6(dst, 80, 6000)
            .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0])
            .ext(nh::DEST_OPTS, [1, 4, 0, 0, 0, 0])
    };
    let waypoint = |dst| tcp6(dst, 80, 6001).ext(nh::ROUTING, [4, 1, 0, 0, 0, 0]);
    let fragment = |dst| tcp6(dst, 80, 6002).ext(nh::FRAGMENT, [0, 1, 0, 0, 0, 1]);
    let later = |dst| {
        tcp6(dst, 80, 6003)
            .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
            .ext(nh::FRAGMENT, [0, 0, 0, 0, 0, 1])
    };
    h.expect(&five(VIP6).build(), XDP_DROP, Stat::DropExtHeaders);
    h.expect(&waypoint(VIP6).build(), XDP_DROP, Stat::DropExtHeaders);
    h.expect(&fragment(VIP6).build(), XDP_DROP, Stat::DropFragment);
    h.expect(&later(VIP6).build(), XDP_DROP, Stat::DropFragment);
    for f in [five, waypoint, fragment, later] {
        h.expect(&f(ula(0x99)).build(), XDP_PASS, Stat::PassNotVip);
    }
}

#[test]
fn truncated_and_malformed_ipv6_gets_the_documented_action() {
    let h = Harness::dual();
    let good = tcp6(VIP6, 80, 7000).build();
    // The fixed header cut short: the destination is unknown.
    h.expect(&good[..14 + 39], XDP_PASS, Stat::PassTruncated);
    h.expect(&good[..20], XDP_PASS, Stat::PassTruncated);
    // The TCP header cut short (payload length kept: beyond the frame).
    h.expect(&good[..14 + 40 + 19], XDP_DROP, Stat::DropMalformed);
    // Payload length consistent with a cut TCP header.
    let short = tcp6(VIP6, 80, 7001).payload_len(12).build();
    h.expect(&short[..14 + 40 + 12], XDP_DROP, Stat::DropMalformed);
    h.expect(&short, XDP_DROP, Stat::DropMalformed);
    // A jumbogram's payload length 0; a version that is not 6.
    h.expect(
        &tcp6(VIP6, 80, 7002).payload_len(0).build(),
        XDP_DROP,
        Stat::DropMalformed,
    );
    h.expect(
        &tcp6(VIP6, 80, 7003).version(4).build(),
        XDP_DROP,
        Stat::DropMalformed,
    );
    // An extension header cut short.
    let cut = tcp6(VIP6, 80, 7004)
        .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
        .build();
    h.expect(&cut[..14 + 40 + 4], XDP_DROP, Stat::DropMalformed);
    // An extension header that claims more than the payload.
    let mut long = tcp6(VIP6, 80, 7005)
        .ext(nh::HOP_BY_HOP, [1, 4, 0, 0, 0, 0])
        .build();
    long[14 + 40 + 1] = 200;
    h.expect(&long, XDP_DROP, Stat::DropMalformed);
    // Ethernet padding after the packet is legal.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 10]);
    h.expect(&padded, XDP_TX, Stat::TxRing);
    // The same malformed frames to another address pass.
    h.expect(
        &tcp6(ula(0x99), 80, 7006).payload_len(0).build(),
        XDP_PASS,
        Stat::PassNotVip,
    );
}

#[test]
fn ipv6_flows_in_changed_slots_are_recorded_and_routed_as_the_agent_says() {
    let mut h = Harness::dual();
    // A new table size for the IPv6 TCP service: every slot changed.
    h.specs[2].table_size = 65521;
    h.apply();
    let service = h.specs[2].service;
    for sport in 8000..8050u16 {
        let syn = tcp6(VIP6, 80, sport).tcp_flags(0x02).build();
        let first = h.expect(&syn, XDP_TX, Stat::TxNewFlow);
        let ack = tcp6(VIP6, 80, sport).build();
        let next = h.expect(&ack, XDP_TX, Stat::TxFlowHit);
        assert_eq!(first[0..6], next[0..6]);
        let key = FlowKey::ipv6(
            0,
            CLIENT6,
            VIP6,
            ha_common::ports_raw(sport, 80),
            IPPROTO_TCP,
        );
        let e = h
            .writer
            .store()
            .flow(&key)
            .expect("read")
            .expect("recorded");
        let id = h
            .writer
            .store()
            .route_service(&service, &key)
            .expect("route")
            .expect("a backend");
        assert_eq!(e.backend as u32, id);
        let b = h.writer.store().backend(id).expect("backend");
        assert_eq!(b.mac, first[0..6], "the agent and the program agree");
        let addr = IpAddr::V6(Ipv6Addr::from(b.addr));
        assert_eq!(h.writer.backend_id(&service, addr), Some(id));
    }
    // The census sees the IPv6 flows as the writer's services name them.
    let services = h.writer.services();
    let view = h.writer.store().flow_view().expect("view");
    let census = halb::dataplane::census::walk(&view, 0, 60, &services, &h.writer.ring_views());
    let live: u64 = census.per_backend.values().map(|c| c.1).sum();
    assert_eq!(live, 50);
    // An IPv4 client of the IPv4 service is unaffected by the IPv6 change.
    let v4 = Frame::tcp([10, 77, 0, 10], VIP, 8000, 80)
        .macs(CLIENT_MAC, LB_MAC)
        .build();
    h.expect(&v4, XDP_TX, Stat::TxRing);
}

#[test]
fn a_backend_of_the_other_family_is_refused() {
    let mut h = Harness::dual();
    h.specs[2].backends[0].addr = Ipv4Addr::new(10, 77, 0, 99).into();
    let err = h.writer.apply(&h.specs).expect_err("refused");
    assert!(err.to_string().contains("another address family"), "{err}");
    // Nothing changed: the IPv6 service still forwards.
    let d = tcp6(VIP6, 80, 9000).build();
    h.expect(&d, XDP_TX, Stat::TxRing);
}

#[test]
fn the_ipv6_service_cache_holds_what_the_map_holds_and_a_miss_falls_back() {
    let mut h = Harness::dual();
    let k6 = h.specs[2].service.key6().expect("v6");
    let info = h.writer.vip_info(&h.specs[2].service).expect("vip");
    assert_eq!(h.writer.store().cached_service6(&k6), Some(info));
    let d = tcp6(VIP6, 80, 9100).build();
    let cached = h.expect(&d, XDP_TX, Stat::TxRing);
    // A change of table (a backend drained) reaches the cache too.
    h.specs[2].backends[0].weight = 0;
    h.apply();
    let info = h.writer.vip_info(&h.specs[2].service).expect("vip");
    assert_eq!(h.writer.store().cached_service6(&k6), Some(info));
    // Removing the service empties its slot; the program passes its frames.
    let spec = h.specs.remove(2);
    h.apply();
    assert_eq!(h.writer.store().cached_service6(&k6), None);
    h.expect(&d, XDP_PASS, Stat::PassNotVip);
    h.specs.insert(2, spec);
    h.specs[2].backends[0].weight = 1;
    h.apply();
    let again = h.expect(&d, XDP_TX, Stat::TxRing);
    assert_eq!(cached[0..6], again[0..6], "the same backend as before");
}
