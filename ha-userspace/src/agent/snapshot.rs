//! Builds the status document from the agent's state and the data plane's
//! counters, computing rates from one sample to the next (the data plane
//! only counts; rates are userspace's business).

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use ha_common::{Action, BackendCounter};

use super::Agent;
use crate::api::model::{
    BackendStatus, CheckStatus, DataplaneStatus, NodeStatus, RemovalStatus, Status,
    SyncGroupStatus, VipStatus, VrrpStatus,
};
use crate::config::HealthKind;
use crate::dataplane::{Attached, Service};
use crate::vrrp::track::Effect;

/// Counter values from the previous sample, and what was derived from them.
pub struct Sampler {
    at: Option<Instant>,
    prev: HashMap<u32, BackendCounter>,
    prev_total: u64,
    rates: HashMap<u32, (f64, f64, f64)>,
    pps: f64,
}

impl Sampler {
    /// No sample yet.
    pub fn new() -> Self {
        Self {
            at: None,
            prev: HashMap::new(),
            prev_total: 0,
            rates: HashMap::new(),
            pps: 0.0,
        }
    }
}

fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / secs
    }
}

/// The status document now.
pub fn build(a: &mut Agent) -> Status {
    let now = Instant::now();
    let maps = a.dp.maps();
    let secs = a.sampler.at.map(|t| (now - t).as_secs_f64()).unwrap_or(0.0);

    // Data-plane counters.
    let stats = maps.stats().unwrap_or_default();
    let mut dataplane = DataplaneStatus::default();
    let mut total = 0;
    for (stat, c) in &stats {
        dataplane.reasons.insert(stat.name().into(), c.packets);
        dataplane.reason_bytes.insert(stat.name().into(), c.bytes);
        let action = match stat.action() {
            Action::Tx => "tx",
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Aborted => "aborted",
        };
        *dataplane.actions.entry(action.into()).or_default() += c.packets;
        total += c.packets;
    }
    if a.sampler.at.is_some() {
        a.sampler.pps = rate(total, a.sampler.prev_total, secs);
    }
    a.sampler.prev_total = total;
    dataplane.pps = a.sampler.pps;
    // Flows per backend come from the agent's flow census (every few
    // seconds, on a thread of its own).
    dataplane.flows = a.flows_total;
    dataplane.flow_capacity = maps.flow_sets() as u64 * ha_common::FLOW_WAYS as u64;
    for (stat, n) in maps.flow_stats().unwrap_or_default() {
        dataplane.flow_table.insert(stat.name().into(), n);
    }
    dataplane.changed_slots = a.changed_slots as u64;

    // Backends.
    let wall = SystemTime::now();
    let mono = Instant::now();
    let mut vips = Vec::new();
    let mut seen = HashMap::new();
    for v in a.cfg.vips() {
        let key = Service::new(*v.address.get_ref(), v.port, v.protocol.number());
        let mut backends = Vec::new();
        for b in &v.backends {
            let addr = *b.address.get_ref();
            let (vn, bn) = (v.name.get_ref(), b.name.get_ref());
            let st = a.runtime.get(vn, bn);
            let id = a.dp.backend_id(&key, addr);
            let c = id
                .and_then(|id| maps.backend_counter(id).ok())
                .unwrap_or_default();
            let (pps, bps, nfps) = match (id, a.sampler.prev.get(&id.unwrap_or(u32::MAX))) {
                (Some(id), Some(p)) if secs > 0.0 => {
                    let r = (
                        rate(c.packets, p.packets, secs),
                        rate(c.bytes, p.bytes, secs),
                        rate(c.new_flows, p.new_flows, secs),
                    );
                    a.sampler.rates.insert(id, r);
                    r
                }
                (Some(id), _) => a.sampler.rates.get(&id).copied().unwrap_or_default(),
                _ => (0.0, 0.0, 0.0),
            };
            if let Some(id) = id {
                seen.insert(id, c);
            }
            backends.push(BackendStatus {
                name: bn.clone(),
                address: addr.to_string(),
                mac: a.reach.hop(v.mode, addr).0.map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                health: st.map_or("no-check", |s| s.health_name()).into(),
                weight: a.runtime.weight(vn, bn, b.weight),
                config_weight: b.weight,
                drained: st.is_some_and(|s| s.admin.drained),
                removing: false,
                removal: None,
                weight_override: st.and_then(|s| s.admin.weight),
                last_check: st.and_then(|s| s.last.as_ref()).map(|(o, t)| CheckStatus {
                    ok: o.ok,
                    detail: o.detail.clone(),
                    latency_ms: o.latency.as_secs_f64() * 1000.0,
                    age_s: wall.duration_since(*t).unwrap_or_default().as_secs_f64(),
                }),
                since_change_s: st
                    .and_then(|s| s.changed)
                    .map(|t| wall.duration_since(t).unwrap_or_default().as_secs_f64()),
                flows: id.and_then(|id| a.flows.get(&id)).copied().unwrap_or(0),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                pps,
                bytes_per_s: bps,
                new_flows_per_s: nfps,
            });
        }
        for ((vn, bn), r) in a.runtime.removing() {
            if vn != v.name.get_ref() || r.service != key {
                continue;
            }
            let id = a.dp.backend_id(&key, r.addr);
            let c = id
                .and_then(|id| maps.backend_counter(id).ok())
                .unwrap_or_default();
            if let Some(id) = id {
                seen.insert(id, c);
            }
            backends.push(BackendStatus {
                name: bn.clone(),
                address: r.addr.to_string(),
                mac: a.reach.hop(v.mode, r.addr).0.map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                health: "removing".into(),
                weight: 0,
                config_weight: 0,
                drained: false,
                weight_override: None,
                removing: true,
                removal: Some(RemovalStatus {
                    since_s: wall
                        .duration_since(r.since)
                        .unwrap_or_default()
                        .as_secs_f64(),
                    deadline_in_s: r.deadline.saturating_duration_since(mono).as_secs_f64(),
                    live_flows: r.live_flows,
                }),
                last_check: r.state.last.as_ref().map(|(o, t)| CheckStatus {
                    ok: o.ok,
                    detail: o.detail.clone(),
                    latency_ms: o.latency.as_secs_f64() * 1000.0,
                    age_s: wall.duration_since(*t).unwrap_or_default().as_secs_f64(),
                }),
                since_change_s: None,
                flows: id.and_then(|id| a.flows.get(&id)).copied().unwrap_or(0),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                pps: 0.0,
                bytes_per_s: 0.0,
                new_flows_per_s: 0.0,
            });
        }
        vips.push(VipStatus {
            name: v.name.get_ref().clone(),
            address: v.address.get_ref().to_string(),
            port: v.port,
            protocol: format!("{:?}", v.protocol).to_lowercase(),
            mode: format!("{:?}", v.mode).to_lowercase(),
            hash: match v.hash {
                crate::config::Hash::FiveTuple => "five-tuple",
                crate::config::Hash::SourceIp => "source-ip",
            }
            .to_string(),
            check: match v.health.kind {
                HealthKind::None => "none",
                HealthKind::Tcp => "tcp",
                HealthKind::Http => "http",
            }
            .into(),
            healthy_backends: backends
                .iter()
                .filter(|b| !b.removing && b.health != "down")
                .count(),
            backends,
        });
    }
    a.sampler.prev = seen;
    a.sampler.at = Some(now);

    let instances: Vec<VrrpStatus> = a
        .elections
        .iter()
        .map(|e| {
            let v = &e.settings;
            let st = e.status.borrow().clone();
            VrrpStatus {
                name: e.name.clone(),
                interface: e.link.name.clone(),
                vips: e.vips.clone(),
                sync_group: a
                    .cfg
                    .sync_group_of(&e.name)
                    .map(|g| g.name.get_ref().clone()),
                wants_master: st.wants_master,
                state: st.state.name().into(),
                priority: st.priority,
                base_priority: v.priority,
                router_id: v.router_id,
                version: v.version,
                master: st.master.map(|m| m.to_string()),
                primary: st.primary.to_string(),
                peers: v
                    .unicast_peers
                    .iter()
                    .map(|p| p.get_ref().to_string())
                    .collect(),
                adverts_sent: st.adverts_sent,
                adverts_received: st.adverts_received,
                rejected: st
                    .rejected
                    .iter()
                    .map(|(r, n)| (r.name().to_string(), *n))
                    .collect::<BTreeMap<_, _>>(),
                transitions: st.transitions,
                split_brain_answers: st.split_brain_answers,
                address_failures: st.address_failures,
                address_fault: st.address_fault,
                tracking: e
                    .tracking()
                    .active()
                    .map(|(s, eff)| {
                        let v = match eff {
                            Effect::Fault => "fault".to_string(),
                            Effect::Weight(w) => format!("{w:+}"),
                            Effect::None => "none".to_string(),
                        };
                        (s.to_string(), v)
                    })
                    .collect(),
            }
        })
        .collect();
    let sync_groups = a
        .groups
        .iter()
        .map(|g| {
            let g = g.borrow();
            SyncGroupStatus {
                name: g.name.clone(),
                instances: g.instances.clone(),
                state: g.state.map_or("INIT", |s| s.name()).into(),
            }
        })
        .collect();
    let mode = match a.dp.attached() {
        Attached::Fresh(m) | Attached::Adopted(m) => m.as_str(),
    };
    Status {
        node: NodeStatus {
            name: super::node_name(&a.cfg),
            interface: a.link.name.clone(),
            xdp_mode: mode.into(),
            uptime_s: a.started.elapsed().as_secs_f64(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_refused_connections: crate::api::REFUSED_CONNECTIONS
                .load(std::sync::atomic::Ordering::Relaxed),
        },
        vrrp: instances.first().cloned(),
        vrrp_instances: instances,
        sync_groups,
        vips,
        dataplane,
        bgp: a.announcing.as_ref().map(|x| x.status()),
    }
}
