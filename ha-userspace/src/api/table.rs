//! `halb status` as text: the status document as aligned tables.

use std::fmt::Write as _;

use super::model::Status;

/// Left-aligned columns, two spaces apart.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

/// Renders `s`.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let role = match s.vrrp_instances.as_slice() {
        [] if s.bgp.is_some() => "BGP".to_string(),
        [] => "STANDALONE".to_string(),
        [one] => one.state.clone(),
        many => many
            .iter()
            .map(|v| format!("{} {}", v.name, v.state))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(
        out,
        "node {} ({}, XDP {}): {}",
        s.node.name, s.node.interface, s.node.xdp_mode, role
    );
    for v in &s.vrrp_instances {
        let _ = write!(
            out,
            "  instance {} {}: VRRPv{} vrid {} on {} priority {}/{}",
            v.name, v.state, v.version, v.router_id, v.interface, v.priority, v.base_priority
        );
        if let Some(m) = &v.master {
            let _ = write!(out, ", master {m}");
        }
        if let Some(g) = &v.sync_group {
            let _ = write!(out, ", sync group {g}");
        }
        let _ = writeln!(
            out,
            ", vips {}, adverts {} out / {} in, {} transitions",
            v.vips.join(","),
            v.adverts_sent,
            v.adverts_received,
            v.transitions
        );
        for (src, e) in &v.tracking {
            let _ = writeln!(out, "    tracking {src}: {e}");
        }
    }
    if let Some(b) = &s.bgp {
        let _ = writeln!(
            out,
            "  bgp: {}{}, device {} table {}",
            if b.drained {
                "node DRAINED"
            } else {
                "node enabled"
            },
            if b.dataplane_attached {
                ""
            } else {
                ", XDP NOT ATTACHED"
            },
            b.device,
            b.table
        );
        for a in &b.announcements {
            let _ = writeln!(
                out,
                "    {} {}: {} (for {:.0} s)",
                if a.announced {
                    "announced"
                } else {
                    "withdrawn"
                },
                a.address,
                a.reason,
                a.since_s
            );
        }
        for x in &b.sessions {
            let _ = writeln!(
                out,
                "    session {} ({}) {}: {}",
                x.name, x.kind, x.state, x.info
            );
        }
        if let Some(e) = &b.daemon_error {
            let _ = writeln!(out, "    routing daemon: {e}");
        }
    }
    for g in &s.sync_groups {
        let _ = writeln!(
            out,
            "  sync group {} {}: {}",
            g.name,
            g.state,
            g.instances.join(", ")
        );
    }
    for vip in &s.vips {
        let _ = writeln!(
            out,
            "\nvip {} {}/{} ({}, check {}): {}/{} healthy",
            vip.name,
            host_port(&vip.address, vip.port),
            vip.protocol,
            vip.mode,
            vip.check,
            vip.healthy_backends,
            vip.backends.len()
        );
        let mut rows = vec![[
            "BACKEND",
            "ADDRESS",
            "HEALTH",
            "WEIGHT",
            "FLOWS",
            "PKT/S",
            "NEW/S",
            "LAST CHECK",
        ]
        .map(String::from)
        .to_vec()];
        for b in &vip.backends {
            let health = if b.drained {
                format!("{} (drained)", b.health)
            } else if let Some(r) = &b.removal {
                match r.live_flows {
                    Some(n) => format!("removing ({n} live flows, {:.0} s left)", r.deadline_in_s),
                    None => format!("removing ({:.0} s left)", r.deadline_in_s),
                }
            } else {
                b.health.clone()
            };
            rows.push(vec![
                b.name.clone(),
                b.address.clone(),
                health,
                b.weight.to_string(),
                b.flows.to_string(),
                format!("{:.1}", b.pps),
                format!("{:.1}", b.new_flows_per_s),
                b.last_check
                    .as_ref()
                    .map(|c| format!("{} ({:.1} ms)", c.detail, c.latency_ms))
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    let d = &s.dataplane;
    let _ = writeln!(
        out,
        "\ndata plane: {:.1} pkt/s, {} flows; tx {} pass {} drop {} aborted {}",
        d.pps,
        d.flows,
        d.actions.get("tx").unwrap_or(&0),
        d.actions.get("pass").unwrap_or(&0),
        d.actions.get("drop").unwrap_or(&0),
        d.actions.get("aborted").unwrap_or(&0)
    );
    out
}

/// `address:port`, with an IPv6 address in brackets (RFC 3986 §3.2.2) so
/// the port stays readable: `[fd77::100]:80`.
pub fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn ipv6_addresses_are_bracketed_before_the_port() {
        assert_eq!(host_port("10.77.0.100", 80), "10.77.0.100:80");
        assert_eq!(host_port("fd77::100", 80), "[fd77::100]:80");
    }
}
