//! The BGP scale-out mode end to end: three active halb nodes behind a
//! router running BIRD 2 with ECMP, each node announcing the VIP through its
//! own BIRD (BGP and BFD). Needs root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use halb_lab::lab::{VIP, VIP6};
use halb_lab::scaleout::{self, ScaleOut, CLIENT};

fn lab(tag: &str) -> ScaleOut {
    let mut s = ScaleOut::new(tag, 3, 3).expect("scale-out lab");
    s.start_all().expect("three nodes announced");
    s
}

/// `n` requests from the client to `vip` (either family), a new connection
/// (and source port) each: the answering backends counted.
fn spread_to(s: &ScaleOut, vip: std::net::IpAddr, n: usize) -> BTreeMap<String, usize> {
    s.lab
        .in_ns("client", move || {
            let mut m = BTreeMap::new();
            for _ in 0..n {
                match halb_lab::client::http_get(vip, 80, "/", Duration::from_secs(3)) {
                    Ok(r) if r.status == 200 => {
                        *m.entry(r.body.trim().to_string()).or_default() += 1
                    }
                    Ok(r) => *m.entry(format!("HTTP {}", r.status)).or_default() += 1,
                    Err(e) => *m.entry(format!("error: {e}")).or_default() += 1,
                }
            }
            m
        })
        .expect("client")
}

#[test]
fn flows_spread_over_every_node_and_backend() {
    let s = lab("sod");
    assert_eq!(halb_lab::scaleout::CLIENT, CLIENT);
    spread_over_everything(&s, VIP.into());
}

/// 600 requests to `vip`: every one answered by a backend, each backend
/// at least 120 of them, each node at least a fifth of the packets.
fn spread_over_everything(s: &ScaleOut, vip: std::net::IpAddr) {
    let before: Vec<u64> = (1..=3).map(|n| s.forwarded(n)).collect();
    let m = spread_to(s, vip, 600);
    let ok: usize = ["web1", "web2", "web3"]
        .iter()
        .map(|b| m.get(*b).copied().unwrap_or(0))
        .sum();
    assert_eq!(ok, 600, "every request to {vip} answered: {m:?}");
    for b in ["web1", "web2", "web3"] {
        assert!(
            m[b] >= 120,
            "each backend gets a fair share of {vip}: {m:?}"
        );
    }
    let d: Vec<u64> = (1..=3)
        .map(|n| s.forwarded(n) - before[n as usize - 1])
        .collect();
    let total: u64 = d.iter().sum();
    for (i, x) in d.iter().enumerate() {
        assert!(
            *x * 5 >= total,
            "node lb{} forwarded {x} of {total} packets for {vip}: {d:?}",
            i + 1
        );
    }
}

#[test]
fn a_node_loss_keeps_every_stream_and_blackholes_for_at_most_300_ms() {
    let mut s = lab("sol");
    let streams = s.lab.streams(VIP, 30).expect("30 streams");
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes
        .wait_ok(&s.lab, 20)
        .expect("probes pass before the event");
    // The link first: nothing the node sends gets out (no BGP withdrawal),
    // so the router's BFD session has to find out (3 × 50 ms).
    let mut p = s.lab.take_proc("halb-lb1").expect("halb");
    let t0 = Instant::now();
    s.lab
        .ip("lb1", &["link", "set", "eth0", "down"])
        .expect("link down");
    p.signal(libc::SIGKILL);
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("lb1 out of the ECMP set");
    let left = t0.elapsed();
    let (whole, gap) = halb_lab::lab::survived(streams);
    let seen = probes.finish();
    let (failed, out) = scaleout::outage(&seen, t0);
    eprintln!(
        "router dropped lb1 after {left:?}; {failed} of {} probes failed, outage {out:?}; \
         {whole}/30 streams whole, longest pause {gap:?}",
        seen.len()
    );
    assert_eq!(whole, 30, "every stream survives the node loss");
    assert!(out <= Duration::from_millis(300), "outage {out:?}");
    p.wait_exit(Duration::from_secs(5));
}

/// `halb node ...` in node `n`'s namespace.
fn node_cmd(s: &ScaleOut, n: u8, action: &str) -> String {
    let node = format!("lb{n}");
    let cfg = s.lab.dir.join(format!("halb-{node}.toml"));
    let mut c = s.lab.nsenter(&node, &halb_lab::lab::halb_bin());
    c.arg("node").arg(action).arg("-c").arg(&cfg);
    halb_lab::lab::run(&mut c).expect("halb node")
}

/// `halb status` (the table) of node `n`.
fn node_cmd_status(s: &ScaleOut, n: u8) -> String {
    let node = format!("lb{n}");
    let cfg = s.lab.dir.join(format!("halb-{node}.toml"));
    let mut c = s.lab.nsenter(&node, &halb_lab::lab::halb_bin());
    c.arg("status").arg("-c").arg(&cfg);
    halb_lab::lab::run(&mut c).expect("halb status")
}

/// Every backend of every VIP is up in `st`.
fn all_up(st: &halb::api::model::Status) -> bool {
    st.vips
        .iter()
        .all(|v| v.backends.iter().all(|b| b.health == "up"))
}

fn status(s: &ScaleOut, n: u8) -> halb::api::model::Status {
    s.lab
        .in_ns(&format!("lb{n}"), || {
            let a = halb::api::client::Client::new("127.0.0.1:8480".parse().expect("addr"), None)
                .get("/api/v1/status")
                .expect("status");
            serde_json::from_str::<halb::api::model::Status>(&a.body).expect("json")
        })
        .expect("ns")
}

#[test]
fn a_drain_moves_every_flow_without_a_failed_request_and_a_join_keeps_them() {
    let mut s = ScaleOut::new("sdj", 3, 3).expect("lab");
    for n in 1..=2 {
        s.start_node(n).expect("node");
    }
    s.wait_paths(&[1, 2], Duration::from_secs(30))
        .expect("two nodes");
    // A node joins under 30 streams.
    let streams = s.lab.streams(VIP, 30).expect("streams");
    s.start_node(3).expect("lb3");
    s.wait_paths(&[1, 2, 3], Duration::from_secs(10))
        .expect("lb3 joined");
    let (whole, gap) = halb_lab::lab::survived(streams);
    eprintln!("join: {whole}/30 whole, longest pause {gap:?}");
    assert_eq!(whole, 30, "every stream survives a join");
    // lb1 is drained under 30 streams and a probe every 10 ms.
    let streams = s.lab.streams(VIP, 30).expect("streams");
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes.wait_ok(&s.lab, 20).expect("probes pass");
    let out = node_cmd(&s, 1, "drain");
    assert!(out.contains("node drained; announced: nothing"), "{out}");
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("lb1 withdrawn");
    let st = status(&s, 1);
    let bgp = st.bgp.expect("bgp status");
    assert!(bgp.drained);
    assert_eq!(bgp.announcements[0].reason, "node drained");
    assert!(!bgp.announcements[0].announced);
    let (whole, gap) = halb_lab::lab::survived(streams);
    let seen = probes.finish();
    let failed = scaleout::failures(&seen);
    eprintln!(
        "drain: {whole}/30 whole, longest pause {gap:?}, {failed} of {} probes failed",
        seen.len()
    );
    assert_eq!(whole, 30, "every stream survives a drain");
    assert_eq!(failed, 0, "no request fails during a drain");
    // lb1 still forwards while drained (its program stays attached).
    assert!(bgp.dataplane_attached);
    // Shown in /metrics and `halb status` too.
    let metrics = s
        .lab
        .in_ns("lb1", || {
            halb::api::client::Client::new("127.0.0.1:8480".parse().expect("addr"), None)
                .get("/metrics")
                .expect("metrics")
                .body
        })
        .expect("ns");
    for want in [
        "halb_bgp_announced{node=\"lb1\",address=\"10.77.0.100\"} 0\n",
        "halb_node_drained{node=\"lb1\"} 1\n",
        "halb_bgp_table_in_sync{node=\"lb1\"} 1\n",
        "halb_bgp_session_up{node=\"lb1\",session=\"halb_10_77_0_1\"} 1\n",
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    let changes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("halb_bgp_announcement_changes_total{node=\"lb1\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the change counter");
    assert!(changes >= 2, "announced, then withdrawn: {changes}");
    let table = node_cmd_status(&s, 1);
    assert!(
        table.contains("withdrawn 10.77.0.100: node drained"),
        "{table}"
    );
    assert!(table.contains("bgp: node DRAINED"), "{table}");
    // The drain outlives the agent: killed and restarted, lb1 stays out.
    let mut p = s.lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    s.start_node(1).expect("restart");
    s.lab
        .wait_for(
            "the restarted agent's checks",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                let st = status(&s, 1);
                st.bgp
                    .as_ref()
                    .is_some_and(|b| b.drained && b.announcements.iter().all(|a| !a.announced))
                    && all_up(&st)
            },
        )
        .expect("restarted drained, checks passed, nothing announced");
    assert_eq!(
        s.paths().len(),
        2,
        "a drained node stays withdrawn after a restart"
    );
    let out = node_cmd(&s, 1, "enable");
    assert!(
        out.contains("node enabled; announced: 10.77.0.100"),
        "{out}"
    );
    s.wait_paths(&[1, 2, 3], Duration::from_secs(3))
        .expect("lb1 back");
}

#[test]
fn the_health_gate_withdraws_a_node_that_cannot_reach_its_backends() {
    let s = lab("shg");
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes.wait_ok(&s.lab, 20).expect("probes pass");
    // lb1's own probes to the backends are dropped (its XDP forwarding is
    // not: XDP_TX never meets nftables).
    let rules: [&[&str]; 3] = [
        &["add", "table", "ip", "halbgate"],
        &[
            "add",
            "chain",
            "ip",
            "halbgate",
            "o",
            "{ type filter hook output priority 0 ; }",
        ],
        &[
            "add", "rule", "ip", "halbgate", "o", "tcp", "dport", "80", "drop",
        ],
    ];
    for r in rules {
        halb_lab::lab::run(s.lab.cmd("lb1", "nft").args(r)).expect("nft");
    }
    let t0 = Instant::now();
    // fall (2) × interval (200 ms) + 1 s.
    s.wait_paths(&[2, 3], Duration::from_millis(1400))
        .expect("withdrawn in time");
    eprintln!(
        "health gate: lb1 withdrawn {:?} after its probes were blocked",
        t0.elapsed()
    );
    let st = status(&s, 1);
    let a = &st.bgp.expect("bgp").announcements[0];
    assert!(!a.announced);
    assert!(a.reason.starts_with("no healthy backend"), "{}", a.reason);
    halb_lab::lab::run(
        s.lab
            .cmd("lb1", "nft")
            .args(["delete", "table", "ip", "halbgate"]),
    )
    .expect("nft");
    // Back after the hold-down (1 s).
    let t1 = Instant::now();
    s.wait_paths(&[1, 2, 3], Duration::from_secs(5))
        .expect("announced again");
    let back = t1.elapsed();
    eprintln!("health gate: lb1 announced again {back:?} after its probes passed again");
    assert!(
        back >= Duration::from_millis(1000),
        "the hold-down applies: {back:?}"
    );
    let seen = probes.finish();
    let failed = scaleout::failures(&seen);
    assert_eq!(
        failed,
        0,
        "the other nodes serve throughout ({} probes)",
        seen.len()
    );
}

#[test]
fn a_crashed_agent_withdraws_at_once_and_traffic_keeps_flowing() {
    let mut s = lab("scr");
    let streams = s.lab.streams(VIP, 12).expect("streams");
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes.wait_ok(&s.lab, 20).expect("probes pass");
    // SIGKILL only: the node stays on the wire, its BIRD runs on. The
    // kernel removes the agent's announce device and its routes with it.
    let mut p = s.lab.take_proc("halb-lb1").expect("halb");
    let t0 = Instant::now();
    p.signal(libc::SIGKILL);
    s.wait_paths(&[2, 3], Duration::from_secs(1))
        .expect("withdrawn at once");
    eprintln!("crash: lb1 withdrawn {:?} after SIGKILL", t0.elapsed());
    p.wait_exit(Duration::from_secs(5));
    // A new agent adopts the pinned data plane and announces again.
    s.start_node(1).expect("restart");
    s.wait_paths(&[1, 2, 3], Duration::from_secs(5))
        .expect("back");
    assert!(
        s.lab
            .proc_mut("halb-lb1")
            .expect("halb")
            .log_text()
            .contains("adopted the pinned XDP program"),
        "the restarted agent adopts the running data plane"
    );
    // SIGTERM: withdraw first, forward through the grace period, then stop.
    let t1 = Instant::now();
    s.lab
        .proc_mut("halb-lb2")
        .expect("halb")
        .signal(libc::SIGTERM);
    s.wait_paths(&[1, 3], Duration::from_secs(1))
        .expect("lb2 withdrawn on SIGTERM");
    let withdrawn = t1.elapsed();
    let mut p2 = s.lab.take_proc("halb-lb2").expect("halb");
    // Withdrawn, and still forwarding whatever arrives: the program stays
    // attached through the grace period.
    assert!(
        p2.try_wait().is_none(),
        "still running after the withdrawal"
    );
    let link = s
        .lab
        .ip("lb2", &["link", "show", "dev", "eth0"])
        .expect("ip");
    assert!(
        link.contains("xdp"),
        "XDP attached during the grace period: {link}"
    );
    p2.wait_exit(Duration::from_secs(10)).expect("lb2 stops");
    let stopped = t1.elapsed();
    eprintln!("SIGTERM: withdrawn after {withdrawn:?}, stopped after {stopped:?}");
    assert!(
        stopped >= Duration::from_millis(2000),
        "forwarded through the grace period"
    );
    let (whole, _) = halb_lab::lab::survived(streams);
    let seen = probes.finish();
    let failed = scaleout::failures(&seen);
    assert_eq!(whole, 12, "every stream survives");
    assert_eq!(failed, 0, "no request fails ({} probes)", seen.len());
}

#[test]
fn a_bird_restart_and_a_session_flap_move_traffic_to_the_other_nodes() {
    let mut s = lab("sbr");
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes.wait_ok(&s.lab, 20).expect("probes pass");
    // BIRD on lb1 dies: the router loses the session and the path.
    let mut b = s.lab.take_proc("bird-lb1").expect("bird");
    b.signal(libc::SIGKILL);
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("lb1 out");
    b.wait_exit(Duration::from_secs(5));
    // Restarted, it learns halb's table and announces again.
    s.start_node_bird(1).expect("bird again");
    s.wait_paths(&[1, 2, 3], Duration::from_secs(15))
        .expect("lb1 back");
    // The session flaps (disabled and enabled on the node's side).
    let proto = halb::announce::bird::protocol_name(halb_lab::scaleout::ROUTER.into());
    let out = halb_lab::lab::run(scaleout::birdc(&s.lab, "lb1").args(["disable", &proto]))
        .expect("birdc");
    assert!(out.contains("disabled"), "{out}");
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("session down");
    halb_lab::lab::run(scaleout::birdc(&s.lab, "lb1").args(["enable", &proto])).expect("birdc");
    s.wait_paths(&[1, 2, 3], Duration::from_secs(15))
        .expect("session up");
    let st = status(&s, 1);
    let bgp = st.bgp.expect("bgp");
    s.lab
        .wait_for(
            "the session to show",
            Duration::from_secs(3),
            Duration::from_millis(50),
            || {
                status(&s, 1)
                    .bgp
                    .is_some_and(|b| b.sessions.iter().any(|x| x.name == proto && x.established))
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", bgp.sessions));
    let seen = probes.finish();
    let failed = scaleout::failures(&seen);
    assert_eq!(
        failed,
        0,
        "traffic keeps flowing through it all ({} probes)",
        seen.len()
    );
}

#[test]
fn the_stats_page_shows_the_announcements_and_drains_the_node() {
    let mut s = lab("spg");
    let profile = halb_lab::webdriver::start_driver(&mut s.lab, "lb1").expect("chromedriver");
    let r = s
        .lab
        .in_ns("lb1", move || -> anyhow::Result<(bool, bool)> {
            let w = halb_lab::webdriver::Session::start("127.0.0.1:9515".parse()?, &profile)?;
            w.goto("http://127.0.0.1:8480/")?;
            w.wait("return document.body.dataset.loaded === '1'")?;
            let up = w
                .script("return !!document.querySelector(\".ann.up[data-address='10.77.0.100']\")")?
                .as_bool()
                .unwrap_or(false);
            w.click("button[data-action='node-drain']")?;
            w.wait("return document.getElementById('bgp').dataset.drained === 'true'")?;
            let down = w
                .script(
                    "return !!document.querySelector(\".ann.down[data-address='10.77.0.100']\")",
                )?
                .as_bool()
                .unwrap_or(false);
            Ok((up, down))
        })
        .expect("ns");
    let (up, down) = r.expect("browser session");
    assert!(up, "the page shows the VIP announced");
    assert!(down, "after the click it shows it withdrawn");
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("the page's drain reached the router");
}

#[test]
fn a_reload_announces_added_vips_and_withdraws_removed_ones() {
    let mut s = lab("srl");
    // A reload that changes the health check on every node (the backends
    // start over as not checked yet) withdraws nothing.
    let probes = halb_lab::lab::Probes::start(&s.lab).expect("probes");
    probes.wait_ok(&s.lab, 20).expect("probes pass");
    for n in 1..=3u8 {
        let cfg = s
            .node_config(n)
            .replace("timeout_ms = 100", "timeout_ms = 150");
        assert_ne!(cfg, s.node_config(n));
        s.reload(n, &cfg).expect("reloaded");
    }
    s.lab
        .wait_for(
            "the new checks to pass everywhere",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || (1..=3).all(|n| all_up(&status(&s, n))),
        )
        .expect("checked again");
    assert_eq!(s.paths().len(), 3, "still announced by every node");
    let seen = probes.finish();
    let failed = scaleout::failures(&seen);
    assert_eq!(failed, 0, "no request failed across the reloads");
    let vip2 = halb_lab::lab::VIP2;
    s.lab
        .add_vip_on_backends(vip2, 3)
        .expect("VIP2 on the backends");
    let route2 = |s: &ScaleOut| {
        s.lab
            .ip("router", &["-4", "route", "show", &format!("{vip2}/32")])
            .unwrap_or_default()
    };
    let cfg = s.node_config(1);
    let web = cfg.split("[[vip]]").nth(1).expect("vip section");
    let added = format!(
        "{cfg}\n[[vip]]{}",
        web.replace("name = \"web\"", "name = \"api\"")
            .replace("10.77.0.100", &vip2.to_string())
    );
    s.reload(1, &added).expect("reloaded");
    s.lab
        .wait_for(
            "lb1 to announce VIP2",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || route2(&s).contains("via 10.77.0.2"),
        )
        .expect("VIP2 announced after its checks passed");
    assert_eq!(s.paths().len(), 3, "the first VIP is untouched");
    let cfg = s.node_config(1);
    s.reload(1, &cfg).expect("reloaded");
    s.lab
        .wait_for(
            "VIP2 withdrawn",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || route2(&s).trim().is_empty(),
        )
        .expect("VIP2 withdrawn when removed");
    assert!(
        s.lab
            .proc_mut("halb-lb1")
            .expect("halb")
            .log_text()
            .contains("removed from the config"),
        "the withdrawal says why"
    );
    assert_eq!(s.paths().len(), 3);
}

#[test]
fn a_replaced_xdp_program_withdraws_the_node() {
    let s = lab("sxp");
    let obj = halb_lab::lab::ebpf_dir().join("halb-pass");
    let obj = obj.to_str().expect("path");
    // Someone else's program in place of halb's: this node forwards nothing
    // for the VIP any more, and must not attract it. halb's program hangs on
    // a BPF link: detach that link, then attach another program the way
    // anyone could.
    let link = s
        .lab
        .ip("lb1", &["-d", "link", "show", "dev", "eth0"])
        .expect("ip");
    let prog: u64 = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program id in {link}"));
    let links =
        halb_lab::lab::run(std::process::Command::new("bpftool").args(["-j", "link", "show"]))
            .expect("bpftool");
    let links: serde_json::Value = serde_json::from_str(&links).expect("json");
    let id = links
        .as_array()
        .and_then(|v| v.iter().find(|l| l["prog_id"].as_u64() == Some(prog)))
        .and_then(|l| l["id"].as_u64())
        .expect("the program's BPF link");
    halb_lab::lab::run(std::process::Command::new("bpftool").args([
        "link",
        "detach",
        "id",
        &id.to_string(),
    ]))
    .expect("detach");
    s.lab
        .ip(
            "lb1",
            &[
                "link", "set", "dev", "eth0", "xdpdrv", "obj", obj, "sec", "xdp",
            ],
        )
        .expect("attach another program");
    let t0 = Instant::now();
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("withdrawn");
    eprintln!("replaced program: withdrawn after {:?}", t0.elapsed());
    // Two seconds of the agent's own uptime later (two data-plane looks,
    // past the 1 s hold-down), the foreign program still does not count.
    let since = status(&s, 1).node.uptime_s;
    s.lab
        .wait_for(
            "two more seconds of the agent",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || status(&s, 1).node.uptime_s > since + 2.0,
        )
        .expect("agent alive");
    let b = status(&s, 1).bgp.expect("bgp");
    assert!(
        !b.dataplane_attached,
        "a foreign program is no data plane of ours"
    );
    assert_eq!(b.announcements[0].reason, "XDP program not attached");
    assert_eq!(s.paths().len(), 2, "still withdrawn");
}

/// Dual stack: every node announces the IPv6 VIP over an IPv6 session too;
/// the router spreads IPv6 flows over all of them (ECMP), and a node whose
/// agent dies is withdrawn for IPv6 as for IPv4.
#[test]
fn ipv6_vips_are_announced_over_ipv6_sessions_and_spread_by_ecmp() {
    let mut s = ScaleOut::new_dual("so6", 3, 3).expect("dual-stack scale-out lab");
    s.start_all().expect("three nodes announced");
    s.wait_paths6(&[1, 2, 3], Duration::from_secs(30))
        .expect("the IPv6 VIP routed via every node");
    spread_over_everything(&s, VIP6.into());
    // lb1's agent dies: its device goes, BIRD withdraws both families.
    let mut p = s.lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    s.wait_paths6(&[2, 3], Duration::from_secs(3))
        .expect("lb1 out of the IPv6 ECMP set");
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("and of the IPv4 one");
    let r = s
        .lab
        .requests_to(VIP6, 30, Duration::from_secs(3))
        .expect("IPv6 requests through the other nodes");
    assert!(r.iter().all(|r| r.status == 200));
}
