//! The empty `XDP_TX` program: the live-frames bench's baseline (every frame
//! goes back out as it came, at the driver's own cost and nothing more).
#![no_std]
#![no_main]

#[path = "../bin_support.rs"]
mod bin_support;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn halb_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}
