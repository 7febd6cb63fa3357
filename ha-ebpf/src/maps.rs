//! The program's maps: their types and sizes (the layouts live in
//! `ha_common`, shared with the agent). Userspace opens them by these names.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use ha_common::{
    BackendCounter, BackendInfo, Counter, FlowSet, Meta, Ring, ServiceSlot, ServiceSlot6,
    VipFilter, VipInfo, VipKey, VipKey6, DEFAULT_FLOW_SETS, FLOW_STAT_COUNT, MAX_BACKENDS,
    MAX_VIPS, SERVICE_SLOTS, STAT_COUNT,
};

const BPF_F_NO_PREALLOC: u32 = 1;
/// The flow table can be mapped into the agent's memory: it walks the whole
/// table (graceful removal, flows per backend) by reading memory, not with
/// one system call per set.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Services and address markers (`BPF_F_NO_PREALLOC`: an update is an RCU swap).
#[map(name = "HALB_VIPS")]
pub static VIPS: HashMap<VipKey, VipInfo> =
    HashMap::with_max_entries(MAX_VIPS * 2, BPF_F_NO_PREALLOC);

/// IPv6 services and address markers, by the whole address.
#[map(name = "HALB_VIPS6")]
pub static VIPS6: HashMap<VipKey6, VipInfo> =
    HashMap::with_max_entries(MAX_VIPS * 2, BPF_F_NO_PREALLOC);

/// The service cache (IPv4 services) (see `ha_common::ServiceSlot`), written by the agent
/// through a memory mapping.
#[map(name = "HALB_SERVICES")]
pub static SERVICES: Array<ServiceSlot> = Array::with_max_entries(SERVICE_SLOTS, BPF_F_MMAPABLE);

/// The IPv6 service cache (see `ha_common::ServiceSlot6`).
#[map(name = "HALB_SERVICES6")]
pub static SERVICES6: Array<ServiceSlot6> = Array::with_max_entries(SERVICE_SLOTS, BPF_F_MMAPABLE);

/// The VIP address pre-filter (one element).
#[map(name = "HALB_VIP_FILTER")]
pub static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);

/// Two Maglev rings per VIP, each with its changed slots (see `ha_common::Ring`).
#[map(name = "HALB_RINGS")]
pub static RINGS: Array<Ring> = Array::with_max_entries(MAX_VIPS * 2, 0);

/// Backends by id.
#[map(name = "HALB_BACKENDS")]
pub static BACKENDS: Array<BackendInfo> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The flow table (its size is set by the loader).
#[map(name = "HALB_FLOWS")]
pub static FLOWS: Array<FlowSet> = Array::with_max_entries(DEFAULT_FLOW_SETS, BPF_F_MMAPABLE);

/// Sets in `FLOWS` (a power of two); set by the loader to the map's size.
#[no_mangle]
pub static FLOW_SETS: u32 = DEFAULT_FLOW_SETS;

/// Per-reason counters.
#[map(name = "HALB_STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Flow-table events (`ha_common::FlowStat`).
#[map(name = "HALB_FLOW_STATS")]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOW_STAT_COUNT, 0);

/// Per-backend counters.
#[map(name = "HALB_BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendCounter> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Written by userspace: the interface MAC and the flow hash seed.
#[map(name = "HALB_META")]
pub static META: Array<Meta> = Array::with_max_entries(1, 0);
