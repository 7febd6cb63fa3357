//! Routed backends end to end in the routed lab (`halb_lab::routed`): two
//! halb nodes, one backend on their link and two behind a router, all
//! reached by IP in IP (VIP `web`) or GUE (VIP `web-gue`) and decapsulated
//! by `halb backend`. Requests spread fairly over routed and local
//! backends; large transfers complete across a path whose MTU is 1400
//! (the nodes forward the router's ICMP errors to the flow's backend and
//! answer too-big client packets themselves); downloads survive a VRRP
//! failover in both modes. Needs root; CI runs as root.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use halb_lab::lab::{survived, Lab, VIP};
use halb_lab::routed::{Routed, BACKENDS, VIP_GUE};

fn wait_owner(lab: &Lab, node: &'static str) {
    lab.wait_for(
        &format!("{node} to own the VIPs"),
        Duration::from_secs(5),
        Duration::from_millis(10),
        || lab.vip_owner(VIP) == Some(node) && lab.vip_owner(VIP_GUE) == Some(node),
    )
    .unwrap_or_else(|e| panic!("{e}; owner now {:?}", lab.vip_owner(VIP)));
}

/// Waits until `node` has every backend of both VIPs healthy and reachable.
fn wait_ready(lab: &Lab, node: &str) {
    lab.wait_for(
        &format!("{node} to reach every backend through its tunnel"),
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            lab.api_status(node).is_some_and(|s| {
                s.vips.len() == 2
                    && s.vips.iter().all(|v| {
                        v.backends
                            .iter()
                            .all(|b| b.mac.is_some() && b.health == "up")
                    })
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", lab.api_status(node).map(|s| s.vips)));
}

/// `n` requests to `vip`: all answered, each backend within 40% of a fair share.
fn spread(lab: &Lab, vip: Ipv4Addr, n: usize) {
    let replies = lab
        .requests_to(vip, n, Duration::from_secs(3))
        .expect("every request through the VIP succeeds");
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in replies {
        assert_eq!(r.status, 200);
        *per.entry(r.body.trim().to_string()).or_default() += 1;
    }
    let fair = n / BACKENDS.len();
    for (b, _) in BACKENDS {
        let got = per.get(b).copied().unwrap_or(0);
        assert!(
            got * 10 >= fair * 6 && got * 10 <= fair * 14,
            "{vip}: {b} got {got} of {n}: {per:?}"
        );
    }
}

#[test]
fn requests_spread_over_routed_and_local_backends_in_both_modes() {
    let mut r = Routed::new("rts").expect("routed lab");
    r.start_node("lb1", 150).expect("lb1");
    wait_owner(&r.lab, "lb1");
    wait_ready(&r.lab, "lb1");
    spread(&r.lab, VIP, 300);
    spread(&r.lab, VIP_GUE, 300);
}

/// A reason counter of `node`'s data plane.
fn reason(lab: &Lab, node: &str, name: &str) -> u64 {
    lab.api_status(node)
        .and_then(|s| s.dataplane.reasons.get(name).copied())
        .unwrap_or(0)
}

const HUGE: usize = 50 * 1024 * 1024;
const UPLOAD: usize = 20 * 1024 * 1024;

#[test]
fn large_transfers_complete_across_a_1400_byte_path_in_both_modes() {
    let mut r = Routed::new("rtp").expect("routed lab");
    r.add_huge(HUGE).expect("huge file");
    // Only the routed backends: every flow's replies cross the router's
    // 1400-byte interface.
    let cfg = halb_lab::routed::config(&r.lab, "lb1", 150, &BACKENDS[1..]);
    r.start_node_with("lb1", &cfg).expect("lb1");
    wait_owner(&r.lab, "lb1");
    wait_ready(&r.lab, "lb1");
    for (vip, name) in [(VIP, "ipip"), (VIP_GUE, "gue")] {
        // Every host forgets the path MTUs it learnt (the other mode's).
        for h in ["client", "rweb1", "rweb2"] {
            r.lab.ip(h, &["route", "flush", "cache"]).expect("flush");
        }
        let icmp = reason(&r.lab, "lb1", "tx_icmp");
        let too_big = reason(&r.lab, "lb1", "tx_too_big");
        let got = r
            .lab
            .in_ns("client", move || {
                halb_lab::client::download(vip, "/huge", |_| {})
            })
            .expect("ns")
            .unwrap_or_else(|e| panic!("{name}: the 50 MB download fails: {e:#}"));
        assert_eq!(got.bytes, HUGE, "{name}: the whole file");
        let file = format!("up-{name}");
        let path = format!("/up/{file}");
        let status = r
            .lab
            .in_ns("client", move || {
                halb_lab::client::upload(vip, &path, UPLOAD)
            })
            .expect("ns")
            .unwrap_or_else(|e| panic!("{name}: the 20 MB upload fails: {e:#}"));
        assert!(
            [201, 204].contains(&status),
            "{name}: PUT answered {status}"
        );
        let stored: Vec<u64> = BACKENDS[1..]
            .iter()
            .filter_map(|(h, _)| r.uploaded(h, &file))
            .collect();
        assert_eq!(stored, [UPLOAD as u64], "{name}: one backend has all of it");
        // The router's "fragmentation needed" for the download reached
        // the backend through the node; the client's full-size packets
        // were answered by the node itself. (The status is published
        // once a second: wait for it.)
        let counted = r.lab.wait_for(
            &format!("{name}: lb1 to count forwarded ICMP errors and too-big answers"),
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                reason(&r.lab, "lb1", "tx_icmp") > icmp
                    && reason(&r.lab, "lb1", "tx_too_big") > too_big
            },
        );
        eprintln!(
            "{name}: ICMP errors forwarded {}, too-big answers {}",
            reason(&r.lab, "lb1", "tx_icmp") - icmp,
            reason(&r.lab, "lb1", "tx_too_big") - too_big
        );
        counted.expect("both counters moved");
    }
}

#[test]
fn streams_survive_a_vrrp_failover_in_ipip_and_gue_mode() {
    let mut r = Routed::new("rtf").expect("routed lab");
    r.start_node("lb1", 150).expect("lb1");
    r.start_node("lb2", 100).expect("lb2");
    wait_owner(&r.lab, "lb1");
    for node in ["lb1", "lb2"] {
        wait_ready(&r.lab, node);
    }
    let mut streams = r.lab.streams(VIP, 8).expect("ipip streams");
    streams.extend(r.lab.streams(VIP_GUE, 8).expect("gue streams"));
    // lb1 dies as a node does: its agent and its link at once (a killed
    // agent alone would leave its pinned program forwarding).
    let mut p = r.lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    r.lab
        .ip("lb1", &["link", "set", "eth0", "down"])
        .expect("link down");
    p.wait_exit(Duration::from_secs(5));
    r.lab
        .wait_for(
            "lb2 to take both VIPs over",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || {
                r.lab.has_addr("lb2", VIP).unwrap_or(false)
                    && r.lab.has_addr("lb2", VIP_GUE).unwrap_or(false)
            },
        )
        .expect("takeover");
    let (whole, gap) = survived(streams);
    eprintln!("streams whole after the failover: {whole}/16, longest pause {gap:?}");
    assert_eq!(whole, 16, "every stream of both modes completes");
    spread(&r.lab, VIP, 60);
    spread(&r.lab, VIP_GUE, 60);
}
