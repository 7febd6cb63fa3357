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
use ha_common::bench::{FlowKey6, RefVip};
use ha_common::{
    addr6_digest, flow_hash, vip6_digest, FlowKey, Ring, VipKey, VipKey6, IPPROTO_TCP, NO_BACKEND,
    RING_MAX,
};
use parse::{load, Head, L4, TCP_ACK, TCP_SYN};

/// Services → ring.
#[map(name = "REF_VIPS")]
static VIPS: HashMap<VipKey, RefVip> = HashMap::with_max_entries(64, 0);

/// Flows → backend index (its size is set by the bench).
#[map(name = "REF_FLOWS")]
static FLOWS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(1 << 20, 0);

/// IPv6 services → ring.
#[map(name = "REF_VIPS6")]
static VIPS6: HashMap<VipKey6, RefVip> = HashMap::with_max_entries(64, 0);

/// IPv6 flows → backend index (its size is set by the bench).
#[map(name = "REF_FLOWS6")]
static FLOWS6: LruHashMap<FlowKey6, u32> = LruHashMap::with_max_entries(1 << 20, 0);

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
    let backend = match parse::head(data, end) {
        Head::Ipv4 { ip, daddr } => {
            let Ok(p) = parse::l4(ip, end) else {
                return xdp_action::XDP_PASS;
            };
            let service = VipKey {
                addr: daddr,
                port: (p.ports >> 16) as u16,
                proto: p.proto,
                family: 0,
            };
            // SAFETY: map value read for this run.
            let Some(vip) = (unsafe { VIPS.get(&service) }) else {
                return xdp_action::XDP_PASS;
            };
            let flow = FlowKey {
                saddr: parse::saddr4(ip),
                daddr,
                ports: p.ports,
                proto: p.proto as u32,
            };
            let hash = || flow_hash(0, flow.saddr, daddr, flow.ports, flow.proto);
            let Some(b) = backend_of(&FLOWS, &flow, syn(&p), vip, hash) else {
                return xdp_action::XDP_DROP;
            };
            b
        }
        Head::Ipv6 { ip } => {
            let Ok(p) = parse::l4_v6(ip, end) else {
                return xdp_action::XDP_PASS;
            };
            let daddr = parse::addr6(ip, 24);
            let service = VipKey6 {
                addr: daddr,
                port: (p.ports >> 16) as u16,
                proto: p.proto,
                pad: 0,
            };
            // SAFETY: map value read for this run.
            let Some(vip) = (unsafe { VIPS6.get(&service) }) else {
                return xdp_action::XDP_PASS;
            };
            let flow = FlowKey6 {
                saddr: parse::addr6(ip, 8),
                daddr,
                ports: p.ports,
                proto: p.proto as u32,
            };
            let hash = || {
                flow_hash(
                    0,
                    addr6_digest(0, flow.saddr),
                    vip6_digest(daddr),
                    flow.ports,
                    flow.proto,
                )
            };
            let Some(b) = backend_of(&FLOWS6, &flow, syn(&p), vip, hash) else {
                return xdp_action::XDP_DROP;
            };
            b
        }
        _ => return xdp_action::XDP_PASS,
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

/// A TCP SYN: a new flow, not looked up.
#[inline(always)]
fn syn(p: &L4) -> bool {
    p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The backend of `flow`: the flow map's (not for a SYN), else the ring's
/// for its `hash`, then recorded; `None` when the ring slot has none.
#[inline(always)]
fn backend_of<K>(
    flows: &LruHashMap<K, u32>,
    flow: &K,
    syn: bool,
    vip: &RefVip,
    hash: impl FnOnce() -> u32,
) -> Option<u32> {
    // SAFETY: map value read for this run.
    let known = if syn {
        None
    } else {
        unsafe { flows.get(flow) }.copied()
    };
    if let Some(b) = known {
        return Some(b);
    }
    let b = from_ring(vip, hash())?;
    let _ = flows.insert(flow, &b, BPF_ANY as u64);
    Some(b)
}

/// The ring's backend for `hash`, if the slot has one.
#[inline(always)]
fn from_ring(vip: &RefVip, hash: u32) -> Option<u32> {
    let ring = RINGS.get(vip.ring)?;
    if vip.ring_size == 0 {
        return None;
    }
    let idx = ha_common::ring_slot(hash, vip.ring_size) as usize;
    if idx >= RING_MAX {
        return None;
    }
    let b = ring.entries[idx];
    (b != NO_BACKEND).then_some(b as u32)
}
