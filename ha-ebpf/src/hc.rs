//! Health checks through the tunnel: a tc egress program on the node's
//! interface that encapsulates the agent's probe packets (marked
//! `ha_common::hc::MARK_BASE | index` with `SO_MARK`) for a backend of an
//! IP-in-IP or GUE VIP exactly as the XDP program encapsulates that VIP's
//! traffic (outer destination the backend, outer source the probe's
//! source, TTL 64, DF, GUE variant 1 with checksum 0), so that a check
//! passes only when the backend decapsulates. Every other packet passes
//! unchanged.
#![no_std]
#![no_main]

mod bin_support;

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK,
    },
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use ha_common::hc::{HcTarget, MARK_BASE, MARK_MASK, MAX_TARGETS};
use ha_common::{ENCAP_GUE, ENCAP_TTL};

/// Probe index → how its packets are encapsulated.
#[map(name = "HALB_HC_TARGETS")]
static TARGETS: HashMap<u32, HcTarget> = HashMap::with_max_entries(MAX_TARGETS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;

#[classifier]
pub fn halb_hc(ctx: TcContext) -> i32 {
    let _ = encapsulate(&ctx);
    TC_ACT_OK as i32
}

/// The outer source port of a GUE probe: from the probe's own source port.
#[inline(always)]
fn gue_sport(sport: u16) -> u16 {
    0xc000 | (sport & 0x3fff)
}

fn encapsulate(ctx: &TcContext) -> Result<(), i64> {
    // SAFETY: the context's socket buffer, valid for this run.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & MARK_MASK != MARK_BASE {
        return Ok(());
    }
    // SAFETY: a map value pointer, read during this run.
    let Some(t) = TARGETS.get_ptr(&(mark & !MARK_MASK)).map(|t| unsafe { *t }) else {
        return Ok(());
    };
    let gue = t.encap == ENCAP_GUE;
    let udp = if gue { 8 } else { 0 };
    let proto = u16::from_be(ctx.skb.protocol() as u16) as u32;
    if t.v6 == 0 && proto == ETH_P_IP {
        let vihl: u8 = ctx.load(ETH_HLEN)?;
        let tos: u8 = ctx.load(ETH_HLEN + 1)?;
        let len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2)?);
        let src: [u8; 4] = ctx.load(ETH_HLEN + 12)?;
        let dst: [u8; 4] = ctx.load(ETH_HLEN + 16)?;
        if vihl >> 4 != 4 || dst != [t.dst[0], t.dst[1], t.dst[2], t.dst[3]] {
            return Ok(());
        }
        let ihl = ((vihl & 0x0f) as usize) * 4;
        let sport = u16::from_be(ctx.load::<u16>(ETH_HLEN + (ihl & 0x3c))?);
        let over = 20 + udp;
        let mut flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64;
        if gue {
            flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64;
        }
        ctx.adjust_room(over as i32, BPF_ADJ_ROOM_MAC, flags)?;
        let total = len.wrapping_add(over as u16);
        let mut h = [0u8; 28];
        h[0] = 0x45;
        h[1] = tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6] = 0x40;
        h[8] = ENCAP_TTL;
        h[9] = if gue { 17 } else { 4 };
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let mut sum = 0u32;
        for i in 0..10 {
            sum += u16::from_be_bytes([h[i * 2], h[i * 2 + 1]]) as u32;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        if gue {
            h[20..22].copy_from_slice(&gue_sport(sport).to_be_bytes());
            h[22..24].copy_from_slice(&t.gue_port.to_ne_bytes());
            h[24..26].copy_from_slice(&len.wrapping_add(8).to_be_bytes());
            ctx.store(ETH_HLEN, &h, 0)?;
        } else {
            let mut ip = [0u8; 20];
            ip.copy_from_slice(&h[..20]);
            ctx.store(ETH_HLEN, &ip, 0)?;
        }
    } else if t.v6 != 0 && proto == ETH_P_IPV6 {
        let first: u32 = ctx.load(ETH_HLEN)?;
        let plen = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4)?);
        let src: [u8; 16] = ctx.load(ETH_HLEN + 8)?;
        let dst: [u8; 16] = ctx.load(ETH_HLEN + 24)?;
        if u32::from_be(first) >> 28 != 6 || dst != t.dst {
            return Ok(());
        }
        let sport = u16::from_be(ctx.load::<u16>(ETH_HLEN + 40)?);
        let over = 40 + udp;
        let mut flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 as u64;
        if gue {
            flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64;
        }
        ctx.adjust_room(over as i32, BPF_ADJ_ROOM_MAC, flags)?;
        let payload = plen.wrapping_add(40 + udp as u16);
        let mut h = [0u8; 48];
        // Version, the inner traffic class, no flow label.
        let word = (6u32 << 28) | (u32::from_be(first) & 0x0ff0_0000);
        h[0..4].copy_from_slice(&word.to_be_bytes());
        h[4..6].copy_from_slice(&payload.to_be_bytes());
        h[6] = if gue { 17 } else { 41 };
        h[7] = ENCAP_TTL;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        if gue {
            h[40..42].copy_from_slice(&gue_sport(sport).to_be_bytes());
            h[42..44].copy_from_slice(&t.gue_port.to_ne_bytes());
            h[44..46].copy_from_slice(&plen.wrapping_add(48).to_be_bytes());
            ctx.store(ETH_HLEN, &h, 0)?;
        } else {
            let mut ip = [0u8; 40];
            ip.copy_from_slice(&h[..40]);
            ctx.store(ETH_HLEN, &ip, 0)?;
        }
    }
    Ok(())
}
