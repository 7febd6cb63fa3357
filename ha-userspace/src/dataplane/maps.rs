//! Typed handles on the data plane's maps, and the [`Store`] trait through
//! which the writer changes them (implemented here for the kernel maps and in
//! tests for an in-memory model).

use std::collections::HashMap as StdHashMap;
use std::path::Path;

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use ha_common::{
    flow_check, flow_hash, maps, BackendCounter, BackendInfo, Counter, FlowEntry, FlowKey, FlowSet,
    FlowStat, Meta, Ring, ServiceSlot, Stat, VipFilter, VipInfo, VipKey, VipKey6, STAT_COUNT,
};

use super::service::Service;
use super::Error;

/// What the map writer needs from the maps (see [`super::writer`]).
pub trait Store {
    /// Every entry of the VIP maps (both families).
    fn vips(&self) -> Result<Vec<(Service, VipInfo)>, Error>;
    /// Inserts or replaces a VIP entry (an atomic swap in the kernel).
    fn set_vip(&mut self, key: &Service, info: &VipInfo) -> Result<(), Error>;
    /// Removes a VIP entry; absent is fine.
    fn remove_vip(&mut self, key: &Service) -> Result<(), Error>;
    /// Every backend slot whose flags are non-zero.
    fn backends(&self) -> Result<Vec<(u32, BackendInfo)>, Error>;
    /// Writes a backend slot.
    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), Error>;
    /// Reads a ring.
    fn ring(&self, index: u32) -> Result<Box<Ring>, Error>;
    /// Writes a ring (never the live one: the writer guarantees it).
    fn set_ring(&mut self, index: u32, ring: &Ring) -> Result<(), Error>;
    /// The VIP address pre-filter.
    fn filter(&self) -> Result<VipFilter, Error>;
    /// Writes the pre-filter (each slot changes on its own: a reader sees
    /// every slot old or new).
    fn set_filter(&mut self, filter: &VipFilter) -> Result<(), Error>;
}

/// Handles on every map of a loaded or pinned data plane.
pub struct Maps {
    vips: HashMap<MapData, VipKey, VipInfo>,
    vips6: HashMap<MapData, VipKey6, VipInfo>,
    filter: Array<MapData, VipFilter>,
    rings: Array<MapData, Ring>,
    backends: Array<MapData, BackendInfo>,
    flows: Array<MapData, FlowSet>,
    stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, BackendCounter>,
    meta: Array<MapData, Meta>,
    flow_stats: PerCpuArray<MapData, u64>,
    services: ServiceCache,
    services6: ServiceCache,
    /// The flow hash seed in META (cached: the program and this side must agree).
    seed: u32,
}

/// The flow table mapped read-only into this process (the map is
/// `BPF_F_MMAPABLE`): walking it reads memory instead of making one system
/// call per set. The program writes entries while they are read; a torn
/// entry fails its check and reads as empty.
pub struct FlowView {
    ptr: *const FlowSet,
    sets: usize,
    len: usize,
}

// SAFETY: the mapping is read-only shared memory owned by this value; it
// may be read from any thread.
unsafe impl Send for FlowView {}
// SAFETY: as above; reads are volatile copies.
unsafe impl Sync for FlowView {}

impl FlowView {
    /// Maps the flow table of `data`.
    pub fn map(data: &MapData) -> Result<Self, Error> {
        let info = data.info().map_err(map_err("info of FLOWS"))?;
        let value = info.value_size() as usize;
        if value != std::mem::size_of::<FlowSet>() || !value.is_multiple_of(8) {
            return Err(Error::Capacity(format!(
                "flow table value size {value} is not this halb's {}",
                std::mem::size_of::<FlowSet>()
            )));
        }
        let sets = info.max_entries() as usize;
        let (ptr, len) = map_values(data, value * sets, libc::PROT_READ, "flow table")?;
        Ok(Self {
            ptr: ptr.cast(),
            sets,
            len,
        })
    }

    /// Sets in the table.
    pub fn sets(&self) -> usize {
        self.sets
    }

    /// A copy of set `i` (below [`FlowView::sets`]).
    pub fn set(&self, i: usize) -> Option<FlowSet> {
        if i >= self.sets {
            return None;
        }
        // SAFETY: `i` is in range; the mapping holds `sets` values of this
        // layout (checked in `map`); a volatile read of plain integers.
        Some(unsafe { std::ptr::read_volatile(self.ptr.add(i)) })
    }

    /// Calls `f` for every entry whose check holds under `seed`, with the
    /// service of its backend (`service_of`; entries naming a backend
    /// without one are skipped) and the flow's hash (computed once here:
    /// the check needs it, and so do callers that place the flow).
    pub fn for_each_valid(
        &self,
        seed: u32,
        service_of: impl Fn(u16) -> Option<VipKey>,
        mut f: impl FnMut(&FlowEntry, &VipKey, u32),
    ) {
        for i in 0..self.sets {
            if let Some(set) = self.set(i) {
                for e in set.entries.iter().filter(|e| e.check != 0) {
                    if let Some(service) = service_of(e.backend) {
                        let k = e.key(&service);
                        let hash = flow_hash(seed, k.saddr, k.daddr, k.ports, k.proto);
                        if e.check == flow_check(hash, e.backend) {
                            f(e, &service, hash);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for FlowView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// A service cache (`HALB_SERVICES`, see [`ServiceSlot`], or
/// `HALB_SERVICES6`, see [`ha_common::ServiceSlot6`]) mapped read-write
/// into this process, and which service owns which slot. A slot is
/// `words` 8-byte words: the key, then the state. It follows every service
/// write to the VIP maps: after the map on a set, before it on a removal.
struct ServiceCache {
    /// The map (its fd stays open: a program not loaded yet refers to it).
    _data: MapData,
    ptr: *mut u64,
    len: usize,
    /// Words per slot (2 for IPv4, 4 for IPv6); the last is the state.
    words: usize,
    owners: StdHashMap<u32, CacheKey>,
}

/// A slot's key words (IPv4 uses the first, IPv6 all three).
type CacheKey = [u64; 3];

/// A service as its cache sees it: the raw identity that indexes and tags
/// the slot, the key words and the VIP entry.
type Cached = (u64, CacheKey, VipInfo);

// SAFETY: the mapping is owned by this value; writes are atomic stores.
unsafe impl Send for ServiceCache {}
// SAFETY: as above.
unsafe impl Sync for ServiceCache {}

/// The cache key words of an IPv4 service key.
fn cache_key4(k: &VipKey) -> CacheKey {
    [k.raw(), 0, 0]
}

/// The cache key words of an IPv6 service key, as [`ha_common::ServiceSlot6`]
/// lays them out.
fn cache_key6(k: &VipKey6) -> CacheKey {
    let w = |a: u32, b: u32| u64::from(a) | u64::from(b) << 32;
    let tail = u32::from_ne_bytes({
        let p = k.port.to_ne_bytes();
        [p[0], p[1], k.proto, k.pad]
    });
    [
        w(k.addr[0], k.addr[1]),
        w(k.addr[2], k.addr[3]),
        u64::from(tail),
    ]
}

impl ServiceCache {
    fn map(data: MapData, slot_size: usize, what: &str) -> Result<Self, Error> {
        let info = data.info().map_err(map_err("info of a service cache"))?;
        if info.value_size() as usize != slot_size || info.max_entries() != ha_common::SERVICE_SLOTS
        {
            return Err(Error::Capacity(format!("{what} layout is not this halb's")));
        }
        let (ptr, len) = map_values(
            &data,
            slot_size * ha_common::SERVICE_SLOTS as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            what,
        )?;
        Ok(Self {
            _data: data,
            ptr: ptr.cast(),
            len,
            words: slot_size / 8,
            owners: StdHashMap::new(),
        })
    }

    /// The words of slot `i` (below `SERVICE_SLOTS`).
    fn slot(&self, i: u32) -> &[std::sync::atomic::AtomicU64] {
        let i = (i % ha_common::SERVICE_SLOTS) as usize;
        // SAFETY: `i` is in range of the mapping; slots are 8-byte aligned
        // words (a page-aligned array of 16- or 32-byte values).
        unsafe {
            let p = self.ptr.add(i * self.words);
            std::slice::from_raw_parts(p.cast::<std::sync::atomic::AtomicU64>(), self.words)
        }
    }

    fn key_of(&self, i: u32) -> CacheKey {
        use std::sync::atomic::Ordering::SeqCst;
        let w = self.slot(i);
        let mut k = [0u64; 3];
        for (j, word) in w[..self.words - 1].iter().enumerate() {
            k[j] = word.load(SeqCst);
        }
        k
    }

    /// Learns the owners from the slots; with `fix`, clears slots that do
    /// not match `vips` (a data plane adopted from an earlier run).
    fn learn(&mut self, vips: &[Cached], fix: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        let by_key: StdHashMap<CacheKey, (u64, &VipInfo)> = vips
            .iter()
            .filter(|(_, _, i)| i.flags & ha_common::VIP_F_ADDRESS == 0)
            .map(|(raw, k, i)| (*k, (*raw, i)))
            .collect();
        self.owners.clear();
        for i in 0..ha_common::SERVICE_SLOTS {
            let k = self.key_of(i);
            let w = self.slot(i);
            let st = w[self.words - 1].load(SeqCst);
            let good = by_key.get(&k).is_some_and(|(raw, info)| {
                ha_common::service_index(*raw) == i && ha_common::service_state(*raw, info) == st
            });
            if good {
                self.owners.insert(i, k);
            } else if fix && (k != [0; 3] || st != 0) {
                for word in w.iter().rev() {
                    word.store(0, SeqCst);
                }
            }
        }
    }

    fn set(&mut self, raw: u64, key: CacheKey, info: &VipInfo) {
        use std::sync::atomic::Ordering::SeqCst;
        if info.flags & ha_common::VIP_F_ADDRESS != 0 {
            return;
        }
        let i = ha_common::service_index(raw);
        let state = ha_common::service_state(raw, info);
        let n = self.words;
        match self.owners.get(&i) {
            Some(owner) if *owner == key => self.slot(i)[n - 1].store(state, SeqCst),
            Some(_) => {} // two services share the slot: the other uses the map.
            None => {
                let w = self.slot(i);
                w[n - 1].store(0, SeqCst);
                for (j, word) in w[..n - 1].iter().enumerate() {
                    word.store(key[j], SeqCst);
                }
                w[n - 1].store(state, SeqCst);
                self.owners.insert(i, key);
            }
        }
    }

    fn clear(&mut self, raw: u64, key: CacheKey) {
        use std::sync::atomic::Ordering::SeqCst;
        let i = ha_common::service_index(raw);
        if self.owners.get(&i) == Some(&key) {
            for word in self.slot(i).iter().rev() {
                word.store(0, SeqCst);
            }
            self.owners.remove(&i);
        }
    }

    /// What slot `raw`'s state says, when the slot holds `key`.
    fn info(&self, raw: u64, key: CacheKey) -> Option<VipInfo> {
        use std::sync::atomic::Ordering::SeqCst;
        let i = ha_common::service_index(raw);
        (self.key_of(i) == key)
            .then(|| ha_common::service_info(raw, self.slot(i)[self.words - 1].load(SeqCst)))
            .flatten()
    }

    /// Overwrites slot `raw`'s words (tests).
    fn poke(&mut self, raw: u64, key: CacheKey, state: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let w = self.slot(ha_common::service_index(raw));
        for (j, word) in w[..self.words - 1].iter().enumerate() {
            word.store(key[j], SeqCst);
        }
        w[self.words - 1].store(state, SeqCst);
    }
}

impl Drop for ServiceCache {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Maps the values (`bytes` of them) of the `BPF_F_MMAPABLE` array `data`
/// into this process, shared, with protection `prot`; returns the start
/// and the mapped length (whole pages).
fn map_values(
    data: &MapData,
    bytes: usize,
    prot: libc::c_int,
    what: &str,
) -> Result<(*mut libc::c_void, usize), Error> {
    use std::os::fd::{AsFd, AsRawFd};
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let len = bytes.div_ceil(page) * page;
    // SAFETY: a shared mapping of a BPF_F_MMAPABLE array's values, as the
    // kernel offers for such maps; the length covers them.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            data.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::PinDir {
            dir: format!("{what} mmap").into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((ptr, len))
}

/// The current flow time (`CLOCK_MONOTONIC`, in [`ha_common::flow_time`]
/// units), as the program's `bpf_ktime_get_coarse_ns` counts it.
pub fn flow_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ha_common::flow_time(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// A ring with no backend and no changed slot, made on the heap (264 KiB
/// would not pass through a thread's stack safely).
pub fn empty_ring() -> Box<Ring> {
    // SAFETY: `Ring` is plain integers, valid when zeroed.
    let mut ring: Box<Ring> = unsafe { Box::<Ring>::new_zeroed().assume_init() };
    ring.entries.fill(ha_common::NO_BACKEND);
    ring.previous.fill(ha_common::NO_BACKEND);
    ring
}

/// The map data pinned at `path`, or None when nothing is pinned there.
pub(crate) fn pinned_map_data(path: &Path) -> Result<Option<MapData>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    MapData::from_pin(path)
        .map(Some)
        .map_err(|source| Error::Map {
            what: format!("open pinned map {}", path.display()),
            source,
        })
}

/// The map pinned at `path`, or None when nothing is pinned there.
pub(crate) fn pinned_map(path: &Path) -> Result<Option<Map>, Error> {
    let Some(data) = pinned_map_data(path)? else {
        return Ok(None);
    };
    Map::from_map_data(data)
        .map(Some)
        .map_err(|source| Error::Map {
            what: format!("open pinned map {}", path.display()),
            source,
        })
}

fn service_cache(map: Option<Map>, name: &str, slot_size: usize) -> Result<ServiceCache, Error> {
    match map.ok_or_else(|| Error::MissingMap(name.to_string()))? {
        Map::Array(data) => ServiceCache::map(data, slot_size, name),
        _ => Err(Error::MissingMap(name.to_string())),
    }
}

/// A typed handle on `map` (None: the map is missing).
pub(crate) fn typed<T: TryFrom<Map, Error = MapError>>(
    map: Option<Map>,
    name: &str,
) -> Result<T, Error> {
    let map = map.ok_or_else(|| Error::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|source| Error::Map {
        what: format!("open map {name}"),
        source,
    })
}

/// Brings hash map `map`, whose entries were last written as `written`, to
/// hold exactly `want`: entries that differ are written, entries no longer
/// wanted removed (one already absent is fine); then `written` is `want`.
/// `what` names the entries in an error.
pub(crate) fn sync_hash<K, V>(
    map: &mut HashMap<MapData, K, V>,
    written: &mut StdHashMap<K, V>,
    want: StdHashMap<K, V>,
    what: &str,
) -> Result<(), Error>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod + PartialEq,
{
    for (k, v) in &want {
        if written.get(k) != Some(v) {
            map.insert(k, v, 0).map_err(|source| Error::Map {
                what: format!("write {what}"),
                source,
            })?;
        }
    }
    let gone: Vec<K> = written
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    for k in gone {
        absent_is_fine(map.remove(&k), &format!("remove {what}"))?;
    }
    *written = want;
    Ok(())
}

/// Entry `index` of a per-CPU counter map, summed over CPUs (`what`
/// names the read in an error).
pub(crate) fn counter_sum(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
    what: &str,
) -> Result<Counter, Error> {
    let per_cpu = map.get(&index, 0).map_err(|source| Error::Map {
        what: what.into(),
        source,
    })?;
    let mut sum = Counter::default();
    for c in per_cpu.iter() {
        sum.packets += c.packets;
        sum.bytes += c.bytes;
    }
    Ok(sum)
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let mut maps = Self {
            vips: typed(ebpf.take_map(maps::VIPS), maps::VIPS)?,
            vips6: typed(ebpf.take_map(maps::VIPS6), maps::VIPS6)?,
            filter: typed(ebpf.take_map(maps::VIP_FILTER), maps::VIP_FILTER)?,
            rings: typed(ebpf.take_map(maps::RINGS), maps::RINGS)?,
            backends: typed(ebpf.take_map(maps::BACKENDS), maps::BACKENDS)?,
            flows: typed(ebpf.take_map(maps::FLOWS), maps::FLOWS)?,
            stats: typed(ebpf.take_map(maps::STATS), maps::STATS)?,
            backend_stats: typed(ebpf.take_map(maps::BACKEND_STATS), maps::BACKEND_STATS)?,
            meta: typed(ebpf.take_map(maps::META), maps::META)?,
            flow_stats: typed(ebpf.take_map(maps::FLOW_STATS), maps::FLOW_STATS)?,
            services: service_cache(
                ebpf.take_map(maps::SERVICES),
                maps::SERVICES,
                std::mem::size_of::<ServiceSlot>(),
            )?,
            services6: service_cache(
                ebpf.take_map(maps::SERVICES6),
                maps::SERVICES6,
                std::mem::size_of::<ha_common::ServiceSlot6>(),
            )?,
            seed: 0,
        };
        maps.seed = maps.meta()?.hash_seed;
        maps.learn_caches(true)?;
        Ok(maps)
    }

    /// Opens the maps pinned in `dir` (no program is loaded): for tools and
    /// tests that read a running data plane.
    pub fn open_pinned(dir: &Path) -> Result<Self, Error> {
        let open = |name: &str| pinned_map(&dir.join(name));
        let mut maps = Self {
            vips: typed(open(maps::VIPS)?, maps::VIPS)?,
            vips6: typed(open(maps::VIPS6)?, maps::VIPS6)?,
            filter: typed(open(maps::VIP_FILTER)?, maps::VIP_FILTER)?,
            rings: typed(open(maps::RINGS)?, maps::RINGS)?,
            backends: typed(open(maps::BACKENDS)?, maps::BACKENDS)?,
            flows: typed(open(maps::FLOWS)?, maps::FLOWS)?,
            stats: typed(open(maps::STATS)?, maps::STATS)?,
            backend_stats: typed(open(maps::BACKEND_STATS)?, maps::BACKEND_STATS)?,
            meta: typed(open(maps::META)?, maps::META)?,
            flow_stats: typed(open(maps::FLOW_STATS)?, maps::FLOW_STATS)?,
            services: service_cache(
                open(maps::SERVICES)?,
                maps::SERVICES,
                std::mem::size_of::<ServiceSlot>(),
            )?,
            services6: service_cache(
                open(maps::SERVICES6)?,
                maps::SERVICES6,
                std::mem::size_of::<ha_common::ServiceSlot6>(),
            )?,
            seed: 0,
        };
        maps.learn_caches(false)?;
        let meta = maps.meta()?;
        maps.seed = meta.hash_seed;
        if meta.abi != ha_common::ABI_VERSION {
            return Err(Error::IncompatiblePin {
                dir: dir.to_path_buf(),
                found: meta.abi,
            });
        }
        Ok(maps)
    }

    /// Teaches both service caches which slots hold which service.
    fn learn_caches(&mut self, fix: bool) -> Result<(), Error> {
        let v4: Vec<Cached> = self
            .vips4()?
            .into_iter()
            .map(|(k, i)| (k.raw(), cache_key4(&k), i))
            .collect();
        self.services.learn(&v4, fix);
        let mut v6 = Vec::new();
        for e in self.vips6.iter() {
            let (k, i) = e.map_err(map_err("walk VIPS6"))?;
            v6.push((k.identity().raw(), cache_key6(&k), i));
        }
        self.services6.learn(&v6, fix);
        Ok(())
    }

    /// Every entry of the IPv4 VIP map, as the program keys it.
    fn vips4(&self) -> Result<Vec<(VipKey, VipInfo)>, Error> {
        self.vips
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("walk VIPS"))
    }

    /// The META record.
    pub fn meta(&self) -> Result<Meta, Error> {
        self.meta.get(&0, 0).map_err(|source| Error::Map {
            what: "read META".into(),
            source,
        })
    }

    /// Writes the META record.
    pub fn set_meta(&mut self, meta: &Meta) -> Result<(), Error> {
        self.meta.set(0, meta, 0).map_err(|source| Error::Map {
            what: "write META".into(),
            source,
        })?;
        self.seed = meta.hash_seed;
        Ok(())
    }

    /// The flow hash seed the program uses.
    pub fn hash_seed(&self) -> u32 {
        self.seed
    }

    /// The flow table mapped into this process.
    pub fn flow_view(&self) -> Result<FlowView, Error> {
        FlowView::map(self.flows.map())
    }

    /// Per-reason counters, summed over CPUs, in [`Stat`] order.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>, Error> {
        let mut out = Vec::with_capacity(STAT_COUNT as usize);
        for stat in Stat::ALL {
            out.push((stat, counter_sum(&self.stats, stat as u32, "read STATS")?));
        }
        Ok(out)
    }

    /// Counters of backend `id`, summed over CPUs.
    pub fn backend_counter(&self, id: u32) -> Result<BackendCounter, Error> {
        let per_cpu = self
            .backend_stats
            .get(&id, 0)
            .map_err(|source| Error::Map {
                what: format!("read BACKEND_STATS[{id}]"),
                source,
            })?;
        let mut sum = BackendCounter::default();
        for c in per_cpu.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
            sum.new_flows += c.new_flows;
        }
        Ok(sum)
    }

    /// The service of every assigned backend slot, by id.
    pub fn services(&self) -> Result<StdHashMap<u16, VipKey>, Error> {
        Ok(self
            .backends()?
            .into_iter()
            .map(|(id, b)| (id as u16, b.vip))
            .collect())
    }

    /// Every valid flow-table entry with its 5-tuple (walks the whole
    /// table: for tools and tests).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>, Error> {
        let services = self.services()?;
        let mut out = Vec::new();
        self.flow_view()?.for_each_valid(
            self.seed,
            |b| services.get(&b).copied(),
            |e, service, _| out.push((e.key(service), *e)),
        );
        Ok(out)
    }

    /// Number of recorded flows per backend id.
    pub fn flows_per_backend(&self) -> Result<StdHashMap<u32, u64>, Error> {
        let mut out = StdHashMap::new();
        for (_, e) in self.flows()? {
            *out.entry(e.backend as u32).or_default() += 1;
        }
        Ok(out)
    }

    /// Index of `key`'s entry in its set, if it has one.
    fn find(&self, key: &FlowKey, set: &FlowSet, hash: u32) -> Option<usize> {
        set.entries.iter().position(|e| {
            e.check != 0
                && e.saddr == key.saddr
                && e.ports == key.ports
                && e.check == flow_check(hash, e.backend)
        })
    }

    /// The flow-table entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>, Error> {
        let (index, hash) = self.flow_set_of(key);
        let set = self.flows.get(&index, 0).map_err(map_err("read FLOWS"))?;
        Ok(self.find(key, &set, hash).map(|i| set.entries[i]))
    }

    /// Forgets one flow (benchmarks time new flows this way). Not atomic
    /// against the program: for tools and tests only.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<(), Error> {
        let (index, hash) = self.flow_set_of(key);
        let mut set = self.flows.get(&index, 0).map_err(map_err("read FLOWS"))?;
        if let Some(i) = self.find(key, &set, hash) {
            set.entries[i] = FlowEntry::default();
        }
        self.flows
            .set(index, set, 0)
            .map_err(map_err("write FLOWS"))
    }

    /// The backend id a packet of `key` (not a TCP SYN) goes to now, as
    /// the program decides it: the ring in an unchanged slot; in a changed
    /// one the flow's entry, else the slot's previous backend while it is
    /// up, else the ring. None when the service has no such backend.
    pub fn route(&self, key: &FlowKey) -> Result<Option<u32>, Error> {
        let v4 = VipKey {
            addr: key.daddr,
            port: (key.ports >> 16) as u16,
            proto: key.proto as u8,
            family: ha_common::FAMILY_IPV4,
        };
        self.route_service(&Service::from_key(&v4), key)
    }

    /// [`Maps::route`] for a flow of `service` (either family; for IPv6
    /// `key` holds the digests, see [`FlowKey::ipv6`]).
    pub fn route_service(&self, svc: &Service, key: &FlowKey) -> Result<Option<u32>, Error> {
        let service = svc.key();
        let info = match svc.key6() {
            Some(k6) => self.vips6.get(&k6, 0).ok(),
            None => self.vips.get(&service, 0).ok(),
        };
        let Some(info) = info else {
            return Ok(None);
        };
        if info.ring_size == 0 {
            return Ok(None);
        }
        let ring = self.ring(ha_common::ring_index(info.id, info.ring_slot))?;
        let source = info.flags & ha_common::VIP_F_SOURCE_HASH != 0;
        let hash = ha_common::ring_hash(
            self.seed, key.saddr, key.daddr, key.ports, key.proto, source,
        );
        let slot = ha_common::ring_slot(hash, info.ring_size) as usize;
        let usable = |id: u16| -> Result<bool, Error> {
            let b = self.backend(id as u32)?;
            Ok(id != ha_common::NO_BACKEND
                && b.flags & ha_common::BACKEND_F_UP != 0
                && b.vip == service)
        };
        let current = ring
            .entries
            .get(slot)
            .copied()
            .unwrap_or(ha_common::NO_BACKEND);
        let chosen = if !ring.is_changed(slot) {
            current
        } else if let Some(e) = self
            .flow(key)?
            .filter(|e| usable(e.backend).unwrap_or(false))
        {
            e.backend
        } else if usable(ring.previous[slot])? {
            ring.previous[slot]
        } else {
            current
        };
        Ok((chosen != ha_common::NO_BACKEND).then_some(chosen as u32))
    }

    /// Overwrites set `index` of the flow table (for tests: crafted stamps).
    pub fn set_flow_set(&mut self, index: u32, set: &FlowSet) -> Result<(), Error> {
        self.flows
            .set(index, set, 0)
            .map_err(map_err("write FLOWS"))
    }

    /// The set `key` falls in.
    pub fn flow_set_index(&self, key: &FlowKey) -> u32 {
        self.flow_set_of(key).0
    }

    /// What the service cache holds for IPv4 service `key` (None: the
    /// program will fall back to the VIP map).
    pub fn cached_service(&self, key: &VipKey) -> Option<VipInfo> {
        self.services.info(key.raw(), cache_key4(key))
    }

    /// What the IPv6 service cache holds for `key`.
    pub fn cached_service6(&self, key: &VipKey6) -> Option<VipInfo> {
        self.services6.info(key.identity().raw(), cache_key6(key))
    }

    /// Overwrites the service-cache slot of `key` with raw words (for
    /// tests: a torn or foreign slot must not misroute).
    pub fn poke_service_slot(&mut self, key: &VipKey, raw_key: u64, state: u64) {
        self.services.poke(key.raw(), [raw_key, 0, 0], state);
    }

    /// Flow-table event counters, summed over CPUs, in [`FlowStat`] order.
    pub fn flow_stats(&self) -> Result<Vec<(FlowStat, u64)>, Error> {
        let mut out = Vec::new();
        for stat in FlowStat::ALL {
            let per_cpu = self
                .flow_stats
                .get(&(stat as u32), 0)
                .map_err(map_err("read FLOW_STATS"))?;
            out.push((stat, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// Sets in the flow table.
    pub fn flow_sets(&self) -> u32 {
        self.flows.len()
    }

    fn flow_set_of(&self, key: &FlowKey) -> (u32, u32) {
        let h = flow_hash(self.seed, key.saddr, key.daddr, key.ports, key.proto);
        (h & self.flow_sets().wrapping_sub(1), h)
    }

    /// The backend slot `id`.
    pub fn backend(&self, id: u32) -> Result<BackendInfo, Error> {
        self.backends.get(&id, 0).map_err(|source| Error::Map {
            what: format!("read BACKENDS[{id}]"),
            source,
        })
    }
}

fn map_err(what: &str) -> impl FnOnce(MapError) -> Error + '_ {
    move |source| Error::Map {
        what: what.to_string(),
        source,
    }
}

fn absent_is_fine(r: Result<(), MapError>, what: &str) -> Result<(), Error> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(what)(e)),
    }
}

impl Store for Maps {
    fn vips(&self) -> Result<Vec<(Service, VipInfo)>, Error> {
        let mut out: Vec<(Service, VipInfo)> = self
            .vips4()?
            .into_iter()
            .map(|(k, i)| (Service::from_key(&k), i))
            .collect();
        for e in self.vips6.iter() {
            let (k, i) = e.map_err(map_err("walk VIPS6"))?;
            out.push((Service::from_key6(&k), i));
        }
        Ok(out)
    }

    fn set_vip(&mut self, key: &Service, info: &VipInfo) -> Result<(), Error> {
        match key.key6() {
            Some(k6) => {
                self.vips6
                    .insert(k6, info, 0)
                    .map_err(map_err("write VIPS6"))?;
                self.services6
                    .set(k6.identity().raw(), cache_key6(&k6), info);
                Ok(())
            }
            None => {
                let k = key.key();
                self.vips
                    .insert(k, info, 0)
                    .map_err(map_err("write VIPS"))?;
                self.services.set(k.raw(), cache_key4(&k), info);
                Ok(())
            }
        }
    }

    fn remove_vip(&mut self, key: &Service) -> Result<(), Error> {
        match key.key6() {
            Some(k6) => {
                self.services6.clear(k6.identity().raw(), cache_key6(&k6));
                absent_is_fine(self.vips6.remove(&k6), "delete from VIPS6")
            }
            None => {
                let k = key.key();
                self.services.clear(k.raw(), cache_key4(&k));
                absent_is_fine(self.vips.remove(&k), "delete from VIPS")
            }
        }
    }

    fn backends(&self) -> Result<Vec<(u32, BackendInfo)>, Error> {
        let mut out = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            let b = b.map_err(map_err("read BACKENDS"))?;
            if b.flags != 0 {
                out.push((i as u32, b));
            }
        }
        Ok(out)
    }

    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), Error> {
        self.backends
            .set(id, info, 0)
            .map_err(map_err("write BACKENDS"))
    }

    fn ring(&self, index: u32) -> Result<Box<Ring>, Error> {
        // Straight into the heap: a ring is 264 KiB, too big to pass
        // through a thread's stack by value (aya's `get` returns values).
        use std::os::fd::{AsFd, AsRawFd};
        let mut ring = empty_ring();
        #[repr(C)]
        struct Lookup {
            map_fd: u32,
            pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let attr = Lookup {
            map_fd: self.rings.map().fd().as_fd().as_raw_fd() as u32,
            pad: 0,
            key: &index as *const u32 as u64,
            value: &mut *ring as *mut Ring as u64,
            flags: 0,
        };
        const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
        // SAFETY: bpf(2) with a lookup attribute whose key points at a u32
        // and whose value points at a buffer of the map's value size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_ELEM,
                &attr as *const Lookup,
                std::mem::size_of::<Lookup>() as u32,
            )
        };
        if rc != 0 {
            return Err(Error::PinDir {
                dir: format!("read RINGS[{index}]").into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(ring)
    }

    fn set_ring(&mut self, index: u32, ring: &Ring) -> Result<(), Error> {
        self.rings
            .set(index, ring, 0)
            .map_err(map_err("write RINGS"))
    }

    fn filter(&self) -> Result<VipFilter, Error> {
        self.filter.get(&0, 0).map_err(map_err("read VIP_FILTER"))
    }

    fn set_filter(&mut self, filter: &VipFilter) -> Result<(), Error> {
        self.filter
            .set(0, filter, 0)
            .map_err(map_err("write VIP_FILTER"))
    }
}
