//! Sending to a backend: the layer-2 DSR rewrite (or, for a routed
//! backend, `encap`), and the per-backend counters.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use ha_common::{BackendInfo, Stat, VipKey, BACKEND_F_UP, ENCAP_DSR};

use crate::maps::{BACKENDS, BACKEND_STATS};
use crate::parse::{load, ETH_HLEN};

/// Sends the frame (`data .. end`, `len` bytes) to backend `backend_id`
/// (`b`) for `stat`, and counts it for the backend when it went there.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn send(
    ctx: &XdpContext,
    data: usize,
    end: usize,
    b: &BackendInfo,
    backend_id: u32,
    len: u64,
    stat: Stat,
    hash: u32,
) -> (Stat, u32) {
    let (stat, action) = if b.encap == ENCAP_DSR {
        dsr(data, end, b, stat)
    } else {
        crate::encap::send(ctx, b, hash, stat)
    };
    if action == xdp_action::XDP_TX && stat != Stat::TxTooBig {
        count(backend_id, len, stat);
    }
    (stat, action)
}

/// The DSR rewrite: the new destination MAC is the backend's, the new
/// source is the MAC the frame was sent to (this interface's).
#[inline(always)]
fn dsr(data: usize, end: usize, b: &BackendInfo, stat: Stat) -> (Stat, u32) {
    if data + ETH_HLEN > end {
        return (Stat::Aborted, xdp_action::XDP_ABORTED);
    }
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
    (stat, xdp_action::XDP_TX)
}

#[inline(always)]
fn count(backend_id: u32, len: u64, stat: Stat) {
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
}

/// Backend `id` if it is up and serves exactly the service `vip`.
#[inline(always)]
pub fn usable_backend(id: u32, vip: &VipKey) -> Option<&'static BackendInfo> {
    let b = BACKENDS.get(id)?;
    // The key's port, protocol and family as one word (two compares, not four).
    let tail = |k: &VipKey| {
        // SAFETY: bytes 4..8 of a `VipKey` (4-aligned, `repr(C)`, no padding).
        unsafe { load::<u32>(k as *const VipKey as usize + 4) }
    };
    if b.flags & BACKEND_F_UP != 0 && b.vip.addr == vip.addr && tail(&b.vip) == tail(vip) {
        Some(b)
    } else {
        None
    }
}
