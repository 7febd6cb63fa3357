//! Health checks through the tunnel, the data-plane part: the tc egress
//! program `halb-hc` (see `ha-ebpf/src/hc.rs`) that encapsulates marked
//! probe packets, and its target map. Attached by the agent while some VIP
//! encapsulates; detached when dropped (a tcx link, owned by the agent).

use std::collections::HashMap as StdHashMap;

use aya::maps::{HashMap, MapData};
use aya::programs::tc::{SchedClassifier, TcAttachType};
use aya::Ebpf;
use ha_common::hc::{self as names, HcTarget, MARK_BASE, MARK_MASK, PROGRAM};

use super::maps::{sync_hash, typed};
use super::Error;

/// The probe-encapsulation object (empty when built without `cargo xtask build`).
pub static HC_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HALB_HC_OBJ"));

/// The mark of tunnelled probe `index`.
pub fn mark(index: u32) -> u32 {
    MARK_BASE | (index & !MARK_MASK)
}

/// The attached program and its targets.
pub struct HcEncap {
    _ebpf: Ebpf,
    targets: HashMap<MapData, u32, HcTarget>,
    written: StdHashMap<u32, HcTarget>,
}

impl HcEncap {
    /// Loads the program and attaches it to `ifname`'s egress.
    pub fn attach(ifname: &str) -> Result<Self, Error> {
        if HC_OBJECT.is_empty() {
            return Err(Error::NotBuilt);
        }
        let mut ebpf = Ebpf::load(HC_OBJECT)?;
        let targets = typed(ebpf.take_map(names::TARGETS), names::TARGETS)?;
        let program: &mut SchedClassifier = super::program_mut(&mut ebpf, PROGRAM)?;
        program.load().map_err(|source| Error::Program {
            what: "verify and load the probe encapsulation program".into(),
            source,
        })?;
        // Before tcx (Linux 6.6) the filter is a netlink one that outlives
        // a crashed agent: remove any left behind, or probes would be
        // encapsulated twice. (With tcx, the link went with the process.)
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        let _ = aya::programs::tc::qdisc_detach_program(ifname, TcAttachType::Egress, PROGRAM);
        program
            .attach(ifname, TcAttachType::Egress)
            .map_err(|source| Error::Program {
                what: format!("attach the probe encapsulation program to {ifname} (tc egress)"),
                source,
            })?;
        Ok(Self {
            _ebpf: ebpf,
            targets,
            written: StdHashMap::new(),
        })
    }

    /// Makes the target map hold exactly `want` (probe index → target).
    pub fn set_targets(&mut self, want: &StdHashMap<u32, HcTarget>) -> Result<(), Error> {
        sync_hash(
            &mut self.targets,
            &mut self.written,
            want.clone(),
            "a probe target",
        )
    }
}
