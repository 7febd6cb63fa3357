//! Routed backends end to end in the routed lab (`halb_lab::routed`): two
//! halb nodes, one backend on their link and two behind a router, all
//! reached by IP in IP (VIP `web`) or GUE (VIP `web-gue`) and decapsulated
//! by `halb backend`. Requests spread fairly over routed and local
//! backends; large transfers complete across a path whose MTU is 1400
//! (the nodes forward the router's ICMP errors to the flow's backend and
//! answer too-big client packets themselves); downloads survive a VRRP
//! failover in both modes. Needs root; CI runs as root.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
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

/// Waits until `node` holds every one of `vips` (whoever else does too).
fn wait_holds(lab: &Lab, node: &str, vips: &[IpAddr]) {
    lab.wait_for(
        &format!("{node} to hold {vips:?}"),
        Duration::from_secs(5),
        Duration::from_millis(10),
        || vips.iter().all(|v| lab.has_addr(node, *v).unwrap_or(false)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until `node` has every backend of both VIPs healthy and reachable.
fn wait_ready(lab: &Lab, node: &str) {
    wait_ready_but(lab, node, &[]);
}

/// [`wait_ready`] for every backend but those named in `except`.
fn wait_ready_but(lab: &Lab, node: &str, except: &[&str]) {
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
                            .filter(|b| !except.contains(&b.name.as_str()))
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
    // A fourth backend the node has no route to: logged, kept out.
    let mut backends = BACKENDS.to_vec();
    backends.push(("ghost", Ipv4Addr::new(10, 99, 0, 9)));
    let cfg = halb_lab::routed::config(&r.lab, "lb1", 150, &backends);
    r.start_node_with("lb1", &cfg).expect("lb1");
    wait_owner(&r.lab, "lb1");
    wait_ready_but(&r.lab, "lb1", &["ghost"]);
    r.lab
        .proc_mut("halb-lb1")
        .expect("proc")
        .wait_log("routed backend unreachable", Duration::from_secs(5))
        .expect("the unroutable backend is logged");
    let log = r.lab.proc_mut("halb-lb1").expect("proc").log_text();
    let line = log
        .lines()
        .find(|l| l.contains("routed backend unreachable"))
        .unwrap_or_default();
    assert!(line.contains("10.99.0.9"), "{line}");
    let status = r.lab.api_status("lb1").expect("status");
    for v in &status.vips {
        assert_eq!(v.mode, if v.name == "web" { "ipip" } else { "gue" });
        let ghost = v
            .backends
            .iter()
            .find(|b| b.name == "ghost")
            .expect("ghost");
        assert_eq!(ghost.mac, None, "no next hop, no MAC: {ghost:?}");
    }
    spread(&r.lab, VIP, 300);
    spread(&r.lab, VIP_GUE, 300);
}

/// A reason counter of `node`'s data plane.
fn reason(lab: &Lab, node: &str, name: &str) -> u64 {
    lab.api_status(node)
        .and_then(|s| s.dataplane.reasons.get(name).copied())
        .unwrap_or(0)
}

/// A 20 MB upload from the client to `vip` as `/up/file`: answered, and
/// whole on exactly one routed backend.
fn upload_whole(r: &Routed, vip: Ipv4Addr, file: &str) {
    let path = format!("/up/{file}");
    let status = r
        .lab
        .in_ns("client", move || {
            halb_lab::client::upload(vip, &path, UPLOAD)
        })
        .expect("ns")
        .unwrap_or_else(|e| panic!("{vip}: the 20 MB upload fails: {e:#}"));
    assert!([201, 204].contains(&status), "{vip}: PUT answered {status}");
    let stored: Vec<u64> = BACKENDS[1..]
        .iter()
        .filter_map(|(h, _)| r.uploaded(h, file))
        .collect();
    assert_eq!(stored, [UPLOAD as u64], "{vip}: one backend has all of it");
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
        upload_whole(&r, vip, &format!("up-{name}"));
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
    wait_holds(&r.lab, "lb2", &[VIP.into(), VIP_GUE.into()]);
    let (whole, gap) = survived(streams);
    eprintln!("streams whole after the failover: {whole}/16, longest pause {gap:?}");
    assert_eq!(whole, 16, "every stream of both modes completes");
    spread(&r.lab, VIP, 60);
    spread(&r.lab, VIP_GUE, 60);
}

#[test]
fn halb_backend_with_the_units_capabilities_sets_up_and_undoes_everything() {
    let mut lab = Lab::new("rtb").expect("lab");
    lab.add_host("web1", halb_lab::lab::backend_addr(1))
        .expect("host");
    // An address the operator put on lo already stays when halb backend stops.
    lab.ip("web1", &["addr", "add", "10.77.0.101/32", "dev", "lo"])
        .expect("addr");
    let sysctl = |lab: &Lab, key: &str| {
        halb_lab::lab::run(lab.cmd("web1", "sysctl").args(["-n", key]))
            .expect("sysctl")
            .trim()
            .to_string()
    };
    let keys = [
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.eth0.arp_ignore",
        "net.ipv4.conf.all.arp_announce",
        "net.ipv4.conf.eth0.arp_announce",
    ];
    let before: Vec<String> = keys.iter().map(|k| sysctl(&lab, k)).collect();
    assert_eq!(before, ["0", "0", "0", "0"]);
    let caps = halb_lab::lab::unit_capabilities("halb-backend.service");
    assert_eq!(caps, ["bpf", "net_admin", "perfmon"]);
    let wrapper = halb_lab::lab::setpriv(&caps);
    let start = |lab: &mut Lab, name: &str| {
        let mut c = lab.nsenter("web1", std::path::Path::new(&wrapper[0]));
        c.args(&wrapper[1..])
            .arg(halb_lab::lab::halb_bin())
            .args(["backend", "--interface", "eth0", "--gue-port", "6080"])
            .arg("--state-dir")
            .arg(lab.dir.join("state-web1"))
            .args(["--vip", "10.77.0.100", "--vip", "10.77.0.101"])
            .args(["--vip", "fd77::100"])
            .env("NO_COLOR", "1");
        lab.spawn(name, c)
            .expect("start")
            .wait_log("backend side ready", Duration::from_secs(20))
            .expect("ready with the unit's capabilities");
    };
    start(&mut lab, "backend-web1");
    let lo = lab.ip("web1", &["addr", "show", "dev", "lo"]).expect("ip");
    for a in ["10.77.0.100/32", "10.77.0.101/32", "fd77::100/128"] {
        assert!(lo.contains(a), "{a} on lo: {lo}");
    }
    let after: Vec<String> = keys.iter().map(|k| sysctl(&lab, k)).collect();
    assert_eq!(after, ["1", "1", "2", "2"], "the DSR ARP settings");
    let link = lab
        .ip("web1", &["link", "show", "dev", "eth0"])
        .expect("ip");
    assert!(link.contains("xdp"), "the program is attached: {link}");

    let p = lab.proc_mut("backend-web1").expect("proc");
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(p.log_text().contains("backend side stopped"));
    let lo = lab.ip("web1", &["addr", "show", "dev", "lo"]).expect("ip");
    assert!(
        !lo.contains("10.77.0.100/32") && !lo.contains("fd77::100/128"),
        "the VIPs it added are gone: {lo}"
    );
    assert!(
        lo.contains("10.77.0.101/32"),
        "the operator's address stays: {lo}"
    );
    let restored: Vec<String> = keys.iter().map(|k| sysctl(&lab, k)).collect();
    assert_eq!(restored, before, "the sysctls are put back");
    let link = lab
        .ip("web1", &["link", "show", "dev", "eth0"])
        .expect("ip");
    assert!(!link.contains("xdp"), "the program is detached: {link}");

    // A run killed before it could clean up: the next run still undoes
    // what the killed one did, back to the real originals.
    start(&mut lab, "backend-web1-killed");
    let mut p = lab.take_proc("backend-web1-killed").expect("proc");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(10)).expect("killed");
    let left: Vec<String> = keys.iter().map(|k| sysctl(&lab, k)).collect();
    assert_eq!(
        left,
        ["1", "1", "2", "2"],
        "the killed run left its settings"
    );
    start(&mut lab, "backend-web1-next");
    let p = lab.proc_mut("backend-web1-next").expect("proc");
    p.signal(libc::SIGTERM);
    assert!(p
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let lo = lab.ip("web1", &["addr", "show", "dev", "lo"]).expect("ip");
    assert!(
        !lo.contains("10.77.0.100/32") && !lo.contains("fd77::100/128"),
        "the VIPs the killed run added are gone too: {lo}"
    );
    assert!(
        lo.contains("10.77.0.101/32"),
        "the operator's address stays: {lo}"
    );
    let restored: Vec<String> = keys.iter().map(|k| sysctl(&lab, k)).collect();
    assert_eq!(restored, before, "the real originals are back");
}

/// `node`'s health of backend `backend` of VIP `vip`.
fn health_of(lab: &Lab, node: &str, vip: &str, backend: &str) -> Option<String> {
    lab.api_status(node).and_then(|s| {
        s.vips
            .into_iter()
            .find(|v| v.name == vip)
            .and_then(|v| v.backends.into_iter().find(|b| b.name == backend))
            .map(|b| b.health)
    })
}

/// Waits until lb1 has `backend` of both VIPs `health` (`up`, `down`).
fn wait_health(lab: &Lab, backend: &str, health: &str) {
    for vip in ["web", "web-gue"] {
        lab.wait_for(
            &format!("lb1 to see {backend} of {vip} {health}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            || health_of(lab, "lb1", vip, backend).as_deref() == Some(health),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn health_checks_go_through_the_tunnel() {
    let mut r = Routed::new("rth").expect("routed lab");
    r.start_node("lb1", 150).expect("lb1");
    wait_owner(&r.lab, "lb1");
    wait_ready(&r.lab, "lb1");
    // rweb1 stops decapsulating; its web server still answers on its own
    // address, so only a check through the tunnel sees the difference.
    let mut p = r.lab.take_proc("backend-rweb1").expect("halb backend");
    p.signal(libc::SIGTERM);
    assert!(p
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let direct = r
        .lab
        .in_ns("lb1", || {
            halb_lab::client::http_get(BACKENDS[1].1, 80, "/", Duration::from_secs(2))
        })
        .expect("ns");
    assert!(
        direct.is_ok_and(|rep| rep.status == 200),
        "rweb1 answers on its own address"
    );
    wait_health(&r.lab, "rweb1", "down");
    // New connections avoid it; the others still serve.
    let replies = r
        .lab
        .requests_to(VIP, 60, Duration::from_secs(3))
        .expect("requests");
    assert!(replies.iter().all(|x| x.body.trim() != "rweb1"));
    // Decapsulating again: back up.
    halb_lab::routed::start_backend(&mut r.lab, "rweb1").expect("halb backend");
    wait_health(&r.lab, "rweb1", "up");
    spread(&r.lab, VIP, 150);
}

#[test]
fn the_tunnel_learns_a_smaller_mtu_beyond_its_first_hop() {
    let mut r = Routed::new("rtm").expect("routed lab");
    // The backend subnet is 1300 bytes, which the nodes' route (1400)
    // does not say: only the router's ICMP about the tunnel packets does.
    for (host, dev) in [("rt", "eth1"), ("rweb1", "eth0"), ("rweb2", "eth0")] {
        r.lab
            .ip(host, &["link", "set", dev, "mtu", "1300"])
            .expect("mtu");
    }
    let cfg = halb_lab::routed::config(&r.lab, "lb1", 150, &BACKENDS[1..]);
    r.start_node_with("lb1", &cfg).expect("lb1");
    wait_owner(&r.lab, "lb1");
    wait_ready(&r.lab, "lb1");
    for (vip, name) in [(VIP, "ipip"), (VIP_GUE, "gue")] {
        upload_whole(&r, vip, &format!("learnt-{name}"));
    }
    let log = r.lab.proc_mut("halb-lb1").expect("proc").log_text();
    assert!(
        log.contains("a router reports a smaller MTU on the tunnel"),
        "the node learnt the tunnel's MTU from the router"
    );
}

#[test]
fn ipv6_in_ipv6_and_ipv4_in_ipv6_reach_routed_backends() {
    let mut r = Routed::new("rt6").expect("routed lab");
    r.add_ipv6().expect("IPv6 across the router");
    let cfg = halb_lab::routed::config6(&r.lab, "lb1");
    r.lab
        .start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    let vip6 = IpAddr::V6(halb_lab::lab::VIP6);
    wait_holds(&r.lab, "lb1", &[vip6, VIP.into()]);
    // Reached and checked through the tunnels (IPv6 probes in IPv6, and
    // GUE over IPv6 for the IPv4 VIP's IPv6 backends).
    wait_ready(&r.lab, "lb1");
    for vip in [vip6, IpAddr::V4(VIP)] {
        let replies = r
            .lab
            .requests_to(vip, 200, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("{vip}: {e:#}"));
        let mut per: HashMap<String, usize> = HashMap::new();
        for x in replies {
            assert_eq!(x.status, 200);
            *per.entry(x.body.trim().to_string()).or_default() += 1;
        }
        for b in ["rweb1", "rweb2"] {
            let got = per.get(b).copied().unwrap_or(0);
            assert!((60..=140).contains(&got), "{vip}: {b} got {got}: {per:?}");
        }
    }
}
