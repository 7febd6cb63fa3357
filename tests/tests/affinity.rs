//! End-to-end source-IP affinity (`hash = "source-ip"`) in a VRRP pair:
//! every connection of one client address reaches one backend, different
//! clients spread over all of them, and after the master dies each client
//! still reaches its backend through the other node (both nodes build the
//! same Maglev table). Needs root; CI runs as root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use halb_lab::client;
use halb_lab::lab::{neighbour_mac, node_config, Lab, VrrpOpts, CLIENT, VIP};

const BACKENDS: u8 = 3;

/// The 30 extra client addresses (on the client's interface).
fn clients() -> Vec<Ipv4Addr> {
    (0..30).map(|i| Ipv4Addr::new(10, 77, 0, 160 + i)).collect()
}

fn start(lab: &mut Lab, node: &str, priority: u8) {
    let cfg = node_config(
        lab,
        node,
        "native",
        BACKENDS,
        None,
        Some(&VrrpOpts::v3(priority)),
    )
    .replace("mode = \"dsr\"\n", "mode = \"dsr\"\nhash = \"source-ip\"\n");
    assert!(cfg.contains("source-ip"));
    lab.start_halb(node, &cfg, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
}

/// The backend (its name, which nginx answers with) that `src` reaches.
fn backend_from(lab: &Lab, src: Ipv4Addr) -> String {
    lab.in_ns("client", move || {
        client::http_get_from(src, VIP, 80, "/", Duration::from_secs(3))
    })
    .expect("in namespace")
    .unwrap_or_else(|e| panic!("request from {src}: {e:#}"))
    .body
    .trim()
    .to_string()
}

/// Which backend each client address reaches, asked `n` times each; a
/// client that reaches two backends fails the test.
fn map_clients(lab: &Lab, addrs: &[Ipv4Addr], n: usize) -> BTreeMap<Ipv4Addr, String> {
    addrs
        .iter()
        .map(|&a| {
            let seen: BTreeSet<String> = (0..n).map(|_| backend_from(lab, a)).collect();
            assert_eq!(seen.len(), 1, "{a} reached {seen:?}");
            (a, seen.into_iter().next().expect("one"))
        })
        .collect()
}

#[test]
fn one_client_one_backend_clients_spread_and_it_survives_a_failover() {
    let mut lab = Lab::new("aff").expect("lab");
    lab.pair_topology(BACKENDS).expect("topology");
    for a in clients() {
        lab.ip(
            "client",
            &["addr", "add", &format!("{a}/24"), "dev", "eth0"],
        )
        .expect("client address");
    }
    start(&mut lab, "lb1", 150);
    start(&mut lab, "lb2", 100);
    let mac1 = lab.mac("lb1").expect("mac");
    lab.wait_for(
        "lb1 to own the VIP and the client to reach it",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            lab.has_addr("lb1", VIP).unwrap_or(false)
                && !lab.has_addr("lb2", VIP).unwrap_or(true)
                && lab
                    .requests(1, Duration::from_secs(1))
                    .is_ok_and(|r| r[0].status == 200)
                && neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac1.as_str())
        },
    )
    .expect("lb1 serves");

    // 50 connections from one address, each from another source port.
    let one = map_clients(&lab, &[CLIENT], 50);
    // 30 addresses: all backends, each address on one.
    let before = map_clients(&lab, &clients(), 3);
    let used: BTreeMap<&str, usize> = before.values().fold(BTreeMap::new(), |mut m, b| {
        *m.entry(b.as_str()).or_default() += 1;
        m
    });
    assert_eq!(used.len(), BACKENDS as usize, "30 clients spread: {used:?}");

    // The master dies; lb2 takes the VIP; every client keeps its backend.
    let mac2 = lab.mac("lb2").expect("mac");
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.wait_for(
        "the client to follow lb2",
        Duration::from_secs(5),
        Duration::from_millis(5),
        || {
            lab.has_addr("lb2", VIP).unwrap_or(false)
                && neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac2.as_str())
        },
    )
    .expect("lb2 takes over");
    assert_eq!(map_clients(&lab, &[CLIENT], 10), one, "after the failover");
    assert_eq!(
        map_clients(&lab, &clients(), 2),
        before,
        "after the failover"
    );
}
