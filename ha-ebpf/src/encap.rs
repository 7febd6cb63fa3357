//! Encapsulation to routed backends: IP in IP and GUE (variant 1, the
//! inner packet directly after UDP), with an IPv4 or IPv6 outer header,
//! and the path-MTU check in front of it (a packet that would not fit is
//! answered with an ICMP "too big" by `icmp`, or dropped).
//!
//! The outer header:
//! - destination: the backend's address; source: the node's address on
//!   the route to it (`BackendInfo::src`, chosen by the agent), so routers
//!   with reverse-path filtering pass it and ICMP about the tunnel comes
//!   back to the node;
//! - GUE: the UDP source port is taken from the flow hash (49152–65535),
//!   so a backend's NIC spreads flows over its receive queues by the outer
//!   ports, as the kernel's own `fou` does; an IPv6 outer header carries the
//!   flow hash in its flow label for the same reason (and for ECMP);
//! - traffic class / TOS copied from the inner header, TTL / hop limit
//!   [`ENCAP_TTL`], IPv4 DF set and identification 0 (RFC 6864: an atomic
//!   datagram), UDP checksum 0 (RFC 6935 for IPv6 tunnels; the kernel's
//!   `fou` accepts it).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use ha_common::{
    BackendInfo, Stat, BACKEND_F_ADDR6, ENCAP_GUE, ENCAP_TTL, GUE_UDP_LEN, IPPROTO_UDP, OUTER4_LEN,
    OUTER6_LEN,
};

use crate::icmp;
use crate::parse::{load, ETH_HLEN, ETH_P_IPV6_RAW, ETH_P_IP_RAW, NH_IPV4, NH_IPV6};

const DF_RAW: u16 = 0x4000u16.to_be();

/// The inner IP packet's facts the outer header needs.
struct Inner {
    len: u16,
    tos: u8,
    df: bool,
    v6: bool,
}

/// Reads the inner packet at `data + 14`, whose fixed header (20 or 40
/// bytes) and consistent length the parser checked.
#[inline(always)]
fn inner(data: usize, end: usize) -> Option<Inner> {
    if data + ETH_HLEN + 20 > end {
        return None;
    }
    let ip = data + ETH_HLEN;
    // SAFETY: 20 bytes at `ip` checked above.
    let v: u8 = unsafe { load(ip) };
    if v >> 4 == 4 {
        // SAFETY: as above.
        let (tos, len, frag) = unsafe {
            (
                load::<u8>(ip + 1),
                u16::from_be(load(ip + 2)),
                load::<u16>(ip + 6),
            )
        };
        return Some(Inner {
            len,
            tos,
            df: frag & DF_RAW != 0,
            v6: false,
        });
    }
    if data + ETH_HLEN + 40 > end {
        return None;
    }
    // SAFETY: 40 bytes at `ip` checked above.
    let (b1, payload) = unsafe { (load::<u8>(ip + 1), u16::from_be(load(ip + 4))) };
    Some(Inner {
        len: payload.wrapping_add(40),
        tos: (v << 4) | (b1 >> 4),
        df: true,
        v6: true,
    })
}

/// Encapsulates the frame for backend `b` (not DSR) and sends it: the
/// action and its reason, `stat` when it was sent.
#[inline(always)]
pub fn send(ctx: &XdpContext, b: &BackendInfo, hash: u32, stat: Stat) -> (Stat, u32) {
    let Some(inner) = inner(ctx.data(), ctx.data_end()) else {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    };
    let outer6 = b.flags & BACKEND_F_ADDR6 != 0;
    let gue = b.encap == ENCAP_GUE;
    let ip_len = if outer6 { OUTER6_LEN } else { OUTER4_LEN };
    let over = ip_len + if gue { GUE_UDP_LEN } else { 0 };
    if b.mtu != 0 && inner.len as u32 + over as u32 > b.mtu as u32 {
        // Without DF nothing may be answered; and an ICMP error is never
        // answered with another (RFC 1122 3.2.2, RFC 4443 2.4e).
        if !inner.df || stat == Stat::TxIcmp {
            return (Stat::DropTooBig, xdp_action::XDP_DROP);
        }
        let mtu = b.mtu - over;
        return if inner.v6 {
            icmp::too_big6(ctx, mtu)
        } else {
            icmp::too_big4(ctx, mtu)
        };
    }
    // SAFETY: a helper on this program's context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(over as i32)) } != 0 {
        return (Stat::DropNoRoom, xdp_action::XDP_DROP);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    // The largest header block written below: Ethernet, IPv6, UDP.
    if data + ETH_HLEN + (OUTER6_LEN + GUE_UDP_LEN) as usize > end {
        // Too short for the longest outer header: the shorter ones.
        if data + ETH_HLEN + over as usize > end {
            return (Stat::Aborted, xdp_action::XDP_ABORTED);
        }
    }
    let nh = if gue {
        IPPROTO_UDP
    } else if inner.v6 {
        NH_IPV6
    } else {
        NH_IPV4
    };
    let total = inner.len.wrapping_add(over);
    // SAFETY (the stores): every offset below is inside `data .. data + 14
    // + over`, checked above; `b` is a map value that lives for this run.
    unsafe {
        // Ethernet: to the next hop, from the MAC the frame was sent to
        // (now `over` bytes further in).
        let old = data + over as usize;
        let ours_hi: u32 = load(old);
        let ours_lo: u16 = load(old + 4);
        let mac = b.mac.as_ptr() as usize;
        *(data as *mut u32) = load::<u32>(mac);
        *((data + 4) as *mut u16) = load::<u16>(mac + 4);
        *((data + 6) as *mut u32) = ours_hi;
        *((data + 10) as *mut u16) = ours_lo;
    }
    let ip = data + ETH_HLEN;
    if outer6 {
        if data + ETH_HLEN + OUTER6_LEN as usize > end {
            return (Stat::Aborted, xdp_action::XDP_ABORTED);
        }
        // SAFETY: 14 + 40 bytes checked just above.
        unsafe {
            *((data + 12) as *mut u16) = ETH_P_IPV6_RAW;
            let tc = inner.tos as u32;
            let word = (6u32 << 28) | (tc << 20) | (hash & 0x000f_ffff);
            *(ip as *mut u32) = word.to_be();
            *((ip + 4) as *mut u16) = (total - OUTER6_LEN).to_be();
            *((ip + 6) as *mut u8) = nh;
            *((ip + 7) as *mut u8) = ENCAP_TTL;
            copy16(ip + 8, b.src.as_ptr() as usize);
            copy16(ip + 24, b.addr.as_ptr() as usize);
        }
    } else {
        if data + ETH_HLEN + OUTER4_LEN as usize > end {
            return (Stat::Aborted, xdp_action::XDP_ABORTED);
        }
        // SAFETY: 14 + 20 bytes checked just above.
        unsafe {
            *((data + 12) as *mut u16) = ETH_P_IP_RAW;
            *(ip as *mut u8) = 0x45;
            *((ip + 1) as *mut u8) = inner.tos;
            *((ip + 2) as *mut u16) = total.to_be();
            *((ip + 4) as *mut u16) = 0;
            *((ip + 6) as *mut u16) = DF_RAW;
            *((ip + 8) as *mut u8) = ENCAP_TTL;
            *((ip + 9) as *mut u8) = nh;
            *((ip + 12) as *mut u32) = load::<u32>(b.src.as_ptr() as usize);
            *((ip + 16) as *mut u32) = load::<u32>(b.addr.as_ptr() as usize);
            // The agent summed the constant words; add version/TOS and length.
            let first = u16::from_ne_bytes([0x45, inner.tos]) as u32;
            let sum = b.csum_base as u32 + first + total.to_be() as u32;
            *((ip + 10) as *mut u16) = fold(sum);
        }
    }
    if gue {
        let udp = ip + ip_len as usize;
        if udp + GUE_UDP_LEN as usize > end {
            return (Stat::Aborted, xdp_action::XDP_ABORTED);
        }
        let sport = 0xc000 | (hash as u16 & 0x3fff);
        // SAFETY: 8 bytes at `udp` checked just above.
        unsafe {
            *(udp as *mut u16) = sport.to_be();
            *((udp + 2) as *mut u16) = b.gue_port;
            *((udp + 4) as *mut u16) = (total - ip_len).to_be();
            *((udp + 6) as *mut u16) = 0;
        }
    }
    (stat, xdp_action::XDP_TX)
}

/// Copies 16 bytes (an IPv6 address) from a map value into the packet.
///
/// # Safety
/// `to .. to + 16` is inside the checked packet range; `from` points at
/// 16 readable bytes.
#[inline(always)]
unsafe fn copy16(to: usize, from: usize) {
    unsafe {
        for i in 0..4 {
            *((to + i * 4) as *mut u32) = load::<u32>(from + i * 4);
        }
    }
}

/// The header checksum of the 20-byte IPv4 header at `ip` (its checksum
/// field zero), raw. A one's-complement sum is the same in either byte
/// order, so the words are summed as they load.
///
/// # Safety
/// `ip .. ip + 20` is inside the checked packet range.
#[inline(always)]
pub unsafe fn ipv4_checksum(ip: usize) -> u16 {
    let mut sum = 0u32;
    for i in 0..10 {
        // SAFETY: inside the 20 bytes the caller checked.
        sum += unsafe { load::<u16>(ip + i * 2) } as u32;
    }
    fold(sum)
}

/// Folds a 32-bit one's-complement sum and inverts it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
