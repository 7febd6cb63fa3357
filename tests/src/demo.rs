//! `cargo xtask demo`: halb in the namespace lab, told as it happens.
//!
//! Two halb nodes (VRRP) in front of three nginx backends (DSR), a client
//! making requests through the VIP; the master dies mid-download (agent
//! crashed, link down), the backup takes over and the download goes on (same
//! Maglev table on both nodes); a backend is drained by a config reload.
//! Everything is cleaned up at the end, on error, and on Ctrl-C.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ha_common::Stat;
use halb::dataplane::Maps;

use crate::client;
use crate::lab::{
    backend_addr, interrupted, lb_addr, neighbour_mac, node_config, Lab, VrrpOpts, BIG_SIZE,
    CLIENT, VIP,
};

fn step(n: u32, text: &str) -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    println!("\n== {n}. {text}");
    Ok(())
}

fn spread(lab: &Lab, n: usize) -> Result<BTreeMap<String, usize>> {
    let replies = lab.requests(n, Duration::from_secs(3))?;
    let mut m = BTreeMap::new();
    for r in replies {
        *m.entry(r.body.trim().to_string()).or_default() += 1;
    }
    Ok(m)
}

/// Runs the demo.
pub fn run() -> Result<()> {
    crate::lab::catch_interrupts();
    let started = Instant::now();
    step(
        1,
        "building the lab: client, two halb nodes, three nginx backends",
    )?;
    let mut lab = Lab::new("demo")?;
    lab.pair_topology(3)?;
    println!(
        "   namespaces {}*: client {CLIENT}, lb1 {}, lb2 {}, backends {}..{} (DSR), VIP {VIP}:80",
        lab.prefix,
        lb_addr(1),
        lb_addr(2),
        backend_addr(1),
        backend_addr(3)
    );

    step(
        2,
        "starting `halb run` on lb1 (priority 150) and lb2 (priority 100), VRRPv3 every 100 ms",
    )?;
    let v1 = VrrpOpts::v3(150);
    let v2 = VrrpOpts::v3(100);
    for (node, v) in [("lb1", &v1), ("lb2", &v2)] {
        let cfg = node_config(&lab, node, "native", 3, None, Some(v));
        lab.start_halb(node, &cfg, &[])?
            .wait_log("starting VRRP", Duration::from_secs(20))?;
    }
    lab.wait_for(
        "lb1 to become master",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || lab.has_addr("lb1", VIP).unwrap_or(false),
    )?;
    println!("   lb1 is master and holds the VIP; XDP attached in native mode on both nodes");
    println!(
        "   while the demo runs: nsenter --net=/run/netns/{p}lb1 {} status   (stats page: \
         ip netns exec {p}lb1 curl -s http://127.0.0.1:8480/)",
        crate::lab::halb_bin().display(),
        p = lab.prefix
    );

    step(3, "twelve requests from the client to the VIP")?;
    let replies = lab.requests(12, Duration::from_secs(3))?;
    for (i, r) in replies.iter().enumerate() {
        println!(
            "   request {:2} from port {:5} → {} (HTTP {})",
            i + 1,
            r.local_port,
            r.body.trim(),
            r.status
        );
    }
    let m = spread(&lab, 300)?;
    println!("   300 more requests: {m:?}");

    step(
        4,
        "a long download, then lb1 dies (agent crashed, link down)",
    )?;
    let (tx, rx) = mpsc::channel();
    let dl = lab.spawn_in_ns("client", move || {
        client::download(VIP, "/big", move |p| {
            let _ = tx.send(p);
        })
    })?;
    let port = rx
        .recv_timeout(Duration::from_secs(5))
        .context("download did not start")?;
    println!(
        "   download of {} MiB started from port {port} (through lb1)",
        BIG_SIZE >> 20
    );
    let mac2 = lab.mac("lb2")?;
    crate::failover::crash(&mut lab, crate::failover::Daemon::Halb, "lb1")?;
    lab.ip("lb1", &["link", "set", "eth0", "down"])?;
    let took = lab.wait_for(
        "the client to follow lb2",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac2.as_str()),
    )?;
    println!(
        "   lb2 took over: the client's ARP entry for the VIP moved to lb2 {} ms after the crash",
        took.as_millis()
    );
    let s = dl
        .join()
        .map_err(|_| anyhow::anyhow!("download thread"))???;
    println!(
        "   the download survived the failover: {} of {} bytes in {:.1} s, longest pause {} ms",
        s.bytes,
        BIG_SIZE,
        s.elapsed.as_secs_f64(),
        s.max_gap.as_millis()
    );
    let m = spread(&lab, 150)?;
    println!("   150 new requests through lb2: {m:?}");

    step(
        5,
        "draining web2 on lb2 (weight 0) with a config reload (SIGHUP)",
    )?;
    std::fs::write(
        lab.dir.join("halb-lb2.toml"),
        node_config(&lab, "lb2", "native", 3, Some(2), Some(&v2)),
    )?;
    let p = lab.proc_mut("halb-lb2").context("halb")?;
    p.signal(libc::SIGHUP);
    p.wait_log("configuration reloaded", Duration::from_secs(10))?;
    let m = spread(&lab, 150)?;
    println!("   150 new requests: {m:?}");

    step(6, "summary from lb2's pinned data-plane maps")?;
    let maps = Maps::open_pinned(&lab.pin_dir("lb2"))?;
    for (stat, c) in maps.stats()? {
        if c.packets > 0 {
            println!(
                "   {:<22} {:>8} packets {:>10} bytes",
                stat.name(),
                c.packets,
                c.bytes
            );
        }
    }
    let flows = maps.flows()?.len();
    let tx: u64 = maps
        .stats()?
        .iter()
        .filter(|(s, _)| matches!(s, Stat::TxFlowHit | Stat::TxNewFlow))
        .map(|(_, c)| c.packets)
        .sum();
    println!("   flows in lb2's flow table: {flows}; packets forwarded by lb2's XDP: {tx}");
    println!(
        "\ndemo done in {:.1} s; cleaning up",
        started.elapsed().as_secs_f64()
    );
    drop(lab);
    Ok(())
}
