//! The agent: the one place that wires config, data plane, VRRP, health
//! checks and the API together, and runs them until a signal says stop.
//!
//! Start-up order: the config was validated before anything here runs; then
//! the interface is looked up, the data plane started (or adopted) under an
//! exclusive lock on its pin directory, backend MACs resolved, the maps
//! written, VRRP (or standalone VIP ownership), the health probes and the
//! API started; then systemd hears `READY=1`. Everything that can fail is
//! tried before that, and start-up fails with the reason.
//!
//! After that one loop owns all state and reacts to: health reports (of the
//! current monitor generation only), operator commands from the API,
//! SIGHUP (reload), tracking events, new backend MACs from the neighbour
//! resolver (a task of its own), a one-second tick (status publication,
//! the flow census that ends graceful removals, the watchdog ping), and
//! SIGTERM/SIGINT. Every long-running task is supervised: if one ends, the
//! agent exits non-zero for systemd to restart it.
//!
//! A reload is all or nothing: the new config is checked, the data plane is
//! written with it, and only then does it become the running config; a
//! data-plane write that fails puts the previous state back and the reload
//! is reported as failed.

mod announcing;
pub mod backend;
mod election;
mod neighbours;
pub mod runtime;
mod snapshot;
pub mod supervise;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::api::{self, BackendOp, Command, CommandError};
use crate::config::{self, Config, XdpModeCfg};
use crate::dataplane::{self, Attached, DataPlane, FlowView};
use crate::health::monitor::{Monitor, Report, Target};
use crate::net::{Link, NetError, Netlink};
use crate::vrrp::track;
use crate::watchdog;
use neighbours::{Reach, Resolver};
use runtime::{Diff, Released, Runtime};
use supervise::Supervised;

/// Agent errors (start-up, and a supervised task that ended).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The config did not load.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The data plane did not come up.
    #[error("data plane: {0}")]
    DataPlane(#[from] dataplane::Error),
    /// Netlink failed.
    #[error("{0}")]
    Net(#[from] NetError),
    /// Signal handlers could not be installed.
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
    /// VRRP did not start.
    #[error("{0}")]
    Vrrp(#[from] crate::vrrp::io::IoError),
    /// The API did not start.
    #[error("{0}")]
    Api(#[from] api::ApiError),
    /// The token file could not be read or holds too short a token.
    #[error("token file {path}: {why}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A backend address is one of this node's own.
    #[error("{0}")]
    LocalBackend(String),
    /// The announce device (BGP mode) could not be set up.
    #[error("{0}")]
    Announce(crate::announce::device::DeviceError),
    /// A task that must run for ever ended.
    #[error("{0}: stopping so that the service manager restarts halb")]
    TaskEnded(String),
}

/// How `halb run` was asked to behave.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Configuration file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// Leave the program attached and pinned on exit.
    pub keep_dataplane: bool,
    /// Remove any pinned data plane before starting.
    pub reset_dataplane: bool,
}

/// Node name: the configured one, or the host name.
pub fn node_name(cfg: &Config) -> String {
    if let Some(n) = &cfg.node.name {
        return n.get_ref().clone();
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(s)) if !s.is_empty() => s.to_string(),
        _ => "halb".into(),
    }
}

/// Pin directory of this node.
pub fn pin_dir(cfg: &Config) -> PathBuf {
    cfg.node
        .bpf_dir
        .clone()
        .unwrap_or_else(|| Path::new("/sys/fs/bpf/halb").join(node_name(cfg)))
}

/// The API token from `[api] token_file`, if configured. An empty or short
/// token is an error, never "no token".
pub fn read_token(cfg: &Config) -> Result<Option<String>, AgentError> {
    let Some(path) = &cfg.api.token_file else {
        return Ok(None);
    };
    let path = path.get_ref();
    config::read_token(path)
        .map(Some)
        .map_err(|why| AgentError::Token {
            path: path.clone(),
            why,
        })
}

/// Raises the soft limit on open files to the hard limit: health probes,
/// API connections and netlink all need descriptors, and the API bounds its
/// own share.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Backends whose address is one of `local` (this node's own): XDP would
/// send VIP traffic to itself, or to a peer that sends it back.
fn local_backends(cfg: &Config, local: &[IpAddr]) -> Result<(), AgentError> {
    for v in cfg.vips() {
        for b in &v.backends {
            if local.contains(b.address.get_ref()) {
                return Err(AgentError::LocalBackend(format!(
                    "vip {:?} backend {:?}: {} is an address of this node; \
                     a load balancer must not balance to itself",
                    v.name.get_ref(),
                    b.name.get_ref(),
                    b.address.get_ref()
                )));
            }
        }
    }
    Ok(())
}

fn mode_wanted(m: XdpModeCfg) -> dataplane::ModeWanted {
    match m {
        XdpModeCfg::Auto => dataplane::ModeWanted::Auto,
        XdpModeCfg::Native => dataplane::ModeWanted::Native,
        XdpModeCfg::Generic => dataplane::ModeWanted::Generic,
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let token = read_token(&cfg)?;
    raise_nofile();

    let mut tasks = Supervised::default();
    let (netlink, netlink_task) = Netlink::open()?;
    tasks.adopt("the netlink connection", netlink_task);
    let link = netlink.link(cfg.node.interface.get_ref()).await?;
    let local: Vec<IpAddr> = netlink
        .addresses(link.index)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    local_backends(&cfg, &local)?;
    // One agent per node (a lock on the pin directory), then the API's
    // port: either failing stops the start before anything is attached.
    let dir = pin_dir(&cfg);
    let lock = dataplane::PinLock::acquire(&dir)?;
    let listener = api::bind(cfg.api.addr()).await?;
    let dp_opts = dataplane::Options {
        interface: link.name.clone(),
        mode: mode_wanted(cfg.node.xdp_mode),
        pin_dir: dir.clone(),
        flow_table_size: cfg.node.flow_table_size,
        mac: link.mac,
        hash_seed: cfg.node.flow_hash_seed,
        live_units: idle_units(cfg.node.flow_idle_timeout_ms),
        reset: opts.reset_dataplane,
    };
    let dp = DataPlane::start(&dp_opts, lock)?;
    match dp.attached() {
        Attached::Fresh(m) => tracing::info!(
            interface = %link.name, mode = m.as_str(), pins = %dir.display(),
            "XDP program attached"
        ),
        Attached::Adopted(m) => tracing::info!(
            interface = %link.name, mode = m.as_str(), pins = %dir.display(),
            "adopted the pinned XDP program and maps"
        ),
    }
    let flow_view = Arc::new(dp.maps().flow_view()?);
    let vips = election::vip_addresses(&cfg);
    let sources = match netlink.source_addresses(link.index).await {
        Ok(v) => health_sources(&v.into_iter().map(|(a, _)| a).collect::<Vec<_>>(), &vips),
        Err(e) => {
            tracing::warn!("no source addresses for health checks (the kernel picks): {e}");
            Vec::new()
        }
    };
    let (status_tx, status_rx) = watch::channel(api::Published::default());
    let (health_tx, mut health_rx) = mpsc::channel(1024);
    let runtime = Runtime::new(&cfg);
    let wanted = runtime::backend_addresses(&cfg, &runtime);
    let (reach, unreachable) = neighbours::resolve(&netlink, link.index, link.mtu, &wanted)
        .await
        .unwrap_or_default();
    let (macs_tx, mut macs_rx) = mpsc::channel(4);
    let (resolver, resolver_task) = Resolver::start(
        netlink.clone(),
        link.clone(),
        wanted,
        reach.clone(),
        Duration::from_millis(cfg.node.neigh_refresh_ms),
        macs_tx,
    );
    tasks.adopt("the neighbour resolver", resolver_task);
    // Routers' reports that the tunnels to routed backends need a smaller
    // MTU than their routes say (net::pmtu).
    let (pmtu_tx, mut pmtu_rx) = mpsc::channel(64);
    match crate::net::pmtu::PmtuSockets::open() {
        Ok(sockets) => {
            tokio::spawn(async move {
                loop {
                    match sockets.next().await {
                        Ok(t) => {
                            if pmtu_tx.send(t).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("reading ICMP for the tunnels' path MTU: {e}");
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(
            "no ICMP socket ({e}): the tunnels to routed backends keep their routes' MTU"
        ),
    }
    let mut agent = Agent {
        runtime,
        owned: Vec::new(),
        cfg,
        netlink,
        link,
        dp,
        reach,
        learnt_mtu: HashMap::new(),
        resolver,
        sources,
        health_tx,
        monitor: None,
        hc: None,
        generation: 0,
        elections: Vec::new(),
        groups: Vec::new(),
        announcing: None,
        settle_at: None,
        sampler: snapshot::Sampler::new(),
        started: Instant::now(),
        flow_view,
        census: None,
        flows: HashMap::new(),
        flows_total: 0,
        census_at: None,
        changed_slots: 0,
        evicted_live: 0,
        evictions_logged: false,
        watchdog: watchdog::interval(),
        stale_logged: false,
        health_beat: watchdog::Beat::new(),
        reconcile_ticks: 0,
    };
    for a in wanted_missing(&agent) {
        neighbours::warn_unreachable(a, unreachable.get(&a));
    }
    if agent.cfg.node.flow_hash_seed == 0 {
        tracing::warn!(
            "[node] flow_hash_seed is 0, the public default: set the same private value on \
             every node of the site"
        );
    }
    if let Err(e) = agent.sync("start") {
        return Err(agent.abandon(e.into()).await);
    }

    // VIP ownership: one VRRP instance per [[vrrp_instance]] (or the one
    // [vrrp] makes), else this node always owns them.
    let (track_tx, mut track_rx) = mpsc::channel(64);
    let (roles_tx, mut roles_rx) = mpsc::channel(16);
    if agent.cfg.has_vrrp() {
        let cfg = agent.cfg.clone();
        let mut wiring = election::Wiring {
            tasks: &mut tasks,
            track: track_tx.clone(),
            roles: roles_tx.clone(),
        };
        for (i, inst) in cfg.instances().iter().enumerate() {
            match election::Election::start(&cfg, inst, i, &agent.netlink, &mut wiring).await {
                Ok(e) => agent.elections.push(e),
                Err(e) => return Err(agent.abandon(e.into()).await),
            }
        }
        for g in cfg.sync_groups.iter().map(|g| g.get_ref()) {
            let members = g
                .instances
                .iter()
                .filter_map(|n| agent.elections.iter().find(|e| &e.name == n.get_ref()))
                .map(|e| (e.name.clone(), e.status.clone(), e.control()))
                .collect();
            agent.groups.push(election::start_group(
                g.name.get_ref().clone(),
                members,
                g.notify.clone(),
                &mut tasks,
            ));
        }
    } else if let Some(bgp) = agent.cfg.bgp.clone() {
        // Scale-out: the VIPs are routed to this node, not held by it; what
        // is announced follows the gate (health, data plane, drain).
        let node = node_name(&agent.cfg);
        match announcing::Announcing::start(bgp.get_ref(), &node, &agent.netlink, &mut tasks).await
        {
            Ok(mut a) => {
                // The program this agent attached or adopted: another one
                // in its place is no data plane of ours.
                a.program = agent
                    .netlink
                    .link(&agent.link.name)
                    .await
                    .ok()
                    .and_then(|l| l.xdp_prog);
                agent.announcing = Some(a);
            }
            Err(e) => return Err(agent.abandon(AgentError::Announce(e)).await),
        }
    } else {
        let vips = election::vip_addresses(&agent.cfg);
        agent.own_vips(&vips, true).await;
    }
    agent.restart_health();
    agent.track_backends().await;

    agent.publish(&status_tx);
    let (cmd_tx, mut cmd_rx) = mpsc::channel(64);
    let api_task = api::serve(
        listener,
        api::ApiState {
            status: status_rx,
            commands: cmd_tx,
            token: token.map(Arc::from),
        },
    );
    let api_abort = api_task.abort_handle();
    tasks.adopt("the API server", api_task);
    tracing::info!(listen = %agent.cfg.api.addr(), "API and stats page listening");
    watchdog::ready();
    if let Some(w) = agent.watchdog {
        tracing::info!(interval = ?w, "systemd watchdog enabled");
    }

    let mut sample = tokio::time::interval(Duration::from_secs(1));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break None; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break None; }
            _ = sighup.recv() => {
                let _ = agent.reload(&opts.config_path).await;
                agent.publish(&status_tx);
            }
            Some(report) = health_rx.recv() => {
                if agent.health(report) {
                    agent.track_backends().await;
                    agent.plan_settle();
                    agent.publish(&status_tx);
                }
            }
            _ = sleep_until_opt(agent.announce_deadline()) => {
                agent.announce_update().await;
                agent.publish(&status_tx);
            }
            _ = sleep_until_opt(agent.settle_at) => {
                agent.settle_at = None;
                if let Err(e) = agent.sync("a backend that went down settled") {
                    tracing::error!("{e}");
                }
                agent.plan_settle();
                agent.publish(&status_tx);
            }
            Some(cmd) = cmd_rx.recv() => agent.command(cmd, &opts.config_path, &status_tx).await,
            Some((idx, ev)) = track_rx.recv() => agent.track(idx, ev).await,
            Some(t) = pmtu_rx.recv() => agent.path_mtu(t),
            Some(mut reach) = macs_rx.recv() => {
                apply_learnt(&mut reach, &mut agent.learnt_mtu, Instant::now());
                if reach != agent.reach {
                    agent.reach = reach;
                    if let Err(e) = agent.sync("neighbour change") {
                        tracing::error!("{e}");
                    }
                    agent.announce_update().await;
                }
            }
            _ = sample.tick() => {
                agent.census_tick();
                agent.announce_tick().await;
                agent.publish(&status_tx);
                agent.watchdog_tick();
                agent.reconcile_owned().await;
            }
            Some(()) = roles_rx.recv() => {
                // A new role, priority or master is published at once (the
                // counters wait for the next tick).
                agent.publish(&status_tx);
                agent.warn_peer_backend();
            }
            what = tasks.ended() => break Some(what),
            what = monitor_ended(&mut agent.monitor) => break Some(what),
        }
    };
    watchdog::stopping();
    if let Some(a) = agent.announcing.as_mut() {
        // Withdraw first, then keep forwarding while the router moves the
        // flows to the other nodes.
        a.stopping = true;
        let grace = Duration::from_millis(a.settings.shutdown_grace_ms);
        agent.announce_update().await;
        if agent.announcing.as_ref().is_some_and(|a| !a.in_sync()) {
            // The routes could not be deleted: the device goes, and they with it.
            if let Some(a) = agent.announcing.take() {
                a.withdraw_by_closing();
            }
        }
        tracing::info!(
            ?grace,
            "every VIP withdrawn; forwarding through the grace period"
        );
        agent.publish(&status_tx);
        tokio::time::sleep(grace).await;
    }
    api_abort.abort();
    agent.monitor = None;
    let keep = opts.keep_dataplane;
    // The routers give mastership up (priority 0, addresses off) while their
    // tasks still run; then everything else stops.
    if agent.elections.is_empty() {
        if !keep {
            let owned = agent.owned.clone();
            agent.own_vips(&owned, false).await
        }
    } else {
        for e in agent.elections.drain(..) {
            e.shutdown().await;
        }
    }
    tasks.abort_all();
    agent.dp.shutdown(keep)?;
    if keep {
        tracing::info!("data plane left attached and pinned (--keep-dataplane)");
    } else {
        tracing::info!("data plane detached and unpinned");
    }
    match ended {
        Some(what) => Err(AgentError::TaskEnded(what)),
        None => Ok(()),
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Where health checks leave from: this node's first IPv4 address that is
/// no VIP, and its first IPv6 address that is neither a VIP nor link-local
/// (a backend answers a global or ULA address over its routes; a probe
/// must not leave from a VIP, which the backend holds too).
fn health_sources(local: &[IpAddr], vips: &[IpAddr]) -> Vec<IpAddr> {
    let usable = |a: &&IpAddr| {
        !vips.contains(a)
            && match a {
                IpAddr::V4(_) => true,
                IpAddr::V6(a6) => !crate::net::link_local(a) && !a6.is_loopback(),
            }
    };
    let v4 = local.iter().filter(usable).find(|a| a.is_ipv4());
    let v6 = local.iter().filter(usable).find(|a| a.is_ipv6());
    v4.into_iter().chain(v6).copied().collect()
}

/// How long a reported tunnel MTU holds (the kernel's `mtu_expires`); then
/// the route's applies again until a router reports otherwise.
const LEARNT_MTU_HOLD: Duration = Duration::from_secs(600);

/// Lowers the tunnels of `reach` to the MTUs routers reported, forgetting
/// those that expired.
fn apply_learnt(reach: &mut Reach, learnt: &mut HashMap<IpAddr, (u16, Instant)>, now: Instant) {
    learnt.retain(|_, (_, until)| *until > now);
    for (addr, (mtu, _)) in learnt.iter() {
        if let Some(p) = reach.paths.get_mut(addr) {
            p.tunnel.mtu = p.tunnel.mtu.min(*mtu);
        }
    }
}

fn wanted_missing(a: &Agent) -> Vec<IpAddr> {
    a.reach
        .missing(&runtime::backend_addresses(&a.cfg, &a.runtime))
}

fn log_update(why: &str, r: &dataplane::Report, since: Instant) {
    tracing::info!(
        why,
        vips_added = r.vips_added,
        vips_removed = r.vips_removed,
        tables_swapped = r.tables_swapped,
        backends_written = r.backends_written,
        took_us = since.elapsed().as_micros() as u64,
        "data plane updated"
    );
}

async fn monitor_ended(m: &mut Option<Monitor>) -> String {
    match m {
        Some(m) => m.ended().await,
        None => std::future::pending().await,
    }
}

/// `ms` in flow-time units (2^30 ns), rounded up.
fn idle_units(ms: u64) -> u32 {
    ((ms as u128 * 1_000_000).div_ceil(1u128 << ha_common::FLOW_TIME_UNIT_SHIFT) as u32).max(1)
}

/// How often the flow table is walked when no removal waits on it.
const CENSUS_EVERY: Duration = Duration::from_secs(5);

struct Agent {
    cfg: Config,
    runtime: Runtime,
    /// VIP addresses this node put on its interface (no VRRP).
    owned: Vec<IpAddr>,
    netlink: Netlink,
    link: Link,
    dp: DataPlane,
    reach: Reach,
    /// Smaller tunnel MTUs routers reported, per routed backend, until when.
    learnt_mtu: HashMap<IpAddr, (u16, Instant)>,
    resolver: Resolver,
    /// Health checks leave from these (one per family; see
    /// [`health_sources`]).
    sources: Vec<IpAddr>,
    health_tx: mpsc::Sender<Report>,
    monitor: Option<Monitor>,
    /// The probe encapsulation (tc egress), while some VIP encapsulates.
    hc: Option<dataplane::hc::HcEncap>,
    generation: u64,
    elections: Vec<election::Election>,
    groups: Vec<watch::Receiver<election::GroupStatus>>,
    /// The BGP scale-out mode's announcement, when configured.
    announcing: Option<announcing::Announcing>,
    /// When a backend that went down settles and the data plane must be
    /// written again (BGP mode, see `Runtime::specs_at`).
    settle_at: Option<tokio::time::Instant>,
    sampler: snapshot::Sampler,
    started: Instant,
    flow_view: Arc<FlowView>,
    census: Option<std::thread::JoinHandle<dataplane::census::Census>>,
    /// Flows per backend id at the last census.
    flows: HashMap<u32, u64>,
    flows_total: u64,
    census_at: Option<Instant>,
    /// Ring slots marked changed (after the last census).
    changed_slots: usize,
    /// Live-entry evictions seen at the last census, and whether they were
    /// logged (once per run).
    evicted_live: u64,
    evictions_logged: bool,
    watchdog: Option<Duration>,
    stale_logged: bool,
    /// Beaten by every health report (and when the monitor starts).
    health_beat: watchdog::Beat,
    reconcile_ticks: u64,
}

impl Agent {
    /// Gives up a start that failed after the data plane came up: a program
    /// this start attached is detached and unpinned (nothing is left on the
    /// interface); one adopted from an earlier run is left forwarding as it
    /// was.
    async fn abandon(mut self, e: AgentError) -> AgentError {
        for el in self.elections.drain(..) {
            el.shutdown().await;
        }
        match self.dp.attached() {
            Attached::Fresh(_) => {
                if let Err(e2) = self.dp.shutdown(false) {
                    tracing::error!("detaching the data plane after a failed start: {e2}");
                }
            }
            Attached::Adopted(_) => {
                tracing::warn!("start failed: the adopted data plane is left forwarding as it was")
            }
        }
        e
    }

    /// Writes the maps from the config and what is known at run time.
    fn sync(&mut self, why: &str) -> Result<(), dataplane::Error> {
        let specs = self.runtime.specs(&self.cfg, &self.reach);
        let t = Instant::now();
        match self.dp.writer().apply(&specs) {
            Ok(r) if r.is_empty() => {
                tracing::info!(why, "data plane already up to date");
                Ok(())
            }
            Ok(r) => {
                log_update(why, &r, t);
                Ok(())
            }
            Err(e) => {
                tracing::error!(why, "data plane update failed: {e}");
                Err(e)
            }
        }
    }

    /// Starts (or restarts) the probes for the current config; reports of
    /// an earlier monitor are recognised by their generation and dropped.
    fn restart_health(&mut self) {
        self.monitor = None;
        self.generation += 1;
        let mut targets = runtime::targets(&self.cfg, &self.runtime);
        if let Err(why) = self.tunnel_probes(&targets) {
            // Fail closed: a check that cannot go through the tunnel would
            // pass for a backend that does not decapsulate.
            for t in targets.iter_mut().filter(|t| t.tunnel.is_some()) {
                t.probe = crate::health::check::Probe::Unavailable(why.clone());
            }
        }
        self.health_beat.beat();
        if !targets.is_empty() {
            self.monitor = Some(Monitor::start(
                targets,
                &self.sources,
                self.health_tx.clone(),
                self.generation,
            ));
        }
    }

    /// Brings the probe encapsulation to `targets`: attached while some
    /// probe goes through a tunnel, with exactly their encapsulations. The
    /// error says why tunnelled probes cannot run.
    fn tunnel_probes(&mut self, targets: &[Target]) -> Result<(), String> {
        let want: HashMap<u32, ha_common::hc::HcTarget> = targets
            .iter()
            .filter_map(|t| t.tunnel)
            .map(|(mark, hc)| (mark & !ha_common::hc::MARK_MASK, hc))
            .collect();
        if want.is_empty() {
            self.hc = None;
            return Ok(());
        }
        let result = match self.hc.take() {
            Some(h) => Ok(h),
            None => dataplane::hc::HcEncap::attach(&self.link.name),
        }
        .and_then(|mut h| h.set_targets(&want).map(|()| h));
        match result {
            Ok(h) => {
                self.hc = Some(h);
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    "health checks of encapsulated backends cannot go through the tunnel ({e}); \
                     those backends are kept out until they can"
                );
                Err(format!("no probe encapsulation: {e}"))
            }
        }
    }

    /// A router reported that the tunnel to a routed backend takes fewer
    /// bytes than its route says: its packets are cut to fit from now on
    /// (clients get the too-big answer with the smaller MTU).
    fn path_mtu(&mut self, t: crate::net::pmtu::TooBig) {
        let Some(p) = self.reach.paths.get(&t.backend) else {
            return;
        };
        // Only about our own tunnel packets, and only ever lower.
        if p.tunnel.source != t.source || t.mtu >= p.tunnel.mtu {
            return;
        }
        tracing::info!(
            backend = %t.backend, mtu = t.mtu, was = p.tunnel.mtu,
            "a router reports a smaller MTU on the tunnel to a routed backend"
        );
        let now = Instant::now();
        self.learnt_mtu
            .insert(t.backend, (t.mtu, now + LEARNT_MTU_HOLD));
        let mut reach = self.reach.clone();
        apply_learnt(&mut reach, &mut self.learnt_mtu, now);
        self.reach = reach;
        if let Err(e) = self.sync("tunnel path MTU") {
            tracing::error!("{e}");
        }
    }

    /// Takes a probe's outcome; returns whether a backend changed state.
    fn health(&mut self, r: Report) -> bool {
        if r.generation != self.generation {
            tracing::debug!(
                vip = %r.target.vip, backend = %r.target.backend,
                "dropped a health report of a replaced monitor"
            );
            return false;
        }
        self.health_beat.beat();
        let (vip, backend) = (r.target.vip.clone(), r.target.backend.clone());
        let detail = r.outcome.detail.clone();
        // A first result that confirms the optimistic start is no change for
        // the data plane, but it is evidence for the announcement gate.
        let first = self.announcing.is_some()
            && self
                .runtime
                .get(&vip, &backend)
                .and_then(|s| s.health.as_ref())
                .is_some_and(|h| !h.is_known());
        match self
            .runtime
            .record(&vip, &backend, r.outcome, SystemTime::now())
        {
            Some(up) => {
                if up {
                    tracing::info!(%vip, %backend, %detail, "backend is UP");
                } else {
                    tracing::warn!(%vip, %backend, %detail, "backend is DOWN");
                }
                if let Err(e) = self.sync(&format!(
                    "{vip}/{backend} {}",
                    if up { "up" } else { "down" }
                )) {
                    tracing::error!("{e}");
                }
                true
            }
            None => first,
        }
    }

    /// Lowers the priority of the instance that owns a VIP while that VIP
    /// has no healthy backend (not of the other instances).
    async fn track_backends(&mut self) {
        let empty = self.runtime.vips_without_healthy(&self.cfg);
        if !empty.is_empty() {
            tracing::warn!(vips = %empty.join(","), "no healthy backend");
        }
        for i in 0..self.elections.len() {
            let e = &self.elections[i];
            let effect = track::backends_effect(&e.vips, &empty, e.settings.track_backends_weight);
            self.track(i, ("backends".into(), effect)).await;
        }
        self.announce_update().await;
    }

    /// Schedules the next data-plane write for a settling backend.
    fn plan_settle(&mut self) {
        let now = SystemTime::now();
        self.settle_at = self.runtime.next_settle(&self.cfg, now).map(|t| {
            let d = t.duration_since(now).unwrap_or_default();
            tokio::time::Instant::now() + d + Duration::from_millis(1)
        });
    }

    /// When a hold-down ends (BGP mode): the gate must look again then.
    fn announce_deadline(&self) -> Option<tokio::time::Instant> {
        self.announcing.as_ref()?.next_deadline()
    }

    /// Feeds the announcement gate the facts now (BGP mode).
    async fn announce_update(&mut self) {
        if self.announcing.is_none() {
            return;
        }
        let facts = self.runtime.serving_by_address(&self.cfg, &self.reach);
        if let Some(a) = self.announcing.as_mut() {
            a.update(facts).await;
        }
    }

    /// Every second (BGP mode): looks whether the XDP program is still
    /// attached, and lets hold-downs end.
    async fn announce_tick(&mut self) {
        if self.announcing.is_none() {
            return;
        }
        let attached = match self.netlink.link(&self.link.name).await {
            Ok(l) => Some(
                l.xdp_prog.is_some()
                    && self
                        .announcing
                        .as_ref()
                        .is_none_or(|a| a.program.is_none() || a.program == l.xdp_prog),
            ),
            Err(crate::net::NetError::NoSuchLink(_)) => Some(false),
            Err(e) => {
                tracing::debug!("XDP state unknown: {e}");
                None
            }
        };
        if let (Some(att), Some(a)) = (attached, self.announcing.as_mut()) {
            if att != a.dataplane {
                if att {
                    tracing::info!("XDP program attached again");
                } else {
                    tracing::error!(
                        "halb's XDP program is no longer attached (detached or replaced): \
                         withdrawing every VIP"
                    );
                }
                a.dataplane = att;
            }
        }
        self.announce_update().await;
    }

    /// A tracked source of instance `idx` changed: applied to it, and its
    /// weight shared with the other members of its sync group (so that the
    /// group's priorities move together).
    async fn track(&mut self, idx: usize, (source, effect): election::TrackEvent) {
        let Some(e) = self.elections.get_mut(idx) else {
            return;
        };
        e.track((source.clone(), effect)).await;
        let name = e.name.clone();
        let Some(g) = self.cfg.sync_group_of(&name) else {
            return;
        };
        let members: Vec<String> = g.instances.iter().map(|i| i.get_ref().clone()).collect();
        let shared = crate::vrrp::group::shared_effect(&name, &source, effect);
        for other in self.elections.iter_mut() {
            if other.name != name && members.contains(&other.name) {
                other.track(shared.clone()).await;
            }
        }
    }

    /// Carries out an operator command; the status is published before the
    /// answer goes out, so a client that reads it next sees the change.
    async fn command(
        &mut self,
        cmd: Command,
        config_path: &Path,
        status: &watch::Sender<api::Published>,
    ) {
        match cmd {
            Command::Backend {
                vip,
                backend,
                op,
                reply,
            } => {
                let max = config::MAX_WEIGHT;
                let before = self.runtime.clone();
                let result = match op {
                    BackendOp::Weight(w) if w > max => Err(CommandError::BadRequest(format!(
                        "weight must be between 0 and {max}, got {w}"
                    ))),
                    _ => self
                        .runtime
                        .admin(&self.cfg, &vip, &backend, |a| match op {
                            BackendOp::Drain => a.drained = true,
                            BackendOp::Enable => a.drained = false,
                            BackendOp::Weight(w) => {
                                a.weight = Some(w);
                            }
                        })
                        .map_err(|e| CommandError::NotFound(e.to_string())),
                };
                let answer = match result {
                    Ok(admin) => {
                        tracing::info!(%vip, %backend, ?op, "operator command");
                        self.announce_update().await;
                        match self.sync(&format!("operator {op:?} {vip}/{backend}")) {
                            Ok(()) => {
                                let configured = self
                                    .cfg
                                    .vips()
                                    .find(|v| v.name.get_ref() == &vip)
                                    .and_then(|v| {
                                        v.backends.iter().find(|b| b.name.get_ref() == &backend)
                                    })
                                    .map_or(1, |b| b.weight);
                                Ok(api::model::BackendChange {
                                    weight: self.runtime.weight(&vip, &backend, configured),
                                    drained: admin.drained,
                                    vip: vip.clone(),
                                    backend: backend.clone(),
                                })
                            }
                            Err(e) => {
                                self.runtime = before;
                                let _ = self.sync("undo a failed operator command");
                                Err(CommandError::Failed(format!("data plane: {e}")))
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
                self.publish(status);
                let _ = reply.send(answer);
            }
            Command::Reload { reply } => {
                let r = self.reload(config_path).await;
                self.publish(status);
                let _ = reply.send(r);
            }
            Command::Node { drain, reply } => {
                let r = match self.announcing.as_mut() {
                    None => Err(CommandError::BadRequest(
                        "node drain and enable are for the BGP scale-out mode ([bgp]); \
                         in a VRRP pair, stop the agent or lower its priority"
                            .into(),
                    )),
                    Some(a) => match a.set_drained(drain) {
                        Ok(()) => {
                            tracing::warn!(
                                drained = drain,
                                "operator: node {}",
                                if drain { "drained" } else { "enabled" }
                            );
                            Ok(())
                        }
                        Err(e) => Err(CommandError::Failed(e)),
                    },
                };
                if r.is_ok() {
                    self.announce_update().await;
                }
                let r = r.map(|()| api::model::NodeChange {
                    drained: drain,
                    announced: self
                        .announcing
                        .as_ref()
                        .map(|a| a.announced().iter().map(|x| x.to_string()).collect())
                        .unwrap_or_default(),
                });
                self.publish(status);
                let _ = reply.send(r);
            }
        }
    }

    /// Without VRRP: puts VIP addresses on the interface (and announces
    /// them) or takes them off.
    async fn own_vips(&mut self, addrs: &[IpAddr], own: bool) {
        for &addr in addrs {
            let plen = crate::net::host_len(addr);
            let r = if own {
                self.netlink.add_address(self.link.index, addr, plen).await
            } else {
                self.netlink.del_address(self.link.index, addr, plen).await
            };
            if let Err(e) = r {
                tracing::error!("VIP {addr}: {e}");
            }
            if own {
                if !self.owned.contains(&addr) {
                    self.owned.push(addr);
                }
                match crate::net::arp::RawSender::open(self.link.index) {
                    Ok(s) => {
                        let _ = s.send(&crate::net::arp::announce_frame(self.link.mac, addr));
                    }
                    Err(e) => tracing::warn!("announcing {addr} (gratuitous ARP or NA): {e}"),
                }
            } else {
                self.owned.retain(|a| *a != addr);
            }
        }
    }

    /// Without VRRP, every few seconds: the VIP addresses this node owns are
    /// put back if something took them off (or adding them failed).
    async fn reconcile_owned(&mut self) {
        if !self.elections.is_empty() || self.owned.is_empty() {
            return;
        }
        self.reconcile_ticks += 1;
        if !self.reconcile_ticks.is_multiple_of(5) {
            return;
        }
        let present: Vec<IpAddr> = match self.netlink.addresses(self.link.index).await {
            Ok(v) => v.into_iter().map(|(a, _)| a).collect(),
            Err(e) => {
                tracing::warn!("checking the VIP addresses: {e}");
                return;
            }
        };
        let missing: Vec<IpAddr> = self
            .owned
            .iter()
            .filter(|a| !present.contains(a))
            .copied()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(addresses = ?missing, "VIP addresses missing from the interface: adding them again");
            // An IPv6 VIP that is there but not usable (DAD failed: someone
            // added it without nodad) is taken off first, or adding it
            // again would find it present and change nothing.
            for a in missing.iter().filter(|a| a.is_ipv6()) {
                let plen = crate::net::host_len(*a);
                if let Err(e) = self.netlink.del_address(self.link.index, *a, plen).await {
                    tracing::warn!("VIP {a}: {e}");
                }
            }
            self.own_vips(&missing, true).await;
        }
    }

    /// A VRRP peer that is also a backend loops frames (XDP does not
    /// decrement the TTL); the config can only catch unicast peers.
    fn warn_peer_backend(&self) {
        let backends = runtime::backend_addresses(&self.cfg, &self.runtime);
        for e in &self.elections {
            let Some(master) = e.status.borrow().master else {
                continue;
            };
            if backends.contains(&master) {
                tracing::error!(
                    instance = %e.name,
                    peer = %master,
                    "a VRRP peer of this node is also one of its backends: frames can loop \
                     between the load balancers; remove it from the backends"
                );
            }
        }
    }

    /// Re-reads the config: all or nothing. A bad file, a backend at one of
    /// this node's addresses, or a data plane that cannot take the new
    /// state is rejected with its problems, and the running config stays.
    async fn reload(&mut self, path: &Path) -> Result<String, Vec<String>> {
        let reject = |problems: Vec<String>| {
            for p in &problems {
                tracing::error!("reload rejected: {p}");
            }
            tracing::warn!("keeping the running configuration");
            Err(problems)
        };
        let mut new = match config::load(path) {
            Ok(c) => c,
            Err(e) => return reject(e.problems.iter().map(ToString::to_string).collect()),
        };
        let local: Vec<IpAddr> = match self.netlink.addresses(self.link.index).await {
            Ok(v) => v.into_iter().map(|(a, _)| a).collect(),
            Err(e) => return reject(vec![e.to_string()]),
        };
        if let Err(e) = local_backends(&new, &local) {
            return reject(vec![e.to_string()]);
        }
        // What the running agent cannot change without a restart keeps its
        // running value, and the operator is told which.
        let mut later = Vec::new();
        match election::for_reload(&self.cfg, &mut new) {
            Ok(true) => later.push("VRRP instance settings"),
            Ok(false) => {}
            Err(why) => return reject(vec![format!("{}: {why}", path.display())]),
        }
        match (&self.cfg.bgp, &new.bgp) {
            (Some(_), None) | (None, Some(_)) => {
                return reject(vec![format!(
                    "{}: switching between the BGP scale-out mode and VRRP (or neither) \
                     needs a restart",
                    path.display()
                )])
            }
            (Some(o), Some(n)) if o.get_ref() != n.get_ref() => {
                later.push("[bgp]");
                new.bgp = self.cfg.bgp.clone();
            }
            _ => {}
        }
        if new.api != self.cfg.api {
            later.push("[api]");
            new.api = self.cfg.api.clone();
        }
        let (o, n) = (&self.cfg.node, &mut new.node);
        for (changed, what) in [
            (n.name != o.name, "[node] name"),
            (n.interface != o.interface, "[node] interface"),
            (n.xdp_mode != o.xdp_mode, "[node] xdp_mode"),
            (n.bpf_dir != o.bpf_dir, "[node] bpf_dir"),
            (
                n.flow_table_size != o.flow_table_size,
                "[node] flow_table_size",
            ),
            (
                n.flow_hash_seed != o.flow_hash_seed,
                "[node] flow_hash_seed",
            ),
            (
                n.neigh_refresh_ms != o.neigh_refresh_ms,
                "[node] neigh_refresh_ms",
            ),
            (n.log_format != o.log_format, "[node] log_format"),
        ] {
            if changed {
                later.push(what);
            }
        }
        if !later.is_empty() {
            let removal = (n.removal_timeout_ms, n.flow_idle_timeout_ms);
            *n = o.clone();
            (n.removal_timeout_ms, n.flow_idle_timeout_ms) = removal;
            tracing::warn!(
                settings = %later.join(", "),
                "reload: these take effect at the next restart; the running agent keeps its values"
            );
        }
        // What runs now is the file with the kept settings merged in: it
        // must hold together too (a new IPv6 VIP with a new IPv6 neighbour
        // while the running [bgp] has none would be announced to nobody).
        let merged = config::revalidate(&new);
        if !merged.is_empty() {
            return reject(
                merged
                    .into_iter()
                    .map(|p| {
                        format!(
                            "{}: with the settings that wait for a restart kept: {p}",
                            path.display()
                        )
                    })
                    .collect(),
            );
        }
        let diff = Diff::between(&self.cfg, &new);
        // Backends newly routed (a new encapsulating VIP, or a VIP whose
        // mode changed) are resolved before the new tables go live: a
        // backend without its path would be left out until the resolver's
        // next round, and its flows dropped meanwhile.
        let wanted = runtime::backend_addresses(&new, &self.runtime);
        let fresh = self.reach.unresolved(&wanted);
        if !fresh.routed.is_empty() || !fresh.on_link.is_empty() {
            if let Some((found, _)) =
                neighbours::resolve(&self.netlink, self.link.index, self.link.mtu, &fresh).await
            {
                self.reach.macs.extend(found.macs);
                self.reach.paths.extend(found.paths);
            }
        }
        let mut runtime = self.runtime.clone();
        runtime.reload(
            &self.cfg,
            &new,
            &diff,
            &self.reach,
            Instant::now(),
            Duration::from_millis(new.node.removal_timeout_ms),
        );
        let specs = runtime.specs(&new, &self.reach);
        let t = Instant::now();
        match self.dp.writer().apply(&specs) {
            Ok(r) => log_update("reload", &r, t),
            Err(e) => {
                // Back to what ran before, then report the failure.
                if let Err(e2) = self.sync("restore after a failed reload") {
                    tracing::error!("restoring the previous data plane: {e2}");
                }
                return reject(vec![format!(
                    "{}: the data plane cannot take it: {e}",
                    path.display()
                )]);
            }
        }
        let old_addrs = election::vip_addresses(&self.cfg);
        let old_instance_addrs: Vec<Vec<IpAddr>> = self
            .elections
            .iter()
            .map(|e| election::instance_addresses(&self.cfg, &e.vips))
            .collect();
        let health_restart =
            runtime::targets(&new, &runtime) != runtime::targets(&self.cfg, &self.runtime);
        if new.node.flow_idle_timeout_ms != self.cfg.node.flow_idle_timeout_ms {
            let units = idle_units(new.node.flow_idle_timeout_ms);
            if let Err(e) = self.dp.set_live_units(units) {
                tracing::error!("writing the flow idle timeout to the data plane: {e}");
            }
        }
        self.cfg = new;
        self.runtime = runtime;
        // The probes' sources, from the addresses of now (an address that was
        // still in DAD at start is usable by now; a VIP is never one).
        let sources = match self.netlink.source_addresses(self.link.index).await {
            Ok(v) => {
                let v: Vec<IpAddr> = v.into_iter().map(|(a, _)| a).collect();
                health_sources(&v, &election::vip_addresses(&self.cfg))
            }
            Err(_) => self.sources.clone(),
        };
        let health_restart = health_restart || sources != self.sources;
        self.sources = sources;
        for ((vip, backend), r) in self.runtime.removing() {
            if r.started >= t - Duration::from_secs(1) {
                tracing::info!(
                    %vip, %backend,
                    timeout_ms = self.cfg.node.removal_timeout_ms,
                    "backend removed: no new flows; its flows go on until they end"
                );
            }
        }
        self.resolver
            .want(runtime::backend_addresses(&self.cfg, &self.runtime));
        if health_restart {
            self.restart_health();
        }
        let new_addrs = election::vip_addresses(&self.cfg);
        if self.announcing.is_some() {
            // Scale-out: nothing is held; the gate below follows the VIPs.
        } else if self.elections.is_empty() {
            if new_addrs != old_addrs {
                let gone: Vec<IpAddr> = old_addrs
                    .iter()
                    .filter(|a| !new_addrs.contains(a))
                    .copied()
                    .collect();
                let added: Vec<IpAddr> = new_addrs
                    .iter()
                    .filter(|a| !old_addrs.contains(a))
                    .copied()
                    .collect();
                self.own_vips(&gone, false).await;
                self.own_vips(&added, true).await;
            }
        } else {
            let instances = self.cfg.instances();
            for (i, e) in self.elections.iter_mut().enumerate() {
                if let Some(inst) = instances.iter().find(|x| x.name == e.name) {
                    e.vips = inst.vips.clone();
                }
                let now = election::instance_addresses(&self.cfg, &e.vips);
                if old_instance_addrs.get(i) != Some(&now) {
                    e.set_addresses(now).await;
                }
            }
        }
        self.track_backends().await;
        let summary = diff.summary();
        tracing::info!(config = %path.display(), changes = %summary, "configuration reloaded");
        Ok(summary)
    }

    /// Every second: picks up a finished flow census (flows per backend for
    /// the status; live flows end graceful removals), and starts the next
    /// one when it is due.
    fn census_tick(&mut self) {
        let now = Instant::now();
        if self.census.as_ref().is_some_and(|c| c.is_finished()) {
            if let Some(Ok(c)) = self.census.take().map(|c| c.join()) {
                self.flows = c.per_backend.iter().map(|(id, (n, _))| (*id, *n)).collect();
                self.flows_total = self.flows.values().sum();
                // Changed slots whose protected flows have aged out go back
                // to plain ring lookups. The hold is counted up to the
                // census' start, so a slot marked during the walk waits.
                let hold = Duration::from_millis(self.cfg.node.flow_idle_timeout_ms) + CENSUS_EVERY;
                match self.dp.writer().settle(c.at, hold, &c.pinned) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(slots = n, "changed ring slots settled"),
                    Err(e) => tracing::error!("settling changed ring slots: {e}"),
                }
                self.changed_slots = self.dp.writer().changed_slots();
                let evicted = self
                    .dp
                    .maps()
                    .flow_stats()
                    .ok()
                    .and_then(|v| {
                        v.get(ha_common::FlowStat::EvictedLive as usize)
                            .map(|x| x.1)
                    })
                    .unwrap_or(0);
                if evicted > self.evicted_live && !self.evictions_logged {
                    self.evictions_logged = true;
                    tracing::warn!(
                        evicted_live = evicted,
                        capacity = self.dp.maps().flow_sets() as u64 * ha_common::FLOW_WAYS as u64,
                        "the flow table is evicting live flows: raise [node] flow_table_size \
                         (it takes effect when the data plane is created anew, `halb run \
                         --reset-dataplane`, which moves unrecorded flows; logged once; \
                         halb_flow_table_events_total{{event=\"evicted_live\"}} counts them)"
                    );
                }
                self.evicted_live = evicted;
                // A removed backend that a changed slot still names as its
                // previous backend may have flows that were not seen yet.
                let previous = self.dp.writer().previous_backends();
                let dp = &self.dp;
                let released = self.runtime.settle(
                    c.at,
                    now,
                    |service, addr| {
                        dp.backend_id(service, addr)
                            .map(|id| c.per_backend.get(&id).map_or(0, |(_, live)| *live))
                    },
                    |service, addr| {
                        dp.backend_id(service, addr)
                            .is_some_and(|id| previous.contains(&id))
                    },
                );
                if !released.is_empty() {
                    for ((vip, backend), _, why) in &released {
                        match why {
                            Released::FlowsEnded => tracing::info!(
                                %vip, %backend, "removed backend's last flow ended: released"
                            ),
                            Released::TimedOut(n) => tracing::warn!(
                                %vip, %backend, live_flows = n,
                                "removal_timeout passed: released, cutting its remaining flows"
                            ),
                            Released::Down => tracing::warn!(
                                %vip, %backend,
                                "removed backend is down: released, its flows move"
                            ),
                        }
                    }
                    if let Err(e) = self.sync("removal done") {
                        tracing::error!("{e}");
                    }
                    self.resolver
                        .want(runtime::backend_addresses(&self.cfg, &self.runtime));
                    self.restart_health();
                }
            }
        }
        let due = !self.runtime.removing().is_empty()
            || self.census_at.is_none_or(|t| now - t >= CENSUS_EVERY);
        if self.census.is_none() && due {
            let view = self.flow_view.clone();
            let seed = self.dp.maps().hash_seed();
            let idle_units = idle_units(self.cfg.node.flow_idle_timeout_ms);
            let services = self.dp.writer().services();
            let rings = self.dp.writer().ring_views();
            self.census_at = Some(now);
            self.census = Some(std::thread::spawn(move || {
                dataplane::census::walk(&view, seed, idle_units, &services, &rings)
            }));
        }
    }

    /// Pings systemd's watchdog while the VRRP timers and the health probes
    /// show life (this loop running is the third sign). The probes are alive
    /// when some report arrived within three of the longest intervals plus
    /// the longest timeout and 5 s: a slow round during a mass outage (64
    /// probes at a time, each taking its whole timeout) still reports all
    /// along, a monitor that stopped does not.
    fn watchdog_tick(&mut self) {
        if self.watchdog.is_none() {
            return;
        }
        let mut parts: Vec<(&str, &watchdog::Beat, Duration)> = Vec::new();
        for e in &self.elections {
            parts.push(("VRRP timers", &e.beat, Duration::from_secs(3)));
        }
        if self.monitor.is_some() {
            let targets = runtime::targets(&self.cfg, &self.runtime);
            let interval = targets.iter().map(|t| t.interval).max().unwrap_or_default();
            let timeout = targets.iter().map(|t| t.timeout).max().unwrap_or_default();
            parts.push((
                "health checks",
                &self.health_beat,
                interval * 3 + timeout + Duration::from_secs(5),
            ));
        }
        let stale = watchdog::stale(&parts);
        if stale.is_empty() {
            self.stale_logged = false;
            watchdog::ping();
        } else if !self.stale_logged {
            self.stale_logged = true;
            tracing::error!(
                stalled = %stale.join(", "),
                "not pinging the systemd watchdog: a part of the agent stopped"
            );
        }
    }

    /// Samples the counters and publishes a fresh status document.
    fn publish(&mut self, tx: &watch::Sender<api::Published>) {
        let published = tokio::task::block_in_place(|| api::Published::new(snapshot::build(self)));
        tx.send_replace(published);
    }
}
