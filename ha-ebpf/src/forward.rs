//! Layer-2 DSR forwarding: the MAC rewrite and the per-backend counters.

use aya_ebpf::bindings::xdp_action;
use ha_common::{BackendInfo, Stat, VipKey, BACKEND_F_UP};

use crate::maps::{BACKENDS, BACKEND_STATS};
use crate::parse::load;

/// DSR rewrite and per-backend accounting: the new destination MAC is the
/// backend's, the new source is the MAC the frame was sent to (this
/// interface's). `data` has at least 34 bytes (checked by the caller).
#[inline(always)]
pub fn forward(data: usize, b: &BackendInfo, backend_id: u32, len: u64, stat: Stat) -> (Stat, u32) {
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

/// Backend `id` if it is up and serves exactly the service `vip`.
#[inline(always)]
pub fn usable_backend(id: u32, vip: &VipKey) -> Option<&'static BackendInfo> {
    let b = BACKENDS.get(id)?;
    if b.flags & BACKEND_F_UP != 0
        && b.vip.addr == vip.addr
        && b.vip.port == vip.port
        && b.vip.proto == vip.proto
        && b.vip.family == vip.family
    {
        Some(b)
    } else {
        None
    }
}
