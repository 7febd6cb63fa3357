//! `cargo xtask demo --scale-out` and `cargo xtask lab up --scale-out`:
//! three active halb nodes behind an ECMP router, told as it happens.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use crate::lab::{halb_bin, interrupted, lb_addr, run, Lab, BIG_SIZE, VIP};
use crate::scaleout::{birdc, ScaleOut, CLIENT, ROUTER};

fn step(n: u32, text: &str) -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    println!("\n== {n}. {text}");
    Ok(())
}

/// `n` requests from the client, counted per backend; all must succeed.
fn spread(s: &ScaleOut, n: usize) -> Result<BTreeMap<String, usize>> {
    let replies = s.lab.requests(n, Duration::from_secs(3))?;
    let mut m = BTreeMap::new();
    for r in replies {
        ensure!(r.status == 200, "HTTP {}", r.status);
        *m.entry(r.body.trim().to_string()).or_default() += 1;
    }
    Ok(m)
}

/// Requests with each node's share of the packets, printed.
fn show_spread(s: &ScaleOut, n: usize, nodes: &[u8]) -> Result<()> {
    let before: Vec<u64> = nodes.iter().map(|k| s.forwarded(*k)).collect();
    let m = spread(s, n)?;
    let d: Vec<u64> = nodes
        .iter()
        .zip(&before)
        .map(|(k, b)| s.forwarded(*k) - b)
        .collect();
    let total: u64 = d.iter().sum::<u64>().max(1);
    println!("   {n} requests, by backend: {m:?}");
    let shares: Vec<String> = nodes
        .iter()
        .zip(&d)
        .map(|(k, x)| format!("lb{k} {x} ({:.0} %)", *x as f64 * 100.0 / total as f64))
        .collect();
    println!(
        "   packets forwarded by each node's XDP: {}",
        shares.join(", ")
    );
    Ok(())
}

fn route(s: &ScaleOut) -> String {
    s.lab
        .ip("router", &["-4", "route", "show", &format!("{VIP}/32")])
        .unwrap_or_default()
        .lines()
        .map(|l| format!("   router: {}", l.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn node(s: &ScaleOut, n: u8, action: &str) -> Result<String> {
    let cfg = s.lab.dir.join(format!("halb-lb{n}.toml"));
    let mut c = s.lab.nsenter(&format!("lb{n}"), &halb_bin());
    c.arg("node").arg(action).arg("-c").arg(&cfg);
    run(&mut c)
}

/// Runs the scale-out demo.
pub fn demo() -> Result<()> {
    crate::lab::catch_interrupts();
    let started = Instant::now();
    step(
        1,
        "building the lab: a router (BIRD 2, ECMP), a client behind it, three halb nodes, three nginx backends",
    )?;
    let mut s = ScaleOut::new("demoso", 3, 3)?;
    println!(
        "   namespaces {}*: client {CLIENT} → router {ROUTER} → lb1..lb3 {}..{} (each with BIRD 2), \
         backends web1..web3 (DSR), VIP {VIP}",
        s.lab.prefix,
        lb_addr(1),
        lb_addr(3)
    );
    step(
        2,
        "starting halb (BGP mode) and BIRD on every node; each announces the VIP once its checks pass",
    )?;
    s.start_all()?;
    println!("{}", route(&s));
    let out = run(birdc(&s.lab, "router").args(["show", "protocols"]))?;
    for l in out.lines().filter(|l| l.contains("BGP")) {
        println!(
            "   router BGP: {}",
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    step(
        3,
        "600 new connections from the client: the router spreads them over the three nodes",
    )?;
    show_spread(&s, 600, &[1, 2, 3])?;
    step(
        4,
        "six long downloads, then lb2 dies (link down, agent killed)",
    )?;
    let streams = s.lab.streams(VIP, 6)?;
    println!("   {} downloads of {} MiB running", 6, BIG_SIZE >> 20);
    let t0 = Instant::now();
    s.lab.ip("lb2", &["link", "set", "eth0", "down"])?;
    if let Some(mut p) = s.lab.take_proc("halb-lb2") {
        p.signal(libc::SIGKILL);
        p.wait_exit(Duration::from_secs(5));
    }
    s.wait_paths(&[1, 3], Duration::from_secs(3))?;
    println!(
        "   the router's BFD session noticed: lb2 left the ECMP set {} ms after its link went down",
        t0.elapsed().as_millis()
    );
    let (whole, gap) = crate::lab::survived(streams);
    ensure!(whole == 6, "only {whole} of 6 downloads survived");
    println!(
        "   every download survived ({whole}/6, longest pause {} ms): lb1 and lb3 build the same Maglev table",
        gap.as_millis()
    );
    show_spread(&s, 300, &[1, 3])?;
    step(
        5,
        "lb2 comes back: link up, agent started; it announces once its checks pass",
    )?;
    s.lab.ip("lb2", &["link", "set", "eth0", "up"])?;
    let t1 = Instant::now();
    s.start_node(2)?;
    s.wait_paths(&[1, 2, 3], Duration::from_secs(30))?;
    println!(
        "   lb2 is back in the ECMP set after {} ms",
        t1.elapsed().as_millis()
    );
    show_spread(&s, 300, &[1, 2, 3])?;
    step(
        6,
        "draining lb3 (`halb node drain`): withdrawn, still forwarding what arrives",
    )?;
    let streams = s.lab.streams(VIP, 6)?;
    println!("   {}", node(&s, 3, "drain")?.trim());
    s.wait_paths(&[1, 2], Duration::from_secs(3))?;
    println!("{}", route(&s));
    let (whole, _) = crate::lab::survived(streams);
    ensure!(whole == 6, "only {whole} of 6 downloads survived the drain");
    println!("   the six downloads running across the drain finished whole");
    println!("   {}", node(&s, 3, "enable")?.trim());
    s.wait_paths(&[1, 2, 3], Duration::from_secs(5))?;
    println!(
        "\nscale-out demo done in {:.1} s; cleaning up",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `lab up --scale-out`: the scale-out lab, left running.
pub fn up(state: &Path, prefix: &str) -> Result<()> {
    if state.exists() {
        bail!(
            "a lab is already up ({}); run `cargo xtask lab down` first",
            state.display()
        );
    }
    crate::lab::catch_interrupts();
    let mut s = ScaleOut::build(Lab::named(prefix)?, 3, 3)?;
    s.start_all()?;
    let p = s.lab.persist();
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(state, serde_json::to_string_pretty(&p)?)?;
    println!(
        "scale-out lab up: namespaces {prefix}{{sw,router,client,lb1,lb2,lb3,web1,web2,web3}}"
    );
    println!(
        "  client {CLIENT} → router {ROUTER} (BIRD 2, ECMP) → lb1..lb3 → web1..web3, VIP {VIP}"
    );
    println!("  ip netns exec {prefix}client curl -s http://{VIP}/");
    println!("  ip -n {prefix}router route show {VIP}");
    println!(
        "  ip netns exec {prefix}router birdc -s {}/bird-router.ctl show protocols",
        p.dir.display()
    );
    println!(
        "  nsenter --net=/run/netns/{prefix}lb1 {} status --api 127.0.0.1:8480",
        halb_bin().display()
    );
    println!("  cargo xtask lab down   # removes all of it");
    Ok(())
}
