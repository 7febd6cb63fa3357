//! The halb XDP program: parse (IPv4 or IPv6) → VIP filter → VIP lookup → Maglev ring →
//! (changed slots only) flow table → MAC rewrite or encapsulation → `XDP_TX`. The pieces
//! live beside it, split by concern as Katran splits its balancer: `parse`
//! (headers and bounds), `maps` (map definitions), `flow` (the flow table),
//! `forward` (the DSR rewrite and counters), `encap` (IP in IP and GUE)
//! and `icmp` (quoted flows, too-big answers). This file is the pipeline.
//!
//! What happens to each kind of frame (every case bumps exactly one `Stat`):
//!
//! | frame | action | stat |
//! |---|---|---|
//! | shorter than Ethernet, or the fixed IPv4/IPv6 header cut short | `XDP_PASS` (kernel drops it) | `PassTruncated` |
//! | neither IPv4 nor IPv6 (ARP, VLAN-tagged, LLDP, ...) | `XDP_PASS` | `PassNotIp` |
//! | IP to an address that is no VIP (ICMPv6 ND and RA, VRRP to its group, ...) | `XDP_PASS` | `PassNotVip` |
//! | VIP address, ICMP error (v4 unreachable / time exceeded, v6 unreachable / too big / time exceeded) quoting a packet of a VIP service from it | `XDP_TX` to the quoted flow's backend (never recorded) | `TxIcmp` |
//! | VIP address, not TCP/UDP (ICMP echo and other ICMP, ICMPv6 ND, ESP, ...) | `XDP_PASS` | `PassVipOtherProto` |
//! | VIP address, TCP/UDP port that is no VIP service | `XDP_PASS` | `PassNotVip` |
//! | VIP address, TCP/UDP, destination MAC not this interface's | `XDP_PASS` | `PassOtherHost` |
//! | VIP address, any IP fragment (MF set or offset ≠ 0) | `XDP_DROP` | `DropFragment` |
//! | IPv6 VIP address, a fragment header (after the walked extension headers) | `XDP_DROP` | `DropFragment` |
//! | IPv6 VIP address, more than 4 hop-by-hop/routing/destination-options headers, or a routing header with segments left | `XDP_DROP` | `DropExtHeaders` |
//! | VIP address, version ≠ 4, IHL < 5, total length < IHL or beyond the frame | `XDP_DROP` | `DropMalformed` |
//! | IPv6 VIP address, version ≠ 6, payload length 0 (jumbogram) or beyond the frame, an extension header cut short or beyond the payload | `XDP_DROP` | `DropMalformed` |
//! | VIP address, TCP/UDP, total length < IHL + L4 header, or L4 header cut short | `XDP_DROP` | `DropMalformed` |
//! | VIP service, no usable backend | `XDP_DROP` | `DropNoBackend` |
//! | VIP service, TCP SYN | `XDP_TX` to the ring's backend (recorded if the slot changed) | `TxNewFlow` |
//! | VIP service, unchanged ring slot | `XDP_TX` to the ring's backend | `TxRing` |
//! | VIP service, changed slot, flow recorded | `XDP_TX` to the flow's backend | `TxFlowHit` |
//! | VIP service, changed slot, flow not recorded | `XDP_TX` to the slot's previous backend (current if that one is unusable), recorded | `TxFlowMiss` |
//! | encapsulated backend, packet too big for the tunnel, DF set (or IPv6) | `XDP_TX` of an ICMP too-big to the sender | `TxTooBig` |
//! | encapsulated backend, packet too big for the tunnel, DF clear | `XDP_DROP` | `DropTooBig` |
//! | encapsulated backend, no headroom for the outer headers | `XDP_DROP` | `DropNoRoom` |
//!
//! IP options are legal: the L4 header is found after them and the frame is
//! forwarded like any other (DSR rewrites only MAC addresses). So are up to
//! four IPv6 hop-by-hop, routing (no segments left) and destination-options
//! headers, forwarded unchanged. Ethernet padding after the IP packet is
//! legal too.
//!
//! An IPv6 service is found by its whole address in its own service cache
//! (`SERVICES6`, an exact compare) or `VIPS6`; from there the
//! packet takes the IPv4 pipeline on 32-bit values: the service's identity
//! (`ha_common::VipKey`, with its address digest) and the source address's
//! seeded digest.
//!
//! The non-VIP path costs one inlined array read (the address bitmap), no
//! hash lookup; the exact address check (a hash lookup) is only done for
//! frames that hit the bitmap and cannot be matched to a service. A VIP
//! packet costs a read of the service cache (the VIP hash lookup only when
//! it misses) and two reads of the VIP's ring (the
//! changed-slot word, the backend): memory that stays in cache however many
//! flows there are, and no write but per-CPU counters. Only in a slot that
//! a table change gave another backend (see `ha_common::Ring`) is the flow
//! table read: one 64-byte set, and a write of a stamp about once a second
//! per flow, or of a new entry.
#![no_std]
#![no_main]

mod bin_support;

mod encap;
mod flow;
mod forward;
mod icmp;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext,
};
use ha_common::{
    addr6_digest, affinity_ports, flow_time, hash_head, hash_tail, ring_index, service_index,
    service_info, vip6_digest, vip_filter_bit, vip_filter_bit6, BackendInfo, Meta, Stat, VipInfo,
    VipKey, VipKey6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_TCP, NO_BACKEND, RING_MAX, VIP_FILTER_BITS,
    VIP_F_SOURCE_HASH,
};

use forward::usable_backend;
use maps::{FLOWS, FLOW_SETS, META, RINGS, SERVICES, SERVICES6, STATS, VIPS, VIPS6, VIP_FILTER};
use parse::{load, Bad, Head, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// What the pipeline decided for a frame.
pub enum Verdict {
    /// Finished: the reason and the action.
    Done(Stat, u32),
    /// Send to backend `id` (`b`), for `stat`; `hash` is the flow's hash.
    Send {
        b: &'static BackendInfo,
        id: u32,
        stat: Stat,
        hash: u32,
    },
}

#[xdp]
pub fn halb_xdp(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let len = (end - data) as u64;
    let (stat, action) = match process(data, end) {
        Verdict::Done(stat, action) => (stat, action),
        Verdict::Send { b, id, stat, hash } => {
            forward::send(&ctx, data, end, b, id, len, stat, hash)
        }
    };
    if let Some(c) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value, valid for the program's run; no other writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    action
}

#[inline(always)]
fn pass(stat: Stat) -> Verdict {
    Verdict::Done(stat, xdp_action::XDP_PASS)
}

#[inline(always)]
fn drop(stat: Stat) -> Verdict {
    Verdict::Done(stat, xdp_action::XDP_DROP)
}

#[inline(always)]
fn aborted() -> Verdict {
    Verdict::Done(Stat::Aborted, xdp_action::XDP_ABORTED)
}

/// Exact check that `daddr` is an IPv4 VIP address (its address marker exists).
#[inline(always)]
fn is_vip_address(daddr: u32) -> bool {
    let key = VipKey {
        addr: daddr,
        port: 0,
        proto: 0,
        family: FAMILY_IPV4,
    };
    VIPS.get_ptr(&key).is_some()
}

/// Exact check that `daddr` is an IPv6 VIP address.
#[inline(always)]
fn is_vip_address6(daddr: [u32; 4]) -> bool {
    let key = VipKey6 {
        addr: daddr,
        port: 0,
        proto: 0,
        pad: 0,
    };
    VIPS6.get_ptr(&key).is_some()
}

/// What a frame that cannot be balanced gets: to a VIP address, dropped
/// with the reason (passed for protocols the kernel answers); to another
/// address (a pre-filter false positive), passed.
#[inline(always)]
fn unbalanced(bad: Bad, vip_address: bool) -> Verdict {
    if !vip_address {
        return pass(Stat::PassNotVip);
    }
    match bad {
        Bad::Malformed => drop(Stat::DropMalformed),
        Bad::Fragment => drop(Stat::DropFragment),
        Bad::ExtHeaders => drop(Stat::DropExtHeaders),
        Bad::OtherProto | Bad::Icmp(_) => pass(Stat::PassVipOtherProto),
    }
}

/// Whether the pre-filter byte `bit` is set (constant-key array lookup:
/// a direct address after verification).
#[inline(always)]
fn filter_hit(bit: u32) -> bool {
    match VIP_FILTER.get(0) {
        Some(f) => f.slots[(bit & (VIP_FILTER_BITS - 1)) as usize] != 0,
        None => false,
    }
}

/// Only frames sent to this node: a switch flooding unknown unicast (the
/// master's port just went away) must not make a backup forward copies.
#[inline(always)]
fn sent_to_us(data: usize, meta: &Meta) -> bool {
    let mac = meta.mac.as_ptr() as usize;
    // SAFETY: 6 bytes of the destination MAC are inside the checked range;
    // `mac` points into a map value.
    unsafe {
        load::<u32>(data) == load::<u32>(mac) && load::<u16>(data + 4) == load::<u16>(mac + 4)
    }
}

/// The program's settings, when the frame was sent to this interface;
/// else what becomes of it.
#[inline(always)]
fn addressed_to_us(data: usize) -> Result<&'static Meta, Verdict> {
    let Some(meta) = META.get(0) else {
        return Err(aborted());
    };
    if !sent_to_us(data, meta) {
        return Err(pass(Stat::PassOtherHost));
    }
    Ok(meta)
}

#[inline(always)]
fn process(data: usize, end: usize) -> Verdict {
    match parse::head(data, end) {
        Head::Truncated => pass(Stat::PassTruncated),
        Head::NotIp => pass(Stat::PassNotIp),
        Head::Ipv4 { ip, daddr } => ipv4(data, end, ip, daddr),
        Head::Ipv6 { ip } => ipv6(data, end, ip),
    }
}

/// The IPv4 service `service`: the service cache first (one array read),
/// the VIP map when it misses.
#[inline(always)]
fn service4(service: &VipKey) -> Option<VipInfo> {
    let raw = service.raw();
    let cached = match SERVICES.get(service_index(raw)) {
        // SAFETY: a volatile read of an 8-byte word the agent stores atomically.
        Some(slot) if slot.key == raw => {
            service_info(raw, unsafe { core::ptr::read_volatile(&slot.state) })
        }
        _ => None,
    };
    match cached {
        Some(v) => Some(v),
        // SAFETY: map value pointer, valid during this run (NO_PREALLOC: RCU-freed).
        None => VIPS.get_ptr(service).map(|v| unsafe { *v }),
    }
}

/// The IPv6 service at `daddr` with `service`'s port and protocol: the
/// IPv6 service cache (an exact key compare), then the VIP map.
#[inline(always)]
fn service6(daddr: [u32; 4], service: &VipKey) -> Option<VipInfo> {
    let raw = service.raw();
    let (port, proto) = (service.port, service.proto);
    let cached = match SERVICES6.get(service_index(raw)) {
        Some(slot)
            if slot.key.addr == daddr && slot.key.port == port && slot.key.proto == proto =>
        {
            // SAFETY: a volatile read of an 8-byte word the agent stores atomically.
            service_info(raw, unsafe { core::ptr::read_volatile(&slot.state) })
        }
        _ => None,
    };
    match cached {
        Some(v) => Some(v),
        None => {
            let key = VipKey6 {
                addr: daddr,
                port,
                proto,
                pad: 0,
            };
            // SAFETY: map value pointer, valid during this run (NO_PREALLOC: RCU-freed).
            VIPS6.get_ptr(&key).map(|v| unsafe { *v })
        }
    }
}

#[inline(always)]
fn ipv4(data: usize, end: usize, ip: usize, daddr: u32) -> Verdict {
    // Cheap pre-filter: one byte per hashed VIP address.
    if !filter_hit(vip_filter_bit(daddr)) {
        return pass(Stat::PassNotVip);
    }
    let p = match parse::l4(ip, end) {
        Ok(p) => p,
        Err(Bad::Icmp(at)) => return icmp4(data, end, at, daddr),
        Err(bad) => return unbalanced(bad, is_vip_address(daddr)),
    };
    let meta = match addressed_to_us(data) {
        Ok(m) => m,
        Err(v) => return v,
    };
    let service = VipKey {
        addr: daddr,
        port: (p.ports >> 16) as u16,
        proto: p.proto,
        family: FAMILY_IPV4,
    };
    let Some(vip) = service4(&service) else {
        return pass(Stat::PassNotVip);
    };
    balance(meta, &vip, &service, parse::saddr4(ip), &p, true)
}

/// An ICMP message to the IPv4 address `daddr`: an error about a VIP
/// flow goes to that flow's backend; anything else is the kernel's.
#[inline(always)]
fn icmp4(data: usize, end: usize, at: usize, daddr: u32) -> Verdict {
    if !is_vip_address(daddr) {
        return pass(Stat::PassNotVip);
    }
    let Some(q) = icmp::quoted4(at, end, daddr) else {
        return pass(Stat::PassVipOtherProto);
    };
    let meta = match addressed_to_us(data) {
        Ok(m) => m,
        Err(v) => return v,
    };
    let service = VipKey {
        addr: daddr,
        port: q.vip_port,
        proto: q.proto,
        family: FAMILY_IPV4,
    };
    let Some(vip) = service4(&service) else {
        return pass(Stat::PassVipOtherProto);
    };
    quoted_flow(meta, &vip, &service, q.client[0], &q)
}

/// The backend of the flow an ICMP error quotes: looked up as its next
/// packet would be, but nothing is recorded or refreshed.
#[inline(always)]
fn quoted_flow(
    meta: &Meta,
    vip: &VipInfo,
    service: &VipKey,
    saddr: u32,
    q: &icmp::Quote,
) -> Verdict {
    let p = L4 {
        proto: q.proto,
        ports: q.ports,
        tcp_flags: TCP_ACK,
    };
    match balance(meta, vip, service, saddr, &p, false) {
        Verdict::Send { b, id, hash, .. } => Verdict::Send {
            b,
            id,
            stat: Stat::TxIcmp,
            hash,
        },
        done => done,
    }
}

/// IPv6: the exact service lookup by the whole address, then the shared
/// pipeline on the service's identity and the source's digest (see
/// `ha_common::VipKey`).
#[inline(always)]
fn ipv6(data: usize, end: usize, ip: usize) -> Verdict {
    let daddr = parse::addr6(ip, 24);
    if !filter_hit(vip_filter_bit6(daddr)) {
        return pass(Stat::PassNotVip);
    }
    let p = match parse::l4_v6(ip, end) {
        Ok(p) => p,
        Err(Bad::Icmp(at)) => return icmp6(data, end, at, daddr),
        Err(bad) => return unbalanced(bad, is_vip_address6(daddr)),
    };
    let meta = match addressed_to_us(data) {
        Ok(m) => m,
        Err(v) => return v,
    };
    let service = VipKey {
        addr: vip6_digest(daddr),
        port: (p.ports >> 16) as u16,
        proto: p.proto,
        family: FAMILY_IPV6,
    };
    let Some(vip) = service6(daddr, &service) else {
        return pass(Stat::PassNotVip);
    };
    let saddr = addr6_digest(meta.hash_seed, parse::addr6(ip, 8));
    balance(meta, &vip, &service, saddr, &p, true)
}

/// [`icmp4`] for ICMPv6 to the IPv6 address `daddr` (neighbour discovery
/// and echo stay the kernel's).
#[inline(always)]
fn icmp6(data: usize, end: usize, at: usize, daddr: [u32; 4]) -> Verdict {
    if !is_vip_address6(daddr) {
        return pass(Stat::PassNotVip);
    }
    let Some(q) = icmp::quoted6(at, end, daddr) else {
        return pass(Stat::PassVipOtherProto);
    };
    let meta = match addressed_to_us(data) {
        Ok(m) => m,
        Err(v) => return v,
    };
    let service = VipKey {
        addr: vip6_digest(daddr),
        port: q.vip_port,
        proto: q.proto,
        family: FAMILY_IPV6,
    };
    let Some(vip) = service6(daddr, &service) else {
        return pass(Stat::PassVipOtherProto);
    };
    let saddr = addr6_digest(meta.hash_seed, q.client);
    quoted_flow(meta, &vip, &service, saddr, &q)
}

/// The balancing decision for a packet of `service` (its identity) from
/// `saddr` (an IPv4 address or an IPv6 source digest): ring, and in a
/// changed slot the flow table. `record`: a packet of the flow (its
/// entry is refreshed or made); false for an ICMP error about it (looked
/// up only).
#[inline(always)]
fn balance(
    meta: &Meta,
    vip: &VipInfo,
    service: &VipKey,
    saddr: u32,
    p: &L4,
    record: bool,
) -> Verdict {
    let Some(ring) = RINGS.get(ring_index(vip.id, vip.ring_slot)) else {
        return aborted();
    };
    if vip.ring_size == 0 {
        return drop(Stat::DropNoBackend);
    }
    // The flow's hash picks its flow-table set; the ring slot comes from
    // the same hash, or under source-IP affinity from the tuple without
    // its source port (one more mix of the shared head).
    let seed = meta.hash_seed;
    let head = hash_head(seed, saddr, service.addr);
    let hash = hash_tail(head, seed, p.ports, p.proto as u32);
    let placed = if vip.flags & VIP_F_SOURCE_HASH != 0 {
        hash_tail(head, seed, affinity_ports(p.ports), p.proto as u32)
    } else {
        hash
    };
    let idx = ha_common::ring_slot(placed, vip.ring_size) as usize;
    if idx >= RING_MAX {
        return aborted();
    }
    let tcp = p.proto == IPPROTO_TCP;
    let syn = tcp && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let current = ring.entries[idx];
    let send = |b, id: u16, stat| Verdict::Send {
        b,
        id: id as u32,
        stat,
        hash,
    };

    if !ring.is_changed(idx) {
        // Every live flow of this slot is on the ring's backend: no state.
        if current == NO_BACKEND {
            return drop(Stat::DropNoBackend);
        }
        let Some(b) = usable_backend(current as u32, service) else {
            // The ring still names a backend that just went down: the new
            // ring is on its way; do not send to a dead backend meanwhile.
            return drop(Stat::DropNoBackend);
        };
        let stat = if syn { Stat::TxNewFlow } else { Stat::TxRing };
        return send(b, current, stat);
    }

    // A changed slot: the flow table decides. A TCP SYN always starts a new
    // flow: a client that reuses a port after a backend was drained must
    // not stick to it.
    // SAFETY: a plain read of a read-only global the loader sets.
    let sets = unsafe { core::ptr::read_volatile(&FLOW_SETS) };
    let Some(set) = FLOWS.get_ptr_mut(hash & sets.wrapping_sub(1)) else {
        return aborted();
    };
    // SAFETY: `set` points at a map value that lives for this run.
    let set = unsafe { &mut *set };
    let closing = tcp && p.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    // SAFETY: a helper without arguments.
    let now = flow_time(unsafe { bpf_ktime_get_coarse_ns() });
    let slot = flow::find(set, saddr, p.ports, hash);
    if let Some(i) = slot {
        if let Some(e) = set.entries.get_mut(i) {
            // The entry is trusted only while its backend is up and serves
            // exactly this service (ids of removed VIPs and backends are
            // reused).
            // A stale entry (its flow ended) is not trusted: the tuple may
            // be a new flow's.
            if !syn && e.is_live(now, meta.live_units) {
                if let Some(b) = usable_backend(e.backend as u32, service) {
                    let stamp = flow::stamp_for(e.stamp, now, closing);
                    if record && e.stamp != stamp {
                        e.stamp = stamp;
                    }
                    return send(b, e.backend, Stat::TxFlowHit);
                }
            }
        }
    }
    // Unknown here (or its backend went away). Not a SYN: it began before
    // the slot changed, on the previous backend, if that one can take it.
    let mut chosen = current;
    let mut stat = Stat::TxNewFlow;
    if !syn {
        stat = Stat::TxFlowMiss;
        let before = ring.previous[idx];
        if before != NO_BACKEND && usable_backend(before as u32, service).is_some() {
            chosen = before;
        }
    }
    if chosen == NO_BACKEND {
        return drop(Stat::DropNoBackend);
    }
    let Some(b) = usable_backend(chosen as u32, service) else {
        return drop(Stat::DropNoBackend);
    };
    if record {
        flow::record(
            set,
            slot,
            saddr,
            p.ports,
            hash,
            chosen,
            now,
            closing,
            meta.live_units,
        );
    }
    send(b, chosen, stat)
}
