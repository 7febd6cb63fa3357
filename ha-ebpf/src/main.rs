//! The halb XDP program: parse → VIP filter → flow table → VIP lookup →
//! Maglev ring → MAC rewrite → `XDP_TX`.
//!
//! What happens to each kind of frame (every case bumps exactly one `Stat`):
//!
//! | frame | action | stat |
//! |---|---|---|
//! | shorter than Ethernet, or IPv4 header cut short | `XDP_PASS` (kernel drops it) | `PassTruncated` |
//! | not IPv4 (ARP, IPv6, VLAN-tagged, ...) | `XDP_PASS` | `PassNotIpv4` |
//! | IPv4 to an address that is no VIP | `XDP_PASS` | `PassNotVip` |
//! | VIP address, not TCP/UDP (ICMP, ...) | `XDP_PASS` | `PassVipOtherProto` |
//! | VIP address, TCP/UDP port that is no VIP service | `XDP_PASS` | `PassNotVip` |
//! | VIP address, TCP/UDP, destination MAC not this interface's | `XDP_PASS` | `PassOtherHost` |
//! | VIP address, any IP fragment (MF set or offset ≠ 0) | `XDP_DROP` | `DropFragment` |
//! | VIP address, version ≠ 4, IHL < 5, total length < IHL, L4 header cut short | `XDP_DROP` | `DropMalformed` |
//! | VIP service, no usable backend | `XDP_DROP` | `DropNoBackend` |
//! | VIP service, flow known (not a TCP SYN) | `XDP_TX` | `TxFlowHit` |
//! | VIP service, new flow or TCP SYN | `XDP_TX` | `TxNewFlow` |
//!
//! IP options are legal: the L4 header is found after them and the frame is
//! forwarded like any other (DSR rewrites only MAC addresses).
//!
//! The non-VIP path costs one inlined array read (the address bitmap), no
//! hash lookup; the exact address check (a hash lookup) is only done for
//! frames that hit the bitmap and cannot be matched to a service. An
//! established flow costs one flow-table set read (an inlined array read,
//! no hash map); a new flow adds the VIP hash lookup, the Maglev ring read
//! and a plain write into the flow table.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use ha_common::{
    flow_check, flow_hash, ring_index, vip_filter_bit, BackendCounter, BackendInfo, Counter,
    FlowEntry, FlowKey, FlowSet, Meta, Ring, Stat, VipFilter, VipInfo, VipKey, BACKEND_F_UP,
    DEFAULT_FLOW_SETS, FLOW_WAYS, IPPROTO_TCP, IPPROTO_UDP, MAX_BACKENDS, MAX_VIPS, NO_BACKEND,
    RING_MAX, STAT_COUNT, VIP_FILTER_BITS,
};

const BPF_F_NO_PREALLOC: u32 = 1;
const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_SYN_ACK: u8 = 0x12;
const ETH_P_IP_RAW: u16 = 0x0800u16.to_be();
/// MF flag and fragment offset, raw.
const IP_FRAG_MASK_RAW: u16 = 0x3fffu16.to_be();

#[map(name = "HALB_VIPS")]
static VIPS: HashMap<VipKey, VipInfo> = HashMap::with_max_entries(MAX_VIPS * 2, BPF_F_NO_PREALLOC);

#[map(name = "HALB_VIP_FILTER")]
static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);

#[map(name = "HALB_RINGS")]
static RINGS: Array<Ring> = Array::with_max_entries(MAX_VIPS * 2, 0);

#[map(name = "HALB_BACKENDS")]
static BACKENDS: Array<BackendInfo> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "HALB_FLOWS")]
static FLOWS: Array<FlowSet> = Array::with_max_entries(DEFAULT_FLOW_SETS, 0);

/// Sets in `FLOWS` (a power of two); set by the loader to the map's size.
#[no_mangle]
static FLOW_SETS: u32 = DEFAULT_FLOW_SETS;

#[map(name = "HALB_STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map(name = "HALB_BACKEND_STATS")]
static BACKEND_STATS: PerCpuArray<BackendCounter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Written by userspace; the program reads the interface MAC from it.
#[map(name = "HALB_META")]
static META: Array<Meta> = Array::with_max_entries(1, 0);

#[xdp]
pub fn halb_xdp(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let len = (end - data) as u64;
    let (stat, action) = process(data, end, len);
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
fn pass(stat: Stat) -> (Stat, u32) {
    (stat, xdp_action::XDP_PASS)
}

/// Exact check that `daddr` is a VIP address (its address marker exists).
#[inline(always)]
fn is_vip_address(daddr: u32) -> bool {
    let key = VipKey {
        addr: daddr,
        port: 0,
        proto: 0,
        pad: 0,
    };
    VIPS.get_ptr(&key).is_some()
}

/// Frames to a VIP address that cannot be balanced are dropped with `stat`;
/// the same frames to other addresses (a pre-filter false positive) pass.
#[inline(always)]
fn drop_if_vip_address(daddr: u32, stat: Stat) -> (Stat, u32) {
    if is_vip_address(daddr) {
        (stat, xdp_action::XDP_DROP)
    } else {
        pass(Stat::PassNotVip)
    }
}

/// Loads a `T` from packet memory. Packet fields are at most 2-byte aligned;
/// the BPF target and its JITs permit such loads (the verifier allows
/// unaligned packet access where the CPU does), so this is one load
/// instruction instead of a byte-by-byte assembly.
///
/// # Safety
/// `addr .. addr + size_of::<T>()` must have been checked against `data_end`.
#[inline(always)]
unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { *(addr as *const T) }
}

#[inline(always)]
fn process(data: usize, end: usize, len: u64) -> (Stat, u32) {
    if data + ETH_HLEN + IPV4_HLEN > end {
        if data + ETH_HLEN > end {
            return pass(Stat::PassTruncated);
        }
        // SAFETY: 14 bytes present.
        if unsafe { load::<u16>(data + 12) } != ETH_P_IP_RAW {
            return pass(Stat::PassNotIpv4);
        }
        return pass(Stat::PassTruncated);
    }
    // SAFETY (all packet loads below): each lies inside a range checked against `end`.
    if unsafe { load::<u16>(data + 12) } != ETH_P_IP_RAW {
        return pass(Stat::PassNotIpv4);
    }
    let ip = data + ETH_HLEN;
    let daddr: u32 = unsafe { load(ip + 16) };

    // Cheap pre-filter: one byte per hashed VIP address (constant-key array
    // lookup: a direct address after verification).
    match VIP_FILTER.get(0) {
        Some(f) if f.slots[(vip_filter_bit(daddr) & (VIP_FILTER_BITS - 1)) as usize] != 0 => {}
        _ => return pass(Stat::PassNotVip),
    }

    let vihl: u8 = unsafe { load(ip) };
    let tot_len = u16::from_be(unsafe { load(ip + 2) }) as usize;
    let frag: u16 = unsafe { load(ip + 6) };
    let proto: u8 = unsafe { load(ip + 9) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || tot_len < ihl {
        return drop_if_vip_address(daddr, Stat::DropMalformed);
    }
    if frag & IP_FRAG_MASK_RAW != 0 {
        return drop_if_vip_address(daddr, Stat::DropFragment);
    }
    let l4_min = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => {
            return if is_vip_address(daddr) {
                pass(Stat::PassVipOtherProto)
            } else {
                pass(Stat::PassNotVip)
            }
        }
    };
    // ihl is 20..=60 here, so the verifier can bound `l4`.
    let l4 = ip + (ihl & 0x3c);
    if l4 + l4_min > end {
        return drop_if_vip_address(daddr, Stat::DropMalformed);
    }
    // Only frames sent to this node: a switch flooding unknown unicast (the
    // master's port just went away) must not make a backup forward copies.
    match META.get(0) {
        Some(m) => {
            let mac = m.mac.as_ptr() as usize;
            // SAFETY: 6 bytes of the destination MAC are inside the checked
            // range; `mac` points into a map value.
            let same = unsafe {
                load::<u32>(data) == load::<u32>(mac)
                    && load::<u16>(data + 4) == load::<u16>(mac + 4)
            };
            if !same {
                return pass(Stat::PassOtherHost);
            }
        }
        None => return (Stat::Aborted, xdp_action::XDP_ABORTED),
    }
    let flow = FlowKey {
        saddr: unsafe { load(ip + 12) },
        daddr,
        ports: unsafe { load(l4) },
        proto: proto as u32,
    };

    // The flow table (see `ha_common::FlowSet`). A TCP SYN always starts a
    // new flow: a client that reuses a port after a backend was drained must
    // not stick to it.
    let hash = flow_hash(flow.saddr, daddr, flow.ports, flow.proto);
    // SAFETY: a plain read of a read-only global the loader sets.
    let sets = unsafe { core::ptr::read_volatile(&FLOW_SETS) };
    let set = FLOWS.get_ptr_mut(hash & sets.wrapping_sub(1));
    let syn = proto == IPPROTO_TCP && unsafe { load::<u8>(l4 + 13) } & TCP_SYN_ACK == TCP_SYN;
    let mut slot = FLOW_WAYS;
    if let Some(set) = set {
        // SAFETY: `set` points at a map value that lives for this run.
        let entries = unsafe { &mut (*set).entries };
        for (i, e) in entries.iter_mut().enumerate() {
            if e.key == flow && e.check == flow_check(hash, e.backend, e.vip_id) {
                // Established: no VIP lookup. The entry is trusted only while
                // its backend is up and still serves the flow's VIP (a
                // removed VIP releases its backends, so its flows fall through).
                if !syn {
                    if let Some(b) = usable_backend(e.backend, e.vip_id) {
                        if e.referenced == 0 {
                            e.referenced = 1;
                        }
                        let id = e.backend;
                        return forward(data, b, id, len, Stat::TxFlowHit);
                    }
                }
                slot = i;
                break;
            }
        }
    }

    // New flow (or one whose backend went away): VIP, then Maglev.
    let key = VipKey {
        addr: daddr,
        port: (flow.ports >> 16) as u16,
        proto,
        pad: 0,
    };
    let vip = match VIPS.get_ptr(&key) {
        // SAFETY: map value pointer, valid during this run (NO_PREALLOC: RCU-freed).
        Some(p) => unsafe { *p },
        None => return pass(Stat::PassNotVip),
    };
    let Some(ring) = RINGS.get(ring_index(vip.id, vip.ring_slot)) else {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    };
    if vip.ring_size == 0 {
        return (Stat::DropNoBackend, xdp_action::XDP_DROP);
    }
    let idx = (hash % vip.ring_size) as usize;
    if idx >= RING_MAX {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    }
    let entry = ring.entries[idx];
    if entry == NO_BACKEND {
        return (Stat::DropNoBackend, xdp_action::XDP_DROP);
    }
    let backend_id = entry as u32;
    let Some(b) = usable_backend(backend_id, vip.id) else {
        // The ring still names a backend that just went down: the new
        // ring is on its way; do not send to a dead backend meanwhile.
        return (Stat::DropNoBackend, xdp_action::XDP_DROP);
    };
    if let Some(set) = set {
        // SAFETY: as above.
        unsafe { record(&mut *set, slot, flow, hash, backend_id, vip.id) };
    }
    forward(data, b, backend_id, len, Stat::TxNewFlow)
}

/// Records a flow in its set: in `slot` when the flow already had an entry,
/// else in an empty entry, else in the first unreferenced one under the
/// CLOCK hand (clearing reference bits as the hand passes).
#[inline(always)]
fn record(set: &mut FlowSet, slot: usize, key: FlowKey, hash: u32, backend: u32, vip_id: u32) {
    let mut victim = slot;
    if victim >= FLOW_WAYS {
        for (i, e) in set.entries.iter().enumerate() {
            if e.check == 0 {
                victim = i;
                break;
            }
        }
    }
    if victim >= FLOW_WAYS {
        let mut hand = set.hand as usize % FLOW_WAYS;
        for _ in 0..FLOW_WAYS {
            let e = &mut set.entries[hand];
            if e.referenced == 0 {
                break;
            }
            e.referenced = 0;
            hand = (hand + 1) % FLOW_WAYS;
        }
        victim = hand;
        set.hand = ((hand + 1) % FLOW_WAYS) as u32;
    }
    if let Some(e) = set.entries.get_mut(victim) {
        *e = FlowEntry {
            key,
            backend,
            vip_id,
            check: flow_check(hash, backend, vip_id),
            referenced: 0,
        };
    }
}

/// DSR rewrite and per-backend accounting: the new destination MAC is the
/// backend's, the new source is the MAC the frame was sent to (this
/// interface's). `data` has at least 34 bytes (checked by the caller).
#[inline(always)]
fn forward(data: usize, b: &BackendInfo, backend_id: u32, len: u64, stat: Stat) -> (Stat, u32) {
    // SAFETY: 12 bytes of Ethernet addresses are inside the checked range;
    // `b` points into a map value that lives for this run.
    unsafe {
        let dst_hi: u32 = load(data);
        let dst_lo: u16 = load(data + 4);
        let mac = b.mac.as_ptr() as usize;
        *(data as *mut u32) = load::<u32>(mac);
        *((data + 4) as *mut u16) = load::<u16>(mac + 4);
        *((data + 6) as *mut u32) = dst_hi;
        *((data + 10) as *mut u16) = dst_lo;
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU value; no other writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
            if let Stat::TxNewFlow = stat {
                (*c).new_flows += 1;
            }
        }
    }
    (stat, xdp_action::XDP_TX)
}

/// Backend `id` if it is up and serves `vip_id`.
#[inline(always)]
fn usable_backend(id: u32, vip_id: u32) -> Option<&'static BackendInfo> {
    let b = BACKENDS.get(id)?;
    if b.flags & BACKEND_F_UP != 0 && b.vip_id == vip_id {
        Some(b)
    } else {
        None
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
