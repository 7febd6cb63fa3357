//! IPv6 end to end in the dual-stack lab (10.77.0.0/24 and fd77::/64 on
//! one bridge): two halb nodes, each with an IPv4 and an IPv6 VRRPv3
//! instance, three DSR backends holding both VIPs on `lo`. Requests over
//! IPv6 spread over the backends; a master killed while IPv6 downloads run
//! is taken over within the same bound as IPv4 (the client's neighbour
//! entry follows the new master's unsolicited Neighbor Advertisement) and
//! every download completes; keepalived's IPv6 VRRPv3 and halb's form one
//! pair in both directions. Needs root; CI runs as root.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use halb_lab::failover::{start_keepalived_instances, KaInstance};
use halb_lab::lab::{
    backend_addr, lb_addr, neighbour_mac, node_config, ula_of, Lab, VrrpOpts, BIG_SIZE, CLIENT,
    VIP, VIP6,
};

const BACKENDS: u8 = 3;

/// Client, lb1 and lb2 (XDP native, pass programs on their bridge ports),
/// three backends; every host dual stack.
fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    lab.pair_topology(BACKENDS).expect("pair topology");
    lab
}

fn dual(priority: u8) -> VrrpOpts {
    let mut v = VrrpOpts::v3(priority);
    v.dual_stack = true;
    v
}

fn start(lab: &mut Lab, node: &str, v: &VrrpOpts) {
    let cfg = node_config(lab, node, "native", BACKENDS, None, Some(v));
    lab.start_halb(node, &cfg, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
}

fn wait_owner(lab: &Lab, vip: std::net::IpAddr, node: &'static str, timeout: Duration) {
    lab.wait_for(
        &format!("{node} to own {vip} alone"),
        timeout,
        Duration::from_millis(10),
        || lab.vip_owner(vip) == Some(node),
    )
    .unwrap_or_else(|e| panic!("{e}; owner now {:?}", lab.vip_owner(vip)));
}

/// `n` requests over IPv6 through the VIP: every one answered, each
/// backend within 40% of its fair share.
fn spread(lab: &Lab, n: usize) {
    let replies = lab
        .requests_to(VIP6, n, Duration::from_secs(3))
        .expect("every request through the IPv6 VIP succeeds");
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    for r in replies {
        assert_eq!(r.status, 200);
        *per_backend.entry(r.body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(per_backend.len(), BACKENDS as usize, "{per_backend:?}");
    let fair = n / BACKENDS as usize;
    for (b, got) in &per_backend {
        assert!(
            (fair * 6 / 10..=fair * 14 / 10).contains(got),
            "fair share for {b}: {per_backend:?}"
        );
    }
}

/// `n` requests over IPv6 through the VIP, every one answered.
fn serves(lab: &Lab, n: usize) {
    let replies = lab
        .requests_to(VIP6, n, Duration::from_secs(3))
        .expect("every request through the IPv6 VIP succeeds");
    assert!(replies.iter().all(|r| r.status == 200));
}

/// Turns duplicate address detection back on for `host`'s eth0 (the lab
/// has it off) and takes the link down and up: its link-local and ULA
/// addresses are tentative again for about a second, as on a node that
/// boots.
fn with_dad(lab: &Lab, host: &str) {
    halb_lab::lab::run(lab.cmd(host, "sysctl").args([
        "-q",
        "-w",
        "net.ipv6.conf.eth0.accept_dad=1",
    ]))
    .expect("sysctl");
    lab.ip(host, &["link", "set", "eth0", "down"])
        .expect("down");
    lab.ip(host, &["link", "set", "eth0", "up"]).expect("up");
}

/// `host`'s eth0 line for `addr` in `ip -6 -o addr`.
fn addr_line(lab: &Lab, host: &str, addr: std::net::Ipv6Addr) -> String {
    lab.ip(host, &["-6", "-o", "addr", "show", "dev", "eth0"])
        .expect("ip")
        .lines()
        .find(|l| l.contains(&format!("inet6 {addr}/")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn ipv6_requests_spread_and_streams_survive_the_masters_death() {
    let mut lab = lab("v6e");
    // The nodes start as a booting node would: DAD running on their link.
    for h in ["lb1", "lb2"] {
        with_dad(&lab, h);
        assert!(
            lab.ip(h, &["-6", "-o", "addr", "show", "dev", "eth0"])
                .expect("ip")
                .contains("tentative"),
            "{h}'s addresses are in DAD"
        );
    }
    start(&mut lab, "lb1", &dual(150));
    start(&mut lab, "lb2", &dual(100));
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    wait_owner(&lab, VIP.into(), "lb1", Duration::from_secs(3));
    // Once lb1's own addresses left DAD it resolved every IPv6 backend by
    // ND (a booting node asks again within a second, not a refresh later).
    lab.wait_for(
        "lb1 to know every IPv6 backend's MAC",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            vip_status(&lab, "lb1", "web6")
                .is_some_and(|v| v.backends.iter().all(|b| b.mac.is_some()))
        },
    )
    .expect("backends resolved");
    // The VIP is /128, without DAD (usable at once) and deprecated (never
    // the node's own source address).
    let line = addr_line(&lab, "lb1", VIP6);
    assert!(line.contains(&format!("inet6 {VIP6}/128")), "{line}");
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "{line}"
    );
    assert!(line.contains("preferred_lft 0sec"), "{line}");
    spread(&lab, 300);
    // IPv4 beside it, on the same node and backends.
    let v4 = lab
        .requests_to(VIP, 20, Duration::from_secs(3))
        .expect("IPv4 requests");
    assert!(v4.iter().all(|r| r.status == 200));
    assert_eq!(
        neighbour_mac(&lab, "client", VIP6),
        Some(lab.mac("lb1").expect("mac")),
        "the client reaches the IPv6 VIP at lb1"
    );

    // Eight IPv6 downloads run; the master's agent dies without clean-up.
    let streams = lab.streams(VIP6, 8).expect("streams");
    let mac2 = lab.mac("lb2").expect("mac");
    let watch = lab
        .watch_neighbour6("client", VIP6, &mac2)
        .expect("neighbour monitor");
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    let t0 = Instant::now();
    p.signal(libc::SIGKILL);
    // The moment the client's entry for the VIP names lb2 (the new
    // master's unsolicited NA), as netlink reports it.
    let at = watch
        .wait(Duration::from_secs(5))
        .expect("the client follows the unsolicited NA");
    let took = at.duration_since(t0);
    assert_eq!(
        neighbour_mac(&lab, "client", VIP6).as_deref(),
        Some(mac2.as_str())
    );
    p.wait_exit(Duration::from_secs(5));
    eprintln!("IPv6 takeover (100 ms adverts, SIGKILL): {took:?}");
    assert!(took <= Duration::from_millis(400), "takeover took {took:?}");
    assert!(lab.has_addr("lb2", VIP6).expect("addr"));
    for h in streams {
        let s = h
            .join()
            .expect("join")
            .expect("ns")
            .expect("the IPv6 stream survives the failover");
        assert_eq!(s.bytes, BIG_SIZE);
    }
    serves(&lab, 20);
}

/// `node`'s status of VIP `name` from its API.
fn vip_status(lab: &Lab, node: &str, name: &str) -> Option<halb::api::model::VipStatus> {
    lab.api_status(node)
        .and_then(|s| s.vips.into_iter().find(|v| v.name == name))
}

/// The status of `node`'s IPv6 VRRP instance (the one owning `web6`, or
/// the only one).
fn vrrp_of(lab: &Lab, node: &str) -> Option<halb::api::model::VrrpStatus> {
    let s = lab.api_status(node)?;
    let v6 = s
        .vrrp_instances
        .iter()
        .find(|i| i.vips.iter().any(|v| v == "web6"))
        .cloned();
    v6.or(s.vrrp)
}

/// keepalived's IPv6 VRRPv3 and halb's form one pair: the higher priority
/// wins either way, and each takes over from the other.
#[test]
fn interop_with_keepalived_ipv6_vrrp_v3() {
    let mut lab = lab("v6k");
    let ka = |lab: &mut Lab, priority: u8| {
        start_keepalived_instances(
            lab,
            "lb2",
            3,
            100,
            None,
            &[KaInstance {
                name: "VI_6",
                vrid: 51,
                priority,
                vip: VIP6.into(),
            }],
        )
    };
    let mut v = dual(150);
    // halb runs its IPv6 instance only here: keepalived has no IPv4 one.
    v.dual_stack = false;
    let cfg6 = node_config(&lab, "lb1", "native", BACKENDS, None, Some(&v)).replace(
        "address = \"10.77.0.100\"",
        &format!("address = \"{VIP6}\""),
    );
    let cfg6 = (1..=BACKENDS).fold(cfg6, |c, i| {
        c.replace(
            &format!("address = \"{}\"", backend_addr(i)),
            &format!("address = \"{}\"", ula_of(backend_addr(i))),
        )
    });
    lab.start_halb("lb1", &cfg6, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
    ka(&mut lab, 100);
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    // Five of halb's adverts later (past keepalived's master-down interval,
    // so keepalived heard them), halb alone still holds the VIP.
    let sent = |lab: &Lab| vrrp_of(lab, "lb1").map_or(0, |v| v.adverts_sent);
    let start = sent(&lab);
    lab.wait_for(
        "five more adverts from halb",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || sent(&lab) >= start + 5,
    )
    .expect("halb advertises");
    assert_eq!(
        lab.vip_owner(VIP6),
        Some("lb1"),
        "keepalived stays backup under a higher halb"
    );
    serves(&lab, 20);
    // halb dies: keepalived takes over (the dead node's stale VIP is
    // cleared, as a dead node would not hold it).
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.ip(
        "lb1",
        &["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "eth0"],
    )
    .expect("clear stale VIP");
    wait_owner(&lab, VIP6.into(), "lb2", Duration::from_secs(3));
    // halb returns below keepalived: it stays backup while keepalived lives...
    let cfg_low = cfg6.replace("priority = 150", "priority = 50");
    lab.start_halb("lb1", &cfg_low, &[])
        .expect("start")
        .wait_log("VRRP state change", Duration::from_secs(20))
        .expect("halb enters a state");
    let heard = lab.wait_for(
        "halb to hear keepalived's adverts as backup",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            vrrp_of(&lab, "lb1").is_some_and(|v| {
                v.state == "BACKUP" && v.adverts_received >= 5 && v.master.is_some()
            })
        },
    );
    heard.expect("halb backs up to keepalived");
    assert_eq!(lab.vip_owner(VIP6), Some("lb2"));
    // ...and takes over when it stops.
    lab.stop("keepalived-lb2");
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    serves(&lab, 20);
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = p.log_text();
    assert!(
        log.contains("rejected=none"),
        "no packet of keepalived's was rejected: {log}"
    );
}

/// The data plane's drop counters of `node`, by stat.
fn drops(lab: &Lab, node: &str) -> HashMap<&'static str, u64> {
    let maps = halb::dataplane::Maps::open_pinned(&lab.pin_dir(node)).expect("pinned maps");
    maps.stats()
        .expect("stats")
        .into_iter()
        .map(|(s, c)| (s.name(), c.packets))
        .collect()
}

/// Malformed IPv4 and IPv6 frames thrown at the VIPs while downloads of
/// both families run: every kind is dropped and counted under its reason,
/// the agent stays up, the downloads finish and new requests are served.
#[test]
fn malformed_frames_at_both_vips_are_counted_and_change_nothing() {
    let mut lab = lab("v6m");
    start(&mut lab, "lb1", &dual(150));
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    wait_owner(&lab, VIP.into(), "lb1", Duration::from_secs(3));
    let mut streams = lab.streams(VIP6, 2).expect("IPv6 streams");
    streams.extend(lab.streams(VIP, 2).expect("IPv4 streams"));
    let before = drops(&lab, "lb1");
    let mac = lab.mac("lb1").expect("mac");
    let (c4, c6) = (CLIENT, ula_of(CLIENT));
    // Each kind five times, then 300 fuzzed variants of well-formed SYNs
    // (scapy's fuzz() randomises every field it is not told).
    let script = format!(
        "from scapy.all import *\n\
         e = Ether(dst='{mac}')\n\
         v6 = IPv6(src='{c6}', dst='{VIP6}')\n\
         v4 = IP(src='{c4}', dst='{VIP}')\n\
         frames = [\n\
         \x20 e/IPv6(src='{c6}', dst='{VIP6}', nh=6, plen=4)/Raw(b'\\x00\\x50\\x00\\x50'),\n\
         \x20 e/IPv6(src='{c6}', dst='{VIP6}', plen=1400)/TCP(dport=80),\n\
         \x20 e/v6/IPv6ExtHdrFragment(offset=0, m=1)/TCP(dport=80),\n\
         \x20 e/v6/IPv6ExtHdrFragment(offset=8, m=0)/Raw(b'x' * 16),\n\
         \x20 e/v6/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/IPv6ExtHdrDestOpt()/TCP(dport=80),\n\
         \x20 e/v6/IPv6ExtHdrRouting(addresses=['{c6}'], segleft=1)/TCP(dport=80),\n\
         \x20 e/IP(src='{c4}', dst='{VIP}', ihl=4)/Raw(b'\\x00' * 20),\n\
         \x20 e/IP(src='{c4}', dst='{VIP}', proto=6, len=24)/Raw(b'\\x00\\x50\\x00\\x50'),\n\
         \x20 e/v4/TCP(dport=80)/Raw(b'y' * 40),\n\
         ]\n\
         frames[-1][IP].flags = 'MF'\n\
         sendp(frames, iface='eth0', count=5, verbose=0)\n\
         sendp([e/fuzz(v6/TCP(dport=80, flags='S')) for _ in range(150)], iface='eth0', verbose=0)\n\
         sendp([e/fuzz(v4/TCP(dport=80, flags='S')) for _ in range(150)], iface='eth0', verbose=0)\n"
    );
    halb_lab::lab::run(lab.cmd("client", "/usr/bin/python3").args(["-c", &script]))
        .expect("scapy sends");
    let after = drops(&lab, "lb1");
    let grew = |k: &str| after[k] - before[k];
    assert!(grew("drop_malformed") >= 20, "malformed: {after:?}");
    assert!(grew("drop_fragment") >= 15, "fragments: {after:?}");
    assert!(
        grew("drop_ext_headers") >= 10,
        "extension headers: {after:?}"
    );
    assert!(
        lab.proc_mut("halb-lb1").expect("halb").try_wait().is_none(),
        "the agent is still running"
    );
    for h in streams {
        let s = h
            .join()
            .expect("join")
            .expect("ns")
            .expect("the download survives the junk");
        assert_eq!(s.bytes, BIG_SIZE);
    }
    serves(&lab, 20);
    let v4 = lab
        .requests_to(VIP, 20, Duration::from_secs(3))
        .expect("IPv4 requests");
    assert!(v4.iter().all(|r| r.status == 200));
}

/// HTTP checks reach the IPv6 backends from the node's IPv6 address; a
/// backend whose nginx stops goes down over IPv6 alone (its IPv4 twin has
/// no check), and `halb status` shows the IPv6 VIP as `[address]:port`.
#[test]
fn ipv6_backends_are_health_checked_and_shown() {
    let mut lab = lab("v6h");
    let cfg = node_config(&lab, "lb1", "native", BACKENDS, None, Some(&dual(150)));
    // The last [[vip]] is web6: its health check.
    let cfg = format!(
        "{cfg}  [vip.health]\n  kind = \"http\"\n  path = \"/\"\n  interval_ms = 200\n  \
         timeout_ms = 150\n  rise = 1\n  fall = 1\n"
    );
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    let web6 = |lab: &Lab| vip_status(lab, "lb1", "web6");
    lab.wait_for(
        "every IPv6 backend up by its HTTP check",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || web6(&lab).is_some_and(|v| v.check == "http" && v.healthy_backends == 3),
    )
    .expect("IPv6 checks pass");
    let v = web6(&lab).expect("status");
    assert_eq!(v.address, VIP6.to_string());
    for b in &v.backends {
        assert!(b.address.starts_with("fd77::"), "{b:?}");
        assert!(b.mac.is_some(), "learned by ND: {b:?}");
        let detail = b.last_check.as_ref().map(|c| c.detail.clone());
        assert_eq!(detail.as_deref(), Some("HTTP 200"), "{b:?}");
    }
    // nginx on web3 stops: down over IPv6, traffic goes to the others.
    lab.stop("nginx-web3");
    lab.wait_for(
        "web3 down over IPv6",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || web6(&lab).is_some_and(|v| v.healthy_backends == 2),
    )
    .expect("the failed check takes web3 out");
    let replies = lab
        .requests_to(VIP6, 30, Duration::from_secs(3))
        .expect("requests succeed without web3");
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.body.trim() != "web3"));
    // The table names the IPv6 VIP with its port in brackets.
    let mut c = lab.nsenter("lb1", &halb_lab::lab::halb_bin());
    c.args(["status", "--api", "127.0.0.1:8480"]);
    let out = halb_lab::lab::run(&mut c).expect("halb status");
    assert!(out.contains("vip web6 [fd77::100]:80/tcp"), "{out}");
    assert!(out.contains("fd77::23"), "{out}");
}

/// A unicast pair over IPv6: adverts to the peer's ULA (no multicast), a
/// global source accepted because it is the configured peer; the backup
/// takes the IPv6 VIP over when the master dies.
#[test]
fn a_unicast_ipv6_pair_elects_and_fails_over() {
    let mut lab = lab("v6u");
    let mut v1 = dual(150);
    v1.unicast_peers = vec![lb_addr(2)];
    let mut v2 = dual(100);
    v2.unicast_peers = vec![lb_addr(1)];
    start(&mut lab, "lb1", &v1);
    start(&mut lab, "lb2", &v2);
    let cfg = std::fs::read_to_string(lab.dir.join("halb-lb1.toml")).expect("config");
    assert!(cfg.contains(&format!("unicast_peers = [\"{}\"]", ula_of(lb_addr(2)))));
    wait_owner(&lab, VIP6.into(), "lb1", Duration::from_secs(3));
    // lb2 hears lb1's unicast adverts (from its ULA, not link-local).
    lab.wait_for(
        "lb2 to hear lb1 over IPv6 unicast",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            vrrp_of(&lab, "lb2")
                .is_some_and(|v| v.adverts_received >= 5 && v.master.as_deref() == Some("fd77::2"))
        },
    )
    .expect("unicast adverts arrive");
    serves(&lab, 20);
    let mac2 = lab.mac("lb2").expect("mac");
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.wait_for(
        "the client to follow lb2",
        Duration::from_secs(3),
        Duration::from_millis(5),
        || neighbour_mac(&lab, "client", VIP6).as_deref() == Some(mac2.as_str()),
    )
    .expect("takeover over unicast");
    serves(&lab, 20);
}
