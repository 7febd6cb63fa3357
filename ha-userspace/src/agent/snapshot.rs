//! Builds the status document from the agent's state and the data plane's
//! counters, computing rates from one sample to the next (the data plane
//! only counts; rates are userspace's business).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use ha_common::{Action, BackendCounter, VipKey};

use super::Agent;
use crate::api::model::{
    BackendStatus, CheckStatus, DataplaneStatus, NodeStatus, Status, VipStatus, VrrpStatus,
};
use crate::config::HealthKind;
use crate::dataplane::Attached;
use crate::vrrp::track::Effect;

/// How often the whole flow table is walked to count flows per backend.
const FLOW_WALK_EVERY: Duration = Duration::from_secs(5);

/// Counter values from the previous sample, and what was derived from them.
pub struct Sampler {
    at: Option<Instant>,
    prev: HashMap<u32, BackendCounter>,
    prev_total: u64,
    rates: HashMap<u32, (f64, f64, f64)>,
    pps: f64,
    flows: HashMap<u32, u64>,
    flows_total: u64,
    flows_at: Option<Instant>,
    flows_walk: Option<std::thread::JoinHandle<Option<HashMap<u32, u64>>>>,
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
            flows: HashMap::new(),
            flows_total: 0,
            flows_at: None,
            flows_walk: None,
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
    // Counting flows walks the whole table (a system call per set): it runs
    // on a thread of its own and its result is picked up by a later sample.
    if a.sampler
        .flows_walk
        .as_ref()
        .is_some_and(|t| t.is_finished())
    {
        if let Some(Ok(Some(per))) = a.sampler.flows_walk.take().map(|t| t.join()) {
            a.sampler.flows_total = per.values().sum();
            a.sampler.flows = per;
        }
    }
    if a.sampler.flows_walk.is_none()
        && a.sampler
            .flows_at
            .is_none_or(|t| now - t >= FLOW_WALK_EVERY)
    {
        let dir = a.dp.pin_dir().to_path_buf();
        a.sampler.flows_walk = Some(std::thread::spawn(move || {
            crate::dataplane::maps::flows_per_backend_pinned(&dir).ok()
        }));
        a.sampler.flows_at = Some(now);
    }
    dataplane.flows = a.sampler.flows_total;
    dataplane.flow_capacity = maps.flow_sets() as u64 * ha_common::FLOW_WAYS as u64;

    // Backends.
    let wall = SystemTime::now();
    let mut vips = Vec::new();
    let mut seen = HashMap::new();
    for v in a.cfg.vips() {
        let key = VipKey::new(v.address.octets(), v.port, v.protocol.number());
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
                mac: a.macs.get(&addr).map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                health: st.map_or("no-check", |s| s.health_name()).into(),
                weight: a.runtime.weight(vn, bn, b.weight),
                config_weight: b.weight,
                drained: st.is_some_and(|s| s.admin.drained),
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
                flows: id
                    .and_then(|id| a.sampler.flows.get(&id))
                    .copied()
                    .unwrap_or(0),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
                pps,
                bytes_per_s: bps,
                new_flows_per_s: nfps,
            });
        }
        vips.push(VipStatus {
            name: v.name.get_ref().clone(),
            address: v.address.to_string(),
            port: v.port,
            protocol: format!("{:?}", v.protocol).to_lowercase(),
            mode: format!("{:?}", v.mode).to_lowercase(),
            check: match v.health.kind {
                HealthKind::None => "none",
                HealthKind::Tcp => "tcp",
                HealthKind::Http => "http",
            }
            .into(),
            healthy_backends: backends.iter().filter(|b| b.health != "down").count(),
            backends,
        });
    }
    a.sampler.prev = seen;
    a.sampler.at = Some(now);

    let vrrp = match (&a.election, a.cfg.vrrp()) {
        (Some(e), Some(v)) => {
            let st = e.status.borrow().clone();
            Some(VrrpStatus {
                state: st.state.name().into(),
                priority: st.priority,
                base_priority: v.priority,
                router_id: v.router_id,
                version: v.version,
                master: st.master.map(|m| m.to_string()),
                primary: st.primary.to_string(),
                peers: v.unicast_peers.iter().map(ToString::to_string).collect(),
                adverts_sent: st.adverts_sent,
                adverts_received: st.adverts_received,
                rejected: st
                    .rejected
                    .iter()
                    .map(|(r, n)| (r.name().to_string(), *n))
                    .collect::<BTreeMap<_, _>>(),
                transitions: st.transitions,
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
            })
        }
        _ => None,
    };
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
        },
        vrrp,
        vips,
        dataplane,
    }
}
