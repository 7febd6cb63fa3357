//! The configuration schema: serde types for every section of `halb.toml`.
//!
//! Value checks that concern one value (ranges, primes, enums) happen while
//! deserialising, so the TOML parser reports them at the value's position;
//! checks across values live in `validate`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`: this load balancer.
    pub node: Node,
    /// `[api]`: the HTTP listener.
    #[serde(default)]
    pub api: Api,
    /// `[vrrp]`: one VIP election owning every VIP; absent (and no
    /// `[[vrrp_instance]]`): this node always owns its VIPs.
    #[serde(default)]
    pub vrrp: Option<Spanned<Vrrp>>,
    /// `[[vrrp_instance]]`: several elections, each owning the VIPs it names
    /// (keepalived's `vrrp_instance`); not together with `[vrrp]`.
    #[serde(default, rename = "vrrp_instance")]
    pub vrrp_instances: Vec<Spanned<Vrrp>>,
    /// `[[vrrp_sync_group]]`: instances that change state together.
    #[serde(default, rename = "vrrp_sync_group")]
    pub sync_groups: Vec<Spanned<SyncGroup>>,
    /// `[[vip]]`: the services.
    #[serde(default, rename = "vip")]
    pub vips: Vec<Spanned<Vip>>,
    /// `[bgp]`: scale-out mode (every node active behind an ECMP router,
    /// VIPs announced through a routing daemon); not together with VRRP.
    #[serde(default)]
    pub bgp: Option<Spanned<Bgp>>,
}

/// `[bgp]`: what this node announces, and how its routing daemon (BIRD 2)
/// is set up. halb does not speak BGP: it puts one host route per announced
/// VIP address into [`Bgp::table`] through [`Bgp::device`], a device that
/// lives exactly as long as the agent's process, and the daemon exports that
/// table to its neighbours (docs/scale-out.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// This node's AS number.
    #[serde(deserialize_with = "de_asn")]
    pub local_asn: u32,
    /// BGP router id for the daemon; default: the node's address.
    #[serde(default)]
    pub router_id: Option<Ipv4Addr>,
    /// Kernel routing table the announced routes go into (the daemon
    /// exports it); nothing routes through it.
    #[serde(default = "default_bgp_table", deserialize_with = "de_bgp_table")]
    pub table: u32,
    /// Routing protocol number of those routes (`ip route ... proto N`).
    #[serde(default = "default_bgp_protocol", deserialize_with = "de_bgp_protocol")]
    pub route_protocol: u8,
    /// Name of the device the routes point at (created by the agent, gone
    /// with it: a dead agent announces nothing).
    #[serde(default = "default_bgp_device")]
    pub device: Spanned<String>,
    /// After a withdrawal for health, a VIP must stay healthy this long
    /// before it is announced again (a flapping backend does not flap the
    /// route).
    #[serde(default = "default_hold_down_ms", deserialize_with = "de_hold_down")]
    pub hold_down_ms: u64,
    /// On SIGTERM: withdraw, keep forwarding this long, then stop.
    #[serde(default = "default_grace_ms", deserialize_with = "de_grace")]
    pub shutdown_grace_ms: u64,
    /// BIRD's control socket, read for the sessions' state (status only).
    #[serde(default)]
    pub bird_socket: Option<PathBuf>,
    /// Where the agent keeps what must outlive it (a node drain: a drained
    /// node that restarts stays drained).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// BFD timers for the daemon's sessions.
    #[serde(default)]
    pub bfd: Bfd,
    /// `[[bgp.neighbor]]`: the routers (at least one).
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<Spanned<Neighbor>>,
}

/// `[bgp.bfd]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bfd {
    /// Transmit and receive interval.
    #[serde(default = "default_bfd_interval", deserialize_with = "de_bfd_interval")]
    pub interval_ms: u32,
    /// Missed packets before the session goes down.
    #[serde(default = "default_bfd_multiplier", deserialize_with = "de_bfd_mult")]
    pub multiplier: u8,
}

impl Default for Bfd {
    fn default() -> Self {
        Self {
            interval_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
        }
    }
}

/// `[[bgp.neighbor]]`: one BGP session.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    /// The router's address (on the node's segment). The session carries
    /// the VIPs of its family: an IPv6 neighbour, the IPv6 VIPs.
    pub address: Spanned<IpAddr>,
    /// Its AS number.
    #[serde(deserialize_with = "de_asn")]
    pub asn: u32,
    /// BFD on this session.
    #[serde(default = "default_true")]
    pub bfd: bool,
}

/// One VRRP instance as the agent runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance<'a> {
    /// Name (logs, status, metrics).
    pub name: String,
    /// Its settings.
    pub vrrp: &'a Vrrp,
    /// Interface it runs on (adverts, VIP addresses).
    pub interface: String,
    /// Names of the VIPs it owns.
    pub vips: Vec<String>,
}

/// Name of the single instance a `[vrrp]` section makes.
pub const DEFAULT_INSTANCE: &str = "vrrp";

impl Config {
    /// The VIPs without their spans.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> {
        self.vips.iter().map(Spanned::get_ref)
    }

    /// The `[vrrp]` section, if any.
    pub fn vrrp(&self) -> Option<&Vrrp> {
        self.vrrp.as_ref().map(Spanned::get_ref)
    }

    /// Whether VIP ownership is elected (any VRRP at all).
    pub fn has_vrrp(&self) -> bool {
        self.vrrp.is_some() || !self.vrrp_instances.is_empty()
    }

    /// The VRRP instances: the one `[vrrp]` makes (owning every VIP), or
    /// every `[[vrrp_instance]]` with the VIPs it names.
    pub fn instances(&self) -> Vec<Instance<'_>> {
        let iface = |v: &Vrrp| {
            v.interface.as_ref().map_or_else(
                || self.node.interface.get_ref().clone(),
                |i| i.get_ref().clone(),
            )
        };
        if let Some(v) = self.vrrp() {
            return vec![Instance {
                name: v
                    .name
                    .as_ref()
                    .map_or_else(|| DEFAULT_INSTANCE.to_string(), |n| n.get_ref().clone()),
                vrrp: v,
                interface: iface(v),
                vips: self.vips().map(|x| x.name.get_ref().clone()).collect(),
            }];
        }
        self.vrrp_instances
            .iter()
            .map(|s| {
                let v = s.get_ref();
                Instance {
                    name: v
                        .name
                        .as_ref()
                        .map(|n| n.get_ref().clone())
                        .unwrap_or_default(),
                    vrrp: v,
                    interface: iface(v),
                    vips: v
                        .vips
                        .as_ref()
                        .map(|l| l.get_ref().iter().map(|n| n.get_ref().clone()).collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The sync group `instance` belongs to, if any.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroup> {
        self.sync_groups
            .iter()
            .map(Spanned::get_ref)
            .find(|g| g.instances.iter().any(|i| i.get_ref() == instance))
    }
}

/// `[[vrrp_sync_group]]`: keepalived's `vrrp_sync_group`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncGroup {
    /// Name (logs, status).
    pub name: Spanned<String>,
    /// Member instances, by name.
    pub instances: Vec<Spanned<String>>,
    /// Hook run with MASTER, BACKUP or FAULT when the group changes state.
    #[serde(default)]
    pub notify: Option<PathBuf>,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node name (pin directory, logs); default: the host name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Interface that receives VIP traffic and runs VRRP.
    pub interface: Spanned<String>,
    /// XDP attach mode.
    #[serde(default)]
    pub xdp_mode: XdpModeCfg,
    /// Pin directory; default `/sys/fs/bpf/halb/<name>`.
    #[serde(default)]
    pub bpf_dir: Option<PathBuf>,
    /// Flow-table capacity (entries); takes effect when the maps are created.
    #[serde(
        default = "default_flow_table_size",
        deserialize_with = "de_flow_table"
    )]
    pub flow_table_size: u32,
    /// How often backend MAC addresses are re-read from the neighbour table.
    #[serde(
        default = "default_neigh_refresh_ms",
        deserialize_with = "de_positive_ms"
    )]
    pub neigh_refresh_ms: u64,
    /// Log format: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: crate::logging::LogFormat,
    /// Seed of the flow hash: set the same value on every node of a site
    /// (the nodes must pick the same backend for a flow), and keep it from
    /// outsiders (it keeps crafted tuples from all landing in one flow-table
    /// set). Takes effect when the agent starts.
    #[serde(default)]
    pub flow_hash_seed: u32,
    /// How long a backend removed by a reload keeps its established flows
    /// at most (HAProxy's `hard-stop-after` in spirit); 0 removes at once.
    #[serde(
        default = "default_removal_timeout_ms",
        deserialize_with = "de_removal_ms"
    )]
    pub removal_timeout_ms: u64,
    /// A flow of a removed backend counts as ended after this long without a
    /// packet from the client (2 s once the client sent FIN or RST).
    #[serde(
        default = "default_flow_idle_timeout_ms",
        deserialize_with = "de_idle_ms"
    )]
    pub flow_idle_timeout_ms: u64,
}

/// `xdp_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeCfg {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (SKB) mode.
    Generic,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Listen address for the stats page, JSON API and metrics.
    #[serde(default = "default_listen")]
    pub listen: Spanned<SocketAddr>,
    /// File holding the token that write calls must carry when not on
    /// loopback (at least [`MIN_TOKEN_LEN`] bytes, surrounding white space
    /// ignored).
    #[serde(default)]
    pub token_file: Option<Spanned<PathBuf>>,
}

/// Shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_file: None,
        }
    }
}

impl Api {
    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        *self.listen.get_ref()
    }
}

/// `[vrrp]`, or one `[[vrrp_instance]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vrrp {
    /// Instance name; required in `[[vrrp_instance]]`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Interface of the instance; default: `[node] interface`.
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    /// VIPs (by name) the instance owns; required in `[[vrrp_instance]]`
    /// (a `[vrrp]` section owns every VIP).
    #[serde(default)]
    pub vips: Option<Spanned<Vec<Spanned<String>>>>,
    /// 2 (RFC 3768) or 3 (RFC 5798).
    #[serde(default = "default_vrrp_version", deserialize_with = "de_vrrp_version")]
    pub version: u8,
    /// Virtual router id, 1–255.
    #[serde(deserialize_with = "de_router_id")]
    pub router_id: u8,
    /// Priority, 1–255 (255: address owner).
    #[serde(default = "default_priority", deserialize_with = "de_priority")]
    pub priority: u8,
    /// Advertisement interval.
    #[serde(default = "default_advert_ms", deserialize_with = "de_advert_ms")]
    pub advert_interval_ms: u32,
    /// A higher-priority backup takes over from a lower-priority master.
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// Delay before preempting.
    #[serde(default)]
    pub preempt_delay_ms: u32,
    /// Unicast peers, of the instance's family; empty: multicast to
    /// 224.0.0.18 (IPv4) or ff02::12 (IPv6).
    #[serde(default)]
    pub unicast_peers: Vec<Spanned<IpAddr>>,
    /// Interfaces whose link going down puts this node in FAULT.
    #[serde(default)]
    pub track_interfaces: Vec<String>,
    /// Hook run with MASTER, BACKUP or FAULT.
    #[serde(default)]
    pub notify: Option<PathBuf>,
    /// VRRPv2 simple password (auth type 1), at most 8 bytes.
    #[serde(default)]
    pub auth_pass: Option<Spanned<String>>,
    /// Gratuitous ARPs sent on becoming master (per address).
    #[serde(default = "default_garp_count", deserialize_with = "de_garp_count")]
    pub garp_count: u32,
    /// Spacing of those gratuitous ARPs (Linux ignores a second update of a
    /// neighbour within 1 s, so a burst should span more than that).
    #[serde(
        default = "default_garp_interval_ms",
        deserialize_with = "de_garp_interval"
    )]
    pub garp_interval_ms: u32,
    /// Interval at which a master repeats gratuitous ARP (0: never; else at
    /// least 1000).
    #[serde(default, deserialize_with = "de_garp_refresh")]
    pub garp_refresh_ms: u32,
    /// Source address of adverts; default: the interface's first address
    /// (IPv6: its link-local address, which RFC 5798 requires).
    #[serde(default)]
    pub source: Option<Spanned<IpAddr>>,
    /// Put the node in FAULT when its XDP program is not attached.
    #[serde(default = "default_true")]
    pub track_dataplane: bool,
    /// Added to the priority while some VIP has no healthy backend
    /// (negative lowers it; 0 puts the node in FAULT instead).
    #[serde(
        default = "default_track_backends_weight",
        deserialize_with = "de_script_weight"
    )]
    pub track_backends_weight: i32,
    /// keepalived-style tracked scripts.
    #[serde(default, rename = "track_script")]
    pub track_scripts: Vec<Spanned<TrackScript>>,
}

/// `[[vrrp.track_script]]`: a command run periodically; its exit status
/// (0: success) moves the priority or puts the node in FAULT.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// Name (logs, status).
    pub name: String,
    /// Command line, run with `/bin/sh -c`.
    pub script: String,
    /// Time between runs.
    #[serde(default = "default_interval_ms", deserialize_with = "de_positive_ms32")]
    pub interval_ms: u32,
    /// A run taking longer counts as a failure (and is killed with its
    /// process group); must be below `interval_ms`. Default: 1000, or half
    /// the interval when that is shorter.
    #[serde(default, deserialize_with = "de_opt_positive_ms32")]
    pub timeout_ms: Option<u32>,
    /// Successes in a row that make it succeed.
    #[serde(default = "default_one", deserialize_with = "de_count")]
    pub rise: u32,
    /// Failures in a row that make it fail.
    #[serde(default = "default_one", deserialize_with = "de_count")]
    pub fall: u32,
    /// 0: failure means FAULT; positive: added while succeeding; negative:
    /// subtracted while failing (keepalived's `weight`).
    #[serde(default, deserialize_with = "de_script_weight")]
    pub weight: i32,
}

impl TrackScript {
    /// The time limit of one run.
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
            .unwrap_or_else(|| default_timeout_ms().min(self.interval_ms / 2).max(1))
    }
}

/// `[[vip]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Unique name.
    pub name: Spanned<String>,
    /// The virtual address, IPv4 or IPv6.
    pub address: Spanned<IpAddr>,
    /// Service port.
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Forwarding mode.
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Mode,
    /// The UDP port backends decapsulate GUE on (`mode = "gue"` only).
    #[serde(default)]
    pub gue_port: Option<Spanned<u16>>,
    /// Maglev table size, a prime.
    #[serde(default = "default_table_size", deserialize_with = "de_table_size")]
    pub maglev_table_size: u32,
    /// What places a flow on a backend.
    #[serde(default)]
    pub hash: Hash,
    /// Health check; absent: `none`.
    #[serde(default)]
    pub health: Health,
    /// Backends.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// `hash`: what Maglev hashes to place a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hash {
    /// Source and destination address and port, protocol: connections
    /// spread independently.
    #[default]
    FiveTuple,
    /// The same without the source port: every connection of one client
    /// address to the service goes to one backend (HAProxy's
    /// `balance source`, LVS persistence), on every node.
    SourceIp,
}

/// `protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => ha_common::IPPROTO_TCP,
            Protocol::Udp => ha_common::IPPROTO_UDP,
        }
    }
}

/// `mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Layer-2 direct server return.
    #[default]
    Dsr,
    /// IP in IP to the backend's address (routed backends).
    Ipip,
    /// GUE (IP in UDP) to the backend's address and `gue_port`.
    Gue,
    /// Full NAT (not implemented yet: rejected when parsed).
    Nat,
}

impl Mode {
    /// Encapsulates to the backend (reaches routed backends).
    pub fn tunnels(self) -> bool {
        matches!(self, Mode::Ipip | Mode::Gue)
    }
}

/// `[vip.health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Check kind.
    #[serde(default)]
    pub kind: HealthKind,
    /// HTTP path.
    #[serde(default = "default_path")]
    pub path: String,
    /// Expected HTTP status.
    #[serde(default = "default_status", deserialize_with = "de_status")]
    pub expect_status: u16,
    /// HTTP Host header; default: the backend address.
    #[serde(default)]
    pub host: Option<String>,
    /// Port to check; default: the VIP port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Time between checks of one backend.
    #[serde(default = "default_interval_ms", deserialize_with = "de_positive_ms32")]
    pub interval_ms: u32,
    /// Time a check may take.
    #[serde(default = "default_timeout_ms", deserialize_with = "de_positive_ms32")]
    pub timeout_ms: u32,
    /// Consecutive successes that bring a backend up.
    #[serde(default = "default_rise", deserialize_with = "de_count")]
    pub rise: u32,
    /// Consecutive failures that take a backend down.
    #[serde(default = "default_fall", deserialize_with = "de_count")]
    pub fall: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            kind: HealthKind::None,
            path: default_path(),
            expect_status: default_status(),
            host: None,
            port: None,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

/// `kind` of a health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// No check: backends are always up.
    #[default]
    None,
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http,
}

/// `[[vip.backend]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique within the VIP.
    pub name: Spanned<String>,
    /// Backend address on the node's segment (DSR), of the VIP's family.
    pub address: Spanned<IpAddr>,
    /// Maglev weight; 0 drains the backend.
    #[serde(default = "default_weight", deserialize_with = "de_weight")]
    pub weight: u32,
}

/// Largest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1000;

fn default_true() -> bool {
    true
}
fn default_listen() -> Spanned<SocketAddr> {
    Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 8480)))
}
fn default_flow_table_size() -> u32 {
    ha_common::DEFAULT_FLOW_TABLE_SIZE
}
fn default_neigh_refresh_ms() -> u64 {
    5000
}
fn default_removal_timeout_ms() -> u64 {
    300_000
}
fn default_flow_idle_timeout_ms() -> u64 {
    60_000
}
fn default_vrrp_version() -> u8 {
    3
}
fn default_priority() -> u8 {
    100
}
fn default_advert_ms() -> u32 {
    1000
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_interval_ms() -> u32 {
    300
}
fn default_track_backends_weight() -> i32 {
    -100
}
fn default_one() -> u32 {
    1
}
fn default_table_size() -> u32 {
    ha_common::DEFAULT_RING_SIZE
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}
fn default_interval_ms() -> u32 {
    2000
}
fn default_timeout_ms() -> u32 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_weight() -> u32 {
    1
}

/// Defines a deserializer for an integer that must lie in a range.
macro_rules! bounded {
    ($name:ident, $t:ty, $min:expr, $max:expr, $what:literal) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
            let v = i64::deserialize(d)?;
            if v < $min as i64 || v > $max as i64 {
                return Err(serde::de::Error::custom(format!(
                    "{} must be between {} and {}, got {v}",
                    $what, $min, $max
                )));
            }
            Ok(v as $t)
        }
    };
}

bounded!(de_vrrp_version, u8, 2, 3, "VRRP version");
bounded!(de_router_id, u8, 1, 255, "router_id");
bounded!(de_priority, u8, 1, 255, "priority");
fn de_advert_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(10..=40_950).contains(&v) || v % 10 != 0 {
        return Err(serde::de::Error::custom(format!(
            "advert_interval_ms must be a multiple of 10 between 10 and 40950 \
             (VRRP counts centiseconds), got {v}"
        )));
    }
    Ok(v as u32)
}
bounded!(de_port, u16, 1, 65535, "port");
bounded!(de_status, u16, 100, 599, "expect_status");
bounded!(de_positive_ms32, u32, 1, 3_600_000, "a time in ms");
fn de_opt_positive_ms32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_positive_ms32(d).map(Some)
}
bounded!(de_positive_ms, u64, 1, 3_600_000, "a time in ms");
bounded!(de_count, u32, 1, 1000, "rise/fall");
bounded!(de_weight, u32, 0, MAX_WEIGHT, "weight");
bounded!(de_script_weight, i32, -254, 254, "weight");
bounded!(de_garp_count, u32, 1, 100, "garp_count");
bounded!(de_garp_interval, u32, 10, 10_000, "garp_interval_ms");
bounded!(de_removal_ms, u64, 0, 86_400_000, "removal_timeout_ms");
bounded!(de_idle_ms, u64, 1000, 86_400_000, "flow_idle_timeout_ms");
fn default_bgp_table() -> u32 {
    4077
}
fn default_bgp_protocol() -> u8 {
    77
}
fn default_bgp_device() -> Spanned<String> {
    Spanned::new(0..0, "halb-announce".into())
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/halb")
}
fn default_hold_down_ms() -> u64 {
    3000
}
fn default_grace_ms() -> u64 {
    5000
}
fn default_bfd_interval() -> u32 {
    50
}
fn default_bfd_multiplier() -> u8 {
    3
}
fn de_asn<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=4_294_967_294).contains(&v) || v == 23456 || v == 65535 {
        return Err(serde::de::Error::custom(format!(
            "an AS number must be between 1 and 4294967294 and not 23456 (AS_TRANS) \
             or 65535 (reserved), got {v}"
        )));
    }
    Ok(v as u32)
}
fn de_bgp_table<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=u32::MAX as i64).contains(&v) || (253..=255).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "table must be a routing table id between 1 and 4294967295 other than \
             253-255 (default, main, local), got {v}"
        )));
    }
    Ok(v as u32)
}
fn de_bgp_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = i64::deserialize(d)?;
    if !(5..=254).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "route_protocol must be between 5 and 254 (0-4 are the kernel's own), got {v}"
        )));
    }
    // iproute2's rt_protos: a daemon treats routes of its own number as its
    // own (BIRD removes kernel routes of protocol 12 it did not export).
    const TAKEN: &[(i64, &str)] = &[
        (8, "gated"),
        (9, "ra"),
        (10, "mrt"),
        (11, "zebra (FRR)"),
        (12, "bird"),
        (13, "dnrouted"),
        (14, "xorp"),
        (15, "ntk"),
        (16, "dhcp"),
        (18, "keepalived"),
        (42, "babel"),
        (99, "openr"),
        (186, "bgp (FRR)"),
        (187, "isis (FRR)"),
        (188, "ospf (FRR)"),
        (189, "rip (FRR)"),
        (192, "eigrp (FRR)"),
    ];
    if let Some((_, who)) = TAKEN.iter().find(|(n, _)| *n == v) {
        return Err(serde::de::Error::custom(format!(
            "route_protocol {v} is {who}'s: pick a number no routing daemon uses (default 77)"
        )));
    }
    Ok(v as u8)
}
bounded!(de_hold_down, u64, 0, 3_600_000, "hold_down_ms");
bounded!(de_grace, u64, 0, 60_000, "shutdown_grace_ms");
bounded!(de_bfd_interval, u32, 10, 10_000, "bfd interval_ms");
bounded!(de_bfd_mult, u8, 1, 255, "bfd multiplier");

fn de_garp_refresh<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    if v != 0 && !(1000..=3_600_000).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "garp_refresh_ms must be 0 (never) or between 1000 and 3600000, got {v}"
        )));
    }
    Ok(v as u32)
}
bounded!(
    de_flow_table,
    u32,
    1024,
    16 * 1024 * 1024,
    "flow_table_size"
);

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    match Mode::deserialize(d)? {
        Mode::Nat => Err(serde::de::Error::custom(
            "mode \"nat\" is not implemented yet; use \"dsr\", \"ipip\" or \"gue\"",
        )),
        m => Ok(m),
    }
}

fn de_table_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    let max = ha_common::RING_MAX as i64;
    if !(7..=max).contains(&v) || !is_prime(v as u64) {
        return Err(serde::de::Error::custom(format!(
            "maglev_table_size must be a prime between 7 and {max}, got {v}"
        )));
    }
    Ok(v as u32)
}

/// Trial division; table sizes are small.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}
