//! The namespace lab: one bridge, a client, load-balancer nodes and nginx
//! backends on 10.77.0.0/24 and the ULA fd77::/64 (dual stack: host
//! 10.77.0.N is also fd77::N, the digits of N read as hex), each in a
//! network namespace whose name carries a per-run prefix. Everything a [`Lab`] creates (namespaces, processes,
//! pins, files) is removed when it is dropped, also when a test panics.
//!
//! Topology: the bridge `br0` lives in namespace `<prefix>sw`; every host
//! namespace `<prefix><host>` has an `eth0` whose veth peer is a bridge port.
//! Traffic never leaves these namespaces.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The lab's subnet prefix length.
pub const PREFIX_LEN: u8 = 24;
/// The VIP of the standard topology.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// The second VIP of the active-active topology (owned by the second instance).
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

/// The IPv6 VIP of the standard topology (the counterpart of [`VIP`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
/// The lab's IPv6 prefix length.
pub const PREFIX_LEN6: u8 = 64;

/// The lab's IPv6 address of the host at IPv4 address `a`: 10.77.0.N is
/// fd77::N, the decimal digits of N read as hex (10.77.0.21 is fd77::21).
pub fn ula_of(a: Ipv4Addr) -> Ipv6Addr {
    let n = a.octets()[3];
    let group = u16::from_str_radix(&n.to_string(), 16).unwrap_or(u16::from(n));
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, group)
}

/// Address of load-balancer node `n` (1-based): .2, .3, ...
pub fn lb_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + n)
}

/// Address of backend `n` (1-based): .21, .22, ...
pub fn backend_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 20 + n)
}

/// Backend `n`'s address of `vip`'s family: [`backend_addr`] or its ULA.
pub fn backend_addr_for(vip: IpAddr, n: u8) -> IpAddr {
    match vip {
        IpAddr::V4(_) => IpAddr::V4(backend_addr(n)),
        IpAddr::V6(_) => IpAddr::V6(ula_of(backend_addr(n))),
    }
}

static RUN: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turns SIGINT and SIGTERM into a flag ([`interrupted`]) so that a lab
/// driver can stop at the next step and clean up. Call before spawning threads.
pub fn catch_interrupts() {
    // SAFETY: plain signal-mask calls on a zeroed, then filled, sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                eprintln!("\ninterrupted: cleaning up");
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        });
    }
}

/// Whether Ctrl-C (or SIGTERM) arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A process the lab started (killed by PID when the lab goes).
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on a PID this lab started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Whether it has exited (and its status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                bail!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if interrupted() {
                bail!("interrupted");
            }
            if Instant::now() > end {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A lab: its namespaces, processes and scratch directory.
pub struct Lab {
    /// Prefix of every namespace name of this run.
    pub prefix: String,
    /// Scratch directory (configs, logs, web roots).
    pub dir: PathBuf,
    /// bpffs directory for this run's pins.
    pub bpf_dir: PathBuf,
    hosts: Vec<String>,
    procs: Vec<Proc>,
    keep_dir: bool,
    persisted: bool,
    /// Prefix length of the addresses [`Lab::add_host`] gives.
    pub prefix_len: u8,
}

impl Lab {
    /// An empty lab: the switch namespace with its bridge, under a fresh
    /// per-run prefix.
    pub fn new(tag: &str) -> Result<Self> {
        let n = RUN.fetch_add(1, Ordering::SeqCst);
        Self::named(&format!(
            "halb{}{}-{}-",
            tag,
            std::process::id() % 100_000,
            n
        ))
    }

    /// An empty lab under `prefix` (for `lab up`, which has a fixed one).
    pub fn named(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}lab"));
        std::fs::create_dir_all(&dir)?;
        let lab = Self {
            prefix: prefix.to_string(),
            bpf_dir: PathBuf::from("/sys/fs/bpf").join(format!("{prefix}lab")),
            dir,
            hosts: Vec::new(),
            procs: Vec::new(),
            keep_dir: std::env::var_os("HALB_LAB_KEEP").is_some(),
            persisted: false,
            prefix_len: PREFIX_LEN,
        };
        ensure_bpffs()?;
        run(Command::new("ip").args(["netns", "add", &lab.ns("sw")]))?;
        lab.ip("sw", &["link", "add", "br0", "type", "bridge"])?;
        lab.ip("sw", &["link", "set", "br0", "up"])?;
        // A switch, not a firewall: where br_netfilter is loaded (Docker
        // loads it), bridged IP would go through netfilter, which drops a
        // frame whose IP lengths disagree before any load balancer sees
        // it. The sysctls exist per namespace only with that module.
        for key in ["iptables", "ip6tables", "arptables"] {
            let _ = lab
                .cmd("sw", "sysctl")
                .args(["-q", "-w", &format!("net.bridge.bridge-nf-call-{key}=0")])
                .stderr(Stdio::null())
                .status();
        }
        lab.ip("sw", &["link", "set", "lo", "up"])?;
        Ok(lab)
    }

    /// Namespace name of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, host: &str, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(self.ns(host)).args(args))
    }

    /// A command run inside `host`'s namespace (`ip netns exec`).
    pub fn cmd(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), program]);
        c
    }

    /// A command run in `host`'s network namespace but this mount namespace
    /// (`nsenter --net`), so the host's bpffs stays visible (halb agents).
    pub fn nsenter(&self, host: &str, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(host)))
            .arg("--")
            .arg(program);
        c
    }

    /// Adds an empty namespace for `host` (removed with the lab), its `lo` up.
    pub fn add_namespace(&mut self, host: &str) -> Result<()> {
        let ns = self.ns(host);
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.hosts.push(host.to_string());
        self.ip(host, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds a host namespace with `eth0` on the bridge at `addr`.
    pub fn add_host(&mut self, host: &str, addr: Ipv4Addr) -> Result<()> {
        self.add_host_on(host, "br0", addr, ula_of(addr))
    }

    /// Adds another bridge (another link) to the switch namespace.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        self.ip("sw", &["link", "add", bridge, "type", "bridge"])?;
        self.ip("sw", &["link", "set", bridge, "up"])?;
        Ok(())
    }

    /// [`Lab::add_host`] on bridge `bridge`, with IPv6 address `addr6`.
    pub fn add_host_on(
        &mut self,
        host: &str,
        bridge: &str,
        addr: Ipv4Addr,
        addr6: Ipv6Addr,
    ) -> Result<()> {
        let ns = self.ns(host);
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.hosts.push(host.to_string());
        let port = format!("p-{host}");
        if port.len() > 15 {
            bail!("host name {host:?} too long for an interface name");
        }
        self.ip(
            "sw",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        self.ip("sw", &["link", "set", &port, "master", bridge, "up"])?;
        self.ip(host, &["link", "set", "lo", "up"])?;
        self.ip(
            host,
            &[
                "addr",
                "add",
                &format!("{addr}/{}", self.prefix_len),
                "dev",
                "eth0",
            ],
        )?;
        // The IPv6 side: the lab's ULA, and no duplicate address detection
        // (a fresh namespace has no duplicate to find, and a tentative
        // link-local address could not send VRRP yet).
        run(self
            .cmd(host, "sysctl")
            .args(["-q", "-w", "net.ipv6.conf.eth0.accept_dad=0"]))?;
        self.ip(
            host,
            &[
                "-6",
                "addr",
                "add",
                &format!("{addr6}/{PREFIX_LEN6}"),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        self.ip(host, &["link", "set", "eth0", "up"])?;
        // veth hands frames on with the checksum still to be filled in
        // (CHECKSUM_PARTIAL); a frame that XDP forwards loses that note and
        // arrives with a bad checksum. A real NIC fills checksums in before
        // the wire, so the lab makes the stack fill them in itself.
        run(self.cmd(host, "ethtool").args(["-K", "eth0", "tx", "off"]))?;
        Ok(())
    }

    /// Attaches the pass-everything XDP program (driver mode) to `host`'s
    /// bridge port: veth delivers XDP_TX frames in driver mode only to a peer
    /// that has an XDP program.
    pub fn attach_pass_on_port(&self, host: &str) -> Result<()> {
        let obj = ebpf_dir().join("halb-pass");
        if !obj.is_file() {
            bail!("{} missing: run `cargo xtask build`", obj.display());
        }
        let port = format!("p-{host}");
        self.ip(
            "sw",
            &[
                "link",
                "set",
                "dev",
                &port,
                "xdpdrv",
                "obj",
                obj.to_str().unwrap_or_default(),
                "sec",
                "xdp",
            ],
        )?;
        Ok(())
    }

    /// Attaches the pass-everything XDP program (driver mode) to `dev` in
    /// `host`'s namespace: a live-frames generator on `dev` needs it.
    pub fn attach_pass(&self, host: &str, dev: &str) -> Result<()> {
        let obj = ebpf_dir().join("halb-pass");
        if !obj.is_file() {
            bail!("{} missing: run `cargo xtask build`", obj.display());
        }
        let obj = obj.to_str().unwrap_or_default().to_string();
        self.ip(
            host,
            &[
                "link", "set", "dev", dev, "xdpdrv", "obj", &obj, "sec", "xdp",
            ],
        )?;
        Ok(())
    }

    /// A backend: DSR set-up for `vip` and its IPv6 counterpart (both on
    /// `lo`; `arp_ignore=1`, `arp_announce=2`; Neighbor Solicitations for
    /// the IPv6 one dropped) and an nginx answering `GET /` with its name
    /// and `/big` with a rate-limited large body, on both families.
    pub fn add_backend(&mut self, host: &str, addr: Ipv4Addr, vip: Ipv4Addr) -> Result<()> {
        self.add_host(host, addr)?;
        // The same preparation as a real backend (deploy/provision.sh).
        let script = workspace().join("deploy/provision.sh");
        run(self.cmd(host, "bash").arg(&script).args([
            "backend",
            "--vip",
            &vip.to_string(),
            "--vip",
            &ula_of(vip).to_string(),
            "--iface",
            "eth0",
            "--no-packages",
        ]))?;
        self.start_nginx(host)
    }

    /// (Re)starts nginx in `host`.
    pub fn start_nginx(&mut self, host: &str) -> Result<()> {
        let root = self.dir.join(format!("www-{host}"));
        std::fs::create_dir_all(&root)?;
        let big = root.join("big");
        if !big.exists() {
            std::fs::write(&big, vec![b'x'; BIG_SIZE])?;
        }
        let conf = self.dir.join(format!("nginx-{host}.conf"));
        let d = self.dir.display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx-{host}.pid;\n\
                 error_log {d}/nginx-{host}.err warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp-{host};\n\
                 proxy_temp_path {d}/tmp-{host};\n  fastcgi_temp_path {d}/tmp-{host};\n\
                 uwsgi_temp_path {d}/tmp-{host};\n  scgi_temp_path {d}/tmp-{host};\n\
                 keepalive_timeout 30;\n\
                 server {{\n    listen 80 reuseport;\n    listen [::]:80 reuseport ipv6only=on;\n    root {root};\n\
                 location = / {{ default_type text/plain; return 200 \"{host}\\n\"; }}\n\
                 location = /big {{ limit_rate {BIG_RATE}; }}\n\
                 location /up/ {{ dav_methods PUT; create_full_put_path on; \
                 client_max_body_size 64m; }}\n  }}\n}}\n",
                root = root.display()
            ),
        )?;
        let mut c = self.cmd(host, "nginx");
        c.arg("-c").arg(&conf);
        self.spawn(&format!("nginx-{host}"), c)?;
        // Ready when the port answers.
        let addr = self.host_addr(host)?;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self
                .in_ns(host, move || {
                    std::net::TcpStream::connect_timeout(
                        &(addr, 80).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
                .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx in {host} did not start")
    }

    /// Stops the process named `name` that this lab started.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut p = self.procs.remove(i);
            p.kill();
        }
    }

    /// The process named `name`.
    pub fn proc_mut(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// Takes the process named `name` out of the lab's care (the caller
    /// then owns it; it is still killed when dropped by [`Proc`]'s owner via [`Proc::kill`]).
    pub fn take_proc(&mut self, name: &str) -> Option<Proc> {
        let i = self.procs.iter().position(|p| p.name == name)?;
        Some(self.procs.remove(i))
    }

    /// First IPv4 address of `host`'s eth0.
    pub fn host_addr(&self, host: &str) -> Result<Ipv4Addr> {
        let out = self.ip(host, &["-4", "-o", "addr", "show", "dev", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no address on {host}/eth0"))
    }

    /// `n` requests (`GET /`, a new connection each) from the client to the
    /// VIP; the first failure ends them and is the error.
    pub fn requests(&self, n: usize, timeout: Duration) -> Result<Vec<crate::client::Reply>> {
        self.requests_to(VIP, n, timeout)
    }

    /// [`Lab::requests`] to another VIP.
    pub fn requests_to(
        &self,
        vip: impl Into<IpAddr>,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<crate::client::Reply>> {
        let vip = vip.into();
        self.in_ns("client", move || {
            (0..n)
                .map(|_| crate::client::http_get(vip, 80, "/", timeout))
                .collect::<Result<Vec<_>>>()
        })?
    }

    /// Starts `n` downloads of `/big` from the client through `vip`; returns
    /// once each has its first bytes.
    pub fn streams(&self, vip: impl Into<IpAddr>, n: usize) -> Result<Vec<Stream>> {
        let vip = vip.into();
        (0..n)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                let h = self.spawn_in_ns("client", move || {
                    crate::client::download(vip, "/big", move |p| {
                        let _ = tx.send(p);
                    })
                })?;
                rx.recv_timeout(Duration::from_secs(5))
                    .context("a download did not start")?;
                Ok(h)
            })
            .collect()
    }

    /// Starts `cmd` with output to a log file; the lab kills it when dropped.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<&mut Proc> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        // A process group of its own: a terminal's Ctrl-C or hang-up reaches
        // the driver, which then cleans up, not the lab's processes directly.
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made: sigemptyset and sigprocmask. The driver blocks SIGINT and
        // SIGTERM to handle them itself (`catch_interrupts`); the mask is
        // inherited, and the lab's processes must get their signals.
        unsafe {
            cmd.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        let last = self.procs.len() - 1;
        Ok(&mut self.procs[last])
    }

    /// Starts `halb run` in `host` with `config` (written to the lab dir).
    pub fn start_halb(&mut self, host: &str, config: &str, extra: &[&str]) -> Result<&mut Proc> {
        let path = self.dir.join(format!("halb-{host}.toml"));
        std::fs::write(&path, config)?;
        let mut c = self.nsenter(host, &halb_bin());
        c.arg("run").arg("-c").arg(&path).args(extra);
        c.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        c.env("NO_COLOR", "1");
        self.spawn(&format!("halb-{host}"), c)
    }

    /// Pin directory to configure for node `host`.
    pub fn pin_dir(&self, host: &str) -> PathBuf {
        self.bpf_dir.join(host)
    }

    /// Runs `f` on a thread that has entered `host`'s network namespace:
    /// sockets it opens live there.
    pub fn in_ns<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.ns(host));
        let ns = File::open(&path).with_context(|| format!("open {path}"))?;
        let handle = std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd, affecting only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {host} panicked"))?
    }

    /// Runs `f` on a thread in `host`'s namespace without waiting for it.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let path = format!("/run/netns/{}", self.ns(host));
        let ns = File::open(&path).with_context(|| format!("open {path}"))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: as in `in_ns`.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                anyhow::bail!("setns: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        }))
    }

    /// A lab that owns nothing (a placeholder; dropping it does nothing).
    pub fn inert() -> Self {
        Self {
            prefix: String::new(),
            dir: PathBuf::new(),
            bpf_dir: PathBuf::new(),
            hosts: Vec::new(),
            procs: Vec::new(),
            keep_dir: true,
            persisted: true,
            prefix_len: PREFIX_LEN,
        }
    }

    /// Leaves the lab running and returns what is needed to stop it later.
    pub fn persist(mut self) -> Persisted {
        self.persisted = true;
        Persisted {
            prefix: self.prefix.clone(),
            dir: self.dir.clone(),
            bpf_dir: self.bpf_dir.clone(),
            hosts: self.hosts.clone(),
            procs: self
                .procs
                .iter()
                .map(|p| (p.name.clone(), p.pid()))
                .collect(),
        }
    }

    /// Kills everything, removes namespaces, pins and files.
    pub fn teardown(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        self.procs.clear();
        for h in self
            .hosts
            .drain(..)
            .chain(std::iter::once("sw".to_string()))
        {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{h}", self.prefix)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.bpf_dir);
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.persisted {
            self.teardown();
        }
    }
}

/// A lab left running (`cargo xtask lab up`), as recorded in its state file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Persisted {
    /// Namespace prefix.
    pub prefix: String,
    /// Scratch directory.
    pub dir: PathBuf,
    /// Pin directory.
    pub bpf_dir: PathBuf,
    /// Host names (namespaces are prefix + name, plus prefix + "sw").
    pub hosts: Vec<String>,
    /// Processes: name and PID.
    pub procs: Vec<(String, u32)>,
}

impl Persisted {
    /// Stops the recorded processes (by PID), removes namespaces, pins and files.
    pub fn teardown(&self) {
        for (_, pid) in &self.procs {
            // SAFETY: kill(2) on PIDs this lab recorded when it started them.
            unsafe {
                libc::kill(*pid as i32, libc::SIGTERM);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        for (_, pid) in &self.procs {
            if Path::new(&format!("/proc/{pid}")).exists() {
                // SAFETY: as above.
                unsafe {
                    libc::kill(*pid as i32, libc::SIGKILL);
                }
            }
        }
        for h in self
            .hosts
            .iter()
            .map(String::as_str)
            .chain(std::iter::once("sw"))
        {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{h}", self.prefix)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.bpf_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Size of the `/big` body.
pub const BIG_SIZE: usize = 8 * 1024 * 1024;
/// nginx `limit_rate` for `/big` (bytes per second): about 4 s per download.
pub const BIG_RATE: &str = "2m";

/// Runs a command, returning stdout, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `halb` binary under test: `$HALB_BIN`, else the workspace's debug build.
pub fn halb_bin() -> PathBuf {
    std::env::var_os("HALB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/halb"))
}

/// Directory of the built eBPF objects.
pub fn ebpf_dir() -> PathBuf {
    std::env::var_os("HALB_EBPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("ha-ebpf/target/bpfel-unknown-none/release"))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let ok = BufReader::new(mounts.as_bytes()).lines().any(|l| {
        l.map(|l| {
            let mut w = l.split_whitespace();
            w.nth(1) == Some("/sys/fs/bpf") && w.next() == Some("bpf")
        })
        .unwrap_or(false)
    });
    if !ok {
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}

/// VRRP settings of a lab node's config.
#[derive(Debug, Clone)]
pub struct VrrpOpts {
    /// 2 or 3.
    pub version: u8,
    /// Priority.
    pub priority: u8,
    /// Advert interval.
    pub advert_ms: u32,
    /// Preempt.
    pub preempt: bool,
    /// Unicast peers (empty: multicast).
    pub unicast_peers: Vec<Ipv4Addr>,
    /// v2 password.
    pub auth_pass: Option<String>,
    /// Tracked interfaces.
    pub track_interfaces: Vec<String>,
    /// Extra lines appended to `[vrrp]` (each instance's, when dual stack).
    pub extra: String,
    /// Dual stack: an IPv6 VIP ([`VIP6`], the same backends by their ULA)
    /// beside the IPv4 one, each owned by an instance of its family
    /// (`v4` and `v6`, the same VRID: the families' VRID spaces are
    /// separate, RFC 5798 §7.3).
    pub dual_stack: bool,
}

impl VrrpOpts {
    /// VRRPv3, multicast, preempt, 100 ms adverts.
    pub fn v3(priority: u8) -> Self {
        Self {
            version: 3,
            priority,
            advert_ms: 100,
            preempt: true,
            unicast_peers: Vec::new(),
            auth_pass: None,
            track_interfaces: vec!["eth0".into()],
            extra: String::new(),
            dual_stack: false,
        }
    }
}

/// The `halb.toml` of lab node `node` in `mode`: the standard VIP on port
/// 80 over `backends` backends (weights 1, `drained` at 0), and VRRP when given.
pub fn node_config(
    lab: &Lab,
    node: &str,
    mode: &str,
    backends: u8,
    drained: Option<u8>,
    vrrp: Option<&VrrpOpts>,
) -> String {
    let mut c = format!(
        "[node]\nname = \"{node}\"\ninterface = \"eth0\"\nxdp_mode = \"{mode}\"\nbpf_dir = \"{}\"\n\n",
        lab.pin_dir(node).display()
    );
    let dual = vrrp.is_some_and(|v| v.dual_stack);
    if let Some(v) = vrrp {
        let tracks: Vec<String> = v
            .track_interfaces
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect();
        let families: &[(&str, &str, bool)] = if dual {
            &[("v4", "web", false), ("v6", "web6", true)]
        } else {
            &[("", "", false)]
        };
        for (name, vip, v6) in families {
            let peers: Vec<String> = v
                .unicast_peers
                .iter()
                .map(|p| match v6 {
                    true => format!("\"{}\"", ula_of(*p)),
                    false => format!("\"{p}\""),
                })
                .collect();
            if dual {
                c.push_str(&format!(
                    "[[vrrp_instance]]\nname = \"{name}\"\nvips = [\"{vip}\"]\n"
                ));
            } else {
                c.push_str("[vrrp]\n");
            }
            c.push_str(&format!(
                "version = {}\nrouter_id = 51\npriority = {}\nadvert_interval_ms = {}\n\
                 preempt = {}\nunicast_peers = [{}]\ntrack_interfaces = [{}]\n",
                v.version,
                v.priority,
                v.advert_ms,
                v.preempt,
                peers.join(", "),
                tracks.join(", ")
            ));
            if let Some(p) = &v.auth_pass {
                c.push_str(&format!("auth_pass = \"{p}\"\n"));
            }
            c.push_str(&v.extra);
            c.push('\n');
        }
    }
    let vips: &[(&str, IpAddr)] = if dual {
        &[("web", IpAddr::V4(VIP)), ("web6", IpAddr::V6(VIP6))]
    } else {
        &[("web", IpAddr::V4(VIP))]
    };
    for (name, addr) in vips {
        c.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = 80\nprotocol = \"tcp\"\n\
             mode = \"dsr\"\n"
        ));
        for i in 1..=backends {
            let w = if drained == Some(i) { 0 } else { 1 };
            let b = backend_addr_for(*addr, i);
            c.push_str(&format!(
                "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{b}\"\n  weight = {w}\n"
            ));
        }
        c.push('\n');
    }
    c
}

impl Lab {
    /// MAC address of `host`'s eth0.
    pub fn mac(&self, host: &str) -> Result<String> {
        let out = self.ip(host, &["-o", "link", "show", "dev", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC on {host}/eth0"))
    }

    /// Which of lb1 and lb2 holds `vip` on eth0, if exactly one does.
    pub fn vip_owner(&self, vip: impl Into<IpAddr>) -> Option<&'static str> {
        let vip = vip.into();
        match (
            self.has_addr("lb1", vip).unwrap_or(false),
            self.has_addr("lb2", vip).unwrap_or(false),
        ) {
            (true, false) => Some("lb1"),
            (false, true) => Some("lb2"),
            _ => None,
        }
    }

    /// `node`'s status from its API (lab nodes listen on 127.0.0.1:8480,
    /// no token); None while it does not answer.
    pub fn api_status(&self, node: &str) -> Option<halb::api::model::Status> {
        self.in_ns(node, || {
            halb::api::client::Client::new(SocketAddr::from(([127, 0, 0, 1], 8480)), None)
                .get("/api/v1/status")
                .ok()
                .and_then(|a| serde_json::from_str::<halb::api::model::Status>(&a.body).ok())
        })
        .ok()
        .flatten()
    }

    /// Whether `host` has `addr` (IPv4 or IPv6) on eth0.
    pub fn has_addr(&self, host: &str, addr: impl Into<IpAddr>) -> Result<bool> {
        let out = self.ip(host, &["-o", "addr", "show", "dev", "eth0"])?;
        Ok(match addr.into() {
            IpAddr::V4(a) => out.contains(&format!("inet {a}/")),
            IpAddr::V6(a) => out.contains(&format!("inet6 {a}/")),
        })
    }

    /// Watches `host`'s IPv6 neighbour table through netlink (`ip -6
    /// monitor neigh`) for `addr` to name `mac`: the moment it happens is
    /// seen as an event, not found by a poll. Returns once the monitor is
    /// known to be listening (it has seen a marker entry this adds and
    /// removes).
    pub fn watch_neighbour6(
        &self,
        host: &str,
        addr: Ipv6Addr,
        mac: &str,
    ) -> Result<NeighbourWatch> {
        use std::io::BufRead as _;
        let mut child = self
            .cmd(host, "ip")
            .args(["-6", "monitor", "neigh", "dev", "eth0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("ip monitor")?;
        let out = child.stdout.take().context("monitor output")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = "fd77::ffff";
        let want = (addr.to_string(), format!("lladdr {mac}"));
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let first = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let event = if first == marker {
                    Some(false)
                } else if first == want.0 && line.contains(&want.1) {
                    Some(true)
                } else {
                    None
                };
                if let Some(hit) = event {
                    if tx.send((hit, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
        let mut w = NeighbourWatch { child, rx };
        // The marker: once the monitor prints a change of it, it is
        // subscribed. Changed (another MAC each time) until it does: a
        // change made before it subscribed is never printed.
        let end = Instant::now() + Duration::from_secs(5);
        let mut listening = false;
        let mut round = 0u8;
        while !listening && Instant::now() < end {
            round = round.wrapping_add(1);
            let mac = format!("02:00:00:00:ff:{round:02x}");
            self.ip(
                host,
                &[
                    "-6", "neigh", "replace", marker, "lladdr", &mac, "dev", "eth0",
                ],
            )?;
            listening = matches!(
                w.rx.recv_timeout(Duration::from_millis(100)),
                Ok((false, _))
            );
        }
        let _ = self.ip(host, &["-6", "neigh", "del", marker, "dev", "eth0"]);
        if !listening {
            w.stop();
            bail!("ip monitor did not report the marker neighbour");
        }
        Ok(w)
    }

    /// Waits until `f` holds, polling every `step`; returns how long it took.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        step: Duration,
        mut f: impl FnMut() -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if f() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(step);
        }
    }
}

/// New-connection probes from the client through the VIP, one every 10 ms
/// on a thread of its own; a probe fails unless it completes within 100 ms.
/// A success says the path worked when the probe started (a SYN lost and
/// retransmitted a second later does not count). Through an ECMP router
/// every probe is a new flow, hashed anew: after a node dies, the probes
/// hashed to it fail until the router stops using it.
pub struct Probes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    results: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, bool)>>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Probes {
    /// Starts probing.
    pub fn start(lab: &Lab) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::Instant;
        let stop = Arc::new(AtomicBool::new(false));
        let results: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
        let (s2, r2) = (stop.clone(), results.clone());
        let thread = lab.spawn_in_ns("client", move || {
            let mut probes = Vec::new();
            while !s2.load(Ordering::SeqCst) {
                let r3 = r2.clone();
                probes.push(std::thread::spawn(move || {
                    let start = Instant::now();
                    let limit = Duration::from_millis(100);
                    let ok = crate::client::http_get(VIP, 80, "/", limit).is_ok()
                        && start.elapsed() < limit;
                    if let Ok(mut v) = r3.lock() {
                        v.push((start, ok));
                    }
                }));
                std::thread::sleep(Duration::from_millis(10));
            }
            for p in probes {
                let _ = p.join();
            }
        })?;
        Ok(Self {
            stop,
            results,
            thread: Some(thread),
        })
    }

    /// Waits until `n` probes have succeeded (the path works before an event).
    pub fn wait_ok(&self, lab: &Lab, n: usize) -> Result<()> {
        lab.wait_for(
            &format!("{n} successful probes"),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                self.results
                    .lock()
                    .map(|v| v.iter().filter(|(_, ok)| *ok).count() >= n)
                    .unwrap_or(false)
            },
        )?;
        Ok(())
    }

    /// Stops and returns every probe's (start, success), in start order.
    pub fn finish(mut self) -> Vec<(std::time::Instant, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut v = self.results.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by_key(|(t, _)| *t);
        v
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A long download started by [`Lab::streams`].
pub type Stream = std::thread::JoinHandle<Result<Result<crate::client::Stream>>>;

/// How many of `streams` completed whole, and the longest pause any had.
pub fn survived(streams: Vec<Stream>) -> (usize, Duration) {
    let mut whole = 0;
    let mut gap = Duration::ZERO;
    for s in streams {
        if let Ok(Ok(Ok(d))) = s.join() {
            gap = gap.max(d.max_gap);
            if d.bytes == BIG_SIZE {
                whole += 1;
            }
        }
    }
    (whole, gap)
}

/// The MAC address `host`'s neighbour table holds for `addr` (read from
/// `/proc/thread-self/net/arp` on a thread inside the namespace).
pub fn neighbour_mac(lab: &Lab, host: &str, addr: impl Into<IpAddr>) -> Option<String> {
    let addr = addr.into();
    if let IpAddr::V6(a) = addr {
        // `fd77::100 dev eth0 lladdr 02:.. REACHABLE` (none while INCOMPLETE).
        let out = lab
            .ip(
                host,
                &["-6", "neigh", "show", &a.to_string(), "dev", "eth0"],
            )
            .ok()?;
        return out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_string);
    }
    lab.in_ns(host, move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
        text.lines().skip(1).find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&addr.to_string().as_str())
                && w.get(3) != Some(&"00:00:00:00:00:00"))
            .then(|| w.get(3).map(|m| m.to_string()))
            .flatten()
        })
    })
    .ok()
    .flatten()
}

/// HAProxy in front of the three lab backends on the VIP (HTTP, roundrobin),
/// as the usual keepalived + HAProxy pair runs it.
pub fn haproxy_config(maxconn: u32) -> String {
    let mut servers = String::new();
    for i in 1..=3u8 {
        servers.push_str(&format!("  server web{i} {}:80\n", backend_addr(i)));
    }
    format!(
        "global\n  maxconn {maxconn}\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
         timeout server 30s\nfrontend fe\n  bind {VIP}:80\n  default_backend be\nbackend be\n  balance roundrobin\n{servers}"
    )
}

impl Lab {
    /// The one-node topology: client, lb1 (with the pass program on its
    /// bridge port) and `backends` nginx backends web1, web2, ...
    pub fn single_lb(tag: &str, backends: u8) -> Result<Self> {
        let mut lab = Lab::new(tag)?;
        lab.add_host("client", CLIENT)?;
        lab.add_host("lb1", lb_addr(1))?;
        lab.attach_pass_on_port("lb1")?;
        for i in 1..=backends {
            lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
        }
        Ok(lab)
    }

    /// The standard pair topology: client, lb1 and lb2 (with the pass
    /// program on their bridge ports), and `backends` nginx backends.
    pub fn pair_topology(&mut self, backends: u8) -> Result<()> {
        self.add_host("client", CLIENT)?;
        for n in 1..=2u8 {
            let h = format!("lb{n}");
            self.add_host(&h, lb_addr(n))?;
            self.attach_pass_on_port(&h)?;
        }
        for i in 1..=backends {
            self.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
        }
        Ok(())
    }
}

/// The `halb.toml` of node `node` in an active-active pair: instance VI_1
/// (router_id 51) owns VIP `web` (VIP), VI_2 (router_id 52) owns `web2`
/// (VIP2), both over `backends` backends, with the priorities given (the
/// pair swaps them), 100 ms adverts, preempt. `extra` is appended.
pub fn active_active_config(
    lab: &Lab,
    node: &str,
    priorities: (u8, u8),
    backends: u8,
    extra: &str,
) -> String {
    active_active_config_with(lab, node, priorities, backends, 100, extra)
}

/// [`active_active_config`] with `advert_ms` adverts.
pub fn active_active_config_with(
    lab: &Lab,
    node: &str,
    priorities: (u8, u8),
    backends: u8,
    advert_ms: u32,
    extra: &str,
) -> String {
    let mut c = format!(
        "[node]\nname = \"{node}\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\
         flow_hash_seed = 31337\n\n",
        lab.pin_dir(node).display()
    );
    for (name, vrid, prio, vip) in [
        ("VI_1", 51, priorities.0, "web"),
        ("VI_2", 52, priorities.1, "web2"),
    ] {
        c.push_str(&format!(
            "[[vrrp_instance]]\nname = \"{name}\"\nrouter_id = {vrid}\npriority = {prio}\n\
             advert_interval_ms = {advert_ms}\ntrack_interfaces = [\"eth0\"]\nvips = [\"{vip}\"]\n\n"
        ));
    }
    c.push_str(extra);
    for (name, addr) in [("web", VIP), ("web2", VIP2)] {
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{addr}\"\nport = 80\nprotocol = \"tcp\"\n"
        ));
        for i in 1..=backends {
            c.push_str(&format!(
                "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n",
                backend_addr(i)
            ));
        }
    }
    c
}

/// [`active_active_config`] with IPv6 beside it: instance VI_6 (router_id
/// 51 of the IPv6 VRID space) owns VIP `web6` ([`VIP6`]) over the same
/// backends by their ULAs, with the priority of VI_1 (it fails over with
/// it).
pub fn active_active_dual_config(
    lab: &Lab,
    node: &str,
    priorities: (u8, u8),
    backends: u8,
) -> String {
    let mut c = active_active_config(lab, node, priorities, backends, "");
    c.push_str(&format!(
        "\n[[vrrp_instance]]\nname = \"VI_6\"\nrouter_id = 51\npriority = {}\n\
         advert_interval_ms = 100\ntrack_interfaces = [\"eth0\"]\nvips = [\"web6\"]\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"{VIP6}\"\nport = 80\nprotocol = \"tcp\"\n",
        priorities.0
    ));
    for i in 1..=backends {
        c.push_str(&format!(
            "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n",
            ula_of(backend_addr(i))
        ));
    }
    c
}

impl Lab {
    /// Puts `vip` on the `lo` of backends web1..web`n` too (DSR for a second VIP).
    pub fn add_vip_on_backends(&self, vip: Ipv4Addr, n: u8) -> Result<()> {
        for i in 1..=n {
            self.ip(
                &format!("web{i}"),
                &["addr", "replace", &format!("{vip}/32"), "dev", "lo"],
            )?;
        }
        Ok(())
    }
}

/// A running [`Lab::watch_neighbour6`]; stopped when dropped.
pub struct NeighbourWatch {
    child: Child,
    rx: std::sync::mpsc::Receiver<(bool, Instant)>,
}

impl NeighbourWatch {
    /// When the watched entry first named the MAC, waiting up to `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok((true, at)) => return Some(at),
                Ok((false, _)) => continue,
                Err(_) => return None,
            }
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NeighbourWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The capabilities of `deploy/<unit>`'s `CapabilityBoundingSet=`, as
/// `setpriv` names them (`bpf`, `net_admin`, ...).
pub fn unit_capabilities(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("deploy").join(unit)).expect("unit");
    text.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets a bounding set")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// A `setpriv` command line (to put in front of a program) that leaves it
/// exactly `caps` and no way to gain more.
pub fn setpriv(caps: &[String]) -> Vec<String> {
    let set = caps
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "/usr/bin/setpriv".into(),
        "--no-new-privs".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,{set}"),
    ]
}
