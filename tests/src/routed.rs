//! The routed lab (`cargo xtask lab up --routed`, the routed tests and
//! demo): backends behind a router, reached by encapsulation.
//!
//! - The load balancers' link (bridge `br0`, 10.77.0.0/24): the client,
//!   lb1 and lb2 (a VRRP pair), the router's `eth0` (10.77.0.1) and one
//!   backend on the link, `web1` (10.77.0.21).
//! - The backend subnet (bridge `br1`, 10.78.0.0/24) behind the router
//!   (`eth1`, 10.78.0.1): `rweb1` (10.78.0.31) and `rweb2` (10.78.0.32).
//! - Every backend runs `halb backend` for both VIPs and nginx.
//! - VIP `web` (10.77.0.100:80) is IP in IP, VIP `web-gue` (10.77.0.101:80)
//!   GUE on port [`GUE_PORT`], each over all three backends.
//! - The router's interface on the load balancers' link has MTU
//!   [`PATH_MTU`], and the nodes' route to the backend subnet says so: a
//!   routed backend's full-size reply to the client does not fit there,
//!   and the router's ICMP "fragmentation needed" goes to the VIP, where
//!   the node must hand it to that backend. The client's own link is 1500,
//!   so its full-size packets do not fit the tunnel either, and the node
//!   answers them with its own "fragmentation needed".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::lab::{halb_bin, lb_addr, run, Lab, CLIENT, VIP, VIP2};

/// The router on the load balancers' link.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The router on the backend subnet.
pub const ROUTER_B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The backend subnet.
pub const BACKEND_NET: &str = "10.78.0.0/24";
/// The GUE port of VIP `web-gue`.
pub const GUE_PORT: u16 = 6080;
/// The MTU of the router's interface on the load balancers' link.
pub const PATH_MTU: u32 = 1400;
/// The GUE VIP.
pub const VIP_GUE: Ipv4Addr = VIP2;
/// The backends: name and address.
pub const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("web1", Ipv4Addr::new(10, 77, 0, 21)),
    ("rweb1", Ipv4Addr::new(10, 78, 0, 31)),
    ("rweb2", Ipv4Addr::new(10, 78, 0, 32)),
];

/// The routed lab.
pub struct Routed {
    /// The namespaces and processes.
    pub lab: Lab,
}

impl Routed {
    /// Builds the routed topology under a fresh prefix (no agent running).
    pub fn new(tag: &str) -> Result<Self> {
        Self::build(Lab::new(tag)?)
    }

    /// Builds the routed topology in `lab`.
    pub fn build(mut lab: Lab) -> Result<Self> {
        lab.add_bridge("br1")?;
        lab.add_host("client", CLIENT)?;
        lab.add_host("rt", ROUTER)?;
        for k in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            run(lab
                .cmd("rt", "sysctl")
                .args(["-q", "-w", &format!("{k}=1")]))?;
        }
        let ns = lab.ns("rt");
        lab.ip(
            "sw",
            &[
                "link", "add", "p-rt-b", "type", "veth", "peer", "name", "eth1", "netns", &ns,
            ],
        )?;
        lab.ip("sw", &["link", "set", "p-rt-b", "master", "br1", "up"])?;
        lab.ip(
            "rt",
            &["addr", "add", &format!("{ROUTER_B}/24"), "dev", "eth1"],
        )?;
        lab.ip("rt", &["link", "set", "eth1", "up"])?;
        lab.ip("rt", &["link", "set", "eth0", "mtu", &PATH_MTU.to_string()])?;
        run(lab.cmd("rt", "ethtool").args(["-K", "eth1", "tx", "off"]))?;
        for n in 1..=2u8 {
            let h = format!("lb{n}");
            lab.add_host(&h, lb_addr(n))?;
            lab.attach_pass_on_port(&h)?;
            lab.ip(
                &h,
                &[
                    "route",
                    "add",
                    BACKEND_NET,
                    "via",
                    &ROUTER.to_string(),
                    "mtu",
                    &PATH_MTU.to_string(),
                ],
            )?;
        }
        for (i, (host, addr)) in BACKENDS.iter().enumerate() {
            if i == 0 {
                lab.add_host(host, *addr)?;
                lab.ip(
                    host,
                    &["route", "add", BACKEND_NET, "via", &ROUTER.to_string()],
                )?;
            } else {
                let six = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x30 + i as u16);
                lab.add_host_on(host, "br1", *addr, six)?;
                lab.ip(
                    host,
                    &["route", "add", "default", "via", &ROUTER_B.to_string()],
                )?;
            }
            lab.start_nginx(host)?;
            start_backend(&mut lab, host)?;
        }
        Ok(Self { lab })
    }

    /// The `halb.toml` of `node` (lb1 or lb2) at VRRP `priority`.
    pub fn config(&self, node: &str, priority: u8) -> String {
        config(&self.lab, node, priority, &BACKENDS)
    }

    /// Starts `halb run` on `node` at `priority`; returns once VRRP runs.
    pub fn start_node(&mut self, node: &str, priority: u8) -> Result<()> {
        let cfg = self.config(node, priority);
        self.start_node_with(node, &cfg)
    }

    /// Starts `halb run` on `node` with `cfg`; returns once VRRP runs.
    pub fn start_node_with(&mut self, node: &str, cfg: &str) -> Result<()> {
        self.lab
            .start_halb(node, cfg, &[])?
            .wait_log("starting VRRP", Duration::from_secs(20))
    }

    /// Writes a file of `len` bytes as `/huge` on every backend.
    pub fn add_huge(&self, len: usize) -> Result<()> {
        for (host, _) in BACKENDS {
            std::fs::write(
                self.lab.dir.join(format!("www-{host}/huge")),
                vec![b'h'; len],
            )?;
        }
        Ok(())
    }

    /// The size of `/up/name` (an upload) on `host`, if it is there.
    pub fn uploaded(&self, host: &str, name: &str) -> Option<u64> {
        std::fs::metadata(self.lab.dir.join(format!("www-{host}/up/{name}")))
            .ok()
            .map(|m| m.len())
    }
}

/// Starts `halb backend` in `host` for both VIPs; returns once it is ready.
pub fn start_backend(lab: &mut Lab, host: &str) -> Result<()> {
    start_backend_for(lab, host, &[IpAddr::V4(VIP), IpAddr::V4(VIP_GUE)])
}

/// Starts `halb backend` in `host` for `vips`; returns once it is ready.
pub fn start_backend_for(lab: &mut Lab, host: &str, vips: &[IpAddr]) -> Result<()> {
    let mut c = lab.nsenter(host, &halb_bin());
    c.args(["backend", "--interface", "eth0", "--gue-port"])
        .arg(GUE_PORT.to_string())
        .arg("--state-dir")
        .arg(lab.dir.join(format!("state-{host}")));
    for v in vips {
        c.arg("--vip").arg(v.to_string());
    }
    c.env("NO_COLOR", "1");
    lab.spawn(&format!("backend-{host}"), c)?
        .wait_log("backend side ready", Duration::from_secs(20))
}

/// The routed backends' IPv6 addresses (fd78::31, fd78::32).
pub fn routed6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x30 + i as u16)
}

impl Routed {
    /// IPv6 across the router: fd78::/64 behind it (the router fd78::1),
    /// the nodes' route to it (MTU 1400), the routed backends' default
    /// route, and `halb backend` on them for the IPv6 VIP too.
    pub fn add_ipv6(&mut self) -> Result<()> {
        run(self
            .lab
            .cmd("rt", "sysctl")
            .args(["-q", "-w", "net.ipv6.conf.eth1.accept_dad=0"]))?;
        self.lab.ip(
            "rt",
            &["-6", "addr", "add", "fd78::1/64", "dev", "eth1", "nodad"],
        )?;
        for n in 1..=2u8 {
            self.lab.ip(
                &format!("lb{n}"),
                &[
                    "-6",
                    "route",
                    "add",
                    "fd78::/64",
                    "via",
                    "fd77::1",
                    "mtu",
                    "1400",
                ],
            )?;
        }
        for (host, _) in BACKENDS.iter().skip(1) {
            self.lab
                .ip(host, &["-6", "route", "add", "default", "via", "fd78::1"])?;
            let mut p = self
                .lab
                .take_proc(&format!("backend-{host}"))
                .context("halb backend")?;
            p.signal(libc::SIGTERM);
            p.wait_exit(Duration::from_secs(10));
            let vips = [
                IpAddr::V4(VIP),
                IpAddr::V4(VIP_GUE),
                IpAddr::V6(crate::lab::VIP6),
            ];
            start_backend_for(&mut self.lab, host, &vips)?;
        }
        Ok(())
    }
}

/// A node config without VRRP (the node owns its VIPs) for the IPv6
/// tunnels: `web6` ([`crate::lab::VIP6`]) is IPv6 in IPv6, `web46`
/// ([`VIP`]) is IPv4 in IPv6 over GUE, both over the routed backends'
/// IPv6 addresses.
pub fn config6(lab: &Lab, node: &str) -> String {
    let mut c = format!(
        "[node]\nname = \"{node}\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\n",
        lab.pin_dir(node).display()
    );
    for (name, addr, mode) in [
        (
            "web6",
            IpAddr::V6(crate::lab::VIP6),
            "mode = \"ipip\"".to_string(),
        ),
        (
            "web46",
            IpAddr::V4(VIP),
            format!("mode = \"gue\"\ngue_port = {GUE_PORT}"),
        ),
    ] {
        c.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = 80\n{mode}\n\n\
             [vip.health]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 500\ntimeout_ms = 400\n"
        ));
        for i in 1..=2u8 {
            c.push_str(&format!(
                "\n  [[vip.backend]]\n  name = \"rweb{i}\"\n  address = \"{}\"\n",
                routed6(i)
            ));
        }
        c.push('\n');
    }
    c
}

/// The config of routed-lab node `node` at `priority`: one VRRP instance
/// (100 ms adverts) owning both VIPs, each over `backends` (some of
/// [`BACKENDS`]) with HTTP health checks.
pub fn config(lab: &Lab, node: &str, priority: u8, backends: &[(&str, Ipv4Addr)]) -> String {
    let mut c = format!(
        "[node]\nname = \"{node}\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\n\
         [vrrp]\nversion = 3\nrouter_id = 51\npriority = {priority}\nadvert_interval_ms = 100\n\
         preempt = true\n\n",
        lab.pin_dir(node).display()
    );
    for (name, addr, mode) in [
        ("web", IpAddr::V4(VIP), "mode = \"ipip\"".to_string()),
        (
            "web-gue",
            IpAddr::V4(VIP_GUE),
            format!("mode = \"gue\"\ngue_port = {GUE_PORT}"),
        ),
    ] {
        c.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = 80\n{mode}\n\n\
             [vip.health]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 500\ntimeout_ms = 400\n"
        ));
        for (b, a) in backends {
            c.push_str(&format!(
                "\n  [[vip.backend]]\n  name = \"{b}\"\n  address = \"{a}\"\n"
            ));
        }
        c.push('\n');
    }
    c
}

/// `lab up --routed`: builds the routed lab under `prefix`, starts both
/// nodes, and leaves it all running (recorded in `state` for `lab down`).
pub fn up(state: &std::path::Path, prefix: &str) -> Result<()> {
    if state.exists() {
        anyhow::bail!(
            "a lab is already up ({}); run `cargo xtask lab down` first",
            state.display()
        );
    }
    crate::lab::catch_interrupts();
    let mut r = Routed::build(Lab::named(prefix)?)?;
    r.start_node("lb1", 150)?;
    r.start_node("lb2", 100)?;
    let p = r.lab.persist();
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(state, serde_json::to_string_pretty(&p)?)?;
    println!("routed lab up: namespaces {prefix}{{sw,client,rt,lb1,lb2,web1,rweb1,rweb2}}");
    println!(
        "  client {CLIENT}, lb1 {} (master), lb2 {}; router {ROUTER} / {ROUTER_B}",
        lb_addr(1),
        lb_addr(2)
    );
    println!(
        "  backends: web1 {} on the nodes' link, rweb1 {} and rweb2 {} behind the router",
        BACKENDS[0].1, BACKENDS[1].1, BACKENDS[2].1
    );
    println!("  VIP {VIP}:80 is IP in IP, VIP {VIP_GUE}:80 is GUE on port {GUE_PORT}");
    println!("  ip netns exec {prefix}client curl -s http://{VIP}/");
    println!("  ip netns exec {prefix}client curl -s http://{VIP_GUE}/");
    println!(
        "  nsenter --net=/run/netns/{prefix}lb1 {} status",
        halb_bin().display()
    );
    println!("  cargo xtask lab down   # removes all of it");
    Ok(())
}
