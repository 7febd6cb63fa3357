//! End-to-end `halb import`: a keepalived.conf (VRRP and an LVS
//! `virtual_server` in DR mode) and a haproxy.cfg written for the lab, as
//! an operator of the pair would have them, imported with the `halb`
//! binary for each node, run as two halb nodes: both services answer from
//! every backend, and when the master dies its downloads survive on the
//! other node, as with the hand-written config. Needs root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use halb_lab::lab::{
    backend_addr, halb_bin, lb_addr, neighbour_mac, run, survived, Lab, VIP, VIP2,
};

const BACKENDS: u8 = 3;

/// keepalived.conf of node `n` (lb1 is the master).
fn keepalived_conf(n: u8) -> String {
    let (prio, peer) = if n == 1 { (150, 2) } else { (100, 1) };
    let servers: String = (1..=BACKENDS)
        .map(|i| {
            format!(
                "    real_server {} 80 {{\n        weight 1\n        TCP_CHECK {{\n            \
                 connect_timeout 1\n        }}\n    }}\n",
                backend_addr(i)
            )
        })
        .collect();
    format!(
        "! lb{n}\nglobal_defs {{\n    router_id lb{n}\n    vrrp_version 3\n}}\n\n\
         vrrp_instance VI_1 {{\n    state {}\n    interface eth0\n    virtual_router_id 51\n    \
         priority {prio}\n    advert_int 0.1\n    unicast_src_ip {}\n    unicast_peer {{\n        \
         {}\n    }}\n    virtual_ipaddress {{\n        {VIP}/24 dev eth0\n        {VIP2}\n    }}\n}}\n\n\
         virtual_server {VIP2} 80 {{\n    delay_loop 1\n    lb_algo wrr\n    lb_kind DR\n    \
         protocol TCP\n\n{servers}}}\n",
        if n == 1 { "MASTER" } else { "BACKUP" },
        lb_addr(n),
        lb_addr(peer),
    )
}

fn haproxy_cfg() -> String {
    let servers: String = (1..=BACKENDS)
        .map(|i| {
            format!(
                "    server web{i} {}:80 check inter 500 rise 1 fall 2\n",
                backend_addr(i)
            )
        })
        .collect();
    format!(
        "global\n    daemon\n    maxconn 2000\n\ndefaults\n    mode http\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n\nfrontend www\n    bind {VIP}:80\n    \
         default_backend web\n\nbackend web\n    balance roundrobin\n    option httpchk GET /\n    \
         http-check expect status 200\n{servers}"
    )
}

/// Imports node `n`'s files with the halb binary; names the node and its
/// pin directory as the operator would after reading the report.
fn import(lab: &Lab, n: u8) -> String {
    let ka = lab.dir.join(format!("keepalived-lb{n}.conf"));
    let ha = lab.dir.join("haproxy.cfg");
    let out = lab.dir.join(format!("imported-lb{n}.toml"));
    let rep = lab.dir.join(format!("import-lb{n}.txt"));
    std::fs::write(&ka, keepalived_conf(n)).expect("write");
    std::fs::write(&ha, haproxy_cfg()).expect("write");
    run(Command::new(halb_bin())
        .arg("import")
        .arg("--keepalived")
        .arg(&ka)
        .arg("--haproxy")
        .arg(&ha)
        .arg("-o")
        .arg(&out)
        .arg("--report")
        .arg(&rep))
    .expect("halb import");
    let report = std::fs::read_to_string(&rep).expect("report");
    assert!(!report.contains("not understood"), "{report}");
    assert!(
        report.contains("mode http"),
        "the L7 mode is reported: {report}"
    );
    let text = std::fs::read_to_string(&out).expect("config");
    let ok = run(Command::new(halb_bin())
        .arg("check-config")
        .arg("-c")
        .arg(&out))
    .expect("check-config");
    assert_eq!(ok.trim(), "ok");
    let node = format!(
        "[node]\nname = \"lb{n}\"\nbpf_dir = \"{}\"\nxdp_mode = \"native\"\n",
        lab.pin_dir(&format!("lb{n}")).display()
    );
    assert!(text.contains("[node]\n"));
    text.replacen("[node]\n", &node, 1)
}

/// Backends that `n` new connections to `vip` reached.
fn reached(lab: &Lab, vip: Ipv4Addr, n: usize) -> BTreeSet<String> {
    lab.requests_to(vip, n, Duration::from_secs(3))
        .expect("requests")
        .into_iter()
        .map(|r| r.body.trim().to_string())
        .collect()
}

#[test]
fn an_imported_keepalived_and_haproxy_pair_serves_and_fails_over() {
    let mut lab = Lab::new("imp").expect("lab");
    lab.pair_topology(BACKENDS).expect("topology");
    lab.add_vip_on_backends(VIP2, BACKENDS)
        .expect("second VIP on the backends");
    for n in 1..=2u8 {
        let cfg = import(&lab, n);
        lab.start_halb(&format!("lb{n}"), &cfg, &[])
            .expect("start")
            .wait_log("starting VRRP", Duration::from_secs(20))
            .expect("VRRP starts");
    }
    let mac1 = lab.mac("lb1").expect("mac");
    lab.wait_for(
        "lb1 to own both VIPs and the client to reach them",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            lab.has_addr("lb1", VIP).unwrap_or(false)
                && lab.has_addr("lb1", VIP2).unwrap_or(false)
                && !lab.has_addr("lb2", VIP).unwrap_or(true)
                && lab.requests_to(VIP, 1, Duration::from_secs(1)).is_ok()
                && lab.requests_to(VIP2, 1, Duration::from_secs(1)).is_ok()
                && neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac1.as_str())
        },
    )
    .expect("lb1 serves");
    // Both services, every backend (the HAProxy frontend and the LVS one).
    for vip in [VIP, VIP2] {
        let seen = reached(&lab, vip, 60);
        assert_eq!(seen.len(), BACKENDS as usize, "{vip}: {seen:?}");
    }

    // The master dies under running downloads on both VIPs.
    let mut streams = lab.streams(VIP, 4).expect("streams");
    streams.extend(lab.streams(VIP2, 4).expect("streams"));
    let mac2 = lab.mac("lb2").expect("mac");
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    let death = std::time::Instant::now();
    p.signal(libc::SIGKILL);
    lab.wait_for(
        "the client to follow lb2",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac2.as_str()),
    )
    .expect("lb2 takes over");
    let took = death.elapsed();
    p.wait_exit(Duration::from_secs(5));
    assert!(took <= Duration::from_millis(400), "takeover took {took:?}");
    let n = streams.len();
    let (whole, gap) = survived(streams);
    assert_eq!(whole, n, "downloads that survived (longest pause {gap:?})");
    for vip in [VIP, VIP2] {
        assert_eq!(
            reached(&lab, vip, 30).len(),
            BACKENDS as usize,
            "{vip} after the takeover"
        );
    }
}
