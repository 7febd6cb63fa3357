//! The backend side's XDP program (`halb backend` attaches it): removes
//! the outer header of an IP-in-IP or GUE packet that a halb node sent to
//! this host for a VIP it serves, and passes the inner packet to the
//! stack, as the kernel's `ipip`/`ip6tnl`/`fou` devices would.
//!
//! A frame is decapsulated only when all of this holds; anything else is
//! passed untouched (every case bumps one `DecapStat`):
//! - Ethernet, then IPv4 (no options, no fragment) or IPv6 (no extension
//!   header), with lengths consistent with the frame;
//! - protocol 4 or 41 (IP in IP, when enabled) or UDP to the configured
//!   GUE port with checksum 0 (GUE variant 1: the first nibble after UDP
//!   is 4 or 6) and a UDP length that matches;
//! - an outer destination that is an address of this host (`ADDR_LOCAL`);
//! - an inner IPv4 or IPv6 header of the family the outer header names,
//!   whose length is exactly what the outer packet carries, to a VIP this
//!   host serves (`ADDR_VIP`), or to this host itself (`ADDR_LOCAL`) from
//!   the outer header's own source (a load balancer's health check, sent
//!   through the tunnel; see `ours`).
//!
//! The Ethernet addresses stay; the EtherType becomes the inner packet's.
#![no_std]
#![no_main]

mod bin_support;
#[allow(dead_code)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use ha_common::decap::{
    AddrKey, AddrSlot, Conf, DecapStat, ADDR_LOCAL, ADDR_VIP, CACHE_SLOTS, STAT_COUNT,
};
use ha_common::{Counter, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_UDP};
use parse::{
    load, ETH_HLEN, ETH_P_IPV6_RAW, ETH_P_IP_RAW, IP_FRAG_MASK_RAW, NH_IPV4, NH_IPV6, UDP_HLEN,
};

/// Served VIPs and this host's addresses (see `ha_common::decap::ADDRS`).
#[map(name = "HALB_DECAP_ADDRS")]
static ADDRS: HashMap<AddrKey, u32> = HashMap::with_max_entries(1024, 0);

/// The direct-mapped cache of `ADDRS` (see `ha_common::decap::CACHE`).
#[map(name = "HALB_DECAP_CACHE")]
static CACHE: Array<AddrSlot> = Array::with_max_entries(CACHE_SLOTS, 0);

/// The settings, set by the loader (read-only: the verifier knows them, and
/// what they switch off costs nothing).
#[no_mangle]
static DECAP_CONF: Conf = Conf {
    gue_port: 0,
    ipip: 0,
    pad: 0,
};

/// Per-reason counters.
#[map(name = "HALB_DECAP_STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[xdp]
pub fn halb_decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let stat = decap(&ctx);
    if let Some(c) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value; no other writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    xdp_action::XDP_PASS
}

/// Whether `key` has `flag`: its slot of [`CACHE`] first (one array
/// read), [`ADDRS`] when the slot holds another key.
#[inline(always)]
fn has(key: &AddrKey, flag: u32) -> bool {
    if let Some(s) = CACHE.get(key.slot()) {
        let (a, b) = (&s.key.addr, &key.addr);
        if a[0] == b[0]
            && a[1] == b[1]
            && a[2] == b[2]
            && a[3] == b[3]
            && s.key.family == key.family
        {
            return s.flags & flag != 0;
        }
    }
    // SAFETY: a map value pointer, read during this run.
    ADDRS
        .get_ptr(key)
        .is_some_and(|v| unsafe { *v } & flag != 0)
}

/// Whether an inner packet to `dst` from `src` is this host's to take: to
/// a served VIP, or to this host itself from the very address the outer
/// header comes from (a load balancer's health check). The second rule
/// gives a sender nothing it could not do without the tunnel: a forged
/// inner source needs the same forged outer source, which the network's
/// ingress filtering drops as it would drop the bare packet.
#[inline(always)]
fn ours(dst: &AddrKey, o: &Outer, src: [u32; 4]) -> bool {
    if has(dst, ADDR_VIP) {
        return true;
    }
    o.family == dst.family
        && o.src[0] == src[0]
        && o.src[1] == src[1]
        && o.src[2] == src[2]
        && o.src[3] == src[3]
        && has(dst, ADDR_LOCAL)
}

/// The key of an IPv4 address. (Its fields are stored one by one: an
/// aggregate with zeros would become a call to a byte-wise `memset`.)
#[inline(always)]
fn key4(addr: u32) -> AddrKey {
    // SAFETY: a plain read of a read-only global.
    let zero = unsafe { core::ptr::read_volatile(&ZERO) };
    AddrKey {
        addr: [addr, zero, zero, zero],
        family: FAMILY_IPV4 as u32,
    }
}

/// A zero the compiler does not see through (see [`key4`]).
#[no_mangle]
static ZERO: u32 = 0;

#[inline(always)]
fn key6(addr: [u32; 4]) -> AddrKey {
    AddrKey {
        addr,
        family: FAMILY_IPV6 as u32,
    }
}

/// The outer header's facts: where the payload starts (after UDP for
/// GUE), how long it is, and what it should be.
struct Outer {
    /// Offset of the inner packet from the IP header.
    off: usize,
    /// Bytes of inner packet the outer header says it carries.
    inner_len: usize,
    /// The inner version the outer header names (0: GUE, by its nibble).
    want: u8,
    gue: bool,
    /// The outer source (IPv4 in the first word) and family.
    src: [u32; 4],
    family: u32,
    /// The outer header's ECN field.
    ecn: u8,
}

/// Which tunnel, if any, a next-header / protocol value names.
#[inline(always)]
fn tunnel_kind(nh: u8, conf: &Conf) -> Option<(u8, bool)> {
    match nh {
        NH_IPV4 if conf.ipip != 0 => Some((4, false)),
        NH_IPV6 if conf.ipip != 0 => Some((6, false)),
        IPPROTO_UDP if conf.gue_port != 0 => Some((0, true)),
        _ => None,
    }
}

/// The UDP header of a GUE candidate at `udp`: the port (checked first:
/// any other UDP is not a tunnel), then its length and checksum.
#[inline(always)]
fn gue_udp(udp: usize, end: usize, conf: &Conf, carried: usize) -> Result<(), DecapStat> {
    if udp + UDP_HLEN > end {
        return Err(DecapStat::PassNotTunnel);
    }
    // SAFETY: 8 bytes checked above.
    let (dport, ulen, sum) = unsafe {
        (
            load::<u16>(udp + 2),
            u16::from_be(load::<u16>(udp + 4)) as usize,
            load::<u16>(udp + 6),
        )
    };
    if dport != conf.gue_port {
        return Err(DecapStat::PassNotTunnel);
    }
    if ulen != carried || sum != 0 {
        return Err(DecapStat::PassMalformed);
    }
    Ok(())
}

#[inline(always)]
fn outer4(ip: usize, end: usize, conf: &Conf) -> Result<Outer, DecapStat> {
    if ip + 20 > end {
        return Err(DecapStat::PassNotTunnel);
    }
    // SAFETY (all loads): inside the 20 bytes checked above.
    let (vihl, tot_len, frag, proto, saddr, daddr) = unsafe {
        (
            load::<u8>(ip),
            u16::from_be(load::<u16>(ip + 2)) as usize,
            load::<u16>(ip + 6),
            load::<u8>(ip + 9),
            load::<u32>(ip + 12),
            load::<u32>(ip + 16),
        )
    };
    let Some((want, gue)) = tunnel_kind(proto, conf) else {
        return Err(DecapStat::PassNotTunnel);
    };
    if vihl >> 4 != 4 {
        return Err(DecapStat::PassNotTunnel);
    }
    if gue {
        // The port decides whether this is a tunnel at all.
        gue_udp(ip + 20, end, conf, tot_len.wrapping_sub(20))?;
    }
    let room = end - ip;
    if vihl != 0x45 || frag & IP_FRAG_MASK_RAW != 0 || tot_len > room {
        return Err(DecapStat::PassMalformed);
    }
    let off = 20 + if gue { UDP_HLEN } else { 0 };
    if tot_len < off + 20 {
        return Err(DecapStat::PassMalformed);
    }
    if !has(&key4(daddr), ADDR_LOCAL) {
        return Err(DecapStat::PassNotOurs);
    }
    Ok(Outer {
        off,
        inner_len: tot_len - off,
        want,
        gue,
        src: [saddr, 0, 0, 0],
        family: FAMILY_IPV4 as u32,
        // SAFETY: inside the 20 bytes checked above.
        ecn: unsafe { load::<u8>(ip + 1) } & 3,
    })
}

#[inline(always)]
fn outer6(ip: usize, end: usize, conf: &Conf) -> Result<Outer, DecapStat> {
    if ip + 40 > end {
        return Err(DecapStat::PassNotTunnel);
    }
    // SAFETY (all loads): inside the 40 bytes checked above.
    let (version, payload, nh) = unsafe {
        (
            load::<u8>(ip),
            u16::from_be(load::<u16>(ip + 4)) as usize,
            load::<u8>(ip + 6),
        )
    };
    let Some((want, gue)) = tunnel_kind(nh, conf) else {
        return Err(DecapStat::PassNotTunnel);
    };
    if version >> 4 != 6 {
        return Err(DecapStat::PassNotTunnel);
    }
    if gue {
        gue_udp(ip + 40, end, conf, payload)?;
    }
    let room = end - ip;
    if 40 + payload > room {
        return Err(DecapStat::PassMalformed);
    }
    let extra = if gue { UDP_HLEN } else { 0 };
    if payload < extra + 20 {
        return Err(DecapStat::PassMalformed);
    }
    if !has(&key6(parse::addr6(ip, 24)), ADDR_LOCAL) {
        return Err(DecapStat::PassNotOurs);
    }
    Ok(Outer {
        off: 40 + extra,
        inner_len: payload - extra,
        want,
        gue,
        src: parse::addr6(ip, 8),
        family: FAMILY_IPV6 as u32,
        // SAFETY: inside the 40 bytes checked above.
        ecn: (unsafe { load::<u8>(ip + 1) } >> 4) & 3,
    })
}

/// Checks the inner packet at `inner` (`o.inner_len` bytes, inside the
/// frame) and returns its EtherType.
#[inline(always)]
fn inner(inner: usize, end: usize, o: &Outer) -> Result<u16, DecapStat> {
    // SAFETY: a plain read of a local (keeps the bounds checks below
    // visible to the verifier; see `parse::l4`).
    let inner = unsafe { core::ptr::read_volatile(&inner) };
    if inner + 20 > end {
        return Err(DecapStat::PassMalformed);
    }
    // SAFETY: 20 bytes checked above.
    let version = unsafe { load::<u8>(inner) } >> 4;
    if o.want != 0 && version != o.want {
        return Err(DecapStat::PassMalformed);
    }
    match version {
        4 => {
            // SAFETY (the loads): inside the 20 bytes checked above.
            let (vihl, len, daddr) = unsafe {
                (
                    load::<u8>(inner),
                    u16::from_be(load::<u16>(inner + 2)) as usize,
                    load::<u32>(inner + 16),
                )
            };
            if vihl & 0x0f < 5 || len != o.inner_len {
                return Err(DecapStat::PassMalformed);
            }
            // SAFETY: inside the 20 bytes checked above.
            let saddr: u32 = unsafe { load(inner + 12) };
            if !ours(&key4(daddr), o, [saddr, 0, 0, 0]) {
                return Err(DecapStat::PassNotOurs);
            }
            Ok(ETH_P_IP_RAW)
        }
        6 => {
            if inner + 40 > end {
                return Err(DecapStat::PassMalformed);
            }
            // SAFETY: 40 bytes checked above.
            let payload = u16::from_be(unsafe { load::<u16>(inner + 4) }) as usize;
            if 40 + payload != o.inner_len {
                return Err(DecapStat::PassMalformed);
            }
            if !ours(&key6(parse::addr6(inner, 24)), o, parse::addr6(inner, 8)) {
                return Err(DecapStat::PassNotOurs);
            }
            Ok(ETH_P_IPV6_RAW)
        }
        _ => Err(DecapStat::PassMalformed),
    }
}

/// ECN "congestion experienced".
const ECN_CE: u8 = 3;

/// RFC 6040 at decapsulation: a router marked the outer header CE, so the
/// inner packet, when ECN-capable, carries CE on (IPv4: its checksum
/// adjusted, RFC 1624). A not-ECN-capable inner packet is left as it is.
#[inline(always)]
fn congestion(inner: usize, end: usize) {
    // SAFETY: a plain read of a local (see `inner`).
    let inner = unsafe { core::ptr::read_volatile(&inner) };
    if inner + 40 > end && inner + 20 > end {
        return;
    }
    // SAFETY: at least 20 bytes at `inner` checked above.
    let v: u8 = unsafe { load(inner) };
    if v >> 4 == 4 {
        // SAFETY: as above.
        let tos: u8 = unsafe { load(inner + 1) };
        if tos & 3 == 0 || tos & 3 == ECN_CE {
            return;
        }
        // SAFETY: as above; the words are at `inner` and `inner + 10`.
        unsafe {
            let old = load::<u16>(inner) as u32;
            *((inner + 1) as *mut u8) = tos | ECN_CE;
            let new = load::<u16>(inner) as u32;
            let sum = !load::<u16>(inner + 10) as u32 + (!old & 0xffff) + new;
            let sum = (sum & 0xffff) + (sum >> 16);
            let sum = (sum & 0xffff) + (sum >> 16);
            *((inner + 10) as *mut u16) = !(sum as u16);
        }
    } else if inner + 40 <= end {
        // SAFETY: 40 bytes checked just above.
        unsafe {
            let b1: u8 = load(inner + 1);
            let ecn = (b1 >> 4) & 3;
            if ecn == 1 || ecn == 2 {
                *((inner + 1) as *mut u8) = b1 | (ECN_CE << 4);
            }
        }
    }
}

#[inline(always)]
fn decap(ctx: &XdpContext) -> DecapStat {
    let data = ctx.data();
    let end = ctx.data_end();
    // SAFETY: a plain read of a read-only global the loader sets.
    let conf = &unsafe { core::ptr::read_volatile(&DECAP_CONF) };
    if data + ETH_HLEN > end {
        return DecapStat::PassNotTunnel;
    }
    // SAFETY: 14 bytes checked above.
    let et = unsafe { load::<u16>(data + 12) };
    let ip = data + ETH_HLEN;
    let outer = match et {
        ETH_P_IP_RAW => outer4(ip, end, conf),
        ETH_P_IPV6_RAW => outer6(ip, end, conf),
        _ => Err(DecapStat::PassNotTunnel),
    };
    let o = match outer {
        Ok(o) => o,
        Err(s) => return s,
    };
    let inner_et = match inner(ip + (o.off & 0x3f), end, &o) {
        Ok(et) => et,
        Err(s) => return s,
    };
    if o.ecn == ECN_CE {
        congestion(ip + (o.off & 0x3f), end);
    }
    // The MACs move forward over the outer header, then the head follows.
    let shift = o.off & 0x3f;
    if data + shift + ETH_HLEN > end {
        return DecapStat::PassMalformed;
    }
    // SAFETY: `data .. data + 14` and `data + shift .. + 14` are inside
    // the checked range.
    unsafe {
        let dst_hi: u32 = load(data);
        let dst_lo: u16 = load(data + 4);
        let src_hi: u32 = load(data + 6);
        let src_lo: u16 = load(data + 10);
        let to = data + shift;
        *(to as *mut u32) = dst_hi;
        *((to + 4) as *mut u16) = dst_lo;
        *((to + 6) as *mut u32) = src_hi;
        *((to + 10) as *mut u16) = src_lo;
        *((to + 12) as *mut u16) = inner_et;
    }
    // SAFETY: a helper on this program's context; shrinking the head by
    // bytes that are inside the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, shift as i32) } != 0 {
        return DecapStat::PassMalformed;
    }
    if o.gue {
        DecapStat::Gue
    } else {
        DecapStat::Ipip
    }
}
