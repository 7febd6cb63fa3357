//! The status document: what `GET /api/v1/status` returns, what
//! `halb status` prints, and what the stats page and `/metrics` render.
//! This file is the JSON schema's documentation: every field is
//! `snake_case`, times are seconds (`_s`) or milliseconds (`_ms`), rates
//! are per second, counters count since the data plane was created.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// This node.
    pub node: NodeStatus,
    /// VRRP, when configured: the first (or only) instance, as before there
    /// were several; `vrrp_instances` lists them all.
    pub vrrp: Option<VrrpStatus>,
    /// Every VRRP instance.
    #[serde(default)]
    pub vrrp_instances: Vec<VrrpStatus>,
    /// Every sync group.
    #[serde(default)]
    pub sync_groups: Vec<SyncGroupStatus>,
    /// Every VIP with its backends.
    pub vips: Vec<VipStatus>,
    /// The XDP program's counters.
    pub dataplane: DataplaneStatus,
    /// The BGP scale-out mode, when configured: what this node announces
    /// and why, and the routing daemon's sessions.
    #[serde(default)]
    pub bgp: Option<BgpStatus>,
}

/// `bgp`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BgpStatus {
    /// The operator drained the node (`halb node drain`): nothing is announced.
    pub drained: bool,
    /// The XDP program is attached (nothing is announced while it is not).
    pub dataplane_attached: bool,
    /// The announce device and the kernel table the daemon exports.
    pub device: String,
    /// Kernel routing table.
    pub table: u32,
    /// Every VIP address: announced or not, and why.
    pub announcements: Vec<Announcement>,
    /// The daemon's BGP and BFD sessions (from `[bgp] bird_socket`).
    pub sessions: Vec<BgpSession>,
    /// Why the sessions could not be read, if they could not.
    pub daemon_error: Option<String>,
    /// The kernel table holds what `announcements` says (false: the last
    /// update failed, see the log; it is retried every second).
    #[serde(default)]
    pub table_in_sync: bool,
    /// Announcements and withdrawals since the agent started.
    #[serde(default)]
    pub changes: u64,
}

/// One VIP address in `bgp.announcements`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Announcement {
    /// The address.
    pub address: String,
    /// Announced now.
    pub announced: bool,
    /// `serving`, `no healthy backend (web)`, `node drained`, ...
    pub reason: String,
    /// Seconds since it was last announced or withdrawn.
    pub since_s: f64,
}

/// One protocol of the routing daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BgpSession {
    /// The daemon's protocol name.
    pub name: String,
    /// `BGP` or `BFD`.
    pub kind: String,
    /// The daemon's state (`up`, `start`, ...).
    pub state: String,
    /// Detail (`Established`, `Active`, an error).
    pub info: String,
    /// A BGP session that is established.
    pub established: bool,
}

/// `node`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// XDP attach mode in use: `native` or `generic`.
    pub xdp_mode: String,
    /// Seconds since this agent started.
    pub uptime_s: f64,
    /// halb version.
    pub version: String,
    /// API connections closed at once because the limit (128) was reached.
    #[serde(default)]
    pub api_refused_connections: u64,
}

/// A sync group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncGroupStatus {
    /// Name.
    pub name: String,
    /// Member instances.
    pub instances: Vec<String>,
    /// `INIT`, `BACKUP`, `MASTER` (every member is) or `FAULT` (some member is).
    pub state: String,
}

/// One VRRP instance (`vrrp`, `vrrp_instances[]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VrrpStatus {
    /// Instance name (`vrrp` for a `[vrrp]` section).
    #[serde(default)]
    pub name: String,
    /// Interface it runs on.
    #[serde(default)]
    pub interface: String,
    /// VIPs (names) it owns.
    #[serde(default)]
    pub vips: Vec<String>,
    /// Its sync group, if any.
    #[serde(default)]
    pub sync_group: Option<String>,
    /// Held by its sync group, it would be master now.
    #[serde(default)]
    pub wants_master: bool,
    /// `INIT`, `BACKUP`, `MASTER` or `FAULT`.
    pub state: String,
    /// Effective priority.
    pub priority: u8,
    /// Configured priority.
    pub base_priority: u8,
    /// Virtual router id.
    pub router_id: u8,
    /// VRRP version.
    pub version: u8,
    /// The master this node hears (when backup).
    pub master: Option<String>,
    /// This node's advert source address.
    pub primary: String,
    /// Unicast peers (empty: multicast).
    pub peers: Vec<String>,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Advertisements accepted.
    pub adverts_received: u64,
    /// Packets rejected, by reason (`ttl`, `checksum`, `not_peer`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// State changes.
    pub transitions: u64,
    /// Tracked sources in effect: name → `fault` or a signed weight.
    pub tracking: BTreeMap<String, String>,
    /// Lower-priority masters answered (split brain; at most once per
    /// advert interval per sender).
    #[serde(default)]
    pub split_brain_answers: u64,
    /// VIP address operations (netlink) that failed; each is retried.
    #[serde(default)]
    pub address_failures: u64,
    /// Addresses could not be added: mastership given up for a while.
    #[serde(default)]
    pub address_fault: bool,
}

/// One VIP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `dsr`.
    pub mode: String,
    /// What places a flow: `five-tuple` or `source-ip`.
    #[serde(default)]
    pub hash: String,
    /// Health check kind: `none`, `tcp` or `http`.
    pub check: String,
    /// Backends currently healthy.
    pub healthy_backends: usize,
    /// Backends.
    pub backends: Vec<BackendStatus>,
}

/// One backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// MAC address, when known (no MAC: no traffic).
    pub mac: Option<String>,
    /// `up`, `down`, `checking` (no result yet) or `no-check`.
    pub health: String,
    /// Weight in effect (0 when drained).
    pub weight: u32,
    /// Weight in the config.
    pub config_weight: u32,
    /// Drained by the operator.
    pub drained: bool,
    /// Removed by a reload and finishing its flows (no new ones): see
    /// `removal`.
    #[serde(default)]
    pub removing: bool,
    /// For a removing backend: how its removal goes.
    #[serde(default)]
    pub removal: Option<RemovalStatus>,
    /// Weight set by the operator (replacing the config's), if any.
    pub weight_override: Option<u32>,
    /// The last health check, if any.
    pub last_check: Option<CheckStatus>,
    /// Seconds since health last changed, if it has.
    pub since_change_s: Option<f64>,
    /// Flows in the flow table pinned to this backend.
    pub flows: u64,
    /// Packets forwarded to it.
    pub packets: u64,
    /// Bytes forwarded to it.
    pub bytes: u64,
    /// Flows assigned to it.
    pub new_flows: u64,
    /// Packets per second (last sampling period).
    pub pps: f64,
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// New flows per second.
    pub new_flows_per_s: f64,
}

/// A backend being removed gracefully.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RemovalStatus {
    /// Seconds since the reload removed it.
    pub since_s: f64,
    /// Seconds until `removal_timeout` cuts what is left.
    pub deadline_in_s: f64,
    /// Live flows at the last count (None: not counted yet).
    pub live_flows: Option<u64>,
}

/// A health check result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckStatus {
    /// Healthy.
    pub ok: bool,
    /// What happened ("HTTP 200", "connection refused", ...).
    pub detail: String,
    /// How long it took.
    pub latency_ms: f64,
    /// Seconds ago.
    pub age_s: f64,
}

/// `dataplane`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DataplaneStatus {
    /// Packets per action: `tx`, `pass`, `drop`, `aborted`.
    pub actions: BTreeMap<String, u64>,
    /// Packets per reason (`tx_flow_hit`, `pass_not_vip`, `drop_fragment`, ...).
    pub reasons: BTreeMap<String, u64>,
    /// Bytes per reason.
    pub reason_bytes: BTreeMap<String, u64>,
    /// Packets per second the program saw (last sampling period).
    pub pps: f64,
    /// Flows in the flow table.
    pub flows: u64,
    /// Flow-table capacity.
    pub flow_capacity: u64,
    /// Ring slots marked changed (their flows go through the flow table).
    #[serde(default)]
    pub changed_slots: u64,
    /// Flow-table events: `recorded`, `evicted_live`, `evicted_idle`.
    #[serde(default)]
    pub flow_table: BTreeMap<String, u64>,
}

/// The answer to an operator command on a backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendChange {
    /// VIP name.
    pub vip: String,
    /// Backend name.
    pub backend: String,
    /// Drained now.
    pub drained: bool,
    /// Weight in effect now.
    pub weight: u32,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// The answer to `POST /api/v1/node/{drain,enable}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeChange {
    /// Drained now.
    pub drained: bool,
    /// The addresses announced after the change.
    pub announced: Vec<String>,
}
