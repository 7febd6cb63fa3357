//! End-to-end VRRP in namespaces: two halb nodes (multicast and unicast),
//! takeover on a master's death or link loss, preempt and nopreempt, the
//! client's ARP cache following, and interop with keepalived (v3, and v2
//! with PASS authentication). Needs root; CI runs as root.

use std::time::{Duration, Instant};

use halb::vrrp::packet::{Advert, Auth, Version};
use halb_lab::failover::{self, start_keepalived, Daemon};
use halb_lab::lab::{
    backend_addr, lb_addr, neighbour_mac, node_config, run, Lab, VrrpOpts, CLIENT, VIP,
};

const BACKENDS: u8 = 2;

/// Client, lb1 and lb2 (XDP native, pass programs on their bridge ports), backends.
fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    lab.add_host("client", CLIENT).expect("client");
    for n in 1..=2u8 {
        let h = format!("lb{n}");
        lab.add_host(&h, lb_addr(n)).expect("lb");
        lab.attach_pass_on_port(&h).expect("pass program");
    }
    for i in 1..=BACKENDS {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)
            .expect("backend");
    }
    lab
}

fn start(lab: &mut Lab, node: &str, v: &VrrpOpts) {
    let cfg = node_config(lab, node, "native", BACKENDS, None, Some(v));
    lab.start_halb(node, &cfg, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
}

fn owner(lab: &Lab) -> Option<&'static str> {
    let a = lab.has_addr("lb1", VIP).unwrap_or(false);
    let b = lab.has_addr("lb2", VIP).unwrap_or(false);
    match (a, b) {
        (true, false) => Some("lb1"),
        (false, true) => Some("lb2"),
        _ => None,
    }
}

fn wait_owner(lab: &Lab, node: &'static str, timeout: Duration) -> Duration {
    lab.wait_for(
        &format!("{node} to own the VIP alone"),
        timeout,
        Duration::from_millis(10),
        || owner(lab) == Some(node),
    )
    .unwrap_or_else(|e| panic!("{e}; owner now {:?}", owner(lab)))
}

/// `node`'s VRRP status from its API (halb nodes listen on 127.0.0.1:8480).
fn vrrp_of(lab: &Lab, node: &str) -> Option<halb::api::model::VrrpStatus> {
    lab.api_status(node).and_then(|s| s.vrrp)
}

/// Waits until halb node `node` has sent (`sent`) or heard `n` more
/// adverts than now: protocol time passing, whatever the wall clock does.
fn adverts_pass(lab: &Lab, node: &str, n: u64, sent: bool) {
    let count = |v: &halb::api::model::VrrpStatus| {
        if sent {
            v.adverts_sent
        } else {
            v.adverts_received
        }
    };
    let start = vrrp_of(lab, node).map(|v| count(&v)).expect("status");
    lab.wait_for(
        &format!("{n} adverts at {node}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        || vrrp_of(lab, node).is_some_and(|v| count(&v) >= start + n),
    )
    .expect("adverts flow");
}

/// Requests through the VIP succeed from the client.
fn serves(lab: &Lab) {
    let r = lab
        .requests(20, Duration::from_secs(3))
        .expect("requests through the VIP succeed");
    assert!(r.iter().all(|r| r.status == 200));
}

/// Kills `node`'s agent without any clean-up (SIGKILL) and measures the
/// time until the client's ARP entry for the VIP names `to`'s MAC.
fn kill_and_time(lab: &mut Lab, node: &str, to: &str) -> Duration {
    let mac = lab.mac(to).expect("mac");
    let mut p = lab.take_proc(&format!("halb-{node}")).expect("halb");
    let t0 = Instant::now();
    p.signal(libc::SIGKILL);
    lab.wait_for(
        "the client's ARP entry to follow",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || neighbour_mac(lab, "client", VIP).as_deref() == Some(mac.as_str()),
    )
    .expect("client follows");
    let took = t0.elapsed();
    p.wait_exit(Duration::from_secs(5));
    took
}

#[test]
fn multicast_pair_elects_fails_over_and_preempts_back() {
    let mut lab = lab("vmc");
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    serves(&lab);
    assert_eq!(
        neighbour_mac(&lab, "client", VIP),
        Some(lab.mac("lb1").expect("mac"))
    );

    // The master dies: lb2 takes over within the master-down interval
    // (3 × 100 ms + skew 61 ms = 361 ms) plus the gratuitous ARP.
    let took = kill_and_time(&mut lab, "lb1", "lb2");
    assert!(took <= Duration::from_millis(400), "takeover took {took:?}");
    assert!(lab.has_addr("lb2", VIP).expect("addr"));
    serves(&lab);

    // lb1 returns with a higher priority: it preempts, lb2 steps down.
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    let mac1 = lab.mac("lb1").expect("mac");
    lab.wait_for(
        "client to follow back",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac1.as_str()),
    )
    .expect("client follows back");
    serves(&lab);

    // A clean stop sends priority 0: lb2 takes over after its skew only.
    let mac2 = lab.mac("lb2").expect("mac");
    let t0 = Instant::now();
    lab.proc_mut("halb-lb1")
        .expect("halb")
        .signal(libc::SIGTERM);
    lab.wait_for(
        "handover on priority 0",
        Duration::from_secs(3),
        Duration::from_millis(2),
        || neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac2.as_str()),
    )
    .expect("handover");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "priority-0 handover took {took:?}"
    );
    assert!(
        !lab.has_addr("lb1", VIP).expect("addr"),
        "lb1 removed the VIP on exit"
    );
}

#[test]
fn unicast_pair_with_nopreempt_and_link_loss() {
    let mut lab = lab("vuc");
    let mut v1 = VrrpOpts::v3(150);
    v1.unicast_peers = vec![lb_addr(2)];
    v1.preempt = false;
    let mut v2 = VrrpOpts::v3(100);
    v2.unicast_peers = vec![lb_addr(1)];
    v2.preempt = false;
    start(&mut lab, "lb1", &v1);
    start(&mut lab, "lb2", &v2);
    // No multicast on the wire: only unicast adverts elect lb1.
    wait_owner(&lab, "lb1", Duration::from_secs(3));

    // lb1 loses its link: lb2 takes over; lb1 tracks eth0 and goes to FAULT.
    let t0 = Instant::now();
    lab.ip("lb1", &["link", "set", "eth0", "down"])
        .expect("link down");
    lab.wait_for(
        "lb2 to take the VIP",
        Duration::from_secs(3),
        Duration::from_millis(5),
        || lab.has_addr("lb2", VIP).unwrap_or(false),
    )
    .expect("takeover");
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(400),
        "takeover on link loss took {took:?}"
    );
    lab.proc_mut("halb-lb1")
        .expect("halb")
        .wait_log("state=\"FAULT\"", Duration::from_secs(3))
        .expect("lb1 in FAULT");
    assert!(
        !lab.has_addr("lb1", VIP).expect("addr"),
        "FAULT removes the VIP"
    );

    // Link back: lb1 returns as backup and, with nopreempt, stays backup.
    lab.ip("lb1", &["link", "set", "eth0", "up"])
        .expect("link up");
    lab.proc_mut("halb-lb1")
        .expect("halb")
        .wait_log("state=\"BACKUP\"", Duration::from_secs(3))
        .expect("lb1 back as backup");
    // Ten of the master's adverts later, lb1 (higher, nopreempt) still waits.
    adverts_pass(&lab, "lb1", 10, false);
    assert_eq!(owner(&lab), Some("lb2"), "nopreempt: lb2 keeps the VIP");
    serves(&lab);
}

#[test]
fn packets_from_strangers_are_counted_not_trusted() {
    let mut lab = lab("vst");
    let mut v1 = VrrpOpts::v3(100);
    v1.unicast_peers = vec![lb_addr(2)];
    start(&mut lab, "lb1", &v1);
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    // The client, not a peer, claims mastership with priority 254 by
    // unicast (a well-formed advert), then with a bad checksum and a bad TTL.
    let advert = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 254,
        interval_cs: 10,
        addresses: vec![VIP.into()],
        auth: Auth::None,
    };
    let good: String = advert
        .build(CLIENT.into(), lb_addr(1).into())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut bad = advert.build(CLIENT.into(), lb_addr(1).into());
    bad[7] ^= 0xff;
    let bad: String = bad.iter().map(|b| format!("{b:02x}")).collect();
    let forge = format!(
        "from scapy.all import *\n\
         for ttl, body in ((255, '{good}'), (255, '{bad}'), (64, '{good}')):\n\
         \x20   send(IP(src='{CLIENT}', dst='{lb}', proto=112, ttl=ttl)/Raw(bytes.fromhex(body)), count=5, verbose=0)\n",
        lb = lb_addr(1)
    );
    // Debian's python3 carries scapy (python3-scapy), whatever python3 is first on PATH.
    run(lab.cmd("client", "/usr/bin/python3").args(["-c", &forge])).expect("scapy");
    lab.wait_for(
        "the forged packets to be counted",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            vrrp_of(&lab, "lb1").is_some_and(|v| {
                ["not_peer", "checksum", "ttl"]
                    .iter()
                    .all(|r| v.rejected.get(*r) == Some(&5))
            })
        },
    )
    .expect("counted");
    assert_eq!(owner(&lab), Some("lb1"), "forged adverts changed nothing");
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = p.log_text();
    for want in ["not_peer=5", "checksum=5", "ttl=5"] {
        assert!(log.contains(want), "{want} in {log}");
    }
}

fn interop(version: u8) {
    let mut lab = lab(&format!("vka{version}"));
    let (advert_ms, mut v) = if version == 3 {
        (100, VrrpOpts::v3(150))
    } else {
        let mut v = VrrpOpts::v3(150);
        v.version = 2;
        v.advert_ms = 1000;
        v.auth_pass = Some("secret".into());
        (1000, v)
    };
    let auth = (version == 2).then_some("secret");
    // halb higher: halb wins.
    start(&mut lab, "lb1", &v);
    start_keepalived(&mut lab, "lb2", version, 100, advert_ms, auth);
    let slow = Duration::from_secs(if version == 2 { 8 } else { 3 });
    wait_owner(&lab, "lb1", slow);
    // Five of halb's adverts later (keepalived heard them), it still is.
    adverts_pass(&lab, "lb1", 5, true);
    assert_eq!(
        owner(&lab),
        Some("lb1"),
        "keepalived stays backup under a higher halb"
    );
    serves(&lab);
    // halb dies: keepalived takes over (the dead node's stale VIP is
    // cleared, as a dead node would not hold it).
    kill_and_time(&mut lab, "lb1", "lb2");
    lab.ip("lb1", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .expect("clear stale VIP");
    wait_owner(&lab, "lb2", slow);
    // (lb2 runs keepalived alone, with no load balancer behind the VIP:
    // ownership is what is checked while it is master.)
    // halb returns with a lower priority: keepalived keeps the VIP.
    v.priority = 50;
    start(&mut lab, "lb1", &v);
    // halb hears five of keepalived's adverts and stays backup.
    adverts_pass(&lab, "lb1", 5, false);
    assert_eq!(
        owner(&lab),
        Some("lb2"),
        "keepalived (100) stays master over halb (50)"
    );
    // keepalived dies: halb takes over.
    lab.stop("keepalived-lb2");
    lab.ip("lb2", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .ok();
    wait_owner(&lab, "lb1", slow);
    serves(&lab);
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = p.log_text();
    assert!(
        log.contains("rejected=none"),
        "no packet of keepalived's was rejected: {log}"
    );
}

#[test]
fn interop_with_keepalived_v3() {
    interop(3);
}

#[test]
fn interop_with_keepalived_v2_pass_auth() {
    interop(2);
}

#[test]
fn ten_crashes_each_taken_over_within_400_ms() {
    let t = failover::takeovers(Daemon::Halb, 10, 100).expect("measure");
    let (min, med, max) = failover::summary(&t);
    eprintln!("halb takeover, 100 ms adverts, 10 crashes: min {min:.0} ms, median {med:.0} ms, max {max:.0} ms");
    for d in &t {
        assert!(*d <= Duration::from_millis(400), "takeovers {t:?}");
    }
}

#[test]
fn tracked_script_moves_the_vip_and_notify_hooks_run() {
    let mut lab = lab("vts");
    let flag = lab.dir.join("lb1-healthy");
    std::fs::write(&flag, "").expect("flag");
    let states = lab.dir.join("lb1-states");
    let hook = lab.dir.join("notify.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1\" >> {}\n", states.display()),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut v1 = VrrpOpts::v3(150);
    v1.extra = format!(
        "notify = \"{}\"\n[[vrrp.track_script]]\nname = \"flag\"\nscript = \"test -f {}\"\n\
         interval_ms = 100\ntimeout_ms = 90\nfall = 2\nrise = 2\nweight = -100\n",
        hook.display(),
        flag.display()
    );
    start(&mut lab, "lb1", &v1);
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    // The script starts failing: lb1 drops to 50 and lb2 (100) preempts.
    std::fs::remove_file(&flag).expect("rm");
    wait_owner(&lab, "lb2", Duration::from_secs(3));
    // It recovers: lb1 is back at 150 and preempts again.
    std::fs::write(&flag, "").expect("flag");
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    lab.wait_for(
        "the notify hook to record it",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            std::fs::read_to_string(&states)
                .unwrap_or_default()
                .lines()
                .collect::<Vec<_>>()
                == ["BACKUP", "MASTER", "BACKUP", "MASTER"]
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", std::fs::read_to_string(&states)));
}

const VIP2: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 101);

/// `node`'s config path in the lab.
fn config_path(lab: &Lab, node: &str) -> std::path::PathBuf {
    lab.dir.join(format!("halb-{node}.toml"))
}

/// A second VIP (`web2` on VIP2) over the same backends.
fn second_vip() -> String {
    let mut s = format!(
        "\n[[vip]]\nname = \"web2\"\naddress = \"{VIP2}\"\nport = 80\nprotocol = \"tcp\"\n"
    );
    for i in 1..=BACKENDS {
        s.push_str(&format!(
            "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n",
            backend_addr(i)
        ));
    }
    s
}

/// Sends SIGHUP to `node`'s agent and waits for the reload to be logged.
fn reload(lab: &mut Lab, node: &str, config: &str, n: usize) {
    std::fs::write(config_path(lab, node), config).expect("write config");
    let p = lab.proc_mut(&format!("halb-{node}")).expect("halb");
    p.signal(libc::SIGHUP);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let log = p.log_text();
        let done =
            log.matches("configuration reloaded").count() + log.matches("reload rejected").count();
        if done >= n {
            break;
        }
        assert!(Instant::now() < end, "no reload logged:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn requests_to(lab: &Lab, addr: std::net::Ipv4Addr, n: usize) -> anyhow::Result<usize> {
    lab.in_ns("client", move || {
        let mut ok = 0;
        for _ in 0..n {
            let r = halb_lab::client::http_get(addr, 80, "/", Duration::from_secs(2))?;
            anyhow::ensure!(r.status == 200, "HTTP {}", r.status);
            ok += 1;
        }
        Ok(ok)
    })?
}

#[test]
fn a_reload_that_adds_or_removes_a_vip_moves_its_address() {
    let mut lab = lab("vra");
    for i in 1..=BACKENDS {
        lab.ip(
            &format!("web{i}"),
            &["addr", "add", &format!("{VIP2}/32"), "dev", "lo"],
        )
        .expect("VIP2 on the backend");
    }
    // The client takes gratuitous ARP for addresses it has no entry for
    // yet, so the announcement of the new VIP is seen before any traffic.
    run(lab
        .cmd("client", "sysctl")
        .args(["-q", "-w", "net.ipv4.conf.eth0.arp_accept=1"]))
    .expect("arp_accept");
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    let base1 = std::fs::read_to_string(config_path(&lab, "lb1")).expect("config");
    let base2 = std::fs::read_to_string(config_path(&lab, "lb2")).expect("config");
    // Both nodes get web2 at a new address: the master adds it (with
    // gratuitous ARP), the backup does not.
    reload(&mut lab, "lb1", &format!("{base1}{}", second_vip()), 1);
    reload(&mut lab, "lb2", &format!("{base2}{}", second_vip()), 1);
    lab.wait_for(
        "lb1 to hold VIP2",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || lab.has_addr("lb1", VIP2).unwrap_or(false),
    )
    .expect("the master adds the new VIP");
    assert!(
        !lab.has_addr("lb2", VIP2).expect("ip"),
        "the backup does not hold it"
    );
    assert_eq!(requests_to(&lab, VIP2, 10).expect("VIP2 serves"), 10);
    assert_eq!(
        neighbour_mac(&lab, "client", VIP2),
        Some(lab.mac("lb1").expect("mac"))
    );
    // A failover carries the new VIP too (the dead node's addresses are
    // cleared, as a dead node would not answer for them).
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    for a in [VIP, VIP2] {
        lab.ip("lb1", &["addr", "del", &format!("{a}/32"), "dev", "eth0"])
            .expect("clear the dead node's VIP");
    }
    lab.wait_for(
        "lb2 to hold VIP2",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || lab.has_addr("lb2", VIP2).unwrap_or(false),
    )
    .expect("takeover carries VIP2");
    assert_eq!(requests_to(&lab, VIP2, 5).expect("VIP2 serves"), 5);
    // Removing it takes the address off the master.
    reload(&mut lab, "lb2", &base2, 2);
    lab.wait_for(
        "lb2 to drop VIP2",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || !lab.has_addr("lb2", VIP2).unwrap_or(true),
    )
    .expect("the removed VIP's address goes");
    assert!(lab.has_addr("lb2", VIP).expect("ip"), "the other VIP stays");
}

#[test]
fn vrrp_settings_changed_by_a_reload_wait_for_a_restart() {
    let mut lab = lab("vrk");
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    let base = std::fs::read_to_string(config_path(&lab, "lb1")).expect("config");
    // The [vrrp] change waits; the health checks added beside it apply now.
    let changed = base
        .replace("priority = 150", "priority = 20")
        .replace("[vrrp]\n", "[vrrp]\ntrack_backends_weight = -10\n")
        .replacen(
            "\n  [[vip.backend]]",
            "\n  [vip.health]\n  kind = \"tcp\"\n  interval_ms = 200\n  timeout_ms = 100\n  \
             rise = 1\n  fall = 1\n\n  [[vip.backend]]",
            1,
        );
    reload(&mut lab, "lb1", &changed, 1);
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert!(log.contains("take effect at the next restart"), "{log}");
    let s = lab
        .in_ns("lb1", || {
            halb::api::client::Client::new("127.0.0.1:8480".parse().expect("addr"), None)
                .get("/api/v1/status")
        })
        .expect("ns")
        .expect("status");
    let s: halb::api::model::Status = serde_json::from_str(&s.body).expect("json");
    let v = s.vrrp.expect("vrrp");
    assert_eq!(
        (v.base_priority, v.priority, v.state.as_str()),
        (150, 150, "MASTER")
    );
}

#[test]
fn a_vrrp_source_that_is_not_on_the_host_stops_the_start() {
    let mut lab = lab("vsr");
    let mut v = VrrpOpts::v3(150);
    v.extra = "source = \"10.99.0.1\"\n".into();
    let cfg = node_config(&lab, "lb1", "native", BACKENDS, None, Some(&v));
    let p = lab.start_halb("lb1", &cfg, &[]).expect("start");
    let status = p.wait_exit(Duration::from_secs(10)).expect("halb exits");
    assert!(!status.success(), "exit status {status}");
    let log = p.log_text();
    assert!(
        log.contains("source = \"10.99.0.1\" is not an address of eth0"),
        "{log}"
    );
    assert!(!lab.has_addr("lb1", VIP).expect("ip"));
    let link = lab
        .ip("lb1", &["-d", "link", "show", "dev", "eth0"])
        .expect("ip");
    assert!(
        !link.contains("prog/xdp"),
        "a failed start leaves no program: {link}"
    );
    assert!(
        !lab.pin_dir("lb1").join("link").exists(),
        "nor a pinned link"
    );
}

#[test]
fn a_second_agent_for_the_same_node_is_refused() {
    let mut lab = lab("vdp");
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    let prog = || {
        lab.ip("lb1", &["-d", "link", "show", "dev", "eth0"])
            .expect("ip")
            .split_whitespace()
            .skip_while(|w| *w != "prog/xdp")
            .nth(2)
            .map(str::to_string)
    };
    let before = prog();
    assert!(before.is_some(), "an XDP program is attached");
    let path = config_path(&lab, "lb1");
    let mut c = lab.nsenter("lb1", &halb_lab::lab::halb_bin());
    c.arg("run").arg("-c").arg(&path);
    let out = c.output().expect("second agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another halb agent is running"), "{err}");
    assert_eq!(prog(), before, "the first agent's program is untouched");
    serves(&lab);
}

#[test]
fn a_restarted_agent_reconciles_its_vips_and_streams_survive() {
    let mut lab = lab("vrc");
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    wait_owner(&lab, "lb1", Duration::from_secs(3));
    let streams = lab.streams(VIP, 8).expect("streams");
    // The master's agent dies (its data plane keeps forwarding, its VIP
    // address stays behind); the peer takes over.
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.wait_for(
        "lb2 to take over",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || lab.has_addr("lb2", VIP).unwrap_or(false),
    )
    .expect("takeover");
    assert!(
        lab.has_addr("lb1", VIP).expect("ip"),
        "the crashed agent left its VIP"
    );
    // Restarted, the agent takes stock: as backup it drops the stale
    // address, then preempts back (priority 150) and holds it alone.
    start(&mut lab, "lb1", &VrrpOpts::v3(150));
    wait_owner(&lab, "lb1", Duration::from_secs(5));
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert!(log.contains("adopted the pinned XDP program"), "{log}");
    for h in streams {
        let s = h
            .join()
            .expect("join")
            .expect("ns")
            .expect("stream survives");
        assert_eq!(s.bytes, halb_lab::lab::BIG_SIZE);
    }
    assert_eq!(owner(&lab), Some("lb1"), "exactly one node holds the VIP");
}

#[test]
fn a_restarted_backup_drops_the_vip_it_left_and_a_lone_node_keeps_it() {
    let mut lab = lab("vrb");
    // lb2 (100) is master; lb1 (50) is backup.
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    wait_owner(&lab, "lb2", Duration::from_secs(3));
    start(&mut lab, "lb1", &VrrpOpts::v3(50));
    adverts_pass(&lab, "lb1", 3, false);
    // lb1's agent crashed while holding the VIP (a stale address), then
    // restarts: it hears lb2 and takes the address off.
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.ip("lb1", &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])
        .expect("stale VIP");
    start(&mut lab, "lb1", &VrrpOpts::v3(50));
    wait_owner(&lab, "lb2", Duration::from_secs(3));

    // A lone node (lb2 alone now) restarted after a crash keeps its VIP the
    // whole time: it becomes master again without taking it off.
    lab.stop("halb-lb1");
    lab.ip("lb1", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .ok();
    let mut p = lab.take_proc("halb-lb2").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    assert!(lab.has_addr("lb2", VIP).expect("ip"), "the crash left it");
    start(&mut lab, "lb2", &VrrpOpts::v3(100));
    let t0 = Instant::now();
    let mut always = true;
    while vrrp_of(&lab, "lb2").is_none_or(|v| v.state != "MASTER") {
        always &= lab.has_addr("lb2", VIP).unwrap_or(false);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "lb2 not master again"
        );
    }
    assert!(always, "the VIP was taken off during the restart");
    assert!(lab.has_addr("lb2", VIP).expect("ip"));
}
