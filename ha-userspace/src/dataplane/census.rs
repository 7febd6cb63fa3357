//! The flow census: one walk of the flow table (mapped into memory) that
//! counts flows per backend, all and live, and finds the changed ring slots
//! that live flows still hold (an entry naming another backend than the
//! slot's current one). Pure over its inputs; run on a thread of its own (a
//! 16M-entry table is 256 MiB).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ha_common::{ring_hash, ring_slot, VipKey};

use super::maps::FlowView;
use super::writer::RingView;

/// What one walk found.
#[derive(Debug)]
pub struct Census {
    /// When the walk began.
    pub at: Instant,
    /// Per backend id: (entries, live entries).
    pub per_backend: HashMap<u32, (u64, u64)>,
    /// (VIP id, slot) pairs of changed slots that a live flow pinned to
    /// another backend than the slot's still holds.
    pub pinned: HashSet<(u32, u32)>,
}

/// Walks `view`: entries are resolved through `services` (backend id →
/// service), live means a packet within `live_units` flow-time units
/// (2 once the client closed), and `rings` are the VIPs' tables and
/// changed slots as the writer holds them.
pub fn walk(
    view: &FlowView,
    seed: u32,
    live_units: u32,
    services: &HashMap<u16, VipKey>,
    rings: &HashMap<VipKey, RingView>,
) -> Census {
    let at = Instant::now();
    // Stamps written during the walk read as idle 0 (see `idle_units`).
    let t = super::maps::flow_now();
    let mut per_backend: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut pinned = HashSet::new();
    view.for_each_valid(
        seed,
        |b| services.get(&b).copied(),
        |e, service, hash| {
            let live = e.is_live(t, live_units);
            let c = per_backend.entry(e.backend as u32).or_default();
            c.0 += 1;
            c.1 += live as u64;
            if let Some(r) = rings.get(service).filter(|r| live && !r.table.is_empty()) {
                // The walk's hash is the flow hash; affinity places by another.
                let placed = if r.source_hash {
                    let k = e.key(service);
                    ring_hash(seed, k.saddr, k.daddr, k.ports, k.proto, true)
                } else {
                    hash
                };
                let slot = ring_slot(placed, r.table.len() as u32);
                if r.changed.contains(&slot) && r.table[slot as usize] != e.backend {
                    pinned.insert((r.vip_id, slot));
                }
            }
        },
    );
    Census {
        at,
        per_backend,
        pinned,
    }
}
