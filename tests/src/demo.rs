//! `cargo xtask demo`: halb in the namespace lab, told as it happens.
//!
//! A halb node in front of three nginx backends (DSR), a client making
//! requests through the VIP; the agent is killed mid-download and restarted
//! (the data plane keeps forwarding and is adopted); a backend is drained by
//! a config reload. Everything is cleaned up at the end, on error, and on
//! Ctrl-C.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ha_common::Stat;
use halb::dataplane::Maps;

use crate::client;
use crate::lab::{backend_addr, interrupted, lb_addr, Lab, BIG_SIZE, CLIENT, VIP};

fn node_config(lab: &Lab, drained: Option<u8>) -> String {
    let mut c = format!(
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP}\"\nport = 80\n",
        lab.pin_dir("lb1").display()
    );
    for i in 1..=3u8 {
        let w = if drained == Some(i) { 0 } else { 1 };
        c.push_str(&format!(
            "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n  weight = {w}\n",
            backend_addr(i)
        ));
    }
    c
}

fn step(n: u32, text: &str) -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    println!("\n== {n}. {text}");
    Ok(())
}

fn spread(lab: &Lab, n: usize) -> Result<BTreeMap<String, usize>> {
    let replies = lab.in_ns("client", move || {
        (0..n)
            .map(|_| client::http_get(VIP, 80, "/", Duration::from_secs(3)))
            .collect::<Result<Vec<_>>>()
    })??;
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
        "building the lab: client, one halb node, three nginx backends",
    )?;
    let mut lab = Lab::new("demo")?;
    lab.add_host("client", CLIENT)?;
    lab.add_host("lb1", lb_addr(1))?;
    for i in 1..=3u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
    }
    lab.attach_pass_on_port("lb1")?;
    lab.ip("lb1", &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
    println!(
        "   namespaces {}*, client {CLIENT}, lb1 {}, backends {}..{}, VIP {VIP}:80",
        lab.prefix,
        lb_addr(1),
        backend_addr(1),
        backend_addr(3)
    );

    step(2, "starting `halb run` on lb1 (XDP, native mode)")?;
    let cfg = node_config(&lab, None);
    lab.start_halb("lb1", &cfg, &[])?
        .wait_log("data plane updated", Duration::from_secs(20))?;
    println!(
        "   {}",
        lab.ip("lb1", &["link", "show", "dev", "eth0"])?
            .lines()
            .nth(2)
            .unwrap_or("")
            .trim()
    );

    step(3, "twelve requests from the client to the VIP")?;
    let replies = lab.in_ns("client", || {
        (0..12)
            .map(|_| client::http_get(VIP, 80, "/", Duration::from_secs(3)))
            .collect::<Result<Vec<_>>>()
    })??;
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
        "killing the agent (SIGKILL) during a download, then restarting it",
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
        "   download of {} MiB started from port {port}",
        BIG_SIZE >> 20
    );
    std::thread::sleep(Duration::from_millis(700));
    let mut old = lab.take_proc("halb-lb1").context("halb")?;
    old.kill();
    println!("   agent killed; the pinned XDP program goes on forwarding");
    std::thread::sleep(Duration::from_millis(1000));
    lab.start_halb("lb1", &cfg, &[])?.wait_log(
        "adopted the pinned XDP program and maps",
        Duration::from_secs(20),
    )?;
    println!("   new agent adopted the pinned program and maps");
    let s = dl
        .join()
        .map_err(|_| anyhow::anyhow!("download thread"))???;
    println!(
        "   download finished: {} of {} bytes in {:.1} s, longest pause {} ms",
        s.bytes,
        BIG_SIZE,
        s.elapsed.as_secs_f64(),
        s.max_gap.as_millis()
    );

    step(5, "draining web2 (weight 0) with a config reload (SIGHUP)")?;
    std::fs::write(lab.dir.join("halb-lb1.toml"), node_config(&lab, Some(2)))?;
    let p = lab.proc_mut("halb-lb1").context("halb")?;
    p.signal(libc::SIGHUP);
    p.wait_log("configuration reloaded", Duration::from_secs(10))?;
    let m = spread(&lab, 150)?;
    println!("   150 new requests: {m:?}");

    step(6, "summary from the pinned data-plane maps")?;
    let maps = Maps::open_pinned(&lab.pin_dir("lb1"))?;
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
    println!("   flows in the flow table: {flows}; packets forwarded by XDP: {tx}");
    println!(
        "\ndemo done in {:.1} s; cleaning up",
        started.elapsed().as_secs_f64()
    );
    drop(lab);
    Ok(())
}
