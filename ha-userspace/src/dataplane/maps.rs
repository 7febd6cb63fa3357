//! Typed handles on the data plane's maps, and the [`Store`] trait through
//! which the writer changes them (implemented here for the kernel maps and in
//! tests for an in-memory model).

use std::collections::HashMap as StdHashMap;
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use ha_common::{
    flow_hash, maps, BackendCounter, BackendInfo, Counter, FlowEntry, FlowKey, FlowSet, Meta, Ring,
    Stat, VipFilter, VipInfo, VipKey, STAT_COUNT,
};

use super::Error;

/// What the map writer needs from the maps (see [`super::writer`]).
pub trait Store {
    /// Every entry of the VIP map.
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, Error>;
    /// Inserts or replaces a VIP entry (an atomic swap in the kernel).
    fn set_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<(), Error>;
    /// Removes a VIP entry; absent is fine.
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Error>;
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
    filter: Array<MapData, VipFilter>,
    rings: Array<MapData, Ring>,
    backends: Array<MapData, BackendInfo>,
    flows: Array<MapData, FlowSet>,
    stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, BackendCounter>,
    meta: Array<MapData, Meta>,
}

/// Flows per backend id in the flow table pinned in `dir` (walks the whole
/// table: one system call per set; meant for a thread of its own).
pub fn flows_per_backend_pinned(dir: &Path) -> Result<StdHashMap<u32, u64>, Error> {
    let flows: Array<MapData, FlowSet> = typed(pinned_map(&dir.join(maps::FLOWS))?, maps::FLOWS)?;
    let mut out = StdHashMap::new();
    for set in flows.iter() {
        let set = set.map_err(map_err("read FLOWS"))?;
        for e in set.entries.iter().filter(|e| e.check != 0 && e.is_valid()) {
            *out.entry(e.backend).or_default() += 1;
        }
    }
    Ok(out)
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

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            vips: typed(ebpf.take_map(maps::VIPS), maps::VIPS)?,
            filter: typed(ebpf.take_map(maps::VIP_FILTER), maps::VIP_FILTER)?,
            rings: typed(ebpf.take_map(maps::RINGS), maps::RINGS)?,
            backends: typed(ebpf.take_map(maps::BACKENDS), maps::BACKENDS)?,
            flows: typed(ebpf.take_map(maps::FLOWS), maps::FLOWS)?,
            stats: typed(ebpf.take_map(maps::STATS), maps::STATS)?,
            backend_stats: typed(ebpf.take_map(maps::BACKEND_STATS), maps::BACKEND_STATS)?,
            meta: typed(ebpf.take_map(maps::META), maps::META)?,
        })
    }

    /// Opens the maps pinned in `dir` (no program is loaded): for tools and
    /// tests that read a running data plane.
    pub fn open_pinned(dir: &Path) -> Result<Self, Error> {
        let open = |name: &str| pinned_map(&dir.join(name));
        let maps = Self {
            vips: typed(open(maps::VIPS)?, maps::VIPS)?,
            filter: typed(open(maps::VIP_FILTER)?, maps::VIP_FILTER)?,
            rings: typed(open(maps::RINGS)?, maps::RINGS)?,
            backends: typed(open(maps::BACKENDS)?, maps::BACKENDS)?,
            flows: typed(open(maps::FLOWS)?, maps::FLOWS)?,
            stats: typed(open(maps::STATS)?, maps::STATS)?,
            backend_stats: typed(open(maps::BACKEND_STATS)?, maps::BACKEND_STATS)?,
            meta: typed(open(maps::META)?, maps::META)?,
        };
        let meta = maps.meta()?;
        if meta.abi != ha_common::ABI_VERSION {
            return Err(Error::IncompatiblePin {
                dir: dir.to_path_buf(),
                found: meta.abi,
            });
        }
        Ok(maps)
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
        })
    }

    /// Per-reason counters, summed over CPUs, in [`Stat`] order.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>, Error> {
        let mut out = Vec::with_capacity(STAT_COUNT as usize);
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(|source| Error::Map {
                    what: "read STATS".into(),
                    source,
                })?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.push((stat, sum));
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

    /// Every valid flow-table entry (walks the whole table: for tools and tests).
    pub fn flows(&self) -> Result<Vec<FlowEntry>, Error> {
        let mut out = Vec::new();
        for set in self.flows.iter() {
            let set = set.map_err(map_err("read FLOWS"))?;
            out.extend(
                set.entries
                    .iter()
                    .filter(|e| e.check != 0 && e.is_valid())
                    .copied(),
            );
        }
        Ok(out)
    }

    /// Number of live flows per backend id.
    pub fn flows_per_backend(&self) -> Result<StdHashMap<u32, u64>, Error> {
        let mut out = StdHashMap::new();
        for e in self.flows()? {
            *out.entry(e.backend).or_default() += 1;
        }
        Ok(out)
    }

    /// The flow-table entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>, Error> {
        let (index, _) = self.flow_set_of(key);
        let set = self.flows.get(&index, 0).map_err(map_err("read FLOWS"))?;
        Ok(set
            .entries
            .iter()
            .find(|e| e.key == *key && e.check != 0 && e.is_valid())
            .copied())
    }

    /// Forgets one flow (benchmarks time new flows this way). Not atomic
    /// against the program: for tools and tests only.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<(), Error> {
        let (index, _) = self.flow_set_of(key);
        let mut set = self.flows.get(&index, 0).map_err(map_err("read FLOWS"))?;
        for e in set.entries.iter_mut().filter(|e| e.key == *key) {
            *e = FlowEntry::default();
        }
        self.flows
            .set(index, set, 0)
            .map_err(map_err("write FLOWS"))
    }

    /// Sets in the flow table.
    pub fn flow_sets(&self) -> u32 {
        self.flows.len()
    }

    fn flow_set_of(&self, key: &FlowKey) -> (u32, u32) {
        let h = flow_hash(key.saddr, key.daddr, key.ports, key.proto);
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

impl Store for Maps {
    fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, Error> {
        self.vips
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("walk VIPS"))
    }

    fn set_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<(), Error> {
        self.vips
            .insert(key, info, 0)
            .map_err(map_err("write VIPS"))
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Error> {
        match self.vips.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(map_err("delete from VIPS")(e)),
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
        self.rings
            .get(&index, 0)
            .map(Box::new)
            .map_err(map_err("read RINGS"))
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
