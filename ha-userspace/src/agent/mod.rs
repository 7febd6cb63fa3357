//! The agent: the one place that wires config, data plane, VRRP, health
//! checks and the API together, and runs them until a signal says stop.
//!
//! Start-up order: the config was validated before anything here runs; then
//! the interface is looked up, the data plane started (or adopted), backend
//! MACs resolved, the maps written, VRRP (or standalone VIP ownership), the
//! health probes and the API started. After that one loop owns all state
//! and reacts to: health reports, operator commands from the API, SIGHUP
//! (reload), tracking events, a neighbour refresh, a one-second sampling of
//! the counters (published for the API), and SIGTERM/SIGINT.

mod election;
pub mod runtime;
mod snapshot;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::api::{self, BackendOp, Command, CommandError};
use crate::config::{self, Config};
use crate::dataplane::{self, Attached, DataPlane};
use crate::health::monitor::{Monitor, Report};
use crate::net::{Link, NetError, Netlink};
use crate::vrrp::track::Effect;
use runtime::{Diff, Runtime};

/// Agent errors (start-up; once running, problems are logged and survived).
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
    /// The token file could not be read.
    #[error("token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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

/// The API token from `[api] token_file`, if configured.
pub fn read_token(cfg: &Config) -> Result<Option<String>, AgentError> {
    let Some(path) = &cfg.api.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::Token {
        path: path.clone(),
        source,
    })?;
    Ok(Some(text.trim().to_string()))
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let token = read_token(&cfg)?;

    let netlink = Netlink::open()?;
    let link = netlink.link(cfg.node.interface.get_ref()).await?;
    let dir = pin_dir(&cfg);
    if opts.reset_dataplane {
        dataplane::remove_pins(&dir)?;
    }
    let dp_opts = dataplane::Options {
        interface: link.name.clone(),
        mode: cfg.node.xdp_mode,
        pin_dir: dir.clone(),
        flow_table_size: cfg.node.flow_table_size,
        mac: link.mac,
    };
    let dp = DataPlane::start(&dp_opts)?;
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
    let source = netlink
        .addresses(link.index)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .find(|a| !election::vip_addresses(&cfg).contains(a));
    let (status_tx, status_rx) = watch::channel(api::Published::default());
    let (health_tx, mut health_rx) = mpsc::channel(1024);
    let mut agent = Agent {
        runtime: Runtime::new(&cfg),
        cfg,
        netlink,
        link,
        dp,
        macs: HashMap::new(),
        source,
        health_tx,
        monitor: None,
        election: None,
        sampler: snapshot::Sampler::new(),
        started: Instant::now(),
    };
    agent.refresh_neighbours().await;
    agent.sync("start");

    // VIP ownership: VRRP when configured, else this node always owns them.
    let mut track_rx = None;
    if agent.cfg.vrrp().is_some() {
        let (e, rx) = election::Election::start(&agent.cfg, &agent.link, &agent.netlink).await?;
        agent.election = Some(e);
        track_rx = Some(rx);
    } else {
        agent.own_vips(true).await;
    }
    agent.restart_health();
    agent.track_backends().await;

    agent.publish(&status_tx);
    let (cmd_tx, mut cmd_rx) = mpsc::channel(64);
    let api_task = api::serve(
        agent.cfg.api.addr(),
        api::ApiState {
            status: status_rx,
            commands: cmd_tx,
            token: token.map(Arc::from),
        },
    )
    .await?;
    tracing::info!(listen = %agent.cfg.api.addr(), "API and stats page listening");

    let mut refresh = tokio::time::interval(Duration::from_millis(agent.cfg.node.neigh_refresh_ms));
    refresh.tick().await;
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                let _ = agent.reload(&opts.config_path).await;
                agent.publish(&status_tx);
            }
            Some(report) = health_rx.recv() => {
                if agent.health(report) {
                    agent.track_backends().await;
                    agent.publish(&status_tx);
                }
            }
            Some(cmd) = cmd_rx.recv() => agent.command(cmd, &opts.config_path, &status_tx).await,
            Some(ev) = recv_track(&mut track_rx) => {
                if let Some(e) = agent.election.as_mut() {
                    e.track(ev).await;
                }
            }
            _ = refresh.tick() => {
                if agent.refresh_neighbours().await {
                    agent.sync("neighbour change");
                }
            }
            _ = sample.tick() => agent.publish(&status_tx),
        }
    }
    api_task.abort();
    agent.monitor = None;
    let keep = opts.keep_dataplane;
    match agent.election.take() {
        Some(e) => e.shutdown().await,
        None if !keep => agent.own_vips(false).await,
        None => {}
    }
    agent.dp.shutdown(keep)?;
    if keep {
        tracing::info!("data plane left attached and pinned (--keep-dataplane)");
    } else {
        tracing::info!("data plane detached and unpinned");
    }
    Ok(())
}

/// The next tracking event, or never when there is no election.
async fn recv_track(
    rx: &mut Option<mpsc::Receiver<election::TrackEvent>>,
) -> Option<election::TrackEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Agent {
    cfg: Config,
    runtime: Runtime,
    netlink: Netlink,
    link: Link,
    dp: DataPlane,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
    source: Option<Ipv4Addr>,
    health_tx: mpsc::Sender<Report>,
    monitor: Option<Monitor>,
    election: Option<election::Election>,
    sampler: snapshot::Sampler,
    started: Instant,
}

impl Agent {
    /// Writes the maps from the config and what is known at run time.
    fn sync(&mut self, why: &str) {
        let specs = self.runtime.specs(&self.cfg, &self.macs);
        let t = Instant::now();
        match self.dp.writer().apply(&specs) {
            Ok(r) if r.is_empty() => tracing::info!(why, "data plane already up to date"),
            Ok(r) => tracing::info!(
                why,
                vips_added = r.vips_added,
                vips_removed = r.vips_removed,
                tables_swapped = r.tables_swapped,
                backends_written = r.backends_written,
                took_us = t.elapsed().as_micros() as u64,
                "data plane updated"
            ),
            Err(e) => tracing::error!(why, "data plane update failed: {e}"),
        }
    }

    /// Starts (or restarts) the probes for the current config.
    fn restart_health(&mut self) {
        self.monitor = None;
        let targets = runtime::targets(&self.cfg);
        if !targets.is_empty() {
            self.monitor = Some(Monitor::start(targets, self.source, self.health_tx.clone()));
        }
    }

    /// Takes a probe's outcome; returns whether a backend changed state.
    fn health(&mut self, r: Report) -> bool {
        let (vip, backend) = (r.target.vip.clone(), r.target.backend.clone());
        let detail = r.outcome.detail.clone();
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
                self.sync(&format!(
                    "{vip}/{backend} {}",
                    if up { "up" } else { "down" }
                ));
                true
            }
            None => false,
        }
    }

    /// Lowers the VRRP priority while some VIP has no healthy backend.
    async fn track_backends(&mut self) {
        let empty = self.runtime.vips_without_healthy(&self.cfg);
        let weight = self
            .cfg
            .vrrp()
            .map(|v| v.track_backends_weight)
            .unwrap_or(0);
        if let Some(e) = self.election.as_mut() {
            let effect = match (empty.is_empty(), weight) {
                (true, _) => Effect::None,
                (false, 0) => Effect::Fault,
                (false, w) => Effect::Weight(w),
            };
            if !empty.is_empty() {
                tracing::warn!(vips = %empty.join(","), "no healthy backend");
            }
            e.track(("backends".into(), effect)).await;
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
                let answer = result.map(|admin| {
                    let configured = self
                        .cfg
                        .vips()
                        .find(|v| v.name.get_ref() == &vip)
                        .and_then(|v| v.backends.iter().find(|b| b.name.get_ref() == &backend))
                        .map_or(1, |b| b.weight);
                    tracing::info!(%vip, %backend, ?op, "operator command");
                    self.sync(&format!("operator {op:?} {vip}/{backend}"));
                    api::model::BackendChange {
                        weight: self.runtime.weight(&vip, &backend, configured),
                        drained: admin.drained,
                        vip: vip.clone(),
                        backend: backend.clone(),
                    }
                });
                self.publish(status);
                let _ = reply.send(answer);
            }
            Command::Reload { reply } => {
                let r = self.reload(config_path).await;
                self.publish(status);
                let _ = reply.send(r);
            }
        }
    }

    /// Without VRRP: puts the VIPs on the interface (and announces them) or
    /// takes them off.
    async fn own_vips(&self, own: bool) {
        for addr in election::vip_addresses(&self.cfg) {
            let r = if own {
                self.netlink.add_address(self.link.index, addr, 32).await
            } else {
                self.netlink.del_address(self.link.index, addr, 32).await
            };
            if let Err(e) = r {
                tracing::error!("VIP {addr}: {e}");
            }
            if own {
                match crate::net::arp::RawSender::open(self.link.index) {
                    Ok(s) => {
                        let _ = s.send(&crate::net::arp::garp_frame(self.link.mac, addr));
                    }
                    Err(e) => tracing::warn!("gratuitous ARP for {addr}: {e}"),
                }
            }
        }
    }

    /// Re-reads the config. A bad file is logged, rejected with its
    /// problems, and the running config stays.
    async fn reload(&mut self, path: &Path) -> Result<String, Vec<String>> {
        let new = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                for p in &problems {
                    tracing::error!("reload rejected: {p}");
                }
                tracing::warn!("keeping the running configuration");
                return Err(problems);
            }
        };
        if new.node.interface.get_ref() != self.cfg.node.interface.get_ref() {
            tracing::warn!(
                "reload: changing [node] interface needs a restart; kept {}",
                self.link.name
            );
        }
        let vrrp_changed = format!("{:?}", new.vrrp()) != format!("{:?}", self.cfg.vrrp());
        if vrrp_changed {
            tracing::warn!("reload: [vrrp] changes take effect at the next restart");
        }
        let diff = Diff::between(&self.cfg, &new);
        self.runtime.reload(&new, &diff);
        let health_restart = runtime::targets(&new) != runtime::targets(&self.cfg);
        self.cfg = new;
        self.refresh_neighbours().await;
        self.sync("reload");
        if health_restart {
            self.restart_health();
        }
        self.track_backends().await;
        let summary = diff.summary();
        tracing::info!(config = %path.display(), changes = %summary, "configuration reloaded");
        Ok(summary)
    }

    /// Learns backend MACs from the neighbour table, asking the kernel to
    /// resolve the missing ones. Returns whether anything changed.
    async fn refresh_neighbours(&mut self) -> bool {
        let wanted: Vec<Ipv4Addr> = runtime::backend_addresses(&self.cfg);
        let mut table = match self.netlink.neighbours(self.link.index).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("neighbour dump failed: {e}");
                return false;
            }
        };
        let missing: Vec<Ipv4Addr> = wanted
            .iter()
            .filter(|a| !table.contains_key(a))
            .copied()
            .collect();
        if !missing.is_empty() {
            for a in &missing {
                if let Err(e) = self.netlink.probe_neighbour(self.link.index, *a).await {
                    tracing::debug!("probe {a}: {e}");
                }
            }
            // ARP answers on a LAN take well under a second.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(t) = self.netlink.neighbours(self.link.index).await {
                    table = t;
                }
                if missing.iter().all(|a| table.contains_key(a)) {
                    break;
                }
            }
            for a in missing.iter().filter(|a| !table.contains_key(a)) {
                tracing::warn!(backend = %a, "no MAC address for backend (no ARP reply); it gets no traffic");
            }
        }
        let new: HashMap<Ipv4Addr, [u8; 6]> = wanted
            .iter()
            .filter_map(|a| table.get(a).map(|m| (*a, *m)))
            .collect();
        let changed = new != self.macs;
        self.macs = new;
        changed
    }

    /// Samples the counters and publishes a fresh status document.
    fn publish(&mut self, tx: &watch::Sender<api::Published>) {
        let published = tokio::task::block_in_place(|| api::Published::new(snapshot::build(self)));
        tx.send_replace(published);
    }
}
