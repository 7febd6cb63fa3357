//! `cargo xtask lab up|down|status`: the standard lab, left running for
//! hands-on use, recorded in a state file so that `down` removes exactly
//! what `up` made (processes by PID, namespaces by prefix).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::{
    active_active_config, backend_addr, halb_bin, lb_addr, Lab, Persisted, CLIENT, VIP, VIP2,
};

/// Namespace prefix of the hands-on lab.
pub const PREFIX: &str = "halblab-";

/// Builds the lab topology (client, two halb nodes as an active-active
/// pair, three backends) and leaves it running.
pub fn up(state: &Path) -> Result<()> {
    if state.exists() {
        bail!(
            "a lab is already up ({}); run `cargo xtask lab down` first",
            state.display()
        );
    }
    crate::lab::catch_interrupts();
    let mut lab = Lab::named(PREFIX)?;
    lab.pair_topology(3)?;
    lab.add_vip_on_backends(VIP2, 3)?;
    for (node, prio) in [("lb1", (150, 100)), ("lb2", (100, 150))] {
        let cfg = active_active_config(&lab, node, prio, 3, "");
        lab.start_halb(node, &cfg, &[])?
            .wait_log("API and stats page listening", Duration::from_secs(30))?;
    }
    lab.wait_for(
        "lb1 to master VI_1 and lb2 VI_2",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            crate::lab::interrupted()
                || (lab.has_addr("lb1", VIP).unwrap_or(false)
                    && lab.has_addr("lb2", VIP2).unwrap_or(false))
        },
    )?;
    if crate::lab::interrupted() {
        bail!("interrupted");
    }
    let p = lab.persist();
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(state, serde_json::to_string_pretty(&p)?)?;
    println!("lab up: namespaces {PREFIX}{{sw,client,lb1,lb2,web1,web2,web3}}");
    println!(
        "  client {CLIENT}, lb1 {}, lb2 {}, backends {}..{}",
        lb_addr(1),
        lb_addr(2),
        backend_addr(1),
        backend_addr(3)
    );
    println!("  active-active: lb1 masters VI_1 (VIP {VIP}:80), lb2 masters VI_2 (VIP {VIP2}:80)");
    println!("  ip netns exec {PREFIX}client curl -s http://{VIP}/");
    println!("  ip netns exec {PREFIX}client curl -s http://{VIP2}/");
    println!(
        "  nsenter --net=/run/netns/{PREFIX}lb1 {} status",
        halb_bin().display()
    );
    println!("  configs and logs in {}", p.dir.display());
    println!("  cargo xtask lab down   # removes all of it");
    Ok(())
}

fn load(state: &Path) -> Result<Option<Persisted>> {
    if !state.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(state)?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("state file {}", state.display())
    })?))
}

/// Removes the lab recorded in `state`.
pub fn down(state: &Path) -> Result<()> {
    match load(state)? {
        Some(p) => {
            p.teardown();
            std::fs::remove_file(state)?;
            println!("lab down: removed {}*", p.prefix);
        }
        None => println!("no lab is up"),
    }
    Ok(())
}

/// Shows what the lab recorded in `state` is doing.
pub fn status(state: &Path) -> Result<()> {
    let Some(p) = load(state)? else {
        println!("no lab is up");
        return Ok(());
    };
    let listed = crate::lab::run(std::process::Command::new("ip").args(["netns", "list"]))?;
    println!("lab {}:", p.prefix);
    for h in p
        .hosts
        .iter()
        .map(String::as_str)
        .chain(std::iter::once("sw"))
    {
        let ns = format!("{}{h}", p.prefix);
        let present = listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns.as_str()));
        println!(
            "  namespace {ns}: {}",
            if present { "present" } else { "MISSING" }
        );
    }
    for (name, pid) in &p.procs {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        println!(
            "  {name} (pid {pid}): {}",
            if alive { "running" } else { "gone" }
        );
    }
    for node in ["lb1", "lb2"] {
        let out = crate::lab::run(std::process::Command::new("ip").args([
            "-n",
            &format!("{}{node}", p.prefix),
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ]))
        .unwrap_or_default();
        for vip in [VIP, VIP2] {
            if out.contains(&format!("inet {vip}/")) {
                println!("  VIP {vip} is on {node}");
            }
        }
    }
    Ok(())
}
