//! `/metrics`: the status document in the Prometheus text exposition
//! format (version 0.0.4). The values are counters and gauges the agent
//! already holds, so they are rendered straight from the snapshot rather
//! than kept twice in a metrics registry.

use std::fmt::Write as _;

use super::model::Status;

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.0, " {}", value as i64);
        } else {
            let _ = writeln!(self.0, " {value}");
        }
    }

    /// A family with one sample, labelled with the node only.
    fn single(&mut self, name: &str, kind: &str, help: &str, node: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[("node", node)], value);
    }

    /// One sample per VRRP state, 1 for `current` (label `state` appended).
    fn states(&mut self, name: &str, labels: &[(&str, &str)], current: &str) {
        for st in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            let mut l = labels.to_vec();
            l.push(("state", st));
            self.sample(name, &l, flag(current == st));
        }
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Renders `s`.
pub fn render(s: &Status) -> String {
    let mut o = Out(String::with_capacity(4096 + s.vips.len() * 2048));
    let node = s.node.name.as_str();

    o.single(
        "halb_up",
        "gauge",
        "The halb agent is running (always 1).",
        node,
        1.0,
    );
    o.single(
        "halb_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        node,
        s.node.uptime_s,
    );
    o.single(
        "halb_api_refused_connections_total",
        "counter",
        "API connections closed at once because the connection limit was reached.",
        node,
        s.node.api_refused_connections as f64,
    );

    if !s.vrrp_instances.is_empty() {
        // One series per instance (label `vrrp_instance`); families once.
        type Pick = fn(&super::model::VrrpStatus) -> f64;
        o.family(
            "halb_vrrp_state",
            "gauge",
            "VRRP state of each instance: 1 for the current one (INIT, BACKUP, MASTER, FAULT).",
        );
        for v in &s.vrrp_instances {
            o.states(
                "halb_vrrp_state",
                &[("node", node), ("vrrp_instance", &v.name)],
                &v.state,
            );
        }
        o.family(
            "halb_vrrp_instance_info",
            "gauge",
            "Each VRRP instance: its VRID, interface, the VIPs it owns and the master this \
             node hears (\"self\" when it is master, empty when none is heard); always 1.",
        );
        for v in &s.vrrp_instances {
            let vrid = v.router_id.to_string();
            let vips = v.vips.join(",");
            let master = if v.state == "MASTER" {
                "self".to_string()
            } else {
                v.master.clone().unwrap_or_default()
            };
            o.sample(
                "halb_vrrp_instance_info",
                &[
                    ("node", node),
                    ("vrrp_instance", &v.name),
                    ("vrid", &vrid),
                    ("interface", &v.interface),
                    ("vips", &vips),
                    ("master", &master),
                ],
                1.0,
            );
        }
        let families: [(&str, &str, &str, Pick); 4] = [
            (
                "halb_vrrp_priority",
                "gauge",
                "Effective VRRP priority.",
                |v| v.priority as f64,
            ),
            (
                "halb_vrrp_adverts_sent_total",
                "counter",
                "VRRP advertisements sent.",
                |v| v.adverts_sent as f64,
            ),
            (
                "halb_vrrp_adverts_received_total",
                "counter",
                "VRRP advertisements accepted.",
                |v| v.adverts_received as f64,
            ),
            (
                "halb_vrrp_transitions_total",
                "counter",
                "VRRP state changes.",
                |v| v.transitions as f64,
            ),
        ];
        for (name, kind, help, pick) in families {
            o.family(name, kind, help);
            for v in &s.vrrp_instances {
                o.sample(name, &[("node", node), ("vrrp_instance", &v.name)], pick(v));
            }
        }
        o.family(
            "halb_vrrp_packets_rejected_total",
            "counter",
            "VRRP packets dropped, by reason.",
        );
        for v in &s.vrrp_instances {
            for (reason, n) in &v.rejected {
                o.sample(
                    "halb_vrrp_packets_rejected_total",
                    &[
                        ("node", node),
                        ("vrrp_instance", &v.name),
                        ("reason", reason),
                    ],
                    *n as f64,
                );
            }
        }
    }
    if let Some(b) = &s.bgp {
        o.family(
            "halb_bgp_announced",
            "gauge",
            "1 while this node announces the VIP address to its routing daemon.",
        );
        for a in &b.announcements {
            o.sample(
                "halb_bgp_announced",
                &[("node", node), ("address", &a.address)],
                flag(a.announced),
            );
        }
        o.single(
            "halb_bgp_announcement_changes_total",
            "counter",
            "VIP announcements and withdrawals since the agent started (reasons in the log and the status).",
            node,
            b.changes as f64,
        );
        o.single(
            "halb_bgp_table_in_sync",
            "gauge",
            "1 while the kernel table holds what the agent announces (0: the last update failed).",
            node,
            flag(b.table_in_sync),
        );
        o.single(
            "halb_node_drained",
            "gauge",
            "1 while the node is drained (halb node drain): nothing announced.",
            node,
            flag(b.drained),
        );
        o.family(
            "halb_bgp_session_up",
            "gauge",
            "1 while the routing daemon's BGP session is established (from its control socket).",
        );
        for x in b.sessions.iter().filter(|x| x.kind == "BGP") {
            o.sample(
                "halb_bgp_session_up",
                &[("node", node), ("session", &x.name)],
                flag(x.established),
            );
        }
    }
    if !s.sync_groups.is_empty() {
        o.family(
            "halb_vrrp_sync_group_state",
            "gauge",
            "State of each sync group: 1 for the current one.",
        );
        for g in &s.sync_groups {
            o.states(
                "halb_vrrp_sync_group_state",
                &[("node", node), ("sync_group", &g.name)],
                &g.state,
            );
        }
    }

    o.family(
        "halb_dataplane_packets_total",
        "counter",
        "Packets the XDP program handled, by action and reason.",
    );
    for (reason, n) in &s.dataplane.reasons {
        let action = reason.split('_').next().unwrap_or("");
        o.sample(
            "halb_dataplane_packets_total",
            &[("node", node), ("action", action), ("reason", reason)],
            *n as f64,
        );
    }
    o.family(
        "halb_dataplane_bytes_total",
        "counter",
        "Bytes the XDP program handled, by action and reason.",
    );
    for (reason, n) in &s.dataplane.reason_bytes {
        let action = reason.split('_').next().unwrap_or("");
        o.sample(
            "halb_dataplane_bytes_total",
            &[("node", node), ("action", action), ("reason", reason)],
            *n as f64,
        );
    }
    o.single(
        "halb_dataplane_flows",
        "gauge",
        "Flows in the flow table (those of changed ring slots).",
        node,
        s.dataplane.flows as f64,
    );
    o.single(
        "halb_dataplane_flow_capacity",
        "gauge",
        "Flow-table capacity (entries).",
        node,
        s.dataplane.flow_capacity as f64,
    );
    o.single(
        "halb_dataplane_changed_slots",
        "gauge",
        "Maglev ring slots marked changed: their packets go through the flow table.",
        node,
        s.dataplane.changed_slots as f64,
    );
    o.family(
        "halb_flow_table_events_total",
        "counter",
        "Flow-table events: flows recorded, live and idle entries evicted.",
    );
    for (event, n) in &s.dataplane.flow_table {
        o.sample(
            "halb_flow_table_events_total",
            &[("node", node), ("event", event)],
            *n as f64,
        );
    }

    type Pick = fn(&super::model::BackendStatus) -> f64;
    let families: [(&str, &str, &str, Pick); 8] = [
        (
            "halb_backend_up",
            "gauge",
            "Backend health: 1 up (or no check), 0 down.",
            |b| flag(b.health != "down"),
        ),
        (
            "halb_backend_weight",
            "gauge",
            "Backend weight in effect (0 when drained).",
            |b| b.weight as f64,
        ),
        (
            "halb_backend_drained",
            "gauge",
            "Backend drained by the operator.",
            |b| flag(b.drained),
        ),
        (
            "halb_backend_removing",
            "gauge",
            "Backend removed by a reload, finishing its flows (no new ones).",
            |b| flag(b.removing),
        ),
        (
            "halb_backend_flows",
            "gauge",
            "Flows pinned to the backend in the flow table.",
            |b| b.flows as f64,
        ),
        (
            "halb_backend_packets_total",
            "counter",
            "Packets forwarded to the backend.",
            |b| b.packets as f64,
        ),
        (
            "halb_backend_bytes_total",
            "counter",
            "Bytes forwarded to the backend.",
            |b| b.bytes as f64,
        ),
        (
            "halb_backend_new_flows_total",
            "counter",
            "Flows assigned to the backend.",
            |b| b.new_flows as f64,
        ),
    ];
    for (name, kind, help, pick) in families {
        o.family(name, kind, help);
        for v in &s.vips {
            for b in &v.backends {
                o.sample(
                    name,
                    &[("node", node), ("vip", &v.name), ("backend", &b.name)],
                    pick(b),
                );
            }
        }
    }
    o.family(
        "halb_backend_removal_live_flows",
        "gauge",
        "Live flows of a backend that a reload removed (it goes when they end).",
    );
    for v in &s.vips {
        for b in &v.backends {
            if let Some(n) = b.removal.as_ref().and_then(|r| r.live_flows) {
                o.sample(
                    "halb_backend_removal_live_flows",
                    &[("node", node), ("vip", &v.name), ("backend", &b.name)],
                    n as f64,
                );
            }
        }
    }
    o.family(
        "halb_backend_check_latency_seconds",
        "gauge",
        "Duration of the backend's last health check.",
    );
    for v in &s.vips {
        for b in &v.backends {
            if let Some(c) = &b.last_check {
                o.sample(
                    "halb_backend_check_latency_seconds",
                    &[("node", node), ("vip", &v.name), ("backend", &b.name)],
                    c.latency_ms / 1000.0,
                );
            }
        }
    }
    o.family(
        "halb_vip_healthy_backends",
        "gauge",
        "Healthy backends of the VIP.",
    );
    for v in &s.vips {
        o.sample(
            "halb_vip_healthy_backends",
            &[("node", node), ("vip", &v.name)],
            v.healthy_backends as f64,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::{BackendStatus, VipStatus};

    #[test]
    fn renders_families_once_with_escaped_labels() {
        let mut s = Status::default();
        s.node.name = "lb\"1".into();
        s.vips.push(VipStatus {
            name: "web".into(),
            backends: vec![
                BackendStatus {
                    name: "a".into(),
                    health: "down".into(),
                    packets: 12,
                    ..Default::default()
                },
                BackendStatus {
                    name: "b".into(),
                    health: "up".into(),
                    weight: 3,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        s.dataplane.reasons.insert("tx_flow_hit".into(), 5);
        let text = render(&s);
        assert_eq!(text.matches("# TYPE halb_backend_up gauge").count(), 1);
        assert!(
            text.contains("halb_backend_up{node=\"lb\\\"1\",vip=\"web\",backend=\"a\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("halb_backend_weight{node=\"lb\\\"1\",vip=\"web\",backend=\"b\"} 3\n")
        );
        assert!(text.contains(
            "halb_backend_packets_total{node=\"lb\\\"1\",vip=\"web\",backend=\"a\"} 12\n"
        ));
        assert!(text.contains("action=\"tx\",reason=\"tx_flow_hit\"} 5\n"));
    }

    #[test]
    fn every_instance_and_group_has_its_series() {
        use crate::api::model::{SyncGroupStatus, VrrpStatus};
        let mut s = Status::default();
        s.node.name = "lb1".into();
        for (name, vrid, state, master, vip) in [
            ("VI_1", 51, "MASTER", None, "web"),
            ("VI_2", 52, "BACKUP", Some("10.77.0.3"), "api"),
        ] {
            s.vrrp_instances.push(VrrpStatus {
                name: name.into(),
                router_id: vrid,
                interface: "eth1".into(),
                state: state.into(),
                master: master.map(str::to_string),
                vips: vec![vip.into()],
                priority: 150,
                ..Default::default()
            });
        }
        s.sync_groups.push(SyncGroupStatus {
            name: "G".into(),
            state: "BACKUP".into(),
            ..Default::default()
        });
        let text = render(&s);
        for want in [
            "halb_vrrp_state{node=\"lb1\",vrrp_instance=\"VI_1\",state=\"MASTER\"} 1\n",
            "halb_vrrp_state{node=\"lb1\",vrrp_instance=\"VI_2\",state=\"MASTER\"} 0\n",
            "halb_vrrp_instance_info{node=\"lb1\",vrrp_instance=\"VI_1\",vrid=\"51\",\
             interface=\"eth1\",vips=\"web\",master=\"self\"} 1\n",
            "halb_vrrp_instance_info{node=\"lb1\",vrrp_instance=\"VI_2\",vrid=\"52\",\
             interface=\"eth1\",vips=\"api\",master=\"10.77.0.3\"} 1\n",
            "halb_vrrp_priority{node=\"lb1\",vrrp_instance=\"VI_2\"} 150\n",
            "halb_vrrp_sync_group_state{node=\"lb1\",sync_group=\"G\",state=\"BACKUP\"} 1\n",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE halb_vrrp_instance_info gauge").count(),
            1
        );
    }
}
