//! End-to-end: a client reaches three nginx backends through one halb node
//! (DSR) in the namespace lab, in native and generic XDP mode; the data
//! plane survives an agent crash and a new agent adopts it.
//! Needs root; CI runs as root.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::Duration;

use ha_common::{Stat, IPPROTO_TCP};
use halb::dataplane::Maps;
use halb_lab::client::{self, parse_nft_counter};
use halb_lab::lab::{backend_addr, lb_addr, run, Lab, BIG_SIZE, CLIENT, VIP};

const BACKENDS: u8 = 3;

fn config(lab: &Lab, mode: &str) -> String {
    let mut c = format!(
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\nxdp_mode = \"{mode}\"\nbpf_dir = \"{}\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\nmode = \"dsr\"\n",
        lab.pin_dir("lb1").display()
    );
    for i in 1..=BACKENDS {
        c.push_str(&format!(
            "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n",
            backend_addr(i)
        ));
    }
    c
}

/// Client, one LB node owning the VIP (as a VRRP master would), three backends.
fn lab(tag: &str, mode: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    lab.add_host("client", CLIENT).expect("client");
    lab.add_host("lb1", lb_addr(1)).expect("lb1");
    for i in 1..=BACKENDS {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)
            .expect("backend");
    }
    if mode == "native" {
        lab.attach_pass_on_port("lb1")
            .expect("pass program on the bridge port");
    }
    lab.ip("lb1", &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])
        .expect("vip on lb1");
    let cfg = config(&lab, mode);
    let halb = lab.start_halb("lb1", &cfg, &[]).expect("start halb");
    halb.wait_log("data plane updated", Duration::from_secs(20))
        .expect("halb programs the data plane");
    lab
}

fn xdp_mode_of(lab: &Lab) -> String {
    lab.ip("lb1", &["-d", "link", "show", "dev", "eth0"])
        .expect("link show")
}

/// Counts what the client sends to the VIP (nftables, in the client).
fn count_client_to_vip(lab: &Lab) {
    let chain = "{ type filter hook output priority 0 ; }";
    let vip = VIP.to_string();
    for args in [
        vec!["add", "table", "ip", "halbtest"],
        vec!["add", "chain", "ip", "halbtest", "out", chain],
        vec![
            "add", "rule", "ip", "halbtest", "out", "ip", "daddr", &vip, "tcp", "dport", "80",
            "counter",
        ],
    ] {
        run(lab.cmd("client", "nft").args(args)).expect("nft");
    }
}

fn client_counter(lab: &Lab) -> client::NftCounter {
    let out = run(lab
        .cmd("client", "nft")
        .args(["list", "chain", "ip", "halbtest", "out"]))
    .expect("nft list");
    parse_nft_counter(&out).expect("counter in nft output")
}

fn requests_spread_and_counted(mode: &str) {
    let lab = lab(mode, mode);
    let link = xdp_mode_of(&lab);
    let want = if mode == "native" {
        " xdp "
    } else {
        " xdpgeneric "
    };
    assert!(link.contains(want), "attached in {mode} mode: {link}");
    count_client_to_vip(&lab);

    let replies = lab
        .requests(300, Duration::from_secs(3))
        .expect("every request through the VIP succeeds");
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    let mut ports = HashSet::new();
    for r in replies {
        assert_eq!(r.status, 200);
        ports.insert(r.local_port);
        *per_backend.entry(r.body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(per_backend.len(), BACKENDS as usize, "{per_backend:?}");
    for (b, n) in &per_backend {
        assert!(
            (60..=140).contains(n),
            "fair share for {b}: {per_backend:?}"
        );
    }

    // The data plane's counters agree with what the client sent.
    let maps = Maps::open_pinned(&lab.pin_dir("lb1")).expect("pinned maps");
    let sent = client_counter(&lab);
    let key = halb::dataplane::Service::new(VIP, 80, IPPROTO_TCP);
    let backends: Vec<(u32, ha_common::BackendInfo)> =
        halb::dataplane::Store::backends(&maps).expect("backends");
    let vip_id = halb::dataplane::Store::vips(&maps)
        .expect("vips")
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, i)| i.id)
        .expect("vip entry");
    let (mut packets, mut bytes, mut new_flows) = (0, 0, 0);
    for (id, b) in backends.iter().filter(|(_, b)| b.vip_id == vip_id) {
        let c = maps.backend_counter(*id).expect("counter");
        assert!(c.packets > 0, "backend {:?} got traffic", &b.addr[..4]);
        packets += c.packets;
        bytes += c.bytes;
        new_flows += c.new_flows;
    }
    assert_eq!(
        packets, sent.packets,
        "XDP forwarded every packet the client sent"
    );
    assert_eq!(
        bytes,
        sent.bytes + 14 * sent.packets,
        "bytes (XDP counts Ethernet headers)"
    );
    assert_eq!(
        new_flows,
        ports.len() as u64,
        "one new flow (SYN) per connection"
    );
    let stats: HashMap<Stat, u64> = maps
        .stats()
        .expect("stats")
        .into_iter()
        .map(|(s, c)| (s, c.packets))
        .collect();
    assert_eq!(
        stats[&Stat::TxNewFlow] + stats[&Stat::TxRing],
        sent.packets,
        "no slot changed: every packet took the ring"
    );
    assert_eq!(stats[&Stat::DropNoBackend] + stats[&Stat::Aborted], 0);
}

#[test]
fn forwards_in_native_mode() {
    requests_spread_and_counted("native");
}

#[test]
fn forwards_in_generic_mode() {
    requests_spread_and_counted("generic");
}

#[test]
fn agent_crash_and_restart_keep_streams_and_maps() {
    let mut lab = lab("restart", "native");
    let (tx, rx) = mpsc::channel();
    let stream = lab
        .spawn_in_ns("client", move || {
            client::download(VIP, "/big", move |port| {
                let _ = tx.send(port);
            })
        })
        .expect("stream");
    let port = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stream started");

    // Crash: no clean shutdown path runs.
    let mut old = lab.take_proc("halb-lb1").expect("halb");
    old.signal(libc::SIGKILL);
    old.wait_exit(Duration::from_secs(5)).expect("halb died");
    let link = xdp_mode_of(&lab);
    assert!(
        link.contains(" xdp "),
        "program still attached after the crash: {link}"
    );
    let maps = Maps::open_pinned(&lab.pin_dir("lb1")).expect("pins survive");
    // No slot changed, so the stream's packets take the ring (no entry is
    // needed); the ring is pinned with the maps.
    let _ = port;
    let hits = |maps: &Maps| {
        maps.stats().expect("stats")[Stat::TxRing as usize]
            .1
            .packets
    };
    let hits_before = hits(&maps);
    // With no agent at all, the stream goes on through the data plane.
    lab.wait_for(
        "the stream's packets to be forwarded without an agent",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || hits(&maps) >= hits_before + 100,
    )
    .expect("forwarding goes on");

    // A new agent adopts program and maps.
    let cfg = config(&lab, "native");
    let new = lab.start_halb("lb1", &cfg, &[]).expect("restart");
    new.wait_log(
        "adopted the pinned XDP program and maps",
        Duration::from_secs(20),
    )
    .expect("adopts");
    new.wait_log("data plane already up to date", Duration::from_secs(20))
        .or_else(|_| new.wait_log("data plane updated", Duration::from_secs(1)))
        .expect("synced");
    let log = new.log_text();
    assert!(
        !log.contains("tables_swapped=1"),
        "same config, same tables: {log}"
    );

    let s = stream.join().expect("join").expect("ns").expect("download");
    assert_eq!(s.bytes, BIG_SIZE, "the whole body arrived");
    assert!(
        s.max_gap < Duration::from_millis(400),
        "no stall across crash and restart: longest gap {:?}",
        s.max_gap
    );
    let maps = Maps::open_pinned(&lab.pin_dir("lb1")).expect("pins");
    assert_eq!(
        maps.flows().expect("flows").len(),
        0,
        "an unchanged table needs no flow entries"
    );
    let hits_after = hits(&maps);
    assert!(
        hits_after > hits_before,
        "counters carry on ({hits_before} → {hits_after})"
    );

    // Clean stop: SIGTERM detaches and unpins.
    let halb = lab.proc_mut("halb-lb1").expect("halb");
    halb.signal(libc::SIGTERM);
    let status = halb.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(!lab.pin_dir("lb1").join("link").exists(), "unpinned");
    assert!(!xdp_mode_of(&lab).contains("prog/xdp"), "detached");
}
