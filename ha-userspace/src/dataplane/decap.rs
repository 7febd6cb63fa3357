//! The backend side's data plane: the decapsulation program (`halb-decap`,
//! see `ha-ebpf/src/decap.rs`), its address map, settings and counters.
//! Loaded and attached by `halb backend`; detached when dropped.

use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::Xdp;
use aya::Ebpf;
use ha_common::decap::{
    self as names, AddrKey, AddrSlot, Conf, DecapStat, ADDR_LOCAL, ADDR_VIP, CACHE_SLOTS, PROGRAM,
};
use ha_common::Counter;

use super::maps::{counter_sum, sync_hash, typed};
use super::{attach, AttachMode, Error, ModeWanted};

/// The decapsulation object (empty when built without `cargo xtask build`).
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HALB_DECAP_OBJ"));

/// What the program decapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecapConf {
    /// IP in IP (protocol 4 and 41).
    pub ipip: bool,
    /// GUE on this UDP port.
    pub gue_port: Option<u16>,
}

/// The loaded (and, once [`Decap::attach`]ed, attached) program.
pub struct Decap {
    ebpf: Ebpf,
    addrs: HashMap<MapData, AddrKey, u32>,
    cache: Array<MapData, AddrSlot>,
    stats: PerCpuArray<MapData, Counter>,
    written: std::collections::HashMap<AddrKey, u32>,
}

fn key(a: IpAddr) -> AddrKey {
    match a {
        IpAddr::V4(a) => AddrKey::v4(a.octets()),
        IpAddr::V6(a) => AddrKey::v6(a.octets()),
    }
}

impl Decap {
    /// Loads and verifies the program with `conf`.
    pub fn load(conf: DecapConf) -> Result<Self, Error> {
        if DECAP_OBJECT.is_empty() {
            return Err(Error::NotBuilt);
        }
        let c = Conf {
            gue_port: conf.gue_port.unwrap_or(0).to_be(),
            ipip: conf.ipip as u16,
            pad: 0,
        };
        let mut ebpf = aya::EbpfLoader::new()
            .override_global(names::CONF, &c, true)
            .load(DECAP_OBJECT)?;
        let addrs = typed(ebpf.take_map(names::ADDRS), names::ADDRS)?;
        let cache = typed(ebpf.take_map(names::CACHE), names::CACHE)?;
        let stats = typed(ebpf.take_map(names::STATS), names::STATS)?;
        let program = Self::program_of(&mut ebpf)?;
        program.load().map_err(|source| Error::Program {
            what: "verify and load the decapsulation program".into(),
            source,
        })?;
        Ok(Self {
            ebpf,
            addrs,
            cache,
            stats,
            written: Default::default(),
        })
    }

    fn program_of(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
        super::program_mut(ebpf, PROGRAM)
    }

    /// The program (tests run frames through it).
    pub fn program(&mut self) -> Result<&mut Xdp, Error> {
        Self::program_of(&mut self.ebpf)
    }

    /// Attaches to interface `ifname` (`ifindex`) in `mode`; detached when
    /// this is dropped.
    pub fn attach(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: ModeWanted,
    ) -> Result<AttachMode, Error> {
        let program = Self::program_of(&mut self.ebpf)?;
        let (_, m) = attach(program, ifindex, mode, ifname)?;
        Ok(m)
    }

    /// Makes the address map hold exactly `vips` (inner destinations)
    /// and `local` (outer destinations).
    pub fn set_addresses(&mut self, vips: &[IpAddr], local: &[IpAddr]) -> Result<(), Error> {
        let mut want: std::collections::HashMap<AddrKey, u32> = Default::default();
        for a in vips {
            *want.entry(key(*a)).or_default() |= ADDR_VIP;
        }
        for a in local {
            *want.entry(key(*a)).or_default() |= ADDR_LOCAL;
        }
        sync_hash(
            &mut self.addrs,
            &mut self.written,
            want.clone(),
            "a decapsulation address",
        )?;
        // The cache: each slot holds the first key (in address order) that
        // maps to it; the others are found in the hash map. Written after
        // the hash map, so that a key is never missing from both.
        let mut keys: Vec<(&AddrKey, &u32)> = want.iter().collect();
        keys.sort_by_key(|(k, _)| (k.family, k.addr));
        let mut slots = vec![AddrSlot::default(); CACHE_SLOTS as usize];
        for (k, v) in keys {
            let s = &mut slots[k.slot() as usize];
            if s.flags == 0 {
                *s = AddrSlot { key: *k, flags: *v };
            }
        }
        for (i, s) in slots.iter().enumerate() {
            self.cache
                .set(i as u32, s, 0)
                .map_err(|source| Error::Map {
                    what: "write the decapsulation address cache".into(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(DecapStat, Counter)>, Error> {
        DecapStat::ALL
            .into_iter()
            .map(|s| {
                let c = counter_sum(&self.stats, s as u32, "read the decapsulation counters")?;
                Ok((s, c))
            })
            .collect()
    }
}
