//! The XDP data plane: loading the program, attaching and pinning it,
//! adopting a pinned one after a restart, and writing its maps.
//!
//! Layout under the pin directory (`/sys/fs/bpf/halb/<node>/` by default):
//! one file per map (names in `ha_common::maps`) and `link`, the XDP link.
//! While `link` is pinned the program stays attached and forwards with the
//! maps as they are, agent or no agent. A starting agent loads the object
//! with those maps reused, atomically replaces the program behind the pinned
//! link (`bpf_link_update`), and re-reads ids and tables from the maps, so no
//! flow notices the restart.

pub mod census;
pub mod decap;
pub mod hc;
pub mod maglev;
pub mod maps;
pub mod service;
pub mod writer;

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ha_common::{maps as names, Meta, ABI_VERSION, XDP_MODE_GENERIC, XDP_MODE_NATIVE};

pub use maps::{FlowView, Maps, Store};
pub use service::Service;
pub use writer::{BackendSpec, Encap, Report, Tunnel, VipSpec, Writer};

/// The XDP program object, built by `cargo xtask build`.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HALB_XDP_OBJ"));
/// The pass-everything program (benchmark baseline, veth peers in the lab).
pub static PASS_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("HALB_PASS_OBJ"));
/// Name of the XDP program in [`XDP_OBJECT`].
pub const XDP_PROGRAM: &str = "halb_xdp";
/// Name of the program in [`PASS_OBJECT`].
pub const PASS_PROGRAM: &str = "halb_pass";
/// File name of the pinned link in the pin directory.
pub const LINK_PIN: &str = "link";

/// Data-plane errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This binary carries no eBPF object.
    #[error("this halb was built without its eBPF program; build it with `cargo xtask build`")]
    NotBuilt,
    /// The object did not load or verify.
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: aya::maps::MapError,
    },
    /// The object lacks a map.
    #[error("no map or program named {0}")]
    MissingMap(String),
    /// A pinned data plane of another layout.
    #[error(
        "{dir} holds a data plane with ABI {found}, this halb speaks ABI {ABI_VERSION}; \
         stop it with `halb run --reset-dataplane` or remove the directory"
    )]
    IncompatiblePin {
        /// The pin directory.
        dir: PathBuf,
        /// ABI found there.
        found: u32,
    },
    /// The pin directory is not usable.
    #[error("pin directory {dir}: {source}")]
    PinDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Pinning failed.
    #[error("pinning {path}: {reason}")]
    Pin {
        /// What was pinned.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// No interface of that name.
    #[error("no interface named {0:?}")]
    NoInterface(String),
    /// Too many VIPs or backends for the maps.
    #[error("data plane capacity exceeded: {0}")]
    Capacity(String),
    /// Another agent holds the pin directory.
    #[error(
        "another halb agent is running with pin directory {0} (the same node name); \
         two agents must never share one data plane: stop it, or give this node its own \
         [node] name or bpf_dir"
    )]
    Busy(PathBuf),
    /// A pinned map does not match the program's definition of it.
    #[error(
        "{dir} holds a data plane this halb cannot adopt: {what}; \
         stop it with `halb run --reset-dataplane` or remove the directory"
    )]
    Mismatch {
        /// The pin directory.
        dir: PathBuf,
        /// What differs.
        what: String,
    },
}

/// XDP attach mode asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModeWanted {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

/// How to bring the data plane up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interface to attach to.
    pub interface: String,
    /// Attach mode.
    pub mode: ModeWanted,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// Flow-table capacity (flows) for a newly created flow table.
    pub flow_table_size: u32,
    /// The interface's MAC address (frames to other MACs are not forwarded).
    pub mac: [u8; 6],
    /// Seed of the flow hash (the same on every node of a site).
    pub hash_seed: u32,
    /// The flow idle timeout in flow-time units (see [`ha_common::Meta::live_units`]).
    pub live_units: u32,
    /// Remove a pinned data plane first (once the pin directory is locked).
    pub reset: bool,
}

/// How the program got attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A fresh attach in this mode.
    Fresh(AttachMode),
    /// A pinned program was found and replaced in place (mode as pinned).
    Adopted(AttachMode),
}

/// XDP attach mode in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native).
    Native,
    /// Generic (SKB).
    Generic,
}

impl AttachMode {
    fn meta(self) -> u32 {
        match self {
            AttachMode::Native => XDP_MODE_NATIVE,
            AttachMode::Generic => XDP_MODE_GENERIC,
        }
    }

    fn from_meta(v: u32) -> Option<Self> {
        match v {
            XDP_MODE_NATIVE => Some(AttachMode::Native),
            XDP_MODE_GENERIC => Some(AttachMode::Generic),
            _ => None,
        }
    }

    /// Name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// A running data plane: the loaded program, its pinned link and the map writer.
pub struct DataPlane {
    // Keeps the program loaded while this agent runs; the pinned link keeps
    // it attached beyond that.
    _ebpf: Ebpf,
    link: Option<FdLink>,
    pin_dir: PathBuf,
    attached: Attached,
    ifindex: u32,
    writer: Writer<Maps>,
    _lock: PinLock,
}

/// An exclusive `flock` on the pin directory, held while the agent runs:
/// a second agent for the same node is refused instead of replacing the
/// first one's program and maps under it.
pub struct PinLock {
    _dir: std::fs::File,
}

impl PinLock {
    /// Creates `dir` if needed and locks it, or fails with [`Error::Busy`].
    pub fn acquire(dir: &Path) -> Result<Self, Error> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let f = std::fs::File::open(dir).map_err(|source| Error::PinDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        // SAFETY: flock on a file descriptor this value owns.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Error::Busy(dir.to_path_buf())
            } else {
                Error::PinDir {
                    dir: dir.to_path_buf(),
                    source: e,
                }
            });
        }
        Ok(Self { _dir: f })
    }
}

impl DataPlane {
    /// Loads the program with the pinned maps (creating and pinning them the
    /// first time), attaches it or adopts the pinned attachment, and takes
    /// over the maps' contents.
    /// `lock` is the pin directory's lock ([`PinLock::acquire`]), taken by
    /// the caller first thing.
    pub fn start(opts: &Options, lock: PinLock) -> Result<Self, Error> {
        if XDP_OBJECT.is_empty() {
            return Err(Error::NotBuilt);
        }
        let ifindex = ifindex(&opts.interface)?;
        if opts.reset {
            remove_pin_files(&opts.pin_dir);
        }
        check_pins(&opts.pin_dir)?;
        let pinned_meta = read_pinned_meta(&opts.pin_dir)?;
        if let Some(m) = pinned_meta {
            if m.hash_seed != opts.hash_seed {
                tracing::warn!(
                    pinned = m.hash_seed,
                    configured = opts.hash_seed,
                    "flow_hash_seed changed: established flows are hashed anew and may move"
                );
            }
        }

        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = names::ALL
            .iter()
            .map(|n| (*n, opts.pin_dir.join(n)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        // The program indexes the flow table with a mask; a pinned table
        // keeps the size it was created with.
        let flow_sets = match pinned_flow_sets(&opts.pin_dir)? {
            Some(n) => n,
            None => flow_sets_for(opts.flow_table_size),
        };
        loader.map_max_entries(names::FLOWS, flow_sets);
        loader.override_global("FLOW_SETS", &flow_sets, true);
        let mut ebpf = loader.load(XDP_OBJECT)?;
        let mut maps = Maps::take(&mut ebpf)?;

        let program: &mut Xdp = program_mut(&mut ebpf, XDP_PROGRAM)?;
        program.load().map_err(|source| Error::Program {
            what: "verify and load the XDP program".into(),
            source,
        })?;

        let link_path = opts.pin_dir.join(LINK_PIN);
        let mut adopted = None;
        if link_path.exists() {
            let same_if = pinned_meta.is_some_and(|m| m.ifindex == ifindex);
            match PinnedLink::from_pin(&link_path) {
                Ok(pinned) if same_if => {
                    let fd: FdLink = pinned.into();
                    match aya::programs::xdp::XdpLink::try_from(fd) {
                        Ok(xdp_link) => match program.attach_to_link(xdp_link) {
                            Ok(id) => {
                                adopted = Some(id);
                            }
                            Err(e) => {
                                tracing::warn!("pinned XDP link is stale ({e}); attaching afresh")
                            }
                        },
                        Err(e) => tracing::warn!("pinned link is not an XDP link ({e})"),
                    }
                }
                Ok(_) => tracing::info!(
                    "pinned program is attached to another interface; moving it to {}",
                    opts.interface
                ),
                Err(e) => tracing::warn!("cannot open pinned link ({e}); attaching afresh"),
            }
        }
        let (link_id, attached) = match adopted {
            Some(id) => {
                let mode = pinned_meta
                    .and_then(|m| AttachMode::from_meta(m.mode))
                    .unwrap_or(AttachMode::Generic);
                (id, Attached::Adopted(mode))
            }
            None => {
                // Removing the old pin detaches the old program (if any).
                let _ = std::fs::remove_file(&link_path);
                let (id, mode) = attach(program, ifindex, opts.mode, &opts.interface)?;
                (id, Attached::Fresh(mode))
            }
        };
        let link = program
            .take_link(link_id)
            .map_err(|source| Error::Program {
                what: "take the XDP link".into(),
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| Error::Pin {
            path: link_path.clone(),
            reason: format!("kernel gave no bpf_link ({e}); pinning needs one"),
        })?;
        let link = if matches!(attached, Attached::Adopted(_)) {
            // Already pinned at link_path.
            fd_link
        } else {
            FdLink::from(fd_link.pin(&link_path).map_err(|e| Error::Pin {
                path: link_path.clone(),
                reason: e.to_string(),
            })?)
        };
        let mode = match attached {
            Attached::Fresh(m) | Attached::Adopted(m) => m,
        };
        maps.set_meta(&Meta {
            mac: opts.mac,
            pad: 0,
            abi: ABI_VERSION,
            ifindex,
            mode: mode.meta(),
            hash_seed: opts.hash_seed,
            live_units: opts.live_units,
            pad2: 0,
        })?;
        let writer = Writer::adopt(maps)?;
        Ok(Self {
            _ebpf: ebpf,
            link: Some(link),
            pin_dir: opts.pin_dir.clone(),
            attached,
            ifindex,
            writer,
            _lock: lock,
        })
    }

    /// How the program was attached.
    pub fn attached(&self) -> Attached {
        self.attached
    }

    /// Interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The map writer.
    pub fn writer(&mut self) -> &mut Writer<Maps> {
        &mut self.writer
    }

    /// Tells the program the flow idle timeout (flow-time units): entries
    /// idle longer are not trusted, and evicting younger ones is counted
    /// as evicting live flows.
    pub fn set_live_units(&mut self, units: u32) -> Result<(), Error> {
        let maps = self.writer.store_mut();
        let mut meta = maps.meta()?;
        meta.live_units = units;
        maps.set_meta(&meta)
    }

    /// The maps (counters, flows).
    pub fn maps(&self) -> &Maps {
        self.writer.store()
    }

    /// Backend id of `addr` in service `key`.
    pub fn backend_id(&self, key: &Service, addr: impl Into<std::net::IpAddr>) -> Option<u32> {
        self.writer.backend_id(key, addr.into())
    }

    /// Stops the agent's hold on the data plane. With `keep`, the program
    /// stays attached and pinned and goes on forwarding; without it, the
    /// program is detached and every pin removed.
    pub fn shutdown(mut self, keep: bool) -> Result<(), Error> {
        if keep {
            return Ok(());
        }
        // Unpinning and closing the last fd detaches the program.
        let result = remove_pins(&self.pin_dir);
        drop(self.link.take());
        result
    }
}

/// Removes a pinned data plane (program detached with its link, maps freed
/// once unreferenced). Absent pins are fine.
pub fn remove_pins(dir: &Path) -> Result<(), Error> {
    remove_pin_files(dir);
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::PinDir {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

fn remove_pin_files(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(LINK_PIN));
    for name in names::ALL {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Sets of a flow table holding `flows` flows (a power of two).
pub fn flow_sets_for(flows: u32) -> u32 {
    (flows / ha_common::FLOW_WAYS as u32)
        .max(1)
        .next_power_of_two()
}

fn pinned_flow_sets(dir: &Path) -> Result<Option<u32>, Error> {
    let path = dir.join(names::FLOWS);
    let Some(data) = maps::pinned_map_data(&path)? else {
        return Ok(None);
    };
    let info = data.info().map_err(|source| Error::Map {
        what: format!("info of {}", path.display()),
        source,
    })?;
    Ok(Some(info.max_entries()))
}

/// Checks every map pinned in `dir` against the program's definition of it
/// (type, key and value size, flags, and size but for the flow table, whose
/// size is the operator's): an agent must never load its program over maps
/// of another layout. Pins without META are not a halb data plane.
pub fn check_pins(dir: &Path) -> Result<(), Error> {
    let mismatch = |what: String| Error::Mismatch {
        dir: dir.to_path_buf(),
        what,
    };
    let pinned: Vec<&str> = names::ALL
        .iter()
        .copied()
        .filter(|n| dir.join(n).exists())
        .collect();
    if pinned.is_empty() {
        return Ok(());
    }
    if !pinned.contains(&names::META) {
        return Err(mismatch(format!(
            "maps {} are pinned without {} (not a halb data plane, or a broken one)",
            pinned.join(", "),
            names::META
        )));
    }
    let obj = aya_obj::Object::parse(XDP_OBJECT)
        .map_err(|e| mismatch(format!("cannot read this halb's program: {e}")))?;
    for name in pinned {
        let Some(want) = obj.maps.get(name) else {
            return Err(mismatch(format!("map {name} is not one this halb defines")));
        };
        let Some(data) = maps::pinned_map_data(&dir.join(name))? else {
            continue;
        };
        let info = data.info().map_err(|source| Error::Map {
            what: format!("info of pinned {name}"),
            source,
        })?;
        let have = (
            info.key_size(),
            info.value_size(),
            info.map_flags(),
            info.max_entries(),
        );
        let need = (
            want.key_size(),
            want.value_size(),
            want.map_flags(),
            want.max_entries(),
        );
        let type_ok = info
            .map_type()
            .map(|t| t as u32 == want.map_type())
            .unwrap_or(false);
        let size_ok = name == names::FLOWS || have.3 == need.3;
        if !type_ok || have.0 != need.0 || have.1 != need.1 || have.2 != need.2 || !size_ok {
            return Err(mismatch(format!(
                "pinned {name} has key/value size {}/{}, flags {:#x}, {} entries; \
                 this halb needs {}/{}, flags {:#x}, {} entries{}",
                have.0,
                have.1,
                have.2,
                have.3,
                need.0,
                need.1,
                need.2,
                need.3,
                if type_ok {
                    ""
                } else {
                    ", and another map type"
                }
            )));
        }
    }
    Ok(())
}

fn read_pinned_meta(dir: &Path) -> Result<Option<Meta>, Error> {
    let Some(map) = maps::pinned_map(&dir.join(names::META))? else {
        return Ok(None);
    };
    let meta_map: aya::maps::Array<_, Meta> = maps::typed(Some(map), names::META)?;
    let meta = meta_map.get(&0, 0).map_err(|source| Error::Map {
        what: "read META".into(),
        source,
    })?;
    if meta.abi != ABI_VERSION {
        return Err(Error::IncompatiblePin {
            dir: dir.to_path_buf(),
            found: meta.abi,
        });
    }
    Ok(Some(meta))
}

/// Program `name` of `ebpf`, of type `T` (`Xdp`, `SchedClassifier`).
pub(crate) fn program_mut<'a, T>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::MissingMap(name.into()))?
        .try_into()
        .map_err(|source| Error::Program {
            what: format!("program {name}: type"),
            source,
        })
}

fn attach(
    program: &mut Xdp,
    ifindex: u32,
    mode: ModeWanted,
    ifname: &str,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode), Error> {
    let try_mode = |program: &mut Xdp, m: AttachMode| {
        let flags = match m {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        program
            .attach_to_if_index(ifindex, flags)
            .map_err(|source| Error::Program {
                what: format!("attach XDP ({}) to {ifname}", m.as_str()),
                source,
            })
    };
    match mode {
        ModeWanted::Native => Ok((try_mode(program, AttachMode::Native)?, AttachMode::Native)),
        ModeWanted::Generic => Ok((try_mode(program, AttachMode::Generic)?, AttachMode::Generic)),
        ModeWanted::Auto => match try_mode(program, AttachMode::Native) {
            Ok(id) => Ok((id, AttachMode::Native)),
            Err(e) => {
                tracing::info!("native XDP unavailable on {ifname} ({e}); using generic mode");
                Ok((try_mode(program, AttachMode::Generic)?, AttachMode::Generic))
            }
        },
    }
}

/// Interface index of `name` in the current network namespace.
pub fn ifindex(name: &str) -> Result<u32, Error> {
    let c = std::ffi::CString::new(name).map_err(|_| Error::NoInterface(name.into()))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(Error::NoInterface(name.into()))
    } else {
        Ok(idx)
    }
}
