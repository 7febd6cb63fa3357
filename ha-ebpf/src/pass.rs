//! A program that passes every frame: the baseline for benchmarks, and what
//! the lab attaches to the peer of an XDP_TX interface on veth in driver mode
//! (veth delivers XDP_TX frames only to a peer that has an XDP program).
#![no_std]
#![no_main]

mod bin_support;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn halb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
