//! `cargo xtask failover`: what a client sees when the master dies. A probe
//! opens a new connection through the VIP every 10 ms while long-lived
//! downloads run; the master is crashed (every process of the stack
//! stopped then killed) or taken down (crashed and its link pulled); the
//! report gives the outage per event (longest gap between successful
//! probes) and how many downloads survived. The same for a halb pair and
//! for keepalived + HAProxy, with the same advert interval in the same lab.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client;
use crate::failover::{crash_procs, start_keepalived};
use crate::lab::{neighbour_mac, node_config, Lab, VrrpOpts, BIG_SIZE, VIP};

/// The stack on the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// halb agents (VRRP + XDP DSR).
    Halb,
    /// keepalived (VRRP) + HAProxy (proxy) on each node.
    KeepalivedHaproxy,
}

impl Stack {
    /// Name for the report.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Halb => "halb",
            Stack::KeepalivedHaproxy => "keepalived + HAProxy",
        }
    }
}

/// How the master dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// Its processes crash (SIGSTOP, SIGKILL); the node stays on the wire.
    Crash,
    /// Crash and link down: the node is gone.
    NodeDown,
}

/// One event's outcome.
#[derive(Debug, Clone)]
pub struct Event {
    /// Longest gap between successful probes around the event.
    pub outage: Duration,
    /// Downloads that completed whole.
    pub survived: usize,
    /// Downloads started.
    pub streams: usize,
}

const STREAMS: usize = 4;

fn start_node(lab: &mut Lab, stack: Stack, node: &str, priority: u8, advert_ms: u32) -> Result<()> {
    match stack {
        Stack::Halb => {
            let mut v = VrrpOpts::v3(priority);
            v.advert_ms = advert_ms;
            let cfg = node_config(lab, node, "native", 3, None, Some(&v));
            lab.start_halb(node, &cfg, &[])?
                .wait_log("starting VRRP", Duration::from_secs(20))
        }
        Stack::KeepalivedHaproxy => {
            let cfg = lab.dir.join(format!("haproxy-{node}.cfg"));
            std::fs::write(&cfg, crate::lab::haproxy_config(4000))?;
            let mut c = lab.cmd(node, "haproxy");
            c.arg("-db").arg("-f").arg(&cfg);
            lab.spawn(&format!("haproxy-{node}"), c)?;
            start_keepalived(lab, node, 3, priority, advert_ms, None);
            Ok(())
        }
    }
}

/// Crashes every process of the stack on `node` (SIGSTOP all, then SIGKILL).
fn crash_node(lab: &mut Lab, stack: Stack, node: &str) -> Result<()> {
    let names: Vec<String> = match stack {
        Stack::Halb => vec![format!("halb-{node}")],
        Stack::KeepalivedHaproxy => vec![format!("keepalived-{node}"), format!("haproxy-{node}")],
    };
    crash_procs(lab, &names)
}

/// Runs `events` deaths of each kind for `stack`; returns (crash events, node-down events).
pub fn measure(stack: Stack, events: usize, advert_ms: u32) -> Result<(Vec<Event>, Vec<Event>)> {
    let tag = if stack == Stack::Halb { "oh" } else { "ok" };
    let mut lab = Lab::new(tag)?;
    lab.pair_topology(3)?;
    if stack == Stack::KeepalivedHaproxy {
        for h in ["lb1", "lb2"] {
            // The backup's HAProxy binds the VIP before it owns it.
            crate::lab::run(lab.cmd(h, "sysctl").args([
                "-q",
                "-w",
                "net.ipv4.ip_nonlocal_bind=1",
            ]))?;
        }
    }
    start_node(&mut lab, stack, "lb1", 150, advert_ms)?;
    start_node(&mut lab, stack, "lb2", 100, advert_ms)?;
    let mac1 = lab.mac("lb1")?;
    let mut crash = Vec::new();
    let mut down = Vec::new();
    for round in 0..events * 2 {
        let death = if round % 2 == 0 {
            Death::Crash
        } else {
            Death::NodeDown
        };
        // lb1 is master and the client talks to it.
        lab.wait_for(
            "lb1 to be master",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                lab.has_addr("lb1", VIP).unwrap_or(false)
                    && !lab.has_addr("lb2", VIP).unwrap_or(true)
            },
        )?;
        lab.wait_for(
            "requests through lb1",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                lab.in_ns("client", || {
                    client::http_get(VIP, 80, "/", Duration::from_millis(300)).is_ok()
                })
                .unwrap_or(false)
                    && neighbour_mac(&lab, "client", VIP).as_deref() == Some(mac1.as_str())
            },
        )?;
        let e = event(&mut lab, stack, death)?;
        match death {
            Death::Crash => crash.push(e),
            Death::NodeDown => down.push(e),
        }
        // Bring lb1 back (a dead node holds no VIP) and let it preempt.
        if death == Death::NodeDown {
            lab.ip("lb1", &["link", "set", "eth0", "up"])?;
        }
        let _ = lab.ip("lb1", &["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
        start_node(&mut lab, stack, "lb1", 150, advert_ms)?;
    }
    Ok((crash, down))
}

fn event(lab: &mut Lab, stack: Stack, death: Death) -> Result<Event> {
    let probes = crate::lab::Probes::start(lab)?;
    let streams = lab.streams(VIP, STREAMS)?;
    let t0 = Instant::now();
    crash_node(lab, stack, "lb1")?;
    if death == Death::NodeDown {
        lab.ip("lb1", &["link", "set", "eth0", "down"])?;
    }
    let (survived, _) = crate::lab::survived(streams);
    // Probes go on until well after the takeover.
    while t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let window: Vec<Instant> = probes
        .finish()
        .into_iter()
        .filter(|(t, ok)| *ok && *t + Duration::from_secs(1) >= t0)
        .map(|(t, _)| t)
        .collect();
    let mut outage = Duration::ZERO;
    for w in window.windows(2) {
        outage = outage.max(w[1] - w[0]);
    }
    if std::env::var_os("HALB_OUTAGE_DEBUG").is_some() {
        let rel: Vec<i64> = window
            .iter()
            .map(|t| {
                if *t >= t0 {
                    (*t - t0).as_millis() as i64
                } else {
                    -((t0 - *t).as_millis() as i64)
                }
            })
            .collect();
        eprintln!("{death:?}: successes at {rel:?}");
    }
    if window.last().is_none_or(|t| *t < t0) {
        outage = Duration::MAX;
    }
    Ok(Event {
        outage,
        survived,
        streams: STREAMS,
    })
}

/// The report.
pub fn markdown(advert_ms: u32, results: &[(Stack, Vec<Event>, Vec<Event>)]) -> String {
    let mut s = format!(
        "# halb failover\n\nCommand: `cargo xtask failover`. VRRPv3, {advert_ms} ms adverts, priorities 150/100. \
         A probe (a new connection, GET /) starts every 10 ms on its own thread and counts when it completes within 100 ms; {STREAMS} downloads of {} MiB \
         run through the VIP during each event. Crash: every process of the master's stack gets SIGSTOP, then \
         SIGKILL. Node down: crash and its link pulled. Outage: the longest gap between the starts of successful \
         probes around the event (10 ms resolution).\n\n| stack | death | events | outage min ms | median ms | max ms | streams survived | every event (ms) |\n\
         |---|---|---:|---:|---:|---:|---:|---|\n",
        BIG_SIZE >> 20
    );
    for (stack, crash, down) in results {
        for (name, ev) in [("crash", crash), ("node down", down)] {
            let all: Vec<String> = ev
                .iter()
                .map(|e| format!("{:.0}", e.outage.as_secs_f64() * 1000.0))
                .collect();
            let mut o: Vec<f64> = ev.iter().map(|e| e.outage.as_secs_f64() * 1000.0).collect();
            o.sort_by(f64::total_cmp);
            let (a, b, c) = (
                o.first().copied().unwrap_or(f64::NAN),
                o.get(o.len() / 2).copied().unwrap_or(f64::NAN),
                o.last().copied().unwrap_or(f64::NAN),
            );
            let surv: usize = ev.iter().map(|e| e.survived).sum();
            let total: usize = ev.iter().map(|e| e.streams).sum();
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {a:.0} | {b:.0} | {c:.0} | {surv}/{total} | {} |",
                stack.name(),
                ev.len(),
                all.join(" ")
            );
        }
    }
    s
}
