//! Brings the maps to a desired set of VIPs and backends, in an order that
//! never lets a packet see an inconsistent state.
//!
//! Rules the writer keeps:
//! - ids are stable: a VIP keeps its id and a backend (VIP, address) keeps its
//!   id for as long as it exists, across restarts (the writer re-reads them
//!   from the pinned maps), so flow entries stay valid; a freed id is reused
//!   as late as possible (FIFO).
//! - a new Maglev table is written into the VIP's idle ring, then the VIP
//!   entry is replaced to point at it (one atomic swap). The idle ring is not
//!   rewritten until [`RING_QUIESCE`] after it stopped being live, so a packet
//!   still reading it (a program run lasts well under a microsecond) never
//!   sees a half-written table.
//! - a backend becomes usable before any table names it, and stops being
//!   usable only after the table without it is live.
//! - a VIP address enters the pre-filter after its map entries exist, and
//!   leaves it before they are removed.
//!
//! - a slot that a new table gives another backend is marked changed, with
//!   the backend it had (see [`ha_common::Ring`]): packets of flows that
//!   began before the change keep going there. [`Writer::settle`] clears
//!   the mark once the flows it protects have aged out. A backend id that a
//!   changed slot still names as its previous backend is scrubbed from it
//!   before the id is given to another backend.
//!
//! Unchanged tables are not rewritten: two writers (or a restarted agent)
//! with the same input produce identical tables, so nothing moves.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ha_common::{
    ring_index, BackendInfo, Ring, VipFilter, VipInfo, VipKey, BACKEND_F_ADDR6, BACKEND_F_UP,
    ENCAP_GUE, ENCAP_IPIP, MAX_BACKENDS, MAX_VIPS, NO_BACKEND, RING_MAX, VIP_FILTER_BITS,
    VIP_F_ADDRESS, VIP_F_SOURCE_HASH,
};

use super::maglev::{self, Member};
use super::maps::Store;
use super::service::{addr_octets, backend_addr, filter_bit, Service};
use super::Error;

/// [`BackendInfo::flags`] bit: the slot is assigned (set on every live slot).
pub const BACKEND_F_IN_USE: u16 = 2;

/// Time an idle ring is left alone after it stopped being live.
pub const RING_QUIESCE: Duration = Duration::from_millis(2);

/// One VIP service as the agent wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    /// Address (either family), port, protocol.
    pub service: Service,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Source-IP affinity: flows are placed by their source address, not
    /// their source port ([`ha_common::VIP_F_SOURCE_HASH`]).
    pub source_hash: bool,
    /// How packets reach the backends.
    pub encap: Encap,
    /// Backends, in any order.
    pub backends: Vec<BackendSpec>,
}

/// How a VIP's packets reach its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// Layer-2 DSR: only the MAC addresses change (backends on the link).
    #[default]
    Dsr,
    /// IP in IP to the backend's address.
    Ipip,
    /// GUE (IP in UDP) to the backend's address and this UDP port.
    Gue {
        /// Destination port.
        port: u16,
    },
}

/// The path to an encapsulated backend, from the kernel's route to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// The outer source: this node's address on the route.
    pub source: IpAddr,
    /// The largest outer packet the route takes.
    pub mtu: u16,
}

/// One backend as the agent wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Backend address (of the service's family).
    pub addr: IpAddr,
    /// The MAC address to send to, when known: the backend's, or under
    /// encapsulation its next hop's (then known only with `tunnel`).
    pub mac: Option<[u8; 6]>,
    /// Under encapsulation: the route to the backend.
    pub tunnel: Option<Tunnel>,
    /// Maglev weight; 0 drains (keeps existing flows, gets no new ones).
    pub weight: u32,
    /// Health: false takes the backend out and moves its flows.
    pub healthy: bool,
}

impl BackendSpec {
    /// May carry traffic (existing flows at least).
    pub fn usable(&self) -> bool {
        self.healthy && self.mac.is_some()
    }

    /// Gets new flows.
    pub fn in_table(&self) -> bool {
        self.usable() && self.weight > 0
    }
}

/// What one [`Writer::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// VIPs whose table was swapped (new table live).
    pub tables_swapped: usize,
    /// Backend slots written.
    pub backends_written: usize,
    /// VIPs added.
    pub vips_added: usize,
    /// VIPs removed.
    pub vips_removed: usize,
}

impl Report {
    /// Nothing was written.
    pub fn is_empty(&self) -> bool {
        *self == Report::default()
    }

    /// The sum of two reports.
    pub fn add(&self, o: &Report) -> Report {
        Report {
            tables_swapped: self.tables_swapped + o.tables_swapped,
            backends_written: self.backends_written + o.backends_written,
            vips_added: self.vips_added + o.vips_added,
            vips_removed: self.vips_removed + o.vips_removed,
        }
    }
}

/// A changed slot: the backend it had before, and since when it is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// The slot's backend before the change ([`NO_BACKEND`]: none to keep).
    pub previous: u16,
    /// When the slot was marked.
    pub since: Instant,
}

struct VipState {
    info: VipInfo,
    /// Live table contents (`info.ring_size` entries).
    table: Vec<u16>,
    /// The live ring's changed slots.
    changed: BTreeMap<u32, Changed>,
    /// When the idle ring stopped being live.
    idle_since: Option<Instant>,
}

/// What the flow census needs of one VIP: its id, table and changed slots.
#[derive(Debug, Clone)]
pub struct RingView {
    /// VIP id.
    pub vip_id: u32,
    /// Ring entries in use.
    pub table: Vec<u16>,
    /// Changed slots.
    pub changed: HashSet<u32>,
    /// Flows are placed by source address ([`VipSpec::source_hash`]).
    pub source_hash: bool,
}

fn previous_ids(vips: &BTreeMap<Service, VipState>) -> HashSet<u32> {
    vips.values()
        .flat_map(|v| v.changed.values())
        .filter(|c| c.previous != NO_BACKEND)
        .map(|c| c.previous as u32)
        .collect()
}

fn ring_of(table: &[u16], changed: &BTreeMap<u32, Changed>) -> Box<Ring> {
    let mut ring = super::maps::empty_ring();
    ring.entries[..table.len()].copy_from_slice(table);
    for (&slot, c) in changed {
        let i = slot as usize;
        if i < RING_MAX {
            ring.changed[i / 64] |= 1 << (i % 64);
            ring.previous[i] = c.previous;
        }
    }
    ring
}

/// The map writer (see the module documentation).
pub struct Writer<S: Store> {
    store: S,
    vips: BTreeMap<Service, VipState>,
    backend_ids: HashMap<(Service, IpAddr), u32>,
    written: HashMap<u32, BackendInfo>,
    free_backends: VecDeque<u32>,
    free_vips: VecDeque<u32>,
    filter: Box<VipFilter>,
    markers: HashSet<IpAddr>,
}

/// What the writer knows of the maps, re-read from them on adoption and
/// after a failed write.
struct Learned {
    vips: BTreeMap<Service, VipState>,
    backend_ids: HashMap<(Service, IpAddr), u32>,
    written: HashMap<u32, BackendInfo>,
    free_backends: VecDeque<u32>,
    free_vips: VecDeque<u32>,
    filter: Box<VipFilter>,
    markers: HashSet<IpAddr>,
}

/// Reads the maps; backend slots that no live VIP owns are cleared.
fn learn<S: Store>(store: &mut S) -> Result<Learned, Error> {
    let now = Instant::now();
    let mut vips = BTreeMap::new();
    let mut markers = HashSet::new();
    let mut by_id = HashMap::new();
    for (key, info) in store.vips()? {
        if info.flags & VIP_F_ADDRESS != 0 {
            markers.insert(key.addr);
            continue;
        }
        let size = (info.ring_size as usize).min(RING_MAX);
        let ring = store.ring(ring_index(info.id, info.ring_slot))?;
        by_id.insert(info.id, key);
        // Marks found in the maps start their hold again: when they were
        // set is not recorded there.
        let changed = (0..size)
            .filter(|&i| ring.is_changed(i))
            .map(|i| {
                (
                    i as u32,
                    Changed {
                        previous: ring.previous[i],
                        since: now,
                    },
                )
            })
            .collect();
        vips.insert(
            key,
            VipState {
                info,
                table: ring.entries[..size].to_vec(),
                changed,
                idle_since: Some(now),
            },
        );
    }
    let mut backend_ids = HashMap::new();
    let mut written = HashMap::new();
    for (id, b) in store.backends()? {
        match by_id.get(&b.vip_id) {
            Some(key) if b.flags & BACKEND_F_IN_USE != 0 && b.vip == key.key() => {
                backend_ids.insert((*key, backend_addr(&b)), id);
                written.insert(id, b);
            }
            _ => store.set_backend(id, &BackendInfo::default())?,
        }
    }
    let used_vips: HashSet<u32> = vips.values().map(|v| v.info.id).collect();
    let used_backends: HashSet<u32> = written.keys().copied().collect();
    let filter = Box::new(store.filter()?);
    Ok(Learned {
        vips,
        backend_ids,
        written,
        free_backends: (0..MAX_BACKENDS)
            .filter(|i| !used_backends.contains(i))
            .collect(),
        free_vips: (0..MAX_VIPS).filter(|i| !used_vips.contains(i)).collect(),
        filter,
        markers,
    })
}

impl<S: Store> Writer<S> {
    /// Takes over `store`, learning what it already holds (a pinned data
    /// plane from an earlier run keeps its ids and tables).
    pub fn adopt(mut store: S) -> Result<Self, Error> {
        let l = learn(&mut store)?;
        Ok(Self {
            store,
            vips: l.vips,
            backend_ids: l.backend_ids,
            written: l.written,
            free_backends: l.free_backends,
            free_vips: l.free_vips,
            filter: l.filter,
            markers: l.markers,
        })
    }

    /// Forgets what it believed and re-reads the maps (after a failed write
    /// left the two apart).
    fn resync(&mut self) -> Result<(), Error> {
        let l = learn(&mut self.store)?;
        self.vips = l.vips;
        self.backend_ids = l.backend_ids;
        self.written = l.written;
        self.free_backends = l.free_backends;
        self.free_vips = l.free_vips;
        self.filter = l.filter;
        self.markers = l.markers;
        Ok(())
    }

    /// The store (for reading counters).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Backend id of `addr` in service `key`.
    pub fn backend_id(&self, key: &Service, addr: impl Into<IpAddr>) -> Option<u32> {
        self.backend_ids.get(&(*key, addr.into())).copied()
    }

    /// The live VIP entry of `key`.
    pub fn vip_info(&self, key: &Service) -> Option<VipInfo> {
        self.vips.get(key).map(|v| v.info)
    }

    /// Per VIP service (by its identity, as backends name it), what the
    /// flow census needs to tell which changed slots still hold flows
    /// pinned elsewhere than the table says.
    pub fn ring_views(&self) -> HashMap<VipKey, RingView> {
        self.vips
            .iter()
            .map(|(k, v)| {
                (
                    k.key(),
                    RingView {
                        vip_id: v.info.id,
                        table: v.table.clone(),
                        changed: v.changed.keys().copied().collect(),
                        source_hash: v.info.flags & VIP_F_SOURCE_HASH != 0,
                    },
                )
            })
            .collect()
    }

    /// The service of every assigned backend id.
    pub fn services(&self) -> HashMap<u16, VipKey> {
        self.written
            .iter()
            .map(|(id, b)| (*id as u16, b.vip))
            .collect()
    }

    /// Changed slots over all VIPs.
    pub fn changed_slots(&self) -> usize {
        self.vips.values().map(|v| v.changed.len()).sum()
    }

    /// Backend ids that some changed slot names as its previous backend:
    /// flows that began before the change may still be on them.
    pub fn previous_backends(&self) -> HashSet<u32> {
        previous_ids(&self.vips)
    }

    /// Ends the second chance of every slot marked at least `hold` ago (the
    /// flow idle timeout and a margin: flows that began before the change
    /// and are still live have been seen, and recorded, by now): its mark
    /// is cleared, or, while `pinned` holds it ((VIP id, slot) pairs with a
    /// live flow-table entry that names another backend than the slot's),
    /// kept with no previous backend, so that recorded flows keep theirs
    /// and unknown ones (new UDP flows) take the current backend instead of
    /// holding the slot forever. Returns the slots cleared or changed.
    pub fn settle(
        &mut self,
        now: Instant,
        hold: Duration,
        pinned: &HashSet<(u32, u32)>,
    ) -> Result<usize, Error> {
        let due = |c: &Changed| now.saturating_duration_since(c.since) >= hold;
        // Only VIPs with a slot past its hold: a census must not copy every
        // VIP's marks to find nothing to do.
        let keys: Vec<(Service, u32)> = self
            .vips
            .iter()
            .filter(|(_, v)| v.changed.values().any(due))
            .map(|(k, v)| (*k, v.info.id))
            .collect();
        let mut cleared = 0;
        for (key, id) in keys {
            cleared += self.edit_marks(key, |changed| {
                let mut n = 0;
                changed.retain(|slot, c| {
                    if !due(c) {
                        return true;
                    }
                    if pinned.contains(&(id, *slot)) {
                        if c.previous != NO_BACKEND {
                            c.previous = NO_BACKEND;
                            n += 1;
                        }
                        return true;
                    }
                    n += 1;
                    false
                });
                n
            })?;
        }
        Ok(cleared)
    }

    /// Applies `edit` to a copy of `key`'s marks; when it reports changes
    /// (a count above 0), writes the VIP's ring with the edited marks.
    fn edit_marks(
        &mut self,
        key: Service,
        edit: impl FnOnce(&mut BTreeMap<u32, Changed>) -> usize,
    ) -> Result<usize, Error> {
        let Some(v) = self.vips.get(&key) else {
            return Ok(0);
        };
        let mut changed = v.changed.clone();
        let n = edit(&mut changed);
        if n > 0 {
            let (id, size, flags) = (v.info.id, v.info.ring_size, v.info.flags);
            let table = v.table.clone();
            self.write_ring(key, id, size, flags, table, changed)?;
        }
        Ok(n)
    }

    /// Scrubs backend ids `ids` from every changed slot that names one of
    /// them as its previous backend, before the ids go to other backends:
    /// one ring write per VIP concerned, however many ids.
    fn scrub_previous(&mut self, ids: &HashSet<u32>, report: &mut Report) -> Result<(), Error> {
        if ids.is_empty() || ids.is_disjoint(&previous_ids(&self.vips)) {
            return Ok(());
        }
        let hit = |c: &Changed| c.previous != NO_BACKEND && ids.contains(&(c.previous as u32));
        let keys: Vec<Service> = self
            .vips
            .iter()
            .filter(|(_, v)| v.changed.values().any(hit))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let n = self.edit_marks(key, |changed| {
                let mut n = 0;
                for c in changed.values_mut().filter(|c| hit(c)) {
                    c.previous = NO_BACKEND;
                    n += 1;
                }
                n
            })?;
            if n > 0 {
                report.tables_swapped += 1;
            }
        }
        Ok(())
    }

    /// Writes a ring into the VIP's idle slot and makes it live.
    fn write_ring(
        &mut self,
        key: Service,
        vip_id: u32,
        ring_size: u32,
        flags: u32,
        table: Vec<u16>,
        changed: BTreeMap<u32, Changed>,
    ) -> Result<(), Error> {
        let slot = match self.vips.get(&key) {
            Some(v) => {
                if let Some(since) = v.idle_since {
                    let waited = since.elapsed();
                    if waited < RING_QUIESCE {
                        std::thread::sleep(RING_QUIESCE - waited);
                    }
                }
                1 - (v.info.ring_slot & 1)
            }
            None => 0,
        };
        let ring = ring_of(&table, &changed);
        self.store.set_ring(ring_index(vip_id, slot), &ring)?;
        let info = VipInfo {
            id: vip_id,
            ring_slot: slot,
            ring_size,
            flags,
        };
        self.store.set_vip(&key, &info)?;
        self.vips.insert(
            key,
            VipState {
                info,
                table,
                changed,
                idle_since: Some(Instant::now()),
            },
        );
        Ok(())
    }

    /// Free VIP and backend slots.
    pub fn free_slots(&self) -> (usize, usize) {
        (self.free_vips.len(), self.free_backends.len())
    }

    /// Makes the maps hold exactly `specs`, or returns the error. What does
    /// not fit fails before the first write, so nothing changes. A write that
    /// fails half-way (the kernel refused it) leaves a consistent mix, every
    /// step being one the ordering rules allow; the writer then re-reads the
    /// maps, so that the caller can put the previous specs back.
    ///
    /// When the new state fits only once the removed VIPs and backends have
    /// given their ids back, it is reached in two steps: first everything
    /// that stays (removals done, nothing added), then the rest. Between the
    /// two (a few milliseconds) a VIP whose backends were all replaced has
    /// an empty table.
    pub fn apply(&mut self, specs: &[VipSpec]) -> Result<Report, Error> {
        let wanted: BTreeMap<Service, &VipSpec> = specs.iter().map(|s| (s.service, s)).collect();
        let room = self.check_capacity(&wanted)?;
        let result = if room {
            self.apply_all(&wanted)
        } else {
            let staying: Vec<VipSpec> = wanted
                .values()
                .filter(|s| self.vips.contains_key(&s.service))
                .map(|s| VipSpec {
                    service: s.service,
                    table_size: s.table_size,
                    source_hash: s.source_hash,
                    encap: s.encap,
                    backends: s
                        .backends
                        .iter()
                        .filter(|b| self.backend_ids.contains_key(&(s.service, b.addr)))
                        .cloned()
                        .collect(),
                })
                .collect();
            let staying: BTreeMap<Service, &VipSpec> =
                staying.iter().map(|s| (s.service, s)).collect();
            self.apply_all(&staying).and_then(|first| {
                let second = self.apply_all(&wanted)?;
                Ok(first.add(&second))
            })
        };
        if result.is_err() {
            if let Err(e) = self.resync() {
                tracing::error!("re-reading the maps after a failed update: {e}");
            }
        }
        result
    }

    /// Fails when `wanted` cannot fit even after removals; returns whether
    /// it fits without freeing ids first.
    fn check_capacity(&self, wanted: &BTreeMap<Service, &VipSpec>) -> Result<bool, Error> {
        if wanted.len() > MAX_VIPS as usize {
            return Err(Error::Capacity(format!(
                "{} vips, at most {MAX_VIPS}",
                wanted.len()
            )));
        }
        // The program knows a service by its identity: two IPv6 services
        // whose addresses share a digest cannot both be served.
        let mut identities: HashMap<VipKey, &Service> = HashMap::new();
        for s in wanted.keys() {
            if let Some(other) = identities.insert(s.key(), s) {
                return Err(Error::Capacity(format!(
                    "the IPv6 VIP addresses of {other} and {s} share a digest; change one"
                )));
            }
        }
        for b in wanted
            .values()
            .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
        {
            // DSR sends the packet unchanged: a backend of the VIP's family.
            // Encapsulated, an IPv4 VIP may have IPv6 backends (IPv4 in
            // IPv6), but never the other way round.
            let (vip4, backend4) = (b.0.service.addr.is_ipv4(), b.1.addr.is_ipv4());
            let fits = match b.0.encap {
                Encap::Dsr => vip4 == backend4,
                _ => vip4 || !backend4,
            };
            if !fits {
                return Err(Error::Capacity(format!(
                    "backend {} of {} is of another address family",
                    b.1.addr, b.0.service
                )));
            }
        }
        let new_vips = wanted.keys().filter(|k| !self.vips.contains_key(k)).count();
        let freed_vips = self.vips.keys().filter(|k| !wanted.contains_key(k)).count();
        let pairs: HashSet<(Service, IpAddr)> = wanted
            .values()
            .flat_map(|s| s.backends.iter().map(|b| (s.service, b.addr)))
            .collect();
        let new_backends = pairs
            .iter()
            .filter(|p| !self.backend_ids.contains_key(p))
            .count();
        let freed_backends = self
            .backend_ids
            .keys()
            .filter(|p| !pairs.contains(p))
            .count();
        if new_vips > self.free_vips.len() + freed_vips {
            return Err(Error::Capacity(format!(
                "{new_vips} new vips need slots, {} are free even after removals",
                self.free_vips.len() + freed_vips
            )));
        }
        if new_backends > self.free_backends.len() + freed_backends {
            return Err(Error::Capacity(format!(
                "{new_backends} new backends need slots, {} of {MAX_BACKENDS} are free even \
                 after removals (backends still finishing their flows keep theirs)",
                self.free_backends.len() + freed_backends
            )));
        }
        Ok(new_vips <= self.free_vips.len() && new_backends <= self.free_backends.len())
    }

    /// Writes `wanted`: removed VIPs first (their ids return), then every
    /// wanted VIP, then the address markers and the pre-filter.
    fn apply_all(&mut self, wanted: &BTreeMap<Service, &VipSpec>) -> Result<Report, Error> {
        let mut report = Report::default();
        let addrs: HashSet<IpAddr> = wanted.keys().map(|k| k.addr).collect();

        // Removed VIPs: out of the pre-filter first (when no other VIP keeps
        // their address), then their entries go and their ids return.
        let gone: Vec<Service> = self
            .vips
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        if !gone.is_empty() {
            let keep: HashSet<IpAddr> = self.markers.intersection(&addrs).copied().collect();
            self.write_filter(&keep)?;
        }
        for key in gone {
            self.store.remove_vip(&key)?;
            if let Some(state) = self.vips.remove(&key) {
                self.free_vips.push_back(state.info.id);
            }
            let ids: Vec<(IpAddr, u32)> = self
                .backend_ids
                .iter()
                .filter(|((k, _), _)| *k == key)
                .map(|((_, a), id)| (*a, *id))
                .collect();
            for (addr, id) in ids {
                self.release_backend(key, addr, id, &mut report)?;
            }
            report.vips_removed += 1;
        }

        for spec in wanted.values() {
            self.apply_vip(spec, &mut report)?;
        }

        // Address markers for every wanted address, then the pre-filter.
        for &addr in &addrs {
            if !self.markers.contains(&addr) {
                self.store.set_vip(&Service::marker(addr), &marker_info())?;
                self.markers.insert(addr);
            }
        }
        self.write_filter(&addrs)?;
        let stale: Vec<IpAddr> = self
            .markers
            .iter()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        for addr in stale {
            self.store.remove_vip(&Service::marker(addr))?;
            self.markers.remove(&addr);
        }
        Ok(report)
    }

    fn write_filter(&mut self, addrs: &HashSet<IpAddr>) -> Result<(), Error> {
        let mut filter = Box::<VipFilter>::default();
        for &addr in addrs {
            filter.slots[(filter_bit(addr) & (VIP_FILTER_BITS - 1)) as usize] = 1;
        }
        if filter != self.filter {
            self.store.set_filter(&filter)?;
            self.filter = filter;
        }
        Ok(())
    }

    fn apply_vip(&mut self, spec: &VipSpec, report: &mut Report) -> Result<(), Error> {
        let key = spec.service;
        let is_new = !self.vips.contains_key(&key);
        let vip_id = match self.vips.get(&key) {
            Some(v) => v.info.id,
            None => self
                .free_vips
                .pop_front()
                .ok_or_else(|| Error::Capacity("vip ids".into()))?,
        };

        // Backend slots: usable-or-new ones now, the others after the swap.
        // New ids are scrubbed from every mark first, all in one pass.
        let mut late = Vec::new();
        let mut ids = Vec::with_capacity(spec.backends.len());
        let mut fresh = HashSet::new();
        for b in &spec.backends {
            let id = match self.backend_ids.get(&(key, b.addr)) {
                Some(id) => *id,
                None => {
                    let id = self
                        .free_backends
                        .pop_front()
                        .ok_or_else(|| Error::Capacity("backend ids".into()))?;
                    self.backend_ids.insert((key, b.addr), id);
                    fresh.insert(id);
                    id
                }
            };
            ids.push(id);
        }
        self.scrub_previous(&fresh, report)?;
        for (b, &id) in spec.backends.iter().zip(&ids) {
            let info = backend_info(spec.encap, b, vip_id, key);
            let old = self.written.get(&id);
            if old == Some(&info) {
                continue;
            }
            let was_up = old.is_some_and(|o| o.flags & BACKEND_F_UP != 0);
            if was_up && !b.usable() {
                late.push((id, info));
            } else {
                self.write_backend(id, info, report)?;
            }
        }

        // The table.
        let members: Vec<Member> = spec
            .backends
            .iter()
            .map(|b| Member {
                key: maglev::member_key(b.addr, 0),
                weight: if b.in_table() { b.weight } else { 0 },
            })
            .collect();
        let table: Vec<u16> = maglev::build(&members, spec.table_size)
            .into_iter()
            .map(|m| {
                if m == maglev::EMPTY {
                    NO_BACKEND
                } else {
                    ids[m as usize] as u16
                }
            })
            .collect();
        // Changed slots: those marked stay marked (with the backend they
        // had first); a slot that had a backend and gets another is marked.
        // A new table size or hash gives every slot a new meaning: all are
        // marked, with no previous backend (recorded flows keep theirs).
        let now = Instant::now();
        let flags = if spec.source_hash {
            VIP_F_SOURCE_HASH
        } else {
            0
        };
        let current = self.vips.get(&key);
        let same_meaning =
            |v: &VipState| v.info.ring_size == spec.table_size && v.info.flags == flags;
        let unchanged = current.is_some_and(|v| same_meaning(v) && v.table == table);
        let changed = match current {
            _ if unchanged => BTreeMap::new(),
            None => BTreeMap::new(),
            Some(v) if !same_meaning(v) => (0..spec.table_size)
                .map(|i| {
                    (
                        i,
                        Changed {
                            previous: NO_BACKEND,
                            since: now,
                        },
                    )
                })
                .collect(),
            Some(v) => {
                let mut changed = v.changed.clone();
                for (i, (&old, &new)) in v.table.iter().zip(&table).enumerate() {
                    let i = i as u32;
                    if old == new {
                        continue;
                    }
                    match changed.get_mut(&i) {
                        // Marked already: the first previous backend stays
                        // (flows from before the first change are there; one
                        // whose second chance ended gets the slot's backend
                        // until now), and the hold starts again.
                        Some(c) => {
                            c.since = now;
                            if c.previous == NO_BACKEND {
                                c.previous = old;
                            }
                        }
                        None if old != NO_BACKEND => {
                            changed.insert(
                                i,
                                Changed {
                                    previous: old,
                                    since: now,
                                },
                            );
                        }
                        None => {}
                    }
                }
                changed
            }
        };
        if !unchanged {
            self.write_ring(key, vip_id, spec.table_size, flags, table, changed)?;
            report.tables_swapped += 1;
        }
        if is_new {
            report.vips_added += 1;
        }

        for (id, info) in late {
            self.write_backend(id, info, report)?;
        }
        // Backends of this VIP that are no longer wanted.
        let wanted: HashSet<IpAddr> = spec.backends.iter().map(|b| b.addr).collect();
        let gone: Vec<(IpAddr, u32)> = self
            .backend_ids
            .iter()
            .filter(|((k, a), _)| *k == key && !wanted.contains(a))
            .map(|((_, a), id)| (*a, *id))
            .collect();
        for (addr, id) in gone {
            self.release_backend(key, addr, id, report)?;
        }
        Ok(())
    }

    fn write_backend(
        &mut self,
        id: u32,
        info: BackendInfo,
        report: &mut Report,
    ) -> Result<(), Error> {
        self.store.set_backend(id, &info)?;
        self.written.insert(id, info);
        report.backends_written += 1;
        Ok(())
    }

    fn release_backend(
        &mut self,
        key: Service,
        addr: IpAddr,
        id: u32,
        report: &mut Report,
    ) -> Result<(), Error> {
        self.store.set_backend(id, &BackendInfo::default())?;
        self.written.remove(&id);
        self.backend_ids.remove(&(key, addr));
        self.free_backends.push_back(id);
        report.backends_written += 1;
        Ok(())
    }
}

/// The backend map value of `b`, a backend of `key` (VIP id `vip_id`)
/// reached by `encap`.
fn backend_info(encap: Encap, b: &BackendSpec, vip_id: u32, key: Service) -> BackendInfo {
    let mut flags = BACKEND_F_IN_USE | if b.usable() { BACKEND_F_UP } else { 0 };
    if b.addr.is_ipv6() {
        flags |= BACKEND_F_ADDR6;
    }
    let mut info = BackendInfo {
        addr: addr_octets(b.addr),
        mac: b.mac.unwrap_or_default(),
        flags,
        vip_id,
        vip: key.key(),
        ..Default::default()
    };
    let (kind, port) = match encap {
        Encap::Dsr => return info,
        Encap::Ipip => (ENCAP_IPIP, 0),
        Encap::Gue { port } => (ENCAP_GUE, port),
    };
    info.encap = kind;
    info.gue_port = port.to_be();
    match b.tunnel {
        Some(t) => {
            info.src = addr_octets(t.source);
            info.mtu = t.mtu;
            if let (IpAddr::V4(s), IpAddr::V4(d)) = (t.source, b.addr) {
                let proto = if kind == ENCAP_GUE {
                    ha_common::IPPROTO_UDP
                } else {
                    4
                };
                info.csum_base = ha_common::outer4_csum_base(s.octets(), d.octets(), proto);
            }
        }
        // No route known: never sent to (and never from a made-up source).
        None => info.flags &= !BACKEND_F_UP,
    }
    info
}

fn marker_info() -> VipInfo {
    VipInfo {
        id: 0,
        ring_slot: 0,
        ring_size: 0,
        flags: VIP_F_ADDRESS,
    }
}

#[cfg(test)]
mod tests;
