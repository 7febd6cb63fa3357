//! Several VRRP instances per node, end to end: an active-active pair (each
//! node master of one instance and its VIP, both forwarding), a node loss
//! that moves both VIPs to the survivor with every stream alive, the node's
//! return taking its instance back, a sync group, and a halb node paired
//! with keepalived running the same two instances. Needs root.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use halb::api::client::Client;
use halb::api::model::Status;
use halb_lab::failover::{start_keepalived_instances, KaInstance};
use halb_lab::lab::{active_active_config, Lab, VIP, VIP2};

const BACKENDS: u8 = 3;

fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    lab.pair_topology(BACKENDS).expect("topology");
    lab.add_vip_on_backends(VIP2, BACKENDS)
        .expect("VIP2 on the backends");
    lab
}

fn start(lab: &mut Lab, node: &str, priorities: (u8, u8), extra: &str) {
    let cfg = active_active_config(lab, node, priorities, BACKENDS, extra);
    lab.start_halb(node, &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
}

fn status(lab: &Lab, node: &str) -> Option<Status> {
    lab.in_ns(node, || {
        Client::new("127.0.0.1:8480".parse().expect("addr"), None)
            .get("/api/v1/status")
            .ok()
            .and_then(|a| serde_json::from_str::<Status>(&a.body).ok())
    })
    .ok()
    .flatten()
}

fn wait_owners(lab: &Lab, vip1: &'static str, vip2: &'static str, timeout: Duration) {
    lab.wait_for(
        &format!("{vip1} to own VIP1 and {vip2} VIP2"),
        timeout,
        Duration::from_millis(10),
        || lab.vip_owner(VIP) == Some(vip1) && lab.vip_owner(VIP2) == Some(vip2),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}; now {:?} / {:?}",
            lab.vip_owner(VIP),
            lab.vip_owner(VIP2)
        )
    });
}

fn requests(lab: &Lab, vip: Ipv4Addr, n: usize) -> usize {
    lab.in_ns("client", move || {
        (0..n)
            .map(|_| halb_lab::client::http_get(vip, 80, "/", Duration::from_secs(3)))
            .filter(|r| r.as_ref().is_ok_and(|r| r.status == 200))
            .count()
    })
    .expect("ns")
}

fn streams(lab: &Lab, vip: Ipv4Addr, n: usize) -> Vec<halb_lab::lab::Stream> {
    lab.streams(vip, n).expect("streams")
}

fn whole(streams: Vec<halb_lab::lab::Stream>) -> usize {
    halb_lab::lab::survived(streams).0
}

/// Packets the node's XDP program sent on (TX), from its status.
fn tx(lab: &Lab, node: &str) -> u64 {
    status(lab, node)
        .and_then(|s| s.dataplane.actions.get("tx").copied())
        .unwrap_or(0)
}

#[test]
fn an_active_active_pair_serves_both_vips_and_survives_a_node_loss() {
    let mut lab = lab("iaa");
    start(&mut lab, "lb1", (150, 100), "");
    start(&mut lab, "lb2", (100, 150), "");
    wait_owners(&lab, "lb1", "lb2", Duration::from_secs(5));
    // Both serve: 300 requests to each VIP, each node forwarding its own.
    let (tx1, tx2) = (tx(&lab, "lb1"), tx(&lab, "lb2"));
    assert_eq!(requests(&lab, VIP, 300), 300);
    assert_eq!(requests(&lab, VIP2, 300), 300);
    lab.wait_for(
        "both nodes' counters to show the traffic",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || tx(&lab, "lb1") >= tx1 + 300 && tx(&lab, "lb2") >= tx2 + 300,
    )
    .expect("both forward");
    let s1 = status(&lab, "lb1").expect("status");
    let roles: Vec<(String, String)> = s1
        .vrrp_instances
        .iter()
        .map(|v| (v.name.clone(), v.state.clone()))
        .collect();
    assert_eq!(
        roles,
        [
            ("VI_1".into(), "MASTER".into()),
            ("VI_2".into(), "BACKUP".into())
        ]
    );
    // Each router hears only its own VRID (a socket filter): the other
    // instance's adverts are not counted as rejected packets.
    for node in ["lb1", "lb2"] {
        let st = status(&lab, node).expect("status");
        for v in &st.vrrp_instances {
            assert!(
                v.adverts_received > 0 || v.state == "MASTER",
                "{node} {}",
                v.name
            );
            assert!(
                v.rejected.is_empty(),
                "{node} {} rejected {:?}",
                v.name,
                v.rejected
            );
        }
    }
    // 8 streams on each VIP, then lb1 dies (agent and link).
    let mut all = streams(&lab, VIP, 8);
    all.extend(streams(&lab, VIP2, 8));
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.ip("lb1", &["link", "set", "eth0", "down"])
        .expect("link down");
    let t0 = Instant::now();
    lab.wait_for(
        "lb2 to take VIP1",
        Duration::from_secs(3),
        Duration::from_millis(5),
        || lab.has_addr("lb2", VIP).unwrap_or(false),
    )
    .expect("takeover");
    eprintln!("VI_1 taken over by lb2 after {:?}", t0.elapsed());
    assert!(lab.has_addr("lb2", VIP2).expect("ip"), "lb2 keeps VIP2");
    assert_eq!(whole(all), 16, "every stream on both VIPs survives");
    // lb1 returns (its stale VIP1 from the crash still on its interface):
    // it takes VI_1 back, streams running through lb2 meanwhile survive.
    let during = streams(&lab, VIP, 4);
    lab.ip("lb1", &["link", "set", "eth0", "up"])
        .expect("link up");
    start(&mut lab, "lb1", (150, 100), "");
    wait_owners(&lab, "lb1", "lb2", Duration::from_secs(5));
    assert_eq!(whole(during), 4, "no stream lost when lb1 takes VI_1 back");
    assert_eq!(requests(&lab, VIP, 50), 50);
    assert_eq!(requests(&lab, VIP2, 50), 50);
}

#[test]
fn a_vip_without_backends_lowers_only_its_instance() {
    let mut lab = lab("ibk");
    start(&mut lab, "lb1", (150, 100), "");
    lab.wait_for(
        "instances up",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || status(&lab, "lb1").is_some_and(|s| s.vrrp_instances.iter().all(|v| v.state != "INIT")),
    )
    .expect("up");
    // Health checks on VIP2 only, to a port nothing listens on: web2's
    // backends all go down, and only VI_2 (which owns it) loses priority.
    let path = lab.dir.join("halb-lb1.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let checked = text.replacen(
        "name = \"web2\"\naddress = \"10.77.0.101\"\nport = 80\nprotocol = \"tcp\"\n",
        "name = \"web2\"\naddress = \"10.77.0.101\"\nport = 80\nprotocol = \"tcp\"\n\
         \n  [vip.health]\n  kind = \"tcp\"\n  port = 9\n  interval_ms = 200\n  timeout_ms = 100\n  rise = 1\n  fall = 1\n",
        1,
    );
    assert_ne!(checked, text);
    std::fs::write(&path, checked).expect("write");
    lab.proc_mut("halb-lb1").expect("halb").signal(libc::SIGHUP);
    lab.wait_for(
        "VI_2's priority to drop",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            status(&lab, "lb1").is_some_and(|s| {
                let p = |n: &str| {
                    s.vrrp_instances
                        .iter()
                        .find(|v| v.name == n)
                        .map(|v| v.priority)
                };
                p("VI_2") == Some(1) && p("VI_1") == Some(150)
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", status(&lab, "lb1").map(|s| s.vrrp_instances)));
}

#[test]
fn a_sync_group_fails_over_together() {
    let mut lab = lab("isg");
    // lb1 is master of both instances (higher in both), in one sync group;
    // lb2 backs both up. A track script on lb1's VI_2 only (weight 0: its
    // failure is a FAULT).
    let group = "[[vrrp_sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n\n";
    let flag = lab.dir.join("lb1-ok");
    std::fs::write(&flag, "").expect("flag");
    let cfg = active_active_config(&lab, "lb1", (150, 150), BACKENDS, group).replace(
        "vips = [\"web2\"]\n",
        &format!(
            "vips = [\"web2\"]\n[[vrrp_instance.track_script]]\nname = \"ok\"\n\
             script = \"test -f {}\"\ninterval_ms = 100\ntimeout_ms = 90\nweight = 0\n",
            flag.display()
        ),
    );
    assert!(cfg.contains("track_script"), "{cfg}");
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    start(&mut lab, "lb2", (100, 100), group);
    wait_owners(&lab, "lb1", "lb1", Duration::from_secs(5));
    // VI_2's script fails: VI_2 goes to FAULT, VI_1 follows, lb2 takes both.
    std::fs::remove_file(&flag).expect("rm");
    wait_owners(&lab, "lb2", "lb2", Duration::from_secs(5));
    let s = status(&lab, "lb1").expect("status");
    let states: Vec<&str> = s.vrrp_instances.iter().map(|v| v.state.as_str()).collect();
    assert_eq!(states, ["FAULT", "FAULT"], "VI_1 followed VI_2 into FAULT");
    assert_eq!(
        s.sync_groups.first().map(|g| g.state.as_str()),
        Some("FAULT")
    );
    // It recovers: both come back to lb1 together (higher priority, preempt).
    std::fs::write(&flag, "").expect("flag");
    wait_owners(&lab, "lb1", "lb1", Duration::from_secs(5));
    lab.wait_for(
        "the group to be master",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            status(&lab, "lb1")
                .is_some_and(|s| s.sync_groups.first().map(|g| g.state.as_str()) == Some("MASTER"))
        },
    )
    .expect("group master");
}

#[test]
fn halb_and_keepalived_form_an_active_active_pair() {
    let mut lab = lab("ika");
    // halb on lb1 masters VI_1, keepalived on lb2 masters VI_2.
    start(&mut lab, "lb1", (150, 100), "");
    let ka = |lab: &mut Lab| {
        start_keepalived_instances(
            lab,
            "lb2",
            3,
            100,
            None,
            &[
                KaInstance {
                    name: "VI_1",
                    vrid: 51,
                    priority: 100,
                    vip: VIP.into(),
                },
                KaInstance {
                    name: "VI_2",
                    vrid: 52,
                    priority: 150,
                    vip: VIP2.into(),
                },
            ],
        )
    };
    ka(&mut lab);
    wait_owners(&lab, "lb1", "lb2", Duration::from_secs(5));
    assert_eq!(requests(&lab, VIP, 50), 50);
    // halb dies: keepalived takes VI_1 too.
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(5));
    lab.ip("lb1", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .expect("clear the dead node's VIP");
    wait_owners(&lab, "lb2", "lb2", Duration::from_secs(5));
    // halb returns and takes VI_1 back from keepalived.
    start(&mut lab, "lb1", (150, 100), "");
    wait_owners(&lab, "lb1", "lb2", Duration::from_secs(5));
    // keepalived dies: halb takes VI_2 as well.
    lab.stop("keepalived-lb2");
    let _ = lab.ip(
        "lb2",
        &["addr", "del", &format!("{VIP2}/32"), "dev", "eth0"],
    );
    wait_owners(&lab, "lb1", "lb1", Duration::from_secs(5));
    assert_eq!(requests(&lab, VIP, 50), 50);
    assert_eq!(requests(&lab, VIP2, 50), 50);
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(5)).expect("exits");
    let log = p.log_text();
    assert!(
        !log.contains("checksum=") && !log.contains("rejected=version"),
        "{log}"
    );
}
