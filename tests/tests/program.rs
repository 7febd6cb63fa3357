//! The XDP program on crafted frames through `BPF_PROG_TEST_RUN`: what it
//! does with VIP traffic, with everything else, and with malformed input.
//! Needs root (loads BPF); CI runs as root.

use std::net::Ipv4Addr;

use ha_common::{
    flow_hash, ports_raw, FlowKey, Stat, DEFAULT_FLOW_SETS, FLOW_CLOSING, FLOW_TIME_SHIFT,
    FLOW_WAYS, IPPROTO_TCP,
};
use halb::dataplane::{BackendSpec, Service, VipSpec};
use halb_lab::frame::{self, Frame};

use halb_lab::harness::{
    backend_mac, Harness, CLIENT_MAC, LB_MAC, VIP, XDP_DROP, XDP_PASS, XDP_TX,
};

fn tcp_to(dst: [u8; 4], dport: u16, sport: u16) -> Frame {
    Frame::tcp([10, 77, 0, 10], dst, sport, dport).macs(CLIENT_MAC, LB_MAC)
}

#[test]
fn vip_tcp_and_udp_are_forwarded_with_rewritten_macs() {
    let h = Harness::new();
    for f in [
        tcp_to(VIP, 80, 40000),
        Frame::udp([10, 77, 0, 10], VIP, 40001, 53).macs(CLIENT_MAC, LB_MAC),
    ] {
        let data = f.build();
        let out = h.expect(&data, XDP_TX, Stat::TxRing);
        let dst: [u8; 6] = out[0..6].try_into().expect("mac");
        assert!(
            (1..=3).any(|i| dst == backend_mac(i)),
            "dst MAC {dst:02x?} is a backend's"
        );
        assert_eq!(out[6..12], LB_MAC, "source MAC is the interface's");
        assert_eq!(out[12..], data[12..], "DSR leaves IP and L4 untouched");
    }
}

#[test]
fn same_flow_same_backend_and_flows_spread() {
    let h = Harness::new();
    let mut seen = std::collections::HashMap::new();
    for sport in 1000..1300u16 {
        let data = tcp_to(VIP, 80, sport).build();
        let first = h.expect(&data, XDP_TX, Stat::TxRing);
        let second = h.expect(&data, XDP_TX, Stat::TxRing);
        assert_eq!(first[0..6], second[0..6], "same flow, same backend");
        *seen.entry(first[5]).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.values().all(|&n| n >= 60),
        "300 flows spread over 3 backends: {seen:?}"
    );
    // No slot changed: no flow needed recording.
    assert_eq!(h.writer.store().flows().expect("flows").len(), 0);
    assert_eq!(h.stat(Stat::TxFlowHit) + h.stat(Stat::TxFlowMiss), 0);
}

#[test]
fn flows_that_began_before_a_change_keep_their_backend_and_are_recorded() {
    let mut h = Harness::new();
    let flows: Vec<(Vec<u8>, [u8; 6])> = (2000..2300u16)
        .map(|sport| {
            let d = tcp_to(VIP, 80, sport).build();
            let out = h.expect(&d, XDP_TX, Stat::TxRing);
            (d, out[0..6].try_into().expect("mac"))
        })
        .collect();
    // A fourth backend takes about a quarter of the slots.
    h.specs[0].backends.push(BackendSpec {
        addr: Ipv4Addr::new(10, 77, 0, 24).into(),
        mac: Some(backend_mac(4)),
        weight: 1,
        healthy: true,
        tunnel: None,
    });
    h.apply();
    let changed = h.writer.changed_slots();
    assert!(
        (65537 / 5..65537 / 3).contains(&changed),
        "{changed} slots changed"
    );
    let mut missed = 0;
    for (d, mac) in &flows {
        let misses = h.stat(Stat::TxFlowMiss);
        let (rc, out) = h.run(d);
        assert_eq!(rc, XDP_TX);
        assert_eq!(out[0..6], mac[..], "an established flow keeps its backend");
        if h.stat(Stat::TxFlowMiss) == misses + 1 {
            missed += 1;
            // Recorded: the next packet hits its entry.
            h.expect(d, XDP_TX, Stat::TxFlowHit);
        }
    }
    assert!(missed > 30, "{missed} flows were in changed slots");
    assert_eq!(
        h.writer.store().flows().expect("flows").len(),
        missed,
        "exactly the flows of changed slots were recorded"
    );
    // New connections (SYN) in changed slots reach the new backend.
    let to_new = (3000..3400u16)
        .filter(|&p| {
            let out = h.expect(
                &tcp_to(VIP, 80, p).tcp_flags(0x02).build(),
                XDP_TX,
                Stat::TxNewFlow,
            );
            out[0..6] == backend_mac(4)
        })
        .count();
    assert!(to_new > 40, "{to_new} of 400 new flows on the new backend");
}

#[test]
fn settled_slots_go_back_to_the_ring_unless_a_live_flow_holds_them() {
    let mut h = Harness::new();
    let flows: Vec<(Vec<u8>, [u8; 6])> = (2000..2300u16)
        .map(|sport| {
            let d = tcp_to(VIP, 80, sport).build();
            let (_, out) = h.run(&d);
            (d, out[0..6].try_into().expect("mac"))
        })
        .collect();
    h.specs[0].backends[0].weight = 0;
    h.apply();
    for (d, _) in &flows {
        h.run(d);
    }
    let recorded = h.writer.store().flows().expect("flows");
    assert!(!recorded.is_empty());
    let key = Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP);
    let vip_id = h.writer.vip_info(&key).expect("vip").id;
    let drained_id = h
        .writer
        .backend_id(&key, Ipv4Addr::new(10, 77, 0, 21))
        .expect("id");
    assert!(h.writer.previous_backends().contains(&drained_id));
    // The slots of the recorded flows are held; every other one settles.
    let pinned: std::collections::HashSet<(u32, u32)> = recorded
        .iter()
        .map(|(k, _)| {
            (
                vip_id,
                ha_common::ring_slot(flow_hash(0, k.saddr, k.daddr, k.ports, k.proto), 65537),
            )
        })
        .collect();
    let hold = std::time::Duration::from_secs(60);
    let later = std::time::Instant::now() + hold;
    assert_eq!(
        h.writer
            .settle(std::time::Instant::now(), hold, &pinned)
            .expect("settle"),
        0,
        "nothing settles before the hold"
    );
    // The census finds exactly those slots held.
    let services = h.writer.services();
    let rings = h.writer.ring_views();
    let view = h.writer.store().flow_view().expect("view");
    let census = halb::dataplane::census::walk(&view, 0, 60, &services, &rings);
    assert_eq!(census.pinned, pinned, "the census finds the held slots");
    let drained_live = census.per_backend.get(&drained_id).map_or(0, |c| c.1);
    assert_eq!(
        drained_live as usize,
        recorded
            .iter()
            .filter(|(_, e)| e.backend as u32 == drained_id)
            .count(),
        "every recorded flow of the drained backend is live"
    );
    let settled = h.writer.settle(later, hold, &pinned).expect("settle");
    assert_eq!(
        h.writer.changed_slots(),
        pinned.len(),
        "held slots stay marked"
    );
    assert!(settled > 1000, "{settled}");
    assert!(
        h.writer.previous_backends().is_empty(),
        "their second chance is over"
    );
    for (d, mac) in &flows {
        let (_, out) = h.run(d);
        assert_eq!(out[0..6], mac[..], "held flows keep their backend");
    }
    // An unknown flow in a held slot now takes the slot's current backend,
    // not the drained one (new UDP flows cannot hold a slot forever).
    let (_, (held_key, _)) = pinned
        .iter()
        .next()
        .map(|p| (p, recorded[0]))
        .expect("a held slot");
    let _ = held_key;
    let newcomer = (20_000..60_000u16)
        .map(|p| flow_key([10, 77, 0, 10], p))
        .find(|k| {
            pinned.contains(&(
                vip_id,
                ha_common::ring_slot(flow_hash(0, k.saddr, k.daddr, k.ports, k.proto), 65537),
            ))
        })
        .expect("a new tuple in a held slot");
    let out = h.expect(
        &tcp_to(VIP, 80, newcomer.sport()).build(),
        XDP_TX,
        Stat::TxFlowMiss,
    );
    assert_ne!(out[0..6], backend_mac(1), "not to the drained backend");
    // Once nothing holds them, the last slots settle too, and the drained
    // backend is no slot's previous backend any more.
    h.writer
        .settle(later, hold, &Default::default())
        .expect("settle");
    assert_eq!(h.writer.changed_slots(), 0);
    assert!(h.writer.previous_backends().is_empty());
}

#[test]
fn not_for_a_vip_passes_untouched() {
    let h = Harness::new();
    h.expect(
        &tcp_to([10, 77, 0, 2], 22, 5555).build(),
        XDP_PASS,
        Stat::PassNotVip,
    );
    h.expect(&tcp_to(VIP, 22, 5555).build(), XDP_PASS, Stat::PassNotVip);
    h.expect(
        &Frame::udp([10, 77, 0, 10], VIP, 5555, 80)
            .macs(CLIENT_MAC, LB_MAC)
            .build(),
        XDP_PASS,
        Stat::PassNotVip,
    );
    h.expect(
        &frame::arp_request([10, 77, 0, 10], VIP),
        XDP_PASS,
        Stat::PassNotIp,
    );
    h.expect(&frame::ipv6_udp(), XDP_PASS, Stat::PassNotVip);
    let vrrp = Frame::raw_ip([10, 77, 0, 2], [224, 0, 0, 18], 112, vec![0x31; 20]).build();
    h.expect(&vrrp, XDP_PASS, Stat::PassNotVip);
    let icmp = Frame::raw_ip([10, 77, 0, 10], VIP, 1, vec![8, 0, 0, 0, 0, 0, 0, 0]).build();
    h.expect(&icmp, XDP_PASS, Stat::PassVipOtherProto);
}

#[test]
fn vip_frames_for_another_mac_are_not_forwarded() {
    let h = Harness::new();
    // A switch flooding unknown unicast hands us the master's frames.
    let other = tcp_to(VIP, 80, 7100)
        .macs(CLIENT_MAC, [0x02, 0, 0, 0, 0, 0x03])
        .build();
    h.expect(&other, XDP_PASS, Stat::PassOtherHost);
    h.expect(&tcp_to(VIP, 80, 7100).build(), XDP_TX, Stat::TxRing);
}

#[test]
fn malformed_and_fragmented_frames_have_a_defined_fate() {
    let h = Harness::new();
    let good = tcp_to(VIP, 80, 7000).build();
    // Ethernet only: not IPv4 payload.
    h.expect(&good[..14], XDP_PASS, Stat::PassTruncated);
    // IPv4 header cut short: destination unknown, the kernel drops it.
    h.expect(&good[..14 + 12], XDP_PASS, Stat::PassTruncated);
    // TCP header cut short, to a VIP: dropped.
    h.expect(&good[..14 + 20 + 10], XDP_DROP, Stat::DropMalformed);
    // IHL below 5.
    h.expect(
        &tcp_to(VIP, 80, 7001).ihl(3).build(),
        XDP_DROP,
        Stat::DropMalformed,
    );
    h.expect(
        &tcp_to([10, 77, 0, 9], 80, 7001).ihl(3).build(),
        XDP_PASS,
        Stat::PassNotVip,
    );
    // Total length shorter than the header.
    h.expect(
        &tcp_to(VIP, 80, 7002).total_len(12).build(),
        XDP_DROP,
        Stat::DropMalformed,
    );
    // Wrong IP version in an IPv4 frame.
    h.expect(
        &tcp_to(VIP, 80, 7003).version(6).build(),
        XDP_DROP,
        Stat::DropMalformed,
    );
    // Fragments to a VIP: first (MF) and later (offset) alike.
    h.expect(
        &tcp_to(VIP, 80, 7004).frag(0x2000).build(),
        XDP_DROP,
        Stat::DropFragment,
    );
    h.expect(
        &tcp_to(VIP, 80, 7005).frag(0x0010).build(),
        XDP_DROP,
        Stat::DropFragment,
    );
    // DF alone is not a fragment.
    h.expect(
        &tcp_to(VIP, 80, 7006).frag(0x4000).build(),
        XDP_TX,
        Stat::TxRing,
    );
    // Fragments to others pass.
    h.expect(
        &tcp_to([10, 77, 0, 9], 80, 7007).frag(0x0010).build(),
        XDP_PASS,
        Stat::PassNotVip,
    );
}

#[test]
fn ip_options_are_forwarded_intact() {
    let h = Harness::new();
    let data = tcp_to(VIP, 80, 8000)
        .options(vec![1, 1, 1, 1, 0x94, 4, 0, 0])
        .build();
    assert_eq!(data[14] & 0x0f, 7, "IHL 7");
    let out = h.expect(&data, XDP_TX, Stat::TxRing);
    assert_eq!(out[12..], data[12..]);
    // The ports were read after the options: the same flow without options
    // (different IP header) still hashes on the same 5-tuple.
    let plain = tcp_to(VIP, 80, 8000).build();
    let (rc, out2) = h.run(&plain);
    assert_eq!(rc, XDP_TX);
    assert_eq!(out[0..6], out2[0..6], "options do not change the flow");
}

#[test]
fn drained_backend_keeps_its_flows_and_gets_no_new_ones() {
    let mut h = Harness::new();
    // Establish 60 flows and remember where they went.
    let flows: Vec<(Vec<u8>, u8)> = (2000..2060u16)
        .map(|sport| {
            let d = tcp_to(VIP, 80, sport).build();
            let (rc, out) = h.run(&d);
            assert_eq!(rc, XDP_TX);
            (d, out[5])
        })
        .collect();
    let drained = backend_mac(2)[5];
    assert!(
        flows.iter().any(|(_, b)| *b == drained),
        "some flows on backend 2"
    );
    h.specs[0].backends[1].weight = 0;
    h.apply();
    for (d, b) in &flows {
        let (rc, out) = h.run(d);
        assert_eq!(rc, XDP_TX);
        assert_eq!(
            out[5], *b,
            "established flow stays on its backend, drained or not"
        );
    }
    for sport in 3000..3200u16 {
        let (rc, out) = h.run(&tcp_to(VIP, 80, sport).tcp_flags(0x02).build());
        assert_eq!(rc, XDP_TX);
        assert_ne!(out[5], drained, "no new flow for the drained backend");
    }
}

#[test]
fn down_backend_loses_its_flows_to_the_others() {
    let mut h = Harness::new();
    let flows: Vec<(Vec<u8>, u8)> = (4000..4060u16)
        .map(|sport| {
            let d = tcp_to(VIP, 80, sport).build();
            let (_, out) = h.run(&d);
            (d, out[5])
        })
        .collect();
    let dead = backend_mac(1)[5];
    h.specs[0].backends[0].healthy = false;
    h.apply();
    for (d, b) in &flows {
        let (rc, out) = h.run(d);
        assert_eq!(rc, XDP_TX);
        assert_ne!(out[5], dead, "nothing goes to a down backend");
        if *b != dead {
            assert_eq!(out[5], *b, "flows of live backends do not move");
        }
    }
    // All down: dropped.
    for b in &mut h.specs[0].backends {
        b.healthy = false;
    }
    h.apply();
    h.expect(
        &tcp_to(VIP, 80, 4000).build(),
        XDP_DROP,
        Stat::DropNoBackend,
    );
}

#[test]
fn counters_add_up() {
    let h = Harness::new();
    let key = Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP);
    let mut bytes = 0u64;
    for sport in 0..50u16 {
        let flags = if sport < 10 { 0x02 } else { 0x10 };
        let d = tcp_to(VIP, 80, 9000 + sport % 10)
            .tcp_flags(flags)
            .payload(vec![0; sport as usize])
            .build();
        bytes += d.len() as u64;
        assert_eq!(h.run(&d).0, XDP_TX);
    }
    let mut packets = 0;
    let mut b_bytes = 0;
    let mut new_flows = 0;
    for i in 1..=3u8 {
        let id = h
            .writer
            .backend_id(&key, Ipv4Addr::new(10, 77, 0, 20 + i))
            .expect("id");
        let c = h.writer.store().backend_counter(id).expect("counter");
        packets += c.packets;
        b_bytes += c.bytes;
        new_flows += c.new_flows;
    }
    assert_eq!((packets, b_bytes, new_flows), (50, bytes, 10));
    assert_eq!(h.stat(Stat::TxNewFlow), 10);
    assert_eq!(h.stat(Stat::TxRing), 40);
    assert_eq!(h.writer.store().flows().expect("flows").len(), 0);
}

/// `n` client tuples from 10.77.`net`.x whose flows share one flow-table
/// set (that of 10.77.0.10:1).
fn one_set(net: u8, n: usize) -> Vec<([u8; 4], u16)> {
    let mask = DEFAULT_FLOW_SETS - 1;
    let set_of = |k: &FlowKey| flow_hash(0, k.saddr, k.daddr, k.ports, k.proto) & mask;
    let target = set_of(&flow_key([10, 77, 0, 10], 1));
    let found: Vec<([u8; 4], u16)> = (1..=250u8)
        .flat_map(|a| (1..u16::MAX).map(move |p| ([10, 77, net, a], p)))
        .filter(|(src, p)| set_of(&flow_key(*src, *p)) == target)
        .take(n)
        .collect();
    assert_eq!(found.len(), n);
    found
}

/// Moves the last packet of `key`'s entry `units` flow-time units back.
fn age(h: &mut Harness, key: &FlowKey, units: u32) {
    let index = h.writer.store().flow_set_index(key);
    let mut set = h
        .writer
        .store()
        .flow_view()
        .expect("view")
        .set(index as usize)
        .expect("set");
    for e in &mut set.entries {
        if e.saddr == key.saddr && e.ports == key.ports {
            let t = (e.stamp >> FLOW_TIME_SHIFT).wrapping_sub(units);
            e.stamp = (t << FLOW_TIME_SHIFT) | (e.stamp & 3);
        }
    }
    h.writer
        .store_mut()
        .set_flow_set(index, &set)
        .expect("write set");
}

fn flow_key(src: [u8; 4], sport: u16) -> FlowKey {
    FlowKey {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(VIP),
        ports: ports_raw(sport, 80),
        proto: IPPROTO_TCP as u32,
    }
}

#[test]
fn syn_starts_over_on_a_drained_backend() {
    let mut h = Harness::new();
    // Find a flow that lands on backend 2, then drain backend 2.
    let sport = (5000..6000u16)
        .find(|&p| h.run(&tcp_to(VIP, 80, p).build()).1[5] == backend_mac(2)[5])
        .expect("some flow on backend 2");
    h.specs[0].backends[1].weight = 0;
    h.apply();
    let (_, ack) = h.run(&tcp_to(VIP, 80, sport).build());
    assert_eq!(ack[5], backend_mac(2)[5], "the established flow stays");
    // The same 5-tuple reused for a new connection (SYN) follows the new table.
    let syn = tcp_to(VIP, 80, sport).tcp_flags(0x02).build();
    let out = h.expect(&syn, XDP_TX, Stat::TxNewFlow);
    assert_ne!(
        out[5],
        backend_mac(2)[5],
        "a new connection avoids the drained backend"
    );
    let (_, again) = h.run(&tcp_to(VIP, 80, sport).build());
    assert_eq!(
        again[5], out[5],
        "and the flow entry now names the new backend"
    );
}

#[test]
fn a_full_set_evicts_the_flow_idle_longest_and_counts_it() {
    let mut h = Harness::new();
    h.mark_all_changed();
    // FLOW_WAYS + 1 flows that share one set of the flow table.
    let same_set = one_set(1, FLOW_WAYS + 1);
    let frame = |(src, p): ([u8; 4], u16)| {
        Frame::tcp(src, VIP, p, 80)
            .macs(CLIENT_MAC, LB_MAC)
            .tcp_flags(0x02)
            .build()
    };
    for &f in &same_set[..FLOW_WAYS] {
        h.expect(&frame(f), XDP_TX, Stat::TxNewFlow);
    }
    // Age the third flow: its last packet 10 flow-time units earlier.
    age(&mut h, &flow_key(same_set[2].0, same_set[2].1), 10);
    let evicted = |h: &Harness| h.writer.store().flow_stats().expect("stats")[1].1;
    let before = evicted(&h);
    let newcomer = same_set[FLOW_WAYS];
    h.expect(&frame(newcomer), XDP_TX, Stat::TxNewFlow);
    let maps = h.writer.store();
    let present = |(src, p): ([u8; 4], u16)| maps.flow(&flow_key(src, p)).expect("read").is_some();
    assert!(present(newcomer), "the new flow got an entry");
    assert!(!present(same_set[2]), "the flow idle longest was evicted");
    for (i, &f) in same_set[..FLOW_WAYS].iter().enumerate() {
        if i != 2 {
            assert!(present(f), "flow {i} kept its entry");
        }
    }
    assert_eq!(evicted(&h), before + 1, "a live flow's eviction is counted");
    // The evicted flow still reaches a backend (no previous: the ring's).
    let ack = Frame::tcp(same_set[2].0, VIP, same_set[2].1, 80)
        .macs(CLIENT_MAC, LB_MAC)
        .build();
    h.expect(&ack, XDP_TX, Stat::TxFlowMiss);
}

#[test]
fn torn_or_foreign_entries_are_ignored() {
    let mut h = Harness::new();
    h.mark_all_changed();
    let d = tcp_to(VIP, 80, 6100).build();
    h.expect(&d, XDP_TX, Stat::TxFlowMiss);
    h.expect(&d, XDP_TX, Stat::TxFlowHit);
    // Forget the entry as userspace would: the next packet is unknown again.
    let key = flow_key([10, 77, 0, 10], 6100);
    h.writer.store_mut().remove_flow(&key).expect("remove");
    h.expect(&d, XDP_TX, Stat::TxFlowMiss);
    assert!(h.writer.store().flow(&key).expect("read").is_some());
}

#[test]
fn total_length_must_fit_the_frame_and_cover_the_headers() {
    let h = Harness::new();
    // Longer than the frame: a cut packet.
    let mut long = tcp_to(VIP, 80, 7100).build();
    long[16..18].copy_from_slice(&(40u16 + 100).to_be_bytes());
    h.expect(&long, XDP_DROP, Stat::DropMalformed);
    // Shorter than IP + TCP headers, the rest Ethernet padding: the ports
    // and flags would come from padding.
    let mut short = tcp_to(VIP, 80, 7101).build();
    short[16..18].copy_from_slice(&(20u16 + 10).to_be_bytes());
    h.expect(&short, XDP_DROP, Stat::DropMalformed);
    let mut short_udp = Frame::udp([10, 77, 0, 10], VIP, 7102, 53)
        .macs(CLIENT_MAC, LB_MAC)
        .payload(vec![0; 16])
        .build();
    short_udp[16..18].copy_from_slice(&(20u16 + 4).to_be_bytes());
    h.expect(&short_udp, XDP_DROP, Stat::DropMalformed);
    // To another address, the same frames are the kernel's business.
    let mut other = tcp_to([10, 77, 0, 9], 80, 7103).build();
    other[16..18].copy_from_slice(&(40u16 + 100).to_be_bytes());
    h.expect(&other, XDP_PASS, Stat::PassNotVip);
    // Ethernet padding after a whole packet is fine.
    let mut padded = tcp_to(VIP, 80, 7104).build();
    padded.extend_from_slice(&[0; 6]);
    h.expect(&padded, XDP_TX, Stat::TxRing);
}

#[test]
fn a_client_fin_or_rst_marks_its_flow_closing() {
    let mut h = Harness::new();
    h.mark_all_changed();
    for (sport, flags) in [(7200u16, 0x11u8), (7201, 0x04), (7202, 0x14)] {
        h.expect(
            &tcp_to(VIP, 80, sport).tcp_flags(0x02).build(),
            XDP_TX,
            Stat::TxNewFlow,
        );
        let key = flow_key([10, 77, 0, 10], sport);
        let e = h.writer.store().flow(&key).expect("read").expect("entry");
        assert!(!e.closing());
        assert_ne!(
            e.stamp >> ha_common::FLOW_TIME_SHIFT,
            0,
            "the time is stamped"
        );
        h.expect(
            &tcp_to(VIP, 80, sport).tcp_flags(flags).build(),
            XDP_TX,
            Stat::TxFlowHit,
        );
        let e = h.writer.store().flow(&key).expect("read").expect("entry");
        assert_eq!(e.stamp & FLOW_CLOSING, FLOW_CLOSING, "flags {flags:#x}");
        // Later packets of the flow keep the mark.
        h.expect(&tcp_to(VIP, 80, sport).build(), XDP_TX, Stat::TxFlowHit);
        let e = h.writer.store().flow(&key).expect("read").expect("entry");
        assert!(e.closing());
    }
}

#[test]
fn flows_of_a_removed_service_never_reach_the_service_that_reuses_its_ids() {
    let mut h = Harness::new();
    // Flows on port 80.
    let flows: Vec<Vec<u8>> = (7300..7340u16)
        .map(|p| tcp_to(VIP, 80, p).build())
        .collect();
    for d in &flows {
        h.expect(d, XDP_TX, Stat::TxRing);
    }
    let key80 = Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP);
    let ids80: Vec<u32> = (1..=3u8)
        .map(|i| {
            h.writer
                .backend_id(&key80, Ipv4Addr::new(10, 77, 0, 20 + i))
                .expect("id")
        })
        .collect();
    // Fill every VIP and backend slot, so that what port 80 frees is all
    // there is for what comes next.
    let (free_vips, free_backends) = h.writer.free_slots();
    h.specs.push(VipSpec {
        service: Service::new(Ipv4Addr::new(10, 77, 0, 200), 80, IPPROTO_TCP),
        table_size: 65537,
        source_hash: false,
        encap: halb::dataplane::Encap::Dsr,
        backends: (0..free_backends as u32)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::from(0x0a60_0000 + i).into(),
                mac: Some(backend_mac(9)),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect(),
    });
    for i in 1..free_vips as u16 {
        h.specs.push(VipSpec {
            service: Service::new(Ipv4Addr::new(10, 77, 0, 201), 1000 + i, IPPROTO_TCP),
            table_size: 251,
            source_hash: false,
            encap: halb::dataplane::Encap::Dsr,
            backends: vec![],
        });
    }
    h.apply();
    assert_eq!(h.writer.free_slots(), (0, 0));
    // Port 80 goes, port 8080 comes on the same address: it takes the
    // freed VIP id and backend ids.
    let before = h.writer.vip_info(&key80).expect("vip").id;
    h.specs[0].service = Service::new(Ipv4Addr::from(VIP), 8080, IPPROTO_TCP);
    h.apply();
    let key8080 = Service::new(Ipv4Addr::from(VIP), 8080, IPPROTO_TCP);
    assert_eq!(
        h.writer.vip_info(&key8080).expect("vip").id,
        before,
        "VIP id reused"
    );
    let mut ids8080: Vec<u32> = (1..=3u8)
        .map(|i| {
            h.writer
                .backend_id(&key8080, Ipv4Addr::new(10, 77, 0, 20 + i))
                .expect("id")
        })
        .collect();
    ids8080.sort();
    let mut ids80 = ids80;
    ids80.sort();
    assert_eq!(ids8080, ids80, "backend ids reused");
    for d in &flows {
        let (rc, out) = h.run(d);
        assert_eq!(
            rc, XDP_PASS,
            "a packet of the removed service is not forwarded"
        );
        assert_eq!(&out, d);
    }
    h.expect(&tcp_to(VIP, 8080, 7300).build(), XDP_TX, Stat::TxRing);
}

#[test]
fn the_service_cache_answers_and_a_foreign_or_torn_slot_falls_back() {
    let mut h = Harness::new();
    let key = Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP);
    let info = h.writer.vip_info(&key).expect("vip");
    assert_eq!(h.writer.store().cached_service(&key.key()), Some(info));
    let d = tcp_to(VIP, 80, 7400).build();
    let want = h.expect(&d, XDP_TX, Stat::TxRing);
    // Another service's words in the slot: a miss, the VIP map answers.
    let other = Service::new(Ipv4Addr::new(10, 77, 0, 9), 443, IPPROTO_TCP);
    let other_info = ha_common::VipInfo {
        id: 7,
        ring_slot: 1,
        ring_size: 251,
        flags: 0,
    };
    h.writer.store_mut().poke_service_slot(
        &key.key(),
        other.key().raw(),
        ha_common::service_state(other.key().raw(), &other_info),
    );
    assert_eq!(h.expect(&d, XDP_TX, Stat::TxRing), want);
    // This key with another key's state (a torn pair): rejected by the tag.
    h.writer.store_mut().poke_service_slot(
        &key.key(),
        key.key().raw(),
        ha_common::service_state(other.key().raw(), &other_info),
    );
    assert_eq!(h.writer.store().cached_service(&key.key()), None);
    assert_eq!(h.expect(&d, XDP_TX, Stat::TxRing), want);
    // A valid state for this key says what the program does: with a ring
    // size of 1 every flow takes slot 0, so all go to one backend.
    h.writer.store_mut().poke_service_slot(
        &key.key(),
        key.key().raw(),
        ha_common::service_state(
            key.key().raw(),
            &ha_common::VipInfo {
                ring_size: 1,
                ..info
            },
        ),
    );
    let macs: std::collections::HashSet<Vec<u8>> = (7500..7560u16)
        .map(|p| h.expect(&tcp_to(VIP, 80, p).build(), XDP_TX, Stat::TxRing)[0..6].to_vec())
        .collect();
    assert_eq!(macs.len(), 1, "the program read the cache: {macs:?}");
    // The next table write puts the slot right; a removed service leaves it.
    h.specs[0].backends[0].weight = 2;
    h.apply();
    let info = h.writer.vip_info(&key).expect("vip");
    assert_eq!(h.writer.store().cached_service(&key.key()), Some(info));
    h.specs.remove(0);
    h.apply();
    assert_eq!(h.writer.store().cached_service(&key.key()), None);
    h.expect(&d, XDP_PASS, Stat::PassNotVip);
}

#[test]
fn a_stale_entry_is_not_trusted() {
    let mut h = Harness::new();
    h.mark_all_changed();
    let key = flow_key([10, 77, 0, 10], 7500);
    h.expect(
        &tcp_to(VIP, 80, 7500).tcp_flags(0x02).build(),
        XDP_TX,
        Stat::TxNewFlow,
    );
    let ack = tcp_to(VIP, 80, 7500).build();
    h.expect(&ack, XDP_TX, Stat::TxFlowHit);
    // Its last packet 61 flow-time units ago (the harness's timeout is 60).
    age(&mut h, &key, 61);
    h.expect(&ack, XDP_TX, Stat::TxFlowMiss);
    h.expect(&ack, XDP_TX, Stat::TxFlowHit);
}

#[test]
fn a_slot_that_changes_again_keeps_its_first_previous_and_its_hold_restarts() {
    let mut h = Harness::new();
    let key = Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP);
    let id = |h: &Harness, i: u8| {
        h.writer
            .backend_id(&key, Ipv4Addr::new(10, 77, 0, 20 + i))
            .expect("id")
    };
    let first = id(&h, 1);
    h.specs[0].backends[0].weight = 0;
    h.apply();
    let marked = h.writer.changed_slots();
    assert!(marked > 0);
    let t0 = std::time::Instant::now();
    let hold = std::time::Duration::from_secs(60);
    // Backend 2 drained too: slots of backend 1 that went to 2 change again.
    let before = h.writer.ring_views()[&key.key()].table.clone();
    h.specs[0].backends[1].weight = 0;
    h.apply();
    let after = h.writer.ring_views()[&key.key()].table.clone();
    let changed_again = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(h.writer.changed_slots() > marked);
    let previous = h.writer.previous_backends();
    assert!(
        previous.contains(&first) && previous.contains(&id(&h, 2)),
        "backend 1's slots still name it, backend 2's name it: {previous:?}"
    );
    // A settle due for the first change clears only the slots that did not
    // change again: for the others the hold restarted.
    h.writer
        .settle(t0 + hold, hold, &Default::default())
        .expect("settle");
    assert_eq!(h.writer.changed_slots(), changed_again);
}

#[test]
fn a_flow_that_was_hit_outlives_one_packet_flows_in_a_full_set() {
    let mut h = Harness::new();
    h.mark_all_changed();
    let same_set = one_set(2, FLOW_WAYS + 3);
    let syn = |(src, p): ([u8; 4], u16)| {
        Frame::tcp(src, VIP, p, 80)
            .macs(CLIENT_MAC, LB_MAC)
            .tcp_flags(0x02)
            .build()
    };
    // A real connection: SYN, then its ACK hits the entry.
    let real = same_set[0];
    h.expect(&syn(real), XDP_TX, Stat::TxNewFlow);
    let ack = Frame::tcp(real.0, VIP, real.1, 80)
        .macs(CLIENT_MAC, LB_MAC)
        .build();
    h.expect(&ack, XDP_TX, Stat::TxFlowHit);
    // Older than everything that follows.
    age(&mut h, &flow_key(real.0, real.1), 20);
    // A flood of one-packet flows into the same set, more than it holds.
    for &f in &same_set[1..] {
        h.expect(&syn(f), XDP_TX, Stat::TxNewFlow);
    }
    assert!(
        h.writer
            .store()
            .flow(&flow_key(real.0, real.1))
            .expect("read")
            .is_some(),
        "the connection kept its entry"
    );
    h.expect(&ack, XDP_TX, Stat::TxFlowHit);
}

/// The backend MAC byte that frame `f` is sent to, or a failure.
fn backend_of(h: &Harness, f: Frame) -> u8 {
    let (rc, out) = h.run(&f.build());
    assert_eq!(rc, XDP_TX);
    out[5]
}

#[test]
fn source_ip_affinity_holds_a_client_on_one_backend_in_either_path() {
    let mut h = Harness::new();
    h.specs[0].source_hash = true;
    h.apply();
    let from = |src: [u8; 4], sport: u16| {
        Frame::tcp(src, VIP, sport, 80)
            .macs(CLIENT_MAC, LB_MAC)
            .tcp_flags(0x02)
    };
    // 50 connections of one client, different source ports: one backend.
    let one: std::collections::BTreeSet<u8> = (0..50u16)
        .map(|i| backend_of(&h, from([10, 77, 0, 10], 33000 + i * 13)))
        .collect();
    assert_eq!(one.len(), 1, "{one:?}");
    // 30 clients spread over all three backends.
    let clients: std::collections::BTreeMap<u8, usize> =
        (0..30u8).fold(Default::default(), |mut m, i| {
            *m.entry(backend_of(&h, from([10, 77, 1, 10 + i], 40000)))
                .or_default() += 1;
            m
        });
    assert_eq!(clients.len(), 3, "{clients:?}");
    // The other VIP (five-tuple) still spreads one client's ports.
    let udp: std::collections::BTreeSet<u8> = (0..50u16)
        .map(|i| {
            backend_of(
                &h,
                Frame::udp([10, 77, 0, 10], VIP, 33000 + i, 53).macs(CLIENT_MAC, LB_MAC),
            )
        })
        .collect();
    assert_eq!(udp.len(), 3, "{udp:?}");
    // Through the flow table (every slot changed): a client's new
    // connections still share a backend, and it is the one the agent's
    // routing (and so every other node) computes.
    h.mark_all_changed();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50u16 {
        let sport = 50000 + i * 7;
        let mac = backend_of(&h, from([10, 77, 0, 10], sport));
        seen.insert(mac);
        let key = FlowKey {
            saddr: u32::from_ne_bytes([10, 77, 0, 10]),
            daddr: u32::from_ne_bytes(VIP),
            ports: ports_raw(sport, 80),
            proto: IPPROTO_TCP as u32,
        };
        let routed = h
            .writer
            .store()
            .route(&key)
            .expect("route")
            .expect("backend");
        assert_eq!(
            h.writer.store().backend(routed).expect("backend").mac[5],
            mac,
            "the agent places the flow where the program does"
        );
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(h.stat(Stat::TxNewFlow), 50 + 30 + 50, "SYNs in both paths");
}
