//! VRRP takeover measured from the client's side: a pair of nodes (halb or
//! keepalived) in the lab, the master crashed again and again, and the time
//! from the crash until the client's ARP entry for the VIP names the backup.
//!
//! A crash is simulated honestly: every process of the master's daemon is
//! stopped (SIGSTOP) and then killed (SIGKILL), so no shutdown path runs
//! (keepalived's children would otherwise see their parent go and resign
//! with priority 0). The dead node's stale VIP is then cleared, as a dead
//! node would not answer for it, and the daemon restarted and left to
//! preempt back before the next round.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::{
    active_active_config_with, lb_addr, neighbour_mac, node_config, Lab, VrrpOpts, CLIENT, VIP,
    VIP2,
};

/// Which VRRP implementation runs the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// halb agents (with their XDP data plane).
    Halb,
    /// keepalived (VRRP only).
    Keepalived,
}

impl Daemon {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Halb => "halb",
            Daemon::Keepalived => "keepalived",
        }
    }
}

/// Builds the pair's lab: client, lb1, lb2 (no backends: only the VIP's
/// ownership is measured).
pub fn pair_lab(tag: &str) -> Result<Lab> {
    let mut lab = Lab::new(tag)?;
    lab.add_host("client", CLIENT)?;
    for n in 1..=2u8 {
        let h = format!("lb{n}");
        lab.add_host(&h, lb_addr(n))?;
        lab.attach_pass_on_port(&h)?;
    }
    Ok(lab)
}

/// Starts `daemon` on `node` with VRRPv3, `priority`, `advert_ms` adverts.
pub fn start(
    lab: &mut Lab,
    daemon: Daemon,
    node: &str,
    priority: u8,
    advert_ms: u32,
) -> Result<()> {
    match daemon {
        Daemon::Halb => {
            let mut v = VrrpOpts::v3(priority);
            v.advert_ms = advert_ms;
            let cfg = node_config(lab, node, "native", 0, None, Some(&v));
            lab.start_halb(node, &cfg, &[])?
                .wait_log("starting VRRP", Duration::from_secs(20))
        }
        Daemon::Keepalived => {
            start_keepalived(lab, node, 3, priority, advert_ms, None);
            Ok(())
        }
    }
}

/// Starts keepalived (VRRP only, foreground) in `node` with its own config.
pub fn start_keepalived(
    lab: &mut Lab,
    node: &str,
    version: u8,
    priority: u8,
    advert_ms: u32,
    auth: Option<&str>,
) {
    start_keepalived_instances(
        lab,
        node,
        version,
        advert_ms,
        auth,
        &[KaInstance {
            name: "VI_1",
            vrid: 51,
            priority,
            vip: VIP.into(),
        }],
    );
}

/// One `vrrp_instance` of a keepalived config.
#[derive(Debug, Clone, Copy)]
pub struct KaInstance {
    /// Name.
    pub name: &'static str,
    /// virtual_router_id.
    pub vrid: u8,
    /// priority.
    pub priority: u8,
    /// Its one virtual address (its family is the instance's).
    pub vip: std::net::IpAddr,
}

/// Starts keepalived (VRRP only, foreground) in `node` with `instances`.
pub fn start_keepalived_instances(
    lab: &mut Lab,
    node: &str,
    version: u8,
    advert_ms: u32,
    auth: Option<&str>,
    instances: &[KaInstance],
) {
    let auth = auth
        .map(|p| format!("  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}\n"))
        .unwrap_or_default();
    let advert = format!("{}", advert_ms as f64 / 1000.0);
    let mut conf = format!(
        "global_defs {{\n  router_id {node}\n  vrrp_version {version}\n  vrrp_garp_master_delay 0\n}}\n"
    );
    for i in instances {
        conf.push_str(&format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n\
             priority {prio}\n  advert_int {advert}\n{auth}  virtual_ipaddress {{\n    {vip}/{plen} dev eth0\n  }}\n}}\n",
            name = i.name,
            vrid = i.vrid,
            prio = i.priority,
            vip = i.vip,
            plen = if i.vip.is_ipv6() { 128 } else { 32 }
        ));
    }
    let dir = lab.dir.clone();
    let path = dir.join(format!("keepalived-{node}.conf"));
    if let Err(e) = std::fs::write(&path, conf) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    // Fresh pid files per start: a crashed keepalived's child can linger
    // as a zombie for a moment, and keepalived refuses to start over a pid
    // file naming a live process.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut c = lab.cmd(node, "keepalived");
    c.args(["-n", "-l", "-D", "-P", "-f"])
        .arg(&path)
        .arg(format!(
            "--pid={}",
            dir.join(format!("ka-{node}-{run}.pid")).display()
        ))
        .arg(format!(
            "--vrrp_pid={}",
            dir.join(format!("ka-vrrp-{node}-{run}.pid")).display()
        ));
    if let Err(e) = lab.spawn(&format!("keepalived-{node}"), c) {
        eprintln!("cannot start keepalived: {e}");
    }
}

/// Process name the lab gave `daemon` on `node`.
pub fn proc_name(daemon: Daemon, node: &str) -> String {
    match daemon {
        Daemon::Halb => format!("halb-{node}"),
        Daemon::Keepalived => format!("keepalived-{node}"),
    }
}

/// Crashes `daemon` on `node`: SIGSTOP to it and its descendants, then SIGKILL.
pub fn crash(lab: &mut Lab, daemon: Daemon, node: &str) -> Result<()> {
    crash_procs(lab, &[proc_name(daemon, node)])
}

/// Crashes the lab processes `names` honestly: every one of them and of
/// their descendants is stopped first (so none sees another go and runs a
/// shutdown path), then all are killed.
pub fn crash_procs(lab: &mut Lab, names: &[String]) -> Result<()> {
    let mut procs = Vec::new();
    let mut pids = Vec::new();
    for n in names {
        let p = lab
            .take_proc(n)
            .with_context(|| format!("{n} not running"))?;
        pids.push(p.pid());
        procs.push(p);
    }
    let mut i = 0;
    while i < pids.len() {
        let c = children(pids[i]);
        pids.extend(c);
        i += 1;
    }
    for &pid in &pids {
        // SAFETY: kill(2) on processes this lab started (and their children).
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
    }
    for &pid in pids.iter().rev() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    for mut p in procs {
        p.wait_exit(Duration::from_secs(5));
    }
    Ok(())
}

/// Direct children of `pid` (from /proc).
pub fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// VRRP packets from `src` the client has seen (multicast reaches it too),
/// counted by an nftables rule made on first use.
pub fn adverts_from(lab: &Lab, src: std::net::Ipv4Addr) -> Result<u64> {
    let table = format!("halbvrrp{}", u32::from(src) & 0xff);
    let list = |lab: &Lab| {
        crate::lab::run(
            lab.cmd("client", "nft")
                .args(["list", "chain", "ip", &table, "c"]),
        )
    };
    let text = match list(lab) {
        Ok(t) => t,
        Err(_) => {
            // Prerouting: multicast for a group the client has not joined
            // never reaches the input hook.
            let chain = "{ type filter hook prerouting priority 0 ; }";
            let addr = src.to_string();
            for args in [
                vec!["add", "table", "ip", &table],
                vec!["add", "chain", "ip", &table, "c", chain],
                vec![
                    "add", "rule", "ip", &table, "c", "ip", "saddr", &addr, "ip", "protocol",
                    "112", "counter",
                ],
            ] {
                crate::lab::run(lab.cmd("client", "nft").args(args))?;
            }
            list(lab)?
        }
    };
    crate::client::parse_nft_counter(&text)
        .map(|c| c.packets)
        .context("no counter in the nft chain")
}

/// Measures `kills` takeovers of `daemon` pairs with `advert_ms` adverts.
pub fn takeovers(daemon: Daemon, kills: usize, advert_ms: u32) -> Result<Vec<Duration>> {
    let mut lab = pair_lab(&format!("fo{}", &daemon.name()[..1]))?;
    start(&mut lab, daemon, "lb1", 150, advert_ms)?;
    start(&mut lab, daemon, "lb2", 100, advert_ms)?;
    let slow = Duration::from_millis(advert_ms as u64 * 10).max(Duration::from_secs(3));
    let mac1 = lab.mac("lb1")?;
    let mac2 = lab.mac("lb2")?;
    let follows = |lab: &Lab, mac: &str| neighbour_mac(lab, "client", VIP).as_deref() == Some(mac);
    // The client learns the VIP (it must have an entry for takeover to show).
    let mut out = Vec::with_capacity(kills);
    for round in 0..kills {
        lab.wait_for("lb1 to be master", slow, Duration::from_millis(10), || {
            lab.has_addr("lb1", VIP).unwrap_or(false) && !lab.has_addr("lb2", VIP).unwrap_or(true)
        })?;
        resolve(&lab, VIP)?;
        lab.wait_for(
            "the client to know lb1",
            slow,
            Duration::from_millis(10),
            || follows(&lab, &mac1),
        )?;
        // A few of the master's adverts pass (seen on the wire by the
        // client), so the backup's timer is in its steady state.
        let seen = adverts_from(&lab, lb_addr(1))?;
        lab.wait_for(
            "three adverts from lb1",
            slow,
            Duration::from_millis(5),
            || adverts_from(&lab, lb_addr(1)).is_ok_and(|n| n >= seen + 3),
        )?;
        let t0 = Instant::now();
        crash(&mut lab, daemon, "lb1")?;
        lab.wait_for(
            "the client to follow lb2",
            slow * 2,
            Duration::from_millis(2),
            || follows(&lab, &mac2),
        )
        .with_context(|| format!("{} round {round}", daemon.name()))?;
        out.push(t0.elapsed());
        // The dead node holds no VIP; restart it and let it preempt back.
        let _ = lab.ip("lb1", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
        start(&mut lab, daemon, "lb1", 150, advert_ms)?;
    }
    if out.len() != kills {
        bail!("measured {} of {kills} takeovers", out.len());
    }
    Ok(out)
}

/// Starts `daemon` on `node` of an active-active pair: instance VI_1
/// (router_id 51) owns VIP, VI_2 (router_id 52) owns VIP2, with the
/// priorities given for each.
pub fn start_active_active(
    lab: &mut Lab,
    daemon: Daemon,
    node: &str,
    priorities: (u8, u8),
    advert_ms: u32,
) -> Result<()> {
    match daemon {
        Daemon::Halb => {
            let cfg = active_active_config_with(lab, node, priorities, 0, advert_ms, "");
            lab.start_halb(node, &cfg, &[])?
                .wait_log("starting VRRP", Duration::from_secs(20))
        }
        Daemon::Keepalived => {
            start_keepalived_instances(
                lab,
                node,
                3,
                advert_ms,
                None,
                &[
                    KaInstance {
                        name: "VI_1",
                        vrid: 51,
                        priority: priorities.0,
                        vip: VIP.into(),
                    },
                    KaInstance {
                        name: "VI_2",
                        vrid: 52,
                        priority: priorities.1,
                        vip: VIP2.into(),
                    },
                ],
            );
            Ok(())
        }
    }
}

/// Takeover of each instance of an active-active pair of `daemon`s (lb1
/// masters VI_1 and VIP, lb2 VI_2 and VIP2): each round crashes lb1 and
/// times VIP's move to lb2, restarts lb1 and lets it preempt back, then
/// does the same to lb2 and VIP2. Also checks that the survivor's own VIP
/// never moved. Returns the takeover times of VI_1 and of VI_2.
pub fn takeovers_active_active(
    daemon: Daemon,
    kills: usize,
    advert_ms: u32,
) -> Result<[Vec<Duration>; 2]> {
    const PRIOS: [(u8, u8); 2] = [(150, 100), (100, 150)];
    let mut lab = pair_lab(&format!("fa{}", &daemon.name()[..1]))?;
    for (i, node) in ["lb1", "lb2"].into_iter().enumerate() {
        start_active_active(&mut lab, daemon, node, PRIOS[i], advert_ms)?;
    }
    let slow = Duration::from_millis(advert_ms as u64 * 10).max(Duration::from_secs(3));
    let macs = [lab.mac("lb1")?, lab.mac("lb2")?];
    let vips = [VIP, VIP2];
    let owns = |lab: &Lab, node: usize, vip| {
        lab.has_addr(&format!("lb{}", node + 1), vip)
            .unwrap_or(false)
            && !lab
                .has_addr(&format!("lb{}", 2 - node), vip)
                .unwrap_or(true)
    };
    let follows = |lab: &Lab, vip, node: usize| {
        neighbour_mac(lab, "client", vip).as_deref() == Some(macs[node].as_str())
    };
    let mut out = [Vec::with_capacity(kills), Vec::with_capacity(kills)];
    for round in 0..kills {
        for victim in 0..2usize {
            let survivor = 1 - victim;
            let name = format!("lb{}", victim + 1);
            lab.wait_for(
                "each node to master its instance",
                slow,
                Duration::from_millis(10),
                || owns(&lab, 0, VIP) && owns(&lab, 1, VIP2),
            )?;
            for (node, vip) in vips.into_iter().enumerate() {
                resolve(&lab, vip)?;
                lab.wait_for(
                    &format!("the client to know lb{} for {vip}", node + 1),
                    slow,
                    Duration::from_millis(10),
                    || follows(&lab, vip, node),
                )?;
            }
            let seen = adverts_from(&lab, lb_addr(victim as u8 + 1))?;
            lab.wait_for(
                "three adverts from the victim",
                slow,
                Duration::from_millis(5),
                || adverts_from(&lab, lb_addr(victim as u8 + 1)).is_ok_and(|n| n >= seen + 3),
            )?;
            let t0 = Instant::now();
            crash(&mut lab, daemon, &name)?;
            lab.wait_for(
                "the client to follow the survivor",
                slow * 2,
                Duration::from_millis(2),
                || follows(&lab, vips[victim], survivor),
            )
            .with_context(|| format!("{} VI_{} round {round}", daemon.name(), victim + 1))?;
            out[victim].push(t0.elapsed());
            if !follows(&lab, vips[survivor], survivor) {
                bail!(
                    "{} round {round}: the survivor's own VIP {} moved",
                    daemon.name(),
                    vips[survivor]
                );
            }
            // The dead node holds no VIP; restart it and let it preempt back.
            let _ = lab.ip(
                &name,
                &[
                    "addr",
                    "del",
                    &format!("{}/32", vips[victim]),
                    "dev",
                    "eth0",
                ],
            );
            start_active_active(&mut lab, daemon, &name, PRIOS[victim], advert_ms)?;
        }
    }
    Ok(out)
}

/// Makes the client resolve `vip` (one ping; an unanswered one is fine, the
/// caller checks the ARP entry; a missing `ping` is an error).
fn resolve(lab: &Lab, vip: std::net::Ipv4Addr) -> Result<()> {
    lab.cmd("client", "ping")
        .args(["-c", "1", "-W", "1", &vip.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|_| ())
        .context("cannot run ping (is iputils-ping installed? `cargo xtask setup` installs it)")
}

/// min / median / max in ms.
pub fn summary(d: &[Duration]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(a), Some(b), Some(c)) => (*a, *b, *c),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}
