//! The reference stateful balancer of `cargo xtask bench live`: the design
//! of Katran and Cilium in its plainest form. VIP hash lookup, then a
//! `BPF_MAP_TYPE_LRU_HASH` flow map (skipped for a TCP SYN), then on a miss
//! the Maglev ring and an insert; the backend's MAC is written and the
//! frame sent back with `XDP_TX`. It parses exactly as halb does (the same
//! `parse` module) and hashes with the same function, so the two differ
//! only in how they keep flow state.
#![no_std]
#![no_main]

#[path = "../bin_support.rs"]
mod bin_support;

#[path = "../parse.rs"]
#[allow(dead_code)]
mod parse;

use aya_ebpf::{
    bindings::{xdp_action, BPF_ANY},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap},
    programs::XdpContext,
};
use ha_common::bench::RefVip;
use ha_common::{flow_hash, FlowKey, Ring, VipKey, IPPROTO_TCP, NO_BACKEND, RING_MAX};
use parse::{load, Head, TCP_ACK, TCP_SYN};

/// Services → ring.
#[map(name = "REF_VIPS")]
static VIPS: HashMap<VipKey, RefVip> = HashMap::with_max_entries(64, 0);

/// Flows → backend index (its size is set by the bench).
#[map(name = "REF_FLOWS")]
static FLOWS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(1 << 20, 0);

/// Maglev rings.
#[map(name = "REF_RINGS")]
static RINGS: Array<Ring> = Array::with_max_entries(4, 0);

/// Backend MACs (8 bytes each).
#[map(name = "REF_BACKENDS")]
static BACKENDS: Array<[u8; 8]> = Array::with_max_entries(256, 0);

#[xdp]
pub fn halb_bench_lru(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let (ip, daddr) = match parse::head(data, end) {
        Head::Ipv4 { ip, daddr } => (ip, daddr),
        _ => return xdp_action::XDP_PASS,
    };
    let Ok(p) = parse::l4(ip, end) else {
        return xdp_action::XDP_PASS;
    };
    let service = VipKey {
        addr: daddr,
        port: (p.ports >> 16) as u16,
        proto: p.proto,
        family: 0,
    };
    let Some(vip) = (unsafe { VIPS.get(&service) }) else {
        return xdp_action::XDP_PASS;
    };
    let flow = FlowKey {
        saddr: parse::saddr4(ip),
        daddr,
        ports: p.ports,
        proto: p.proto as u32,
    };
    let syn = p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // SAFETY: map value read for this run.
    let known = if syn {
        None
    } else {
        unsafe { FLOWS.get(&flow) }.copied()
    };
    let backend = match known {
        Some(b) => b,
        None => {
            let Some(ring) = RINGS.get(vip.ring) else {
                return xdp_action::XDP_ABORTED;
            };
            if vip.ring_size == 0 {
                return xdp_action::XDP_DROP;
            }
            let hash = flow_hash(0, flow.saddr, daddr, flow.ports, flow.proto);
            let idx = ha_common::ring_slot(hash, vip.ring_size) as usize;
            if idx >= RING_MAX {
                return xdp_action::XDP_ABORTED;
            }
            let b = ring.entries[idx];
            if b == NO_BACKEND {
                return xdp_action::XDP_DROP;
            }
            let _ = FLOWS.insert(&flow, &(b as u32), BPF_ANY as u64);
            b as u32
        }
    };
    let Some(mac) = BACKENDS.get(backend) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: 12 bytes of Ethernet addresses are inside the range `head`
    // checked; `mac` is a map value.
    unsafe {
        let dst_hi: u32 = load(data);
        let dst_lo: u16 = load(data + 4);
        let m = mac.as_ptr() as usize;
        *(data as *mut u32) = load::<u32>(m);
        *((data + 4) as *mut u16) = load::<u16>(m + 4);
        *((data + 6) as *mut u32) = dst_hi;
        *((data + 10) as *mut u16) = dst_lo;
    }
    xdp_action::XDP_TX
}
