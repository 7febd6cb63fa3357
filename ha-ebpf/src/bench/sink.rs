//! The counting sink of `cargo xtask bench live`, attached to the
//! generator's veth end: every IPv4 frame, and every IPv6 frame with UDP or
//! TCP, that comes back is counted and
//! dropped, by whether its destination MAC is the one the program under
//! test should have written; anything else (ARP) passes to the stack.
#![no_std]
#![no_main]

#[path = "../bin_support.rs"]
mod bin_support;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// The destination MAC a balanced frame carries (one element, 8 bytes).
#[map(name = "SINK_MAC")]
static MAC: Array<[u8; 8]> = Array::with_max_entries(1, 0);

/// Frames per CPU: 0 with the expected MAC, 1 with another.
#[map(name = "SINK_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[xdp]
pub fn halb_bench_sink(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 14 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: 14 bytes checked above.
    let (kind, dst) = unsafe {
        (
            core::ptr::read_unaligned((data + 12) as *const u16),
            core::ptr::read_unaligned(data as *const [u8; 6]),
        )
    };
    // IPv4, or IPv6 carrying UDP or TCP (neighbour discovery passes).
    let counted = kind == 0x0800u16.to_be()
        || (kind == 0x86ddu16.to_be()
            && data + 21 <= ctx.data_end()
            // SAFETY: byte 20 checked just above.
            && matches!(unsafe { *((data + 20) as *const u8) }, 6 | 17));
    if !counted {
        return xdp_action::XDP_PASS;
    }
    let want = MAC.get(0).map(|m| m[..6] == dst).unwrap_or(false);
    if let Some(c) = COUNT.get_ptr_mut(if want { 0 } else { 1 }) {
        // SAFETY: per-CPU value; this CPU's only writer.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}
