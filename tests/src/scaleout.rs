//! The scale-out lab: every halb node active behind an ECMP router.
//!
//! - `router`: BIRD 2 with a BGP session (and BFD) to every node, the
//!   nodes' routes merged into one multipath route in its kernel table,
//!   hashed on the layer-4 five-tuple (`fib_multipath_hash_policy=1`).
//! - `client`: behind the router, on 10.77.0.128/25 (router 10.77.0.129).
//! - `lb1..lbN`: halb in `[bgp]` mode with BIRD 2 beside it (its config from
//!   `halb bird-config`), on the node segment 10.77.0.0/25 with the router.
//! - `web1..webN`: nginx backends (DSR: the VIP on `lo`) on the node segment,
//!   replying to the client through the router (their default route).
//!
//! Dual stack ([`ScaleOut::new_dual`]): the same on fd77::/64 (node
//! segment, router fd77::1) and fd77:0:0:1::/64 (client side), an IPv6
//! BGP session from every node to the router carrying the IPv6 VIP.
//!
//! Nothing leaves the lab's namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::{backend_addr, backend_addr_for, halb_bin, lb_addr, run, ula_of, Lab, VIP, VIP6};

/// The router's address on the node segment.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The router's address on the client side.
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 129);
/// The client's address (behind the router).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 130);
/// The router's IPv6 address on the client side.
pub const ROUTER6_CLIENT_SIDE: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 1, 0, 0, 0, 0x129);
/// The client's IPv6 address (behind the router).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 1, 0, 0, 0, 0x130);
/// The router's AS.
pub const ROUTER_ASN: u32 = 65000;
/// The nodes' AS.
pub const NODE_ASN: u32 = 65001;
/// Prefix length of both segments.
pub const PLEN: u8 = 25;

/// How a node's halb is configured beyond the defaults.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    /// Health-check interval (tcp checks on port 80).
    pub check_ms: u32,
    /// `[bgp] hold_down_ms`.
    pub hold_down_ms: u32,
    /// `[bgp] shutdown_grace_ms`.
    pub grace_ms: u32,
}

impl Default for NodeOpts {
    fn default() -> Self {
        Self {
            check_ms: 200,
            hold_down_ms: 1000,
            grace_ms: 2000,
        }
    }
}

/// The lab and its shape.
pub struct ScaleOut {
    /// The namespaces and processes.
    pub lab: Lab,
    /// Number of halb nodes.
    pub nodes: u8,
    /// Number of backends.
    pub backends: u8,
    /// Node options.
    pub opts: NodeOpts,
    /// Dual stack: the IPv6 VIP beside the IPv4 one, over IPv6 sessions.
    pub ipv6: bool,
}

impl ScaleOut {
    /// Builds the topology and starts the router's BIRD (no node yet).
    pub fn new(tag: &str, nodes: u8, backends: u8) -> Result<Self> {
        Self::build(Lab::new(tag)?, nodes, backends)
    }

    /// [`ScaleOut::new`], dual stack: every node also announces [`VIP6`]
    /// over an IPv6 session, and the client reaches it through the router.
    pub fn new_dual(tag: &str, nodes: u8, backends: u8) -> Result<Self> {
        Self::build_with(Lab::new(tag)?, nodes, backends, true)
    }

    /// [`ScaleOut::new`] in an empty `lab`.
    pub fn build(lab: Lab, nodes: u8, backends: u8) -> Result<Self> {
        Self::build_with(lab, nodes, backends, false)
    }

    fn build_with(mut lab: Lab, nodes: u8, backends: u8, ipv6: bool) -> Result<Self> {
        lab.prefix_len = PLEN;
        lab.add_host("router", ROUTER)?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ] {
            run(lab
                .cmd("router", "sysctl")
                .args(["-q", "-w", &format!("{k}={v}")]))?;
        }
        // The client side: a veth pair straight from the router.
        lab.add_namespace("client")?;
        lab.ip(
            "router",
            &[
                "link",
                "add",
                "eth1",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &lab.ns("client"),
            ],
        )?;
        lab.ip(
            "router",
            &[
                "addr",
                "add",
                &format!("{ROUTER_CLIENT_SIDE}/{PLEN}"),
                "dev",
                "eth1",
            ],
        )?;
        for (host, dev, addr) in [
            ("router", "eth1", ROUTER6_CLIENT_SIDE),
            ("client", "eth0", CLIENT6),
        ] {
            run(lab.cmd(host, "sysctl").args([
                "-q",
                "-w",
                &format!("net.ipv6.conf.{dev}.accept_dad=0"),
            ]))?;
            lab.ip(
                host,
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{addr}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
        }
        lab.ip("router", &["link", "set", "eth1", "up"])?;
        lab.ip(
            "client",
            &["addr", "add", &format!("{CLIENT}/{PLEN}"), "dev", "eth0"],
        )?;
        lab.ip("client", &["link", "set", "eth0", "up"])?;
        lab.ip(
            "client",
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER6_CLIENT_SIDE.to_string(),
            ],
        )?;
        lab.ip(
            "client",
            &[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_CLIENT_SIDE.to_string(),
            ],
        )?;
        for (host, dev) in [("client", "eth0"), ("router", "eth1")] {
            run(lab.cmd(host, "ethtool").args(["-K", dev, "tx", "off"]))?;
        }
        for n in 1..=nodes {
            let h = format!("lb{n}");
            lab.add_host(&h, lb_addr(n))?;
            lab.attach_pass_on_port(&h)?;
        }
        for i in 1..=backends {
            let h = format!("web{i}");
            lab.add_backend(&h, backend_addr(i), VIP)?;
            lab.ip(&h, &["route", "add", "default", "via", &ROUTER.to_string()])?;
            let router6 = ula_of(ROUTER).to_string();
            lab.ip(&h, &["-6", "route", "add", "default", "via", &router6])?;
        }
        let mut s = Self {
            lab,
            nodes,
            backends,
            opts: NodeOpts::default(),
            ipv6,
        };
        s.start_router_bird()?;
        Ok(s)
    }

    fn start_router_bird(&mut self) -> Result<()> {
        let dir = self.lab.dir.clone();
        let mut c = format!(
            "log \"{log}\" all;\nrouter id {ROUTER};\nprotocol device {{\n}}\n\
             protocol kernel {{\n    merge paths on;\n    ipv4 {{ import none; export all; }};\n}}\n\
             protocol bfd {{\n    interface \"eth0\" {{\n        min rx interval 50 ms;\n\
             \x20       min tx interval 50 ms;\n        multiplier 3;\n    }};\n}}\n\
             template bgp halbnode {{\n    local as {ROUTER_ASN};\n    bfd on;\n\
             \x20   connect delay time 1;\n    connect retry time 2;\n    error wait time 1, 10;\n\
             \x20   ipv4 {{ import all; export none; }};\n}}\n",
            log = dir.join("bird-router.log").display()
        );
        for n in 1..=self.nodes {
            c.push_str(&format!(
                "protocol bgp lb{n} from halbnode {{\n    neighbor {} as {NODE_ASN};\n}}\n",
                lb_addr(n)
            ));
        }
        if self.ipv6 {
            c.push_str(&format!(
                "protocol kernel kernel6 {{\n    merge paths on;\n    ipv6 {{ import none; export all; }};\n}}\n\
                 template bgp halbnode6 {{\n    local as {ROUTER_ASN};\n    bfd on;\n\
                 \x20   connect delay time 1;\n    connect retry time 2;\n    error wait time 1, 10;\n\
                 \x20   ipv6 {{ import all; export none; }};\n}}\n"
            ));
            for n in 1..=self.nodes {
                c.push_str(&format!(
                    "protocol bgp lb{n}_6 from halbnode6 {{\n    neighbor {} as {NODE_ASN};\n}}\n",
                    ula_of(lb_addr(n))
                ));
            }
        }
        self.start_bird("router", &c)
    }

    /// Starts BIRD in `host` with `conf` (foreground, its own control socket).
    fn start_bird(&mut self, host: &str, conf: &str) -> Result<()> {
        let dir = self.lab.dir.clone();
        let path = dir.join(format!("bird-{host}.conf"));
        std::fs::write(&path, conf)?;
        let mut c = self.lab.cmd(host, "bird");
        c.arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(bird_socket(&self.lab, host))
            .arg("-P")
            .arg(dir.join(format!("bird-{host}.pid")));
        self.lab.spawn(&format!("bird-{host}"), c)?;
        Ok(())
    }

    /// The halb config of node `n`.
    pub fn node_config(&self, n: u8) -> String {
        let node = format!("lb{n}");
        let o = &self.opts;
        let mut c = format!(
            "[node]\nname = \"{node}\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\n\
             bpf_dir = \"{}\"\nflow_hash_seed = 4242\n\n\
             [bgp]\nlocal_asn = {NODE_ASN}\nhold_down_ms = {}\nshutdown_grace_ms = {}\n\
             bird_socket = \"{}\"\nstate_dir = \"{}\"\n\n",
            self.lab.pin_dir(&node).display(),
            o.hold_down_ms,
            o.grace_ms,
            bird_socket(&self.lab, &node).display(),
            self.lab.dir.display(),
        );
        // Per family: the router's session, and the VIP over the backends.
        let mut families = vec![(IpAddr::V4(ROUTER), "web", IpAddr::V4(VIP))];
        if self.ipv6 {
            families.push((ula_of(ROUTER).into(), "web6", VIP6.into()));
        }
        for (router, _, _) in &families {
            c.push_str(&format!(
                "  [[bgp.neighbor]]\n  address = \"{router}\"\n  asn = {ROUTER_ASN}\n\n"
            ));
        }
        for (k, (_, name, vip)) in families.iter().enumerate() {
            c.push_str(&format!(
                "{}[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\n\
                 \x20 [vip.health]\n  kind = \"tcp\"\n  interval_ms = {}\n  timeout_ms = {}\n  rise = 1\n  fall = 2\n",
                if k > 0 { "\n" } else { "" },
                o.check_ms,
                o.check_ms / 2,
            ));
            for i in 1..=self.backends {
                let b = backend_addr_for(*vip, i);
                c.push_str(&format!(
                    "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{b}\"\n"
                ));
            }
        }
        c
    }

    /// Starts node `n`: its BIRD (config from `halb bird-config`) and halb.
    pub fn start_node(&mut self, n: u8) -> Result<()> {
        let node = format!("lb{n}");
        if self.lab.proc_mut(&format!("bird-{node}")).is_none() {
            self.start_node_bird(n)?;
        }
        let cfg = self.node_config(n);
        self.lab
            .start_halb(&node, &cfg, &[])?
            .wait_log("API and stats page listening", Duration::from_secs(30))?;
        Ok(())
    }

    /// Starts node `n`'s BIRD with the configuration `halb bird-config`
    /// renders (its log to a file instead of syslog).
    pub fn start_node_bird(&mut self, n: u8) -> Result<()> {
        let node = format!("lb{n}");
        let path = self.lab.dir.join(format!("halb-{node}.toml"));
        std::fs::write(&path, self.node_config(n))?;
        let mut c = self.lab.nsenter(&node, &halb_bin());
        c.arg("bird-config").arg("-c").arg(&path);
        let conf = run(&mut c).context("halb bird-config")?;
        let log = self.lab.dir.join(format!("bird-{node}.log"));
        let conf = conf.replace(
            "log syslog all;",
            &format!("log \"{}\" all;", log.display()),
        );
        if !conf.contains(&format!("neighbor {ROUTER} as {ROUTER_ASN};")) {
            bail!("bird-config did not name the router:\n{conf}");
        }
        self.start_bird(&node, &conf)
    }

    /// Writes `cfg` as node `n`'s config and reloads it (SIGHUP); returns
    /// once the agent logged that this reload was taken.
    pub fn reload(&mut self, n: u8, cfg: &str) -> Result<()> {
        const DONE: &str = "configuration reloaded";
        let name = format!("halb-lb{n}");
        std::fs::write(self.lab.dir.join(format!("{name}.toml")), cfg)?;
        let p = self.lab.proc_mut(&name).context("halb")?;
        let before = p.log_text().matches(DONE).count();
        p.signal(libc::SIGHUP);
        let log = p.log.clone();
        self.lab.wait_for(
            &format!("{name} to reload"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .matches(DONE)
                    .count()
                    > before
            },
        )?;
        Ok(())
    }

    /// The next hops the router's kernel uses for the VIP, sorted.
    pub fn paths(&self) -> Vec<Ipv4Addr> {
        self.paths_of(VIP.into())
            .into_iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// The next hops the router's kernel uses for `vip` (either family),
    /// sorted.
    pub fn paths_of(&self, vip: IpAddr) -> Vec<IpAddr> {
        let (family, len) = if vip.is_ipv6() {
            ("-6", 128)
        } else {
            ("-4", 32)
        };
        let out = self
            .lab
            .ip(
                "router",
                &[family, "route", "show", &format!("{vip}/{len}")],
            )
            .unwrap_or_default();
        let mut v: Vec<IpAddr> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Waits until the router's paths for the IPv6 VIP are exactly `nodes`
    /// (by their ULAs).
    pub fn wait_paths6(&self, nodes: &[u8], timeout: Duration) -> Result<Duration> {
        let mut want: Vec<IpAddr> = nodes.iter().map(|n| ula_of(lb_addr(*n)).into()).collect();
        want.sort();
        self.lab
            .wait_for(
                &format!("the router to route the IPv6 VIP via {want:?}"),
                timeout,
                Duration::from_millis(5),
                || self.paths_of(VIP6.into()) == want,
            )
            .with_context(|| format!("paths now {:?}", self.paths_of(VIP6.into())))
    }

    /// Waits until the router's paths for the VIP are exactly `nodes`.
    pub fn wait_paths(&self, nodes: &[u8], timeout: Duration) -> Result<Duration> {
        let mut want: Vec<Ipv4Addr> = nodes.iter().map(|n| lb_addr(*n)).collect();
        want.sort();
        self.lab
            .wait_for(
                &format!("the router to route the VIP via {want:?}"),
                timeout,
                Duration::from_millis(5),
                || self.paths() == want,
            )
            .with_context(|| format!("paths now {:?}", self.paths()))
    }

    /// Starts every node and waits for the router to use all of them.
    pub fn start_all(&mut self) -> Result<()> {
        for n in 1..=self.nodes {
            self.start_node(n)?;
        }
        let all: Vec<u8> = (1..=self.nodes).collect();
        self.wait_paths(&all, Duration::from_secs(30))?;
        Ok(())
    }

    /// Packets node `n`'s XDP program forwarded (its pinned counters).
    pub fn forwarded(&self, n: u8) -> u64 {
        halb::dataplane::Maps::open_pinned(&self.lab.pin_dir(&format!("lb{n}")))
            .and_then(|m| m.stats())
            .map(|s| {
                s.iter()
                    .filter(|(st, _)| st.action() == ha_common::Action::Tx)
                    .map(|(_, c)| c.packets)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// BIRD's control socket of `host`.
pub fn bird_socket(lab: &Lab, host: &str) -> std::path::PathBuf {
    lab.dir.join(format!("bird-{host}.ctl"))
}

/// `birdc` in `host` (its own control socket).
pub fn birdc(lab: &Lab, host: &str) -> Command {
    let mut c = lab.cmd(host, "birdc");
    c.arg("-s").arg(bird_socket(lab, host));
    c
}

/// How many of `probes` failed.
pub fn failures(probes: &[(std::time::Instant, bool)]) -> usize {
    probes.iter().filter(|(_, ok)| !ok).count()
}

/// What the probes saw around an event at `t0`: (failed probes, outage).
/// The outage runs from the event to the start of the last failed probe
/// (plus one probe period): after it, no flow was black-holed. Zero when
/// no probe failed.
pub fn outage(probes: &[(std::time::Instant, bool)], t0: std::time::Instant) -> (usize, Duration) {
    let last = probes.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).max();
    let out = match last {
        None => Duration::ZERO,
        Some(t) if t <= t0 => Duration::from_millis(10),
        Some(t) => t - t0 + Duration::from_millis(10),
    };
    (failures(probes), out)
}

/// The node the router picks for a client flow from each of `ports` (its
/// own FIB lookup with the layer-4 hash, `ip route get ... iif eth1`).
pub fn choices(s: &ScaleOut, ports: std::ops::Range<u16>) -> Result<Vec<Option<Ipv4Addr>>> {
    use std::io::Write as _;
    let mut c = Command::new("ip");
    c.args(["-n", &s.lab.ns("router"), "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().context("ip -batch")?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        for p in ports.clone() {
            writeln!(
                stdin,
                "route get {VIP} from {CLIENT} iif eth1 ipproto tcp sport {p} dport 80"
            )?;
        }
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let picks: Vec<Option<Ipv4Addr>> = text
        .lines()
        .filter(|l| l.starts_with(&VIP.to_string()))
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[0] == "via")
                .and_then(|w| w[1].parse().ok())
        })
        .collect();
    if picks.len() != ports.len() {
        bail!(
            "ip route get answered {} of {} lookups",
            picks.len(),
            ports.len()
        );
    }
    Ok(picks)
}

/// The kinds of event the report measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The agent gets SIGKILL; the node stays on the wire.
    Kill,
    /// The link goes down, then the agent gets SIGKILL: the node is gone.
    LinkDown,
    /// `halb node drain`.
    Drain,
    /// A node (stopped before) starts and announces.
    Join,
}

impl Event {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Event::Kill => "kill",
            Event::LinkDown => "link-down",
            Event::Drain => "drain",
            Event::Join => "join",
        }
    }
}

/// One measured event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    /// `kill`, `link-down`, `drain` or `join`.
    pub event: String,
    /// From the event to the last probe that failed (0: none failed).
    pub outage_ms: u64,
    /// Downloads running across the event.
    pub streams_total: usize,
    /// Those that completed whole.
    pub streams_survived: usize,
    /// Probes (new connections every 10 ms) that failed.
    pub requests_failed: usize,
    /// Probes made.
    pub requests_total: usize,
    /// From the event until the router's ECMP set changed.
    pub route_change_ms: u64,
    /// Of 1000 sample flows, how many the router sent to another node.
    pub flows_moved_per_1000: usize,
}

const STREAMS_PER_EVENT: usize = 12;
const SAMPLE_PORTS: std::ops::Range<u16> = 20000..21000;

/// Runs `rounds` of every event on lb1 of a three-node lab.
pub fn measure(rounds: usize) -> Result<Vec<Measured>> {
    let mut s = ScaleOut::new("fso", 3, 3)?;
    s.start_all()?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        for ev in [Event::Kill, Event::LinkDown, Event::Drain, Event::Join] {
            if crate::lab::interrupted() {
                bail!("interrupted");
            }
            if ev == Event::Join {
                // Leave first (SIGTERM: withdraw, grace, stop).
                let mut p = s.lab.take_proc("halb-lb1").context("halb-lb1")?;
                p.signal(libc::SIGTERM);
                p.wait_exit(Duration::from_secs(10));
                s.wait_paths(&[2, 3], Duration::from_secs(5))?;
            }
            let before = choices(&s, SAMPLE_PORTS)?;
            let streams = s.lab.streams(VIP, STREAMS_PER_EVENT)?;
            let probes = crate::lab::Probes::start(&s.lab)?;
            probes.wait_ok(&s.lab, 20)?;
            let t0 = std::time::Instant::now();
            let after_set: &[u8] = match ev {
                Event::Kill => {
                    let mut p = s.lab.take_proc("halb-lb1").context("halb-lb1")?;
                    p.signal(libc::SIGKILL);
                    p.wait_exit(Duration::from_secs(5));
                    &[2, 3]
                }
                Event::LinkDown => {
                    s.lab.ip("lb1", &["link", "set", "eth0", "down"])?;
                    let mut p = s.lab.take_proc("halb-lb1").context("halb-lb1")?;
                    p.signal(libc::SIGKILL);
                    p.wait_exit(Duration::from_secs(5));
                    &[2, 3]
                }
                Event::Drain => {
                    let cfg = s.lab.dir.join("halb-lb1.toml");
                    let mut c = s.lab.nsenter("lb1", &halb_bin());
                    c.arg("node").arg("drain").arg("-c").arg(&cfg);
                    run(&mut c)?;
                    &[2, 3]
                }
                Event::Join => {
                    s.start_node(1)?;
                    &[1, 2, 3]
                }
            };
            let route = s.wait_paths(after_set, Duration::from_secs(5))?;
            let after = choices(&s, SAMPLE_PORTS)?;
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let (whole, _) = crate::lab::survived(streams);
            let seen = probes.finish();
            let (failed, outage) = outage(&seen, t0);
            out.push(Measured {
                event: ev.name().into(),
                outage_ms: outage.as_millis() as u64,
                streams_total: STREAMS_PER_EVENT,
                streams_survived: whole,
                requests_failed: failed,
                requests_total: seen.len(),
                route_change_ms: route.as_millis() as u64,
                flows_moved_per_1000: moved * 1000 / SAMPLE_PORTS.len(),
            });
            // Back to three nodes.
            match ev {
                Event::Kill => s.start_node(1)?,
                Event::LinkDown => {
                    s.lab.ip("lb1", &["link", "set", "eth0", "up"])?;
                    s.start_node(1)?;
                }
                Event::Drain => {
                    let cfg = s.lab.dir.join("halb-lb1.toml");
                    let mut c = s.lab.nsenter("lb1", &halb_bin());
                    c.arg("node").arg("enable").arg("-c").arg(&cfg);
                    run(&mut c)?;
                }
                Event::Join => {}
            }
            s.wait_paths(&[1, 2, 3], Duration::from_secs(30))?;
        }
    }
    Ok(out)
}

/// The report's Markdown.
pub fn markdown(results: &[Measured]) -> String {
    let mut md = format!(
        "# halb scale-out\n\nCommand: `cargo xtask failover --scale-out`. Three halb nodes behind a router \
         running BIRD 2 (BGP with BFD 50 ms × 3, ECMP with the layer-4 hash), three nginx backends (DSR), \
         the events on lb1. Across each event {STREAMS_PER_EVENT} downloads of {} MiB run, and a probe \
         (a new connection) starts every 10 ms and fails unless it completes within 100 ms. Outage: from \
         the event to the start of the last failed probe. Route change: until the router's ECMP set \
         changed. Flows moved: of 1000 client flows, how many the router sends to another node after the \
         event (its own lookup, `ip route get`).\n\n\
         | event | outage ms | route change ms | streams survived | failed requests | flows moved / 1000 |\n\
         |---|---:|---:|---:|---:|---:|\n",
        crate::lab::BIG_SIZE >> 20
    );
    for m in results {
        md.push_str(&format!(
            "| {} | {} | {} | {}/{} | {}/{} | {} |\n",
            m.event,
            m.outage_ms,
            m.route_change_ms,
            m.streams_survived,
            m.streams_total,
            m.requests_failed,
            m.requests_total,
            m.flows_moved_per_1000
        ));
    }
    let total: usize = results.iter().map(|m| m.streams_total).sum();
    let whole: usize = results.iter().map(|m| m.streams_survived).sum();
    md.push_str(&format!(
        "\nStreams surviving every event: {whole}/{total} (keepalived + HAProxy: 0, see failover.md: \
         every download dies with its proxy). Goals: 100 % of streams; outage ≤ 300 ms; 0 failed \
         requests in a drain.\n"
    ));
    md
}
