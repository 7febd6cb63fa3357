//! What the agent knows about each backend beyond the config: its health
//! (rise/fall), the last check, and the operator's overrides (drain,
//! weight); the backends a reload removed that still finish their flows
//! (graceful removal); how a reload carries all that over; and the desired
//! data-plane state that follows from it all. Pure logic, unit-tested.
//!
//! Graceful removal: a backend that a reload removes from a VIP that stays
//! gets no new flows at once (weight 0, like a drain) but stays usable for
//! the flows it has, until none of them is live or `removal_timeout`
//! passes; then it is released. What "live" means is the caller's (the flow
//! table census: a packet within the idle timeout, 2 s once the client sent
//! FIN or RST). Put back before that, it keeps its flows (same address,
//! same slot). A backend that is down, has no MAC, or whose VIP is removed
//! or changes its address, port or protocol, is released at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::dataplane::Service;

use crate::config::{Config, Hash, Health, HealthKind, Mode, Vip};
use crate::dataplane::{BackendSpec, Encap, VipSpec};

use super::neighbours::{Reach, Wanted};
use crate::health::check::{Outcome, Probe};
use crate::health::monitor::Target;
use crate::health::RiseFall;

/// (VIP name, backend name).
pub type BackendRef = (String, String);

/// The operator's say over a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admin {
    /// Drained: weight 0 whatever the config says (existing flows stay).
    pub drained: bool,
    /// Weight set at run time, replacing the config's.
    pub weight: Option<u32>,
}

/// A backend's run-time state.
#[derive(Debug, Clone)]
pub struct BackendState {
    /// Health; None when the VIP has no health check.
    pub health: Option<RiseFall>,
    /// The last check's outcome, and when it came.
    pub last: Option<(Outcome, SystemTime)>,
    /// When health last changed.
    pub changed: Option<SystemTime>,
    /// Operator overrides.
    pub admin: Admin,
}

impl BackendState {
    fn new(h: &Health) -> Self {
        Self {
            health: (h.kind != HealthKind::None).then(|| RiseFall::unknown(h.rise, h.fall)),
            last: None,
            changed: None,
            admin: Admin::default(),
        }
    }

    /// Down, and for less than `settle` (see [`Runtime::specs_at`]).
    pub fn settling(&self, now: SystemTime, settle: Duration) -> bool {
        !self.healthy()
            && self
                .changed
                .is_some_and(|c| now.duration_since(c).is_ok_and(|d| d < settle))
    }

    /// Healthy (always, without a check).
    pub fn healthy(&self) -> bool {
        self.health.as_ref().is_none_or(RiseFall::is_up)
    }

    /// Health as shown: "up", "down", "checking" (no result yet) or "no-check".
    pub fn health_name(&self) -> &'static str {
        match &self.health {
            None => "no-check",
            Some(h) if !h.is_known() => "checking",
            Some(h) if h.is_up() => "up",
            Some(_) => "down",
        }
    }
}

/// What a reload changes, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// VIPs new in the config.
    pub vips_added: Vec<String>,
    /// VIPs gone from it.
    pub vips_removed: Vec<String>,
    /// VIPs whose service (address, port, protocol, table size) changed.
    pub vips_changed: Vec<String>,
    /// VIPs whose health check changed.
    pub health_changed: Vec<String>,
    /// Backends new in the config.
    pub backends_added: Vec<BackendRef>,
    /// Backends gone from it.
    pub backends_removed: Vec<BackendRef>,
    /// Backends whose address or weight changed.
    pub backends_changed: Vec<BackendRef>,
}

impl Diff {
    /// Between two configs.
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut d = Diff::default();
        let old_vips: BTreeMap<&str, &Vip> =
            old.vips().map(|v| (v.name.get_ref().as_str(), v)).collect();
        let new_vips: BTreeMap<&str, &Vip> =
            new.vips().map(|v| (v.name.get_ref().as_str(), v)).collect();
        for (name, nv) in &new_vips {
            let Some(ov) = old_vips.get(name) else {
                d.vips_added.push(name.to_string());
                d.backends_added.extend(
                    nv.backends
                        .iter()
                        .map(|b| (name.to_string(), b.name.get_ref().clone())),
                );
                continue;
            };
            if (
                *ov.address.get_ref(),
                ov.port,
                ov.protocol,
                ov.maglev_table_size,
                ov.hash,
            ) != (
                *nv.address.get_ref(),
                nv.port,
                nv.protocol,
                nv.maglev_table_size,
                nv.hash,
            ) {
                d.vips_changed.push(name.to_string());
            }
            if !same_health(&ov.health, &nv.health) {
                d.health_changed.push(name.to_string());
            }
            let ob: BTreeMap<&str, (IpAddr, u32)> = ov
                .backends
                .iter()
                .map(|b| (b.name.get_ref().as_str(), (*b.address.get_ref(), b.weight)))
                .collect();
            let nb: BTreeMap<&str, (IpAddr, u32)> = nv
                .backends
                .iter()
                .map(|b| (b.name.get_ref().as_str(), (*b.address.get_ref(), b.weight)))
                .collect();
            for (b, v) in &nb {
                match ob.get(b) {
                    None => d.backends_added.push((name.to_string(), b.to_string())),
                    Some(o) if o != v => d.backends_changed.push((name.to_string(), b.to_string())),
                    Some(_) => {}
                }
            }
            for b in ob.keys().filter(|b| !nb.contains_key(*b)) {
                d.backends_removed.push((name.to_string(), b.to_string()));
            }
        }
        for (name, ov) in &old_vips {
            if !new_vips.contains_key(name) {
                d.vips_removed.push(name.to_string());
                d.backends_removed.extend(
                    ov.backends
                        .iter()
                        .map(|b| (name.to_string(), b.name.get_ref().clone())),
                );
            }
        }
        d
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let list = |what: &str, v: &[String], parts: &mut Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{what} {}", v.join(",")));
            }
        };
        let pairs = |v: &[BackendRef]| {
            v.iter()
                .map(|(a, b)| format!("{a}/{b}"))
                .collect::<Vec<_>>()
        };
        list("vips added", &self.vips_added, &mut parts);
        list("vips removed", &self.vips_removed, &mut parts);
        list("vips changed", &self.vips_changed, &mut parts);
        list("health changed", &self.health_changed, &mut parts);
        list("backends added", &pairs(&self.backends_added), &mut parts);
        list(
            "backends removed",
            &pairs(&self.backends_removed),
            &mut parts,
        );
        list(
            "backends changed",
            &pairs(&self.backends_changed),
            &mut parts,
        );
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join("; ")
        }
    }
}

fn same_health(a: &Health, b: &Health) -> bool {
    (
        a.kind,
        &a.path,
        a.expect_status,
        &a.host,
        a.port,
        a.interval_ms,
        a.timeout_ms,
        a.rise,
        a.fall,
    ) == (
        b.kind,
        &b.path,
        b.expect_status,
        &b.host,
        b.port,
        b.interval_ms,
        b.timeout_ms,
        b.rise,
        b.fall,
    )
}

/// Why an operator command could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No such VIP.
    #[error("no vip named {0:?}")]
    NoVip(String),
    /// No such backend in that VIP.
    #[error("vip {0:?} has no backend named {1:?}")]
    NoBackend(String, String),
    /// A weight out of range.
    #[error("weight must be between 0 and {max}, got {got}")]
    BadWeight {
        /// Largest weight.
        max: u32,
        /// What was asked.
        got: u32,
    },
}

/// A backend a reload removed, finishing its flows. It is known by its
/// name, or `name@address` when the new config gives that name another
/// address (an address change is a removal of the old one).
#[derive(Debug, Clone)]
pub struct Removing {
    /// Its name in the old config.
    pub name: String,
    /// The service it served.
    pub service: Service,
    /// Its address.
    pub addr: IpAddr,
    /// When the reload removed it.
    pub since: SystemTime,
    /// The same, on the monotonic clock.
    pub started: Instant,
    /// When it goes whatever its flows do.
    pub deadline: Instant,
    /// Live flows at the last count after its removal (None: not counted yet).
    pub live_flows: Option<u64>,
    /// Its health, still checked: a removed backend that dies gives its
    /// flows up at once, like any down backend.
    pub state: BackendState,
}

/// Why a removing backend was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Its last flow ended.
    FlowsEnded,
    /// `removal_timeout` passed; this many flows were still live.
    TimedOut(u64),
    /// Its health check failed: its flows move to the others.
    Down,
}

/// Every backend's run-time state.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    states: BTreeMap<BackendRef, BackendState>,
    removing: BTreeMap<BackendRef, Removing>,
}

impl Runtime {
    /// Fresh state for `cfg`.
    pub fn new(cfg: &Config) -> Self {
        let mut r = Runtime::default();
        for v in cfg.vips() {
            for b in &v.backends {
                r.states.insert(
                    (v.name.get_ref().clone(), b.name.get_ref().clone()),
                    BackendState::new(&v.health),
                );
            }
        }
        r
    }

    /// Carries state over a reload: what the diff did not touch keeps its
    /// health and overrides; a changed backend starts afresh (its overrides
    /// were about the old one); a changed health check restarts health.
    /// Backends removed from a VIP that stays start their graceful removal
    /// (`timeout` zero: none), when they were carrying traffic.
    pub fn reload(
        &mut self,
        old: &Config,
        new: &Config,
        diff: &Diff,
        reach: &Reach,
        now: Instant,
        timeout: Duration,
    ) {
        let service = |v: &Vip| Service::new(*v.address.get_ref(), v.port, v.protocol.number());
        let new_services: BTreeMap<&str, (Service, BTreeSet<IpAddr>)> = new
            .vips()
            .map(|v| {
                (
                    v.name.get_ref().as_str(),
                    (
                        service(v),
                        v.backends.iter().map(|b| *b.address.get_ref()).collect(),
                    ),
                )
            })
            .collect();
        // Earlier removals: gone with their service, or back in the config.
        self.removing.retain(|(vip, _), r| {
            new_services
                .get(vip.as_str())
                .is_some_and(|(key, addrs)| *key == r.service && !addrs.contains(&r.addr))
        });
        if !timeout.is_zero() {
            for ov in old.vips() {
                let vip = ov.name.get_ref();
                let Some((key, addrs)) = new_services.get(vip.as_str()) else {
                    continue;
                };
                if service(ov) != *key {
                    continue;
                }
                let new_names: BTreeSet<&str> = new
                    .vips()
                    .find(|v| v.name.get_ref() == vip)
                    .map(|v| {
                        v.backends
                            .iter()
                            .map(|b| b.name.get_ref().as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                // Every old address the new config no longer has: removed
                // backends, and the old address of one that moved.
                for ob in &ov.backends {
                    let (name, addr) = (ob.name.get_ref(), *ob.address.get_ref());
                    if addrs.contains(&addr) {
                        continue;
                    }
                    let Some(state) = self.get(vip, name).cloned() else {
                        continue;
                    };
                    if !state.healthy() || !reach.reachable(ov.mode, addr) {
                        continue;
                    }
                    let label = if new_names.contains(name.as_str()) {
                        format!("{name}@{addr}")
                    } else {
                        name.clone()
                    };
                    self.removing.insert(
                        (vip.clone(), label),
                        Removing {
                            name: name.clone(),
                            service: *key,
                            addr,
                            since: SystemTime::now(),
                            started: now,
                            deadline: now + timeout,
                            live_flows: None,
                            state: BackendState {
                                admin: Admin::default(),
                                ..state
                            },
                        },
                    );
                }
            }
        }
        let changed: BTreeSet<&BackendRef> = diff.backends_changed.iter().collect();
        let reset_vip: BTreeSet<&String> = diff
            .vips_changed
            .iter()
            .chain(&diff.health_changed)
            .collect();
        let mut next = BTreeMap::new();
        for v in new.vips() {
            let vname = v.name.get_ref();
            for b in &v.backends {
                let key = (vname.clone(), b.name.get_ref().clone());
                let fresh = BackendState::new(&v.health);
                let state = match self.states.remove(&key) {
                    Some(old) if !changed.contains(&key) && !reset_vip.contains(vname) => old,
                    Some(old) if !changed.contains(&key) => BackendState {
                        admin: old.admin,
                        ..fresh
                    },
                    _ => fresh,
                };
                next.insert(key, state);
            }
        }
        self.states = next;
    }

    /// Backends finishing their flows, by (VIP, backend) name.
    pub fn removing(&self) -> &BTreeMap<BackendRef, Removing> {
        &self.removing
    }

    /// Takes a flow count made at `counted_at`: `live(service, addr)` is the
    /// number of live flows of that backend. Releases the backends whose
    /// flows all ended (by a count made after their removal) or whose
    /// deadline passed, and returns them.
    pub fn settle(
        &mut self,
        counted_at: Instant,
        now: Instant,
        mut live: impl FnMut(&Service, IpAddr) -> Option<u64>,
        held: impl Fn(&Service, IpAddr) -> bool,
    ) -> Vec<(BackendRef, Removing, Released)> {
        let mut out = Vec::new();
        let keys: Vec<BackendRef> = self.removing.keys().cloned().collect();
        for key in keys {
            let Some(r) = self.removing.get_mut(&key) else {
                continue;
            };
            if counted_at >= r.started {
                r.live_flows = Some(live(&r.service, r.addr).unwrap_or(0));
            }
            let why = match r.live_flows {
                _ if !r.state.healthy() => Some(Released::Down),
                Some(0) if !held(&r.service, r.addr) => Some(Released::FlowsEnded),
                n if now >= r.deadline => Some(Released::TimedOut(n.unwrap_or(0))),
                _ => None,
            };
            if let Some(why) = why {
                if let Some(r) = self.removing.remove(&key) {
                    out.push((key, r, why));
                }
            }
        }
        out
    }

    /// A backend's state.
    pub fn get(&self, vip: &str, backend: &str) -> Option<&BackendState> {
        self.states.get(&(vip.to_string(), backend.to_string()))
    }

    /// Records a check outcome (of a configured or a removing backend);
    /// returns the new health when it changed.
    pub fn record(
        &mut self,
        vip: &str,
        backend: &str,
        outcome: Outcome,
        at: SystemTime,
    ) -> Option<bool> {
        let key = (vip.to_string(), backend.to_string());
        let st = match self.states.get_mut(&key) {
            Some(st) => st,
            None => &mut self.removing.get_mut(&key)?.state,
        };
        let h = st.health.as_mut()?;
        let change = h.record(outcome.ok);
        st.last = Some((outcome, at));
        if change.is_some() {
            st.changed = Some(at);
        }
        change
    }

    /// Applies an operator command.
    pub fn admin(
        &mut self,
        cfg: &Config,
        vip: &str,
        backend: &str,
        f: impl FnOnce(&mut Admin),
    ) -> Result<Admin, AdminError> {
        if !cfg.vips().any(|v| v.name.get_ref() == vip) {
            return Err(AdminError::NoVip(vip.into()));
        }
        let st = self
            .states
            .get_mut(&(vip.to_string(), backend.to_string()))
            .ok_or_else(|| AdminError::NoBackend(vip.into(), backend.into()))?;
        f(&mut st.admin);
        Ok(st.admin)
    }

    /// Effective weight of a backend whose configured weight is `configured`.
    pub fn weight(&self, vip: &str, backend: &str, configured: u32) -> u32 {
        match self.get(vip, backend) {
            Some(st) if st.admin.drained => 0,
            Some(st) => st.admin.weight.unwrap_or(configured),
            None => configured,
        }
    }

    /// When the next settling backend settles (BGP mode; see
    /// [`Runtime::specs_at`]): the data plane must be written again then.
    pub fn next_settle(&self, cfg: &Config, now: SystemTime) -> Option<SystemTime> {
        cfg.bgp.as_ref()?;
        cfg.vips()
            .flat_map(|v| {
                let settle = settle_time(v);
                v.backends.iter().filter_map(move |b| {
                    let st = self.get(v.name.get_ref(), b.name.get_ref())?;
                    st.settling(now, settle)
                        .then(|| st.changed.map(|c| c + settle))
                        .flatten()
                })
            })
            .min()
    }

    /// Per VIP address, the services that cannot take a new connection, and
    /// those still waiting for their first checks (BGP mode's gate). A
    /// backend serves when its weight is above 0, its MAC is known (else the
    /// data plane leaves it out) and its check passed; a service with none
    /// that serves but one not checked yet is pending (evidence, not hope,
    /// announces an address; a reload that resets a check withdraws none).
    pub fn serving_by_address(
        &self,
        cfg: &Config,
        reach: &Reach,
    ) -> (BTreeMap<IpAddr, Vec<String>>, BTreeMap<IpAddr, Vec<String>>) {
        let mut down: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        let mut pending: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for v in cfg.vips() {
            let vn = v.name.get_ref();
            let usable = |b: &&crate::config::Backend| {
                self.weight(vn, b.name.get_ref(), b.weight) > 0
                    && reach.reachable(v.mode, *b.address.get_ref())
            };
            let health = |b: &crate::config::Backend| {
                self.get(vn, b.name.get_ref())
                    .and_then(|s| s.health.as_ref())
                    .map(|h| (h.is_known(), h.is_up()))
            };
            let serves = v
                .backends
                .iter()
                .filter(usable)
                .any(|b| health(b).is_none_or(|(known, up)| known && up));
            let unchecked = v
                .backends
                .iter()
                .filter(usable)
                .any(|b| health(b).is_some_and(|(known, _)| !known));
            down.entry(*v.address.get_ref()).or_default();
            if !serves && unchecked {
                pending
                    .entry(*v.address.get_ref())
                    .or_default()
                    .push(vn.clone());
            } else if !serves {
                down.entry(*v.address.get_ref())
                    .or_default()
                    .push(vn.clone());
            }
        }
        (down, pending)
    }

    /// Names of VIPs that have backends but none healthy.
    pub fn vips_without_healthy(&self, cfg: &Config) -> Vec<String> {
        cfg.vips()
            .filter(|v| !v.backends.is_empty())
            .filter(|v| {
                !v.backends.iter().any(|b| {
                    self.get(v.name.get_ref(), b.name.get_ref())
                        .is_none_or(BackendState::healthy)
                })
            })
            .map(|v| v.name.get_ref().clone())
            .collect()
    }

    /// The desired data-plane state: the config's backends, and the
    /// removing ones with weight 0 (usable for their flows, no new ones).
    /// In the BGP mode a VIP without a healthy backend fails open.
    pub fn specs(&self, cfg: &Config, reach: &Reach) -> Vec<VipSpec> {
        self.specs_at(cfg, reach, SystemTime::now())
    }

    /// [`Runtime::specs`] at `now`. In the BGP mode a backend that went
    /// down stays in the data plane for one check interval and timeout (it settles):
    /// when this node's own view fails (its path or its probes), every
    /// backend goes down within that interval, the VIP is withdrawn and
    /// fails open before any partial change reaches the data plane, so a
    /// flow that moves to another node meanwhile finds the same backend
    /// there. A backend that alone went down leaves after the interval.
    pub fn specs_at(&self, cfg: &Config, reach: &Reach, now: SystemTime) -> Vec<VipSpec> {
        cfg.vips()
            .map(|v| {
                let key = Service::new(*v.address.get_ref(), v.port, v.protocol.number());
                let settle = settle_time(v);
                let hop = |addr: &IpAddr| reach.hop(v.mode, *addr);
                let mut backends: Vec<BackendSpec> = v
                    .backends
                    .iter()
                    .map(|b| {
                        let addr = *b.address.get_ref();
                        let (vn, bn) = (v.name.get_ref(), b.name.get_ref());
                        let st = self.get(vn, bn);
                        let settling =
                            cfg.bgp.is_some() && st.is_some_and(|s| s.settling(now, settle));
                        let (mac, tunnel) = hop(&addr);
                        BackendSpec {
                            addr,
                            mac,
                            tunnel,
                            weight: self.weight(vn, bn, b.weight),
                            healthy: settling || st.is_none_or(BackendState::healthy),
                        }
                    })
                    .collect();
                // Scale-out: a VIP with no healthy backend is withdrawn at
                // once, and what still reaches this node while the router
                // converges goes to its backends as if healthy (fail open):
                // a node-local failure (its path to the backends, its
                // probes) is the likelier cause, and other nodes serve.
                if cfg.bgp.is_some() && !backends.iter().any(|b| b.healthy && b.weight > 0) {
                    // Only to the backends that served until moments ago
                    // (the other nodes' tables hold the same ones); one
                    // that died long ago stays out.
                    for (b, cb) in backends.iter_mut().zip(&v.backends) {
                        let recent = self
                            .get(v.name.get_ref(), cb.name.get_ref())
                            .is_some_and(|s| s.settling(now, settle + FAIL_OPEN_WINDOW));
                        b.healthy |= recent;
                    }
                }
                for ((vn, _), r) in &self.removing {
                    if vn == v.name.get_ref() && r.service == key {
                        let (mac, tunnel) = hop(&r.addr);
                        backends.push(BackendSpec {
                            addr: r.addr,
                            mac,
                            tunnel,
                            weight: 0,
                            healthy: r.state.healthy(),
                        });
                    }
                }
                VipSpec {
                    service: key,
                    table_size: v.maglev_table_size,
                    source_hash: v.hash == Hash::SourceIp,
                    encap: match (v.mode, v.gue_port.as_ref()) {
                        (Mode::Ipip, _) => Encap::Ipip,
                        (Mode::Gue, Some(p)) => Encap::Gue { port: *p.get_ref() },
                        _ => Encap::Dsr,
                    },
                    backends,
                }
            })
            .collect()
    }
}

/// How long a backend that went down stays in the data plane in the BGP
/// mode: one check interval and its timeout (see [`Runtime::specs_at`]).
fn settle_time(v: &Vip) -> Duration {
    Duration::from_millis(v.health.interval_ms as u64 + v.health.timeout_ms as u64)
}

/// How long after its settle time a backend that went down is still one
/// to fail open to (the router converges within this).
pub const FAIL_OPEN_WINDOW: Duration = Duration::from_secs(5);

/// The probes `cfg` asks for, and those of the backends still removing.
/// The probes of an encapsulating VIP's backends go through the tunnel:
/// each gets its own mark (`dataplane::hc::mark`) and the encapsulation
/// of its VIP.
pub fn targets(cfg: &Config, rt: &Runtime) -> Vec<Target> {
    let mut out = Vec::new();
    let mut tunnelled = 0u32;
    for v in cfg.vips() {
        let h = &v.health;
        let probe = match h.kind {
            HealthKind::None => continue,
            HealthKind::Tcp => Probe::Tcp,
            HealthKind::Http => Probe::Http {
                path: h.path.clone(),
                host: h.host.clone(),
                expect_status: h.expect_status,
            },
        };
        let port = h.port.unwrap_or(v.port);
        let encap = match (v.mode, v.gue_port.as_ref()) {
            (Mode::Ipip, _) => Some((ha_common::ENCAP_IPIP, 0)),
            (Mode::Gue, Some(p)) => Some((ha_common::ENCAP_GUE, *p.get_ref())),
            _ => None,
        };
        let mut target = |backend: &str, addr: IpAddr| {
            let tunnel = encap.map(|(kind, gue_port)| {
                let index = tunnelled;
                tunnelled += 1;
                let hc = ha_common::hc::HcTarget {
                    dst: crate::dataplane::service::addr_octets(addr),
                    encap: kind,
                    v6: addr.is_ipv6() as u8,
                    gue_port: gue_port.to_be(),
                };
                (crate::dataplane::hc::mark(index), hc)
            });
            Target {
                vip: v.name.get_ref().clone(),
                backend: backend.to_string(),
                addr: SocketAddr::new(addr, port),
                probe: probe.clone(),
                interval: Duration::from_millis(h.interval_ms as u64),
                timeout: Duration::from_millis(h.timeout_ms as u64),
                tunnel,
            }
        };
        for b in &v.backends {
            out.push(target(b.name.get_ref(), *b.address.get_ref()));
        }
        for ((vn, label), r) in &rt.removing {
            if vn == v.name.get_ref() {
                out.push(target(label, r.addr));
            }
        }
    }
    out
}

/// Every backend address in `cfg`, and of the removing backends, once:
/// those of DSR VIPs (on the link: their own MAC is wanted) and those of
/// encapsulating VIPs (routed: their route and next hop are wanted).
pub fn backend_addresses(cfg: &Config, rt: &Runtime) -> Wanted {
    let mut w = Wanted::default();
    let mode_of = |vip: &str| cfg.vips().find(|v| v.name.get_ref() == vip).map(|v| v.mode);
    let mut add = |tunnels: bool, a: IpAddr| {
        if tunnels {
            w.routed.push(a)
        } else {
            w.on_link.push(a)
        }
    };
    for v in cfg.vips() {
        for b in &v.backends {
            add(v.mode.tunnels(), *b.address.get_ref());
        }
    }
    for ((vip, _), r) in &rt.removing {
        add(mode_of(vip).is_some_and(|m| m.tunnels()), r.addr);
    }
    for l in [&mut w.on_link, &mut w.routed] {
        l.sort();
        l.dedup();
    }
    w
}

#[cfg(test)]
mod tests;
