//! The flow table (see `ha_common::FlowSet`): finding a flow's entry,
//! refreshing its stamp on a hit, and recording a new flow with CLOCK
//! eviction.

use ha_common::{
    flow_check, FlowEntry, FlowKey, FlowSet, FLOW_CLOSING, FLOW_REFERENCED, FLOW_TIME_SHIFT,
    FLOW_WAYS,
};

/// The stamp a packet leaves on its flow's entry: now, the closing bit
/// kept or newly set, and referenced.
#[inline(always)]
pub fn stamp_for(old: u32, now: u32, closing: bool) -> u32 {
    let c = if closing { FLOW_CLOSING } else { 0 };
    (now << FLOW_TIME_SHIFT) | (old & FLOW_CLOSING) | c | FLOW_REFERENCED
}

/// Index of `flow`'s entry in `set`, if it has one (check value intact).
#[inline(always)]
pub fn find(set: &FlowSet, flow: &FlowKey, hash: u32) -> Option<usize> {
    for (i, e) in set.entries.iter().enumerate() {
        if e.key == *flow && e.check == flow_check(hash, e.backend, e.vip_id) {
            return Some(i);
        }
    }
    None
}

/// Records a flow in its set: in `slot` when the flow already had an entry,
/// else in an empty entry, else in the first unreferenced one under the
/// CLOCK hand (clearing reference bits as the hand passes).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn record(
    set: &mut FlowSet,
    slot: Option<usize>,
    key: FlowKey,
    hash: u32,
    backend: u32,
    vip_id: u32,
    now: u32,
    closing: bool,
) {
    let mut victim = slot.unwrap_or(FLOW_WAYS);
    if victim >= FLOW_WAYS {
        for (i, e) in set.entries.iter().enumerate() {
            if e.check == 0 {
                victim = i;
                break;
            }
        }
    }
    if victim >= FLOW_WAYS {
        let mut hand = set.hand as usize % FLOW_WAYS;
        for _ in 0..FLOW_WAYS {
            let e = &mut set.entries[hand];
            if e.stamp & FLOW_REFERENCED == 0 {
                break;
            }
            e.stamp &= !FLOW_REFERENCED;
            hand = (hand + 1) % FLOW_WAYS;
        }
        victim = hand;
        set.hand = ((hand + 1) % FLOW_WAYS) as u32;
    }
    if let Some(e) = set.entries.get_mut(victim) {
        *e = FlowEntry {
            key,
            backend,
            vip_id,
            check: flow_check(hash, backend, vip_id),
            stamp: stamp_for(0, now, closing) & !FLOW_REFERENCED,
        };
    }
}
