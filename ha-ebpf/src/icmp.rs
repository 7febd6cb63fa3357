//! ICMP: reading the flow an ICMP error to a VIP quotes (so the error can
//! follow the flow to its backend), and answering a packet too big for its
//! tunnel with an ICMP fragmentation-needed (IPv4) or packet-too-big
//! (ICMPv6) carrying the tunnel's MTU, as Katran does.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use ha_common::{Stat, IPPROTO_TCP, IPPROTO_UDP};

use crate::encap::{fold, ipv4_checksum};
use crate::parse::{load, ETH_HLEN, ETH_P_IPV6_RAW, ETH_P_IP_RAW, IPPROTO_ICMP, NH_ICMPV6};

/// Bytes of the original IPv4 packet an ICMP "fragmentation needed"
/// quotes: its header and more than the 8 bytes RFC 792 asks for.
const QUOTE4: usize = 64;
/// Bytes of the original IPv6 packet a "packet too big" quotes (the
/// 40-byte header and the start of the payload; RFC 4443 allows up to the
/// minimum MTU, and TCP needs its ports).
const QUOTE6: usize = 128;
/// ICMP header bytes before the quote.
const ICMP_HLEN: usize = 8;

/// The flow an ICMP error quotes, turned around: as the client's packets
/// to the VIP carry it.
pub struct Quote {
    /// TCP or UDP.
    pub proto: u8,
    /// The VIP's port, raw.
    pub vip_port: u16,
    /// Source and destination port of the client's packets, raw.
    pub ports: u32,
    /// The client's address (its first word for IPv4).
    pub client: [u32; 4],
}

/// The quoted flow of an ICMP error at `icmp` (destination unreachable,
/// including fragmentation needed, or time exceeded) about a packet that
/// `vip` sent (a backend's reply to a VIP flow). None for other messages.
#[inline(always)]
pub fn quoted4(icmp: usize, end: usize, vip: u32) -> Option<Quote> {
    // SAFETY: a plain read of a local (keeps the bounds check visible to
    // the verifier; see `parse::l4`).
    let icmp = unsafe { core::ptr::read_volatile(&icmp) };
    if icmp + ICMP_HLEN + 28 > end {
        return None;
    }
    // SAFETY (all loads): inside the 36 bytes checked above.
    let kind: u8 = unsafe { load(icmp) };
    if kind != 3 && kind != 11 {
        return None;
    }
    let q = icmp + ICMP_HLEN;
    let (vihl, proto, src, dst, ports) = unsafe {
        (
            load::<u8>(q),
            load::<u8>(q + 9),
            load::<u32>(q + 12),
            load::<u32>(q + 16),
            load::<u32>(q + 20),
        )
    };
    if vihl != 0x45 || src != vip || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return None;
    }
    Some(Quote {
        proto,
        // SAFETY: inside the checked range.
        vip_port: unsafe { load(q + 20) },
        ports: ports.rotate_left(16),
        client: [dst, 0, 0, 0],
    })
}

/// [`quoted4`] for ICMPv6 (destination unreachable, packet too big, time
/// exceeded) about a packet from the IPv6 VIP `vip`. The quoted packet's
/// TCP or UDP header must follow its fixed header.
#[inline(always)]
pub fn quoted6(icmp: usize, end: usize, vip: [u32; 4]) -> Option<Quote> {
    // SAFETY: a plain read of a local (see `quoted4`).
    let icmp = unsafe { core::ptr::read_volatile(&icmp) };
    if icmp + ICMP_HLEN + 48 > end {
        return None;
    }
    // SAFETY (all loads): inside the 56 bytes checked above.
    let kind: u8 = unsafe { load(icmp) };
    if !(1..=3).contains(&kind) {
        return None;
    }
    let q = icmp + ICMP_HLEN;
    let (version, proto) = unsafe { (load::<u8>(q), load::<u8>(q + 6)) };
    if version >> 4 != 6 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return None;
    }
    let src = crate::parse::addr6(q, 8);
    if src != vip {
        return None;
    }
    Some(Quote {
        proto,
        vip_port: unsafe { load(q + 40) },
        ports: unsafe { load::<u32>(q + 40) }.rotate_left(16),
        client: crate::parse::addr6(q, 24),
    })
}

/// Turns the frame (an IPv4 packet at offset 14, at least [`QUOTE4`]
/// bytes) into an ICMP fragmentation-needed for its sender, with `mtu`,
/// and sends it back out.
#[inline(never)]
pub fn too_big4(ctx: &XdpContext, mtu: u16) -> (Stat, u32) {
    let grow = (20 + ICMP_HLEN) as i32;
    // SAFETY: a helper on this program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return (Stat::DropNoRoom, xdp_action::XDP_DROP);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let ip = data + ETH_HLEN;
    let icmp = ip + 20;
    let orig = icmp + ICMP_HLEN;
    if orig + QUOTE4 > end {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    }
    // SAFETY (all loads and stores): inside `data .. orig + QUOTE4`,
    // checked above. The old Ethernet header is at `grow`.
    unsafe {
        reply_ethernet(data, data + grow as usize, ETH_P_IP_RAW);
        let to: u32 = load(orig + 12);
        let from: u32 = load(orig + 16);
        *(ip as *mut u16) = 0x45c0u16.to_be();
        *((ip + 2) as *mut u16) = ((20 + ICMP_HLEN + QUOTE4) as u16).to_be();
        *((ip + 4) as *mut u32) = 0;
        *((ip + 8) as *mut u8) = 64;
        *((ip + 9) as *mut u8) = IPPROTO_ICMP;
        *((ip + 10) as *mut u16) = 0;
        *((ip + 12) as *mut u32) = from;
        *((ip + 16) as *mut u32) = to;
        *((ip + 10) as *mut u16) = ipv4_checksum(ip);
        *(icmp as *mut u16) = 0x0304u16.to_be();
        *((icmp + 2) as *mut u16) = 0;
        *((icmp + 4) as *mut u16) = 0;
        *((icmp + 6) as *mut u16) = mtu.to_be();
        let sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            icmp as *mut u32,
            (ICMP_HLEN + QUOTE4) as u32,
            0,
        );
        *((icmp + 2) as *mut u16) = fold32(sum as u64);
    }
    trim(ctx, ETH_HLEN + 20 + ICMP_HLEN + QUOTE4)
}

/// [`too_big4`] for IPv6: an ICMPv6 packet too big (the frame holds at
/// least [`QUOTE6`] bytes of IPv6 packet).
#[inline(never)]
pub fn too_big6(ctx: &XdpContext, mtu: u16) -> (Stat, u32) {
    let grow = (40 + ICMP_HLEN) as i32;
    // SAFETY: a helper on this program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return (Stat::DropNoRoom, xdp_action::XDP_DROP);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let ip = data + ETH_HLEN;
    let icmp = ip + 40;
    let orig = icmp + ICMP_HLEN;
    if orig + QUOTE6 > end {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    }
    let payload = (ICMP_HLEN + QUOTE6) as u16;
    // SAFETY (all loads and stores): inside `data .. orig + QUOTE6`,
    // checked above.
    unsafe {
        reply_ethernet(data, data + grow as usize, ETH_P_IPV6_RAW);
        *(ip as *mut u32) = 0x6000_0000u32.to_be();
        *((ip + 4) as *mut u16) = payload.to_be();
        *((ip + 6) as *mut u8) = NH_ICMPV6;
        *((ip + 7) as *mut u8) = 64;
        for i in 0..4 {
            // New source: the original destination (the VIP); new
            // destination: the original source.
            *((ip + 8 + i * 4) as *mut u32) = load::<u32>(orig + 24 + i * 4);
            *((ip + 24 + i * 4) as *mut u32) = load::<u32>(orig + 8 + i * 4);
        }
        *(icmp as *mut u16) = 0x0200u16.to_be();
        *((icmp + 2) as *mut u16) = 0;
        *((icmp + 4) as *mut u32) = (mtu as u32).to_be();
        // The pseudo-header: both addresses, the length, next header 58.
        let addrs = bpf_csum_diff(core::ptr::null_mut(), 0, (ip + 8) as *mut u32, 32, 0);
        let body = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            icmp as *mut u32,
            payload as u32,
            0,
        );
        let len = u32::from_ne_bytes((payload as u32).to_be_bytes()) as u64;
        let nh = u32::from_ne_bytes((NH_ICMPV6 as u32).to_be_bytes()) as u64;
        let sum = (addrs as u32 as u64) + (body as u32 as u64) + len + nh;
        *((icmp + 2) as *mut u16) = fold32(sum);
    }
    trim(ctx, ETH_HLEN + 40 + ICMP_HLEN + QUOTE6)
}

/// Writes the Ethernet header of a reply at `data`: to the old frame's
/// source, from its destination (our MAC), of type `proto`.
///
/// # Safety
/// `data .. data + 14` and `old .. old + 14` are inside the checked range
/// and do not overlap.
#[inline(always)]
unsafe fn reply_ethernet(data: usize, old: usize, proto: u16) {
    unsafe {
        let ours_hi: u32 = load(old);
        let ours_lo: u16 = load(old + 4);
        let peer_hi: u32 = load(old + 6);
        let peer_lo: u16 = load(old + 10);
        *(data as *mut u32) = peer_hi;
        *((data + 4) as *mut u16) = peer_lo;
        *((data + 6) as *mut u32) = ours_hi;
        *((data + 10) as *mut u16) = ours_lo;
        *((data + 12) as *mut u16) = proto;
    }
}

/// Folds a sum of 32-bit one's-complement words and inverts it.
#[inline(always)]
fn fold32(sum: u64) -> u16 {
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    let s = (s & 0xffff_ffff) + (s >> 32);
    fold((s as u32 & 0xffff) + (s as u32 >> 16))
}

/// Cuts the frame to `len` bytes and sends it back.
#[inline(always)]
fn trim(ctx: &XdpContext, len: usize) -> (Stat, u32) {
    let have = ctx.data_end() - ctx.data();
    if have > len {
        // SAFETY: a helper on this program's context; shrinking only.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - have as i32) } != 0 {
            return (Stat::Aborted, xdp_action::XDP_ABORTED);
        }
    }
    (Stat::TxTooBig, xdp_action::XDP_TX)
}
