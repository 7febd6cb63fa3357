//! The flow table (see `ha_common::FlowSet`): finding a flow's entry,
//! refreshing its stamp on a hit, and recording a flow over an empty entry,
//! one never hit, or the one idle longest, counting what recording
//! displaced.

use ha_common::{
    flow_check, FlowEntry, FlowSet, FlowStat, FLOW_CLOSING, FLOW_REFERENCED, FLOW_TIME_SHIFT,
};

use crate::maps::FLOW_STATS;

/// The stamp a packet leaves on its flow's entry: now, the closing bit
/// kept or newly set, and referenced.
#[inline(always)]
pub fn stamp_for(old: u32, now: u32, closing: bool) -> u32 {
    let c = if closing { FLOW_CLOSING } else { 0 };
    (now << FLOW_TIME_SHIFT) | (old & FLOW_CLOSING) | c | FLOW_REFERENCED
}

/// Index of the entry of the flow (`saddr`, `ports`, `hash`) in `set`, if
/// it has one (check value intact).
#[inline(always)]
pub fn find(set: &FlowSet, saddr: u32, ports: u32, hash: u32) -> Option<usize> {
    for (i, e) in set.entries.iter().enumerate() {
        if e.saddr == saddr && e.ports == ports && e.check == flow_check(hash, e.backend) {
            return Some(i);
        }
    }
    None
}

fn count(stat: FlowStat) {
    if let Some(c) = FLOW_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU value; no other writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Records a flow in its set: in `slot` when the flow already had an entry,
/// else in an empty entry, else over the oldest entry never hit, else over
/// the entry whose last packet is oldest.
/// Taking a flow's entry while it is live (idle below `live_units`) is
/// counted as such: the table is too small.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn record(
    set: &mut FlowSet,
    slot: Option<usize>,
    saddr: u32,
    ports: u32,
    hash: u32,
    backend: u16,
    now: u32,
    closing: bool,
    live_units: u32,
) {
    let victim = match slot {
        Some(i) => i,
        None => {
            // An empty entry; else the oldest of the entries never hit since
            // recorded (a SYN flood's, a port scan's: one packet each); else
            // the oldest of all. A real connection's entry is hit by its
            // first ACK, one round trip after its SYN, and from then on a
            // flood of one-packet flows does not displace it.
            let mut victim = 0;
            let mut rank = 0u64;
            let mut empty = false;
            for (i, e) in set.entries.iter().enumerate() {
                if e.check == 0 {
                    victim = i;
                    empty = true;
                    break;
                }
                let unreferenced = (e.stamp & FLOW_REFERENCED == 0) as u64;
                let r = (unreferenced << 32) | e.idle_units(now) as u64;
                if i == 0 || r > rank {
                    victim = i;
                    rank = r;
                }
            }
            if !empty {
                let live = set
                    .entries
                    .get(victim)
                    .is_some_and(|e| e.is_live(now, live_units));
                count(if live {
                    FlowStat::EvictedLive
                } else {
                    FlowStat::EvictedIdle
                });
            }
            victim
        }
    };
    if let Some(e) = set.entries.get_mut(victim) {
        *e = FlowEntry {
            saddr,
            ports,
            backend,
            check: flow_check(hash, backend),
            stamp: stamp_for(0, now, closing) & !FLOW_REFERENCED,
        };
    }
    count(FlowStat::Recorded);
}
