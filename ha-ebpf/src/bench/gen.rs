//! The live-frames generator of `cargo xtask bench live`: run with
//! `BPF_PROG_TEST_RUN` in live-frames mode on the generator's veth end, it
//! writes a whole Ethernet/IPv4 or IPv6/UDP or TCP header into every frame (a
//! recycled page keeps the bytes the last program wrote, so nothing is left
//! to the template; the IPv4 checksum is right) and sends it with `XDP_TX` to the node under test.
#![no_std]
#![no_main]

#[path = "../bin_support.rs"]
mod bin_support;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use ha_common::bench::{gen_flow, gen_saddr6, GenConfig, GEN_FRAME4, GEN_FRAME6, GEN_STORM};
use ha_common::{FAMILY_IPV6, IPPROTO_TCP};

/// The settings (one element, written by the bench).
#[map(name = "GEN_CONFIG")]
static CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Frames written so far on each CPU.
#[map(name = "GEN_SEQ")]
static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const FRAME: usize = GEN_FRAME4;

/// # Safety
/// `addr .. addr + size_of::<T>()` is inside the checked frame.
#[inline(always)]
unsafe fn store<T>(addr: usize, v: T) {
    unsafe { core::ptr::write_unaligned(addr as *mut T, v) }
}

/// The IPv4 header checksum of the frames this program writes (a bridge
/// with `br_netfilter` drops frames whose checksum is wrong).
#[inline(always)]
fn ipv4_checksum(saddr_raw: u32, daddr_raw: u32, proto: u8) -> u16 {
    let s = u32::from_be(saddr_raw);
    let d = u32::from_be(daddr_raw);
    let mut sum: u32 = 0x4500 + (FRAME - 14) as u32 + ((64u32 << 8) | proto as u32);
    sum += (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[xdp]
pub fn halb_bench_gen(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + FRAME > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(c), Some(seq)) = (CONFIG.get(0), SEQ.get_ptr_mut(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU value; this CPU's only writer.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let cores = if c.cores == 0 { 1 } else { c.cores };
    let core = cpu % cores;
    let i = if c.mode == GEN_STORM {
        // A new flow every frame, distinct between the cores.
        (n as u32).wrapping_mul(cores) + core
    } else {
        let per_core = (c.flows / cores).max(1) as u64;
        ((n % per_core) as u32) * cores + core
    };
    let (saddr, ports) = gen_flow(i, c.dport);
    let tcp = c.proto == IPPROTO_TCP;
    if c.family == FAMILY_IPV6 {
        return frame6(data, ctx.data_end(), c, saddr, ports, n as u32, tcp);
    }
    // SAFETY (all stores): inside the FRAME bytes checked above.
    unsafe {
        store(data, c.dst_mac);
        store(data + 6, c.src_mac);
        store(data + 12, 0x0800u16.to_be());
        let ip = data + 14;
        store(ip, 0x45u8);
        store(ip + 1, 0u8);
        store(ip + 2, ((FRAME - 14) as u16).to_be());
        store(ip + 4, 0u32);
        store(ip + 8, 64u8);
        store(ip + 9, c.proto);
        store(ip + 10, ipv4_checksum(saddr, c.daddr, c.proto).to_be());
        store(ip + 12, saddr);
        store(ip + 16, c.daddr);
        l4(
            ip + 20,
            ports,
            n as u32,
            c.tcp_flags,
            tcp,
            (FRAME - 34) as u16,
        );
    }
    xdp_action::XDP_TX
}

/// The TCP header (`seq`, `flags`) or the UDP header (`udp_len`) at `l4`.
///
/// # Safety
/// `l4 .. l4 + 20` is inside the checked frame.
#[inline(always)]
unsafe fn l4(l4: usize, ports: u32, seq: u32, flags: u8, tcp: bool, udp_len: u16) {
    unsafe {
        store(l4, ports);
        if tcp {
            store(l4 + 4, seq);
            store(l4 + 8, 0u32);
            store(l4 + 12, 0x50u8);
            store(l4 + 13, flags);
            store(l4 + 14, 0xffffu16);
            store(l4 + 16, 0u32);
        } else {
            store(l4 + 4, udp_len.to_be());
            store(l4 + 6, 0u16);
        }
    }
}

/// An IPv6 frame of [`GEN_FRAME6`] bytes from `fd77:1::<saddr>`.
#[inline(always)]
fn frame6(
    data: usize,
    end: usize,
    c: &GenConfig,
    saddr: u32,
    ports: u32,
    seq: u32,
    tcp: bool,
) -> u32 {
    if data + GEN_FRAME6 > end {
        return xdp_action::XDP_ABORTED;
    }
    let payload = (GEN_FRAME6 - 54) as u16;
    // SAFETY (all stores): inside the GEN_FRAME6 bytes checked above.
    unsafe {
        store(data, c.dst_mac);
        store(data + 6, c.src_mac);
        store(data + 12, 0x86ddu16.to_be());
        let ip = data + 14;
        store(ip, 0x6000_0000u32.to_be());
        store(ip + 4, payload.to_be());
        store(ip + 6, c.proto);
        store(ip + 7, 64u8);
        store(ip + 8, gen_saddr6(saddr));
        store(ip + 24, c.daddr6);
        l4(ip + 40, ports, seq, c.tcp_flags, tcp, payload);
    }
    xdp_action::XDP_TX
}
