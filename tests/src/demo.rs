//! `cargo xtask demo`: halb in the namespace lab, told as it happens.
//!
//! Two halb nodes as an active-active pair in front of three nginx backends
//! (DSR): two VRRP instances with swapped priorities, so lb1 masters VI_1
//! (the first VIP) and lb2 masters VI_2 (the second), and both forward;
//! the lab is dual stack, and VI_6 (VRRPv3 over IPv6, mastered by lb1)
//! owns an IPv6 VIP over the same backends. A client makes requests to
//! all three VIPs; lb1 dies with a download running on each (agent
//! crashed, link down), lb2 takes VI_1 and VI_6 over and every download
//! goes on (same Maglev table on both nodes); lb1 comes back and takes its
//! instances back (preempt) under a running download; a backend is drained
//! on both nodes by a config reload. Then a second lab puts two of three
//! backends behind a router: VIPs in IP-in-IP and GUE mode spread over
//! them, and downloads cross a 1400-byte hop (the node hands the router's
//! ICMP errors to the flows' backends). Every claim is checked: the demo fails
//! if one does not hold. Everything is cleaned up at the end, on error, and
//! on Ctrl-C.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use halb::dataplane::Maps;

use crate::client::{self, Stream};
use crate::lab::{
    active_active_dual_config, backend_addr, interrupted, lb_addr, neighbour_mac, ula_of, Lab,
    BIG_SIZE, CLIENT, VIP, VIP2, VIP6,
};

const BACKENDS: u8 = 3;
/// (VI_1, VI_2) priorities per node: swapped, so each masters one.
const NODES: [(&str, (u8, u8)); 2] = [("lb1", (150, 100)), ("lb2", (100, 150))];

fn step(n: u32, text: &str) -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    println!("\n== {n}. {text}");
    Ok(())
}

/// `n` requests to `vip`, counted per answering backend.
fn spread(lab: &Lab, vip: impl Into<IpAddr>, n: usize) -> Result<BTreeMap<String, usize>> {
    let vip = vip.into();
    let replies = lab.requests_to(vip, n, Duration::from_secs(3))?;
    let mut m = BTreeMap::new();
    for r in replies {
        ensure!(r.status == 200, "HTTP {} from {vip}", r.status);
        *m.entry(r.body.trim().to_string()).or_default() += 1;
    }
    Ok(m)
}

/// Packets `node`'s XDP program forwarded, and its flow-table entries, from
/// its pinned maps (readable after the agent died too).
fn forwarded(lab: &Lab, node: &str) -> Result<(u64, usize)> {
    let maps = Maps::open_pinned(&lab.pin_dir(node))?;
    let tx = maps
        .stats()?
        .iter()
        .filter(|(s, _)| s.action() == ha_common::Action::Tx)
        .map(|(_, c)| c.packets)
        .sum();
    Ok((tx, maps.flows()?.len()))
}

type Download = JoinHandle<Result<Result<Stream>>>;

/// Starts a download of `/big` from `vip`; returns once its first bytes arrived.
fn download(lab: &Lab, vip: impl Into<IpAddr>) -> Result<(Download, u16)> {
    let vip = vip.into();
    let (tx, rx) = mpsc::channel();
    let h = lab.spawn_in_ns("client", move || {
        client::download(vip, "/big", move |p| {
            let _ = tx.send(p);
        })
    })?;
    let port = rx
        .recv_timeout(Duration::from_secs(5))
        .with_context(|| format!("download from {vip} did not start"))?;
    Ok((h, port))
}

/// Waits for a download and checks that every byte arrived.
fn finished(d: Download, vip: impl Into<IpAddr>) -> Result<Stream> {
    let vip = vip.into();
    let s = d
        .join()
        .map_err(|_| anyhow::anyhow!("download thread"))???;
    ensure!(
        s.bytes == BIG_SIZE,
        "download from {vip} got {} of {BIG_SIZE} bytes",
        s.bytes
    );
    println!(
        "   download from {vip} (port {}) complete: {} bytes in {:.1} s, longest pause {} ms",
        s.local_port,
        s.bytes,
        s.elapsed.as_secs_f64(),
        s.max_gap.as_millis()
    );
    Ok(s)
}

fn start(lab: &mut Lab, node: &str, priorities: (u8, u8)) -> Result<()> {
    let cfg = active_active_dual_config(lab, node, priorities, BACKENDS);
    lab.start_halb(node, &cfg, &[])?
        .wait_log("API and stats page listening", Duration::from_secs(30))?;
    Ok(())
}

fn wait_owners(lab: &Lab, first: &'static str, second: &'static str) -> Result<Duration> {
    lab.wait_for(
        &format!("{first} to hold {VIP} and {VIP6}, {second} {VIP2}"),
        Duration::from_secs(10),
        Duration::from_millis(5),
        || {
            interrupted()
                || (lab.vip_owner(VIP) == Some(first)
                    && lab.vip_owner(VIP6) == Some(first)
                    && lab.vip_owner(VIP2) == Some(second))
        },
    )
}

/// Runs the demo.
/// The routed part: backends behind a router, reached by IP in IP and GUE.
fn routed(n: u32) -> Result<()> {
    use crate::routed::{Routed, BACKENDS as ROUTED, GUE_PORT, PATH_MTU, VIP_GUE};
    step(
        n,
        "routed backends: a second lab, two of three backends behind a router, reached by IP in IP and GUE",
    )?;
    let mut r = Routed::new("demort")?;
    r.add_huge(16 << 20)?;
    println!(
        "   web1 {} on the nodes' link; rweb1 {} and rweb2 {} behind router {}          (its interface on the nodes' link: MTU {PATH_MTU}); each runs `halb backend`",
        ROUTED[0].1,
        ROUTED[1].1,
        ROUTED[2].1,
        crate::routed::ROUTER
    );
    r.start_node("lb1", 150)?;
    r.lab.wait_for(
        "lb1 to reach every backend through its tunnel",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            interrupted()
                || r.lab.api_status("lb1").is_some_and(|s| {
                    s.vips.iter().all(|v| {
                        v.backends
                            .iter()
                            .all(|b| b.mac.is_some() && b.health == "up")
                    })
                })
        },
    )?;
    let reason = |name: &str| {
        r.lab
            .api_status("lb1")
            .and_then(|s| s.dataplane.reasons.get(name).copied())
            .unwrap_or(0)
    };
    for (vip, mode) in [
        (VIP, "IP in IP".to_string()),
        (VIP_GUE, format!("GUE port {GUE_PORT}")),
    ] {
        let m = spread(&r.lab, vip, 150)?;
        println!("   150 requests to {vip} ({mode}): {m:?}");
        ensure!(m.len() == ROUTED.len(), "{vip} reached only {m:?}");
        let got = r
            .lab
            .in_ns("client", move || client::download(vip, "/huge", |_| {}))??;
        ensure!(got.bytes == 16 << 20, "the download from {vip} was cut");
        println!(
            "   a 16 MiB download from {vip} completed in {:.2} s across the {PATH_MTU}-byte hop",
            got.elapsed.as_secs_f64()
        );
    }
    r.lab.wait_for(
        "lb1 to publish its counters",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || interrupted() || reason("tx_icmp") > 0,
    )?;
    println!(
        "   the router's \"fragmentation needed\" errors lb1 handed to the flows' backends: {}; \
         too-big answers lb1 sent itself: {}",
        reason("tx_icmp"),
        reason("tx_too_big")
    );
    drop(r);
    Ok(())
}

pub fn run() -> Result<()> {
    crate::lab::catch_interrupts();
    let started = Instant::now();
    step(
        1,
        "building the lab: client, two halb nodes, three nginx backends",
    )?;
    let mut lab = Lab::new("demo")?;
    lab.pair_topology(BACKENDS)?;
    lab.add_vip_on_backends(VIP2, BACKENDS)?;
    println!(
        "   namespaces {}*: client {CLIENT}, lb1 {}, lb2 {}, backends {}..{} (DSR, the VIPs on lo)",
        lab.prefix,
        lb_addr(1),
        lb_addr(2),
        backend_addr(1),
        backend_addr(BACKENDS)
    );
    println!(
        "   dual stack: client {}, lb1 {}, lb2 {}, backends {}..{} on fd77::/64",
        ula_of(CLIENT),
        ula_of(lb_addr(1)),
        ula_of(lb_addr(2)),
        ula_of(backend_addr(1)),
        ula_of(backend_addr(BACKENDS))
    );

    step(
        2,
        "starting `halb run` on both nodes: three VRRP instances each (two IPv4, one IPv6), priorities swapped, adverts every 100 ms",
    )?;
    for (node, prio) in NODES {
        start(&mut lab, node, prio)?;
    }
    wait_owners(&lab, "lb1", "lb2")?;
    println!("   VI_1 (router_id 51) owns VIP {VIP}:80   lb1 priority 150 (master), lb2 100");
    println!("   VI_2 (router_id 52) owns VIP {VIP2}:80   lb1 priority 100, lb2 150 (master)");
    println!(
        "   VI_6 (router_id 51, IPv6: adverts to ff02::12 from link-local) owns VIP [{VIP6}]:80   \
         lb1 150 (master), lb2 100"
    );
    println!("   both nodes forward: XDP attached in native mode on each");
    println!(
        "   while the demo runs: nsenter --net=/run/netns/{p}lb1 {} status   (stats page: \
         ip netns exec {p}lb1 curl -s http://127.0.0.1:8480/)",
        crate::lab::halb_bin().display(),
        p = lab.prefix
    );

    step(3, "requests from the client to the three VIPs")?;
    let replies = lab.requests(6, Duration::from_secs(3))?;
    let replies2 = lab.requests_to(VIP2, 6, Duration::from_secs(3))?;
    let replies6 = lab.requests_to(VIP6, 6, Duration::from_secs(3))?;
    for (vip, r) in replies
        .iter()
        .map(|r| (IpAddr::V4(VIP), r))
        .chain(replies2.iter().map(|r| (IpAddr::V4(VIP2), r)))
        .chain(replies6.iter().map(|r| (IpAddr::V6(VIP6), r)))
    {
        println!(
            "   {vip:<11} from port {:5} → {} (HTTP {})",
            r.local_port,
            r.body.trim(),
            r.status
        );
    }
    let before = [forwarded(&lab, "lb1")?.0, forwarded(&lab, "lb2")?.0];
    let m1 = spread(&lab, VIP, 300)?;
    let m2 = spread(&lab, VIP2, 300)?;
    let m6 = spread(&lab, VIP6, 300)?;
    println!("   300 more to {VIP}: {m1:?}");
    println!("   300 more to {VIP2}: {m2:?}");
    println!("   300 more to {VIP6}: {m6:?}");
    ensure!(
        m6.len() == BACKENDS as usize,
        "IPv6 requests reached only {m6:?}"
    );
    let after = [forwarded(&lab, "lb1")?.0, forwarded(&lab, "lb2")?.0];
    for (i, node) in ["lb1", "lb2"].iter().enumerate() {
        let d = after[i] - before[i];
        ensure!(d >= 300, "{node} forwarded only {d} packets for its VIP");
        println!("   {node}'s XDP forwarded {d} packets meanwhile");
    }

    step(
        4,
        "a long download on each VIP, then lb1 dies (agent crashed, link down)",
    )?;
    let (d1, p1) = download(&lab, VIP)?;
    let (d2, p2) = download(&lab, VIP2)?;
    let (d6, p6) = download(&lab, VIP6)?;
    println!(
        "   {} MiB downloads started: from {VIP} port {p1} and {VIP6} port {p6} (through lb1), \
         from {VIP2} port {p2} (through lb2)",
        BIG_SIZE >> 20
    );
    let mac2 = lab.mac("lb2")?;
    let crashed = Instant::now();
    crate::failover::crash(&mut lab, crate::failover::Daemon::Halb, "lb1")?;
    lab.ip("lb1", &["link", "set", "eth0", "down"])?;
    // When the client's entry for each VIP first names lb2.
    let (mut at4, mut at6) = (None, None);
    lab.wait_for(
        "the client to follow lb2 for the first VIP and the IPv6 VIP",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || {
            for (vip, at) in [(IpAddr::V4(VIP), &mut at4), (IpAddr::V6(VIP6), &mut at6)] {
                if at.is_none() && neighbour_mac(&lab, "client", vip).as_deref() == Some(&mac2) {
                    *at = Some(crashed.elapsed());
                }
            }
            at4.is_some() && at6.is_some()
        },
    )?;
    let ms = |at: Option<Duration>| at.map_or(0, |d| d.as_millis());
    println!(
        "   lb2 took VI_1 over: the client's ARP entry for {VIP} moved to lb2 {} ms after the crash",
        ms(at4)
    );
    println!(
        "   lb2 took VI_6 over: the client's neighbour entry for {VIP6} moved to lb2 (unsolicited \
         NA) {} ms after the crash",
        ms(at6)
    );
    ensure!(lab.vip_owner(VIP2) == Some("lb2"), "lb2 lost {VIP2}");
    println!("   VI_2 was not disturbed: lb2 kept {VIP2}");
    finished(d1, VIP)?;
    finished(d2, VIP2)?;
    finished(d6, VIP6)?;
    let m1 = spread(&lab, VIP, 150)?;
    let m2 = spread(&lab, VIP2, 150)?;
    let m6 = spread(&lab, VIP6, 150)?;
    println!("   150 new requests to each VIP, all through lb2: {m1:?} {m2:?} {m6:?}");

    step(
        5,
        "lb1 comes back and takes VI_1 back (preempt), with a download running through lb2",
    )?;
    let (d3, p3) = download(&lab, VIP)?;
    println!("   download from {VIP} port {p3} started (through lb2)");
    lab.ip("lb1", &["link", "set", "eth0", "up"])?;
    start(&mut lab, "lb1", NODES[0].1)?;
    let back = wait_owners(&lab, "lb1", "lb2")?;
    println!(
        "   lb1 is master of VI_1 and VI_6 again ({} ms after its agent was up); lb2 still masters VI_2",
        back.as_millis()
    );
    finished(d3, VIP)?;

    step(
        6,
        "draining web2 on both nodes (weight 0) with a config reload (SIGHUP)",
    )?;
    for (node, prio) in NODES {
        let mut cfg = active_active_dual_config(&lab, node, prio, BACKENDS);
        for addr in [
            IpAddr::V4(backend_addr(2)),
            IpAddr::V6(ula_of(backend_addr(2))),
        ] {
            let drained = format!("  name = \"web2\"\n  address = \"{addr}\"\n");
            ensure!(
                cfg.contains(&drained),
                "no web2 backend at {addr} in the config"
            );
            cfg = cfg.replace(&drained, &format!("{drained}  weight = 0\n"));
        }
        std::fs::write(lab.dir.join(format!("halb-{node}.toml")), cfg)?;
        let p = lab.proc_mut(&format!("halb-{node}")).context("halb")?;
        p.signal(libc::SIGHUP);
        p.wait_log("configuration reloaded", Duration::from_secs(10))?;
    }
    let m1 = spread(&lab, VIP, 150)?;
    let m2 = spread(&lab, VIP2, 150)?;
    let m6 = spread(&lab, VIP6, 150)?;
    println!("   150 new requests to each VIP: {m1:?} {m2:?} {m6:?}");
    ensure!(
        !m1.contains_key("web2") && !m2.contains_key("web2") && !m6.contains_key("web2"),
        "web2 still got new connections"
    );

    routed(7)?;

    step(8, "summary from both nodes' pinned data-plane maps")?;
    for node in ["lb1", "lb2"] {
        let (tx, flows) = forwarded(&lab, node)?;
        println!("   {node}: {tx:>6} packets forwarded by XDP, {flows:>4} flows in its table");
    }
    let maps = Maps::open_pinned(&lab.pin_dir("lb2"))?;
    println!("   lb2's counters:");
    for (stat, c) in maps.stats()? {
        if c.packets > 0 {
            println!(
                "     {:<22} {:>8} packets {:>10} bytes",
                stat.name(),
                c.packets,
                c.bytes
            );
        }
    }
    println!(
        "\ndemo done in {:.1} s; cleaning up",
        started.elapsed().as_secs_f64()
    );
    drop(lab);
    Ok(())
}
