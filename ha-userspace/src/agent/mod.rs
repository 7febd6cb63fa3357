//! The agent: the one place that wires config, data plane and network I/O
//! together and runs them until a signal says stop.
//!
//! Start-up order: the config was validated before anything here runs; then
//! the interface is looked up, the data plane started (or adopted), backend
//! MACs resolved and the maps written. After that the agent reacts to
//! SIGHUP (reload), to a periodic neighbour refresh, and to SIGTERM/SIGINT.

mod election;
pub mod runtime;
mod specs;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Config};
use crate::dataplane::{self, Attached, DataPlane};
use crate::net::{Link, NetError, Netlink};

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

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;

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
    let mut agent = Agent {
        cfg,
        netlink,
        link,
        dp,
        macs: HashMap::new(),
    };
    agent.refresh_neighbours().await;
    agent.sync("start");

    // VIP ownership: VRRP when configured, else this node always owns them.
    let (mut election, mut track_rx) = match agent.cfg.vrrp() {
        Some(_) => {
            let (e, rx) =
                election::Election::start(&agent.cfg, &agent.link, &agent.netlink).await?;
            (Some(e), Some(rx))
        }
        None => {
            agent.own_vips(true).await;
            (None, None)
        }
    };

    let mut refresh = tokio::time::interval(Duration::from_millis(agent.cfg.node.neigh_refresh_ms));
    refresh.tick().await;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => agent.reload(&opts.config_path).await,
            _ = refresh.tick() => {
                if agent.refresh_neighbours().await {
                    agent.sync("neighbour change");
                }
            }
            Some(ev) = recv_track(&mut track_rx) => {
                if let Some(e) = election.as_mut() {
                    e.track(ev).await;
                }
            }
        }
    }
    let keep = opts.keep_dataplane;
    match election.take() {
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
    rx: &mut Option<tokio::sync::mpsc::Receiver<election::TrackEvent>>,
) -> Option<election::TrackEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Agent {
    cfg: Config,
    netlink: Netlink,
    link: Link,
    dp: DataPlane,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
}

impl Agent {
    /// Writes the maps from the current config and knowledge.
    fn sync(&mut self, why: &str) {
        let specs = specs::build(&self.cfg, &self.macs);
        match self.dp.writer().apply(&specs) {
            Ok(r) if r.is_empty() => tracing::info!(why, "data plane already up to date"),
            Ok(r) => tracing::info!(
                why,
                vips_added = r.vips_added,
                vips_removed = r.vips_removed,
                tables_swapped = r.tables_swapped,
                backends_written = r.backends_written,
                "data plane updated"
            ),
            Err(e) => tracing::error!(why, "data plane update failed: {e}"),
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

    /// Re-reads the config; a bad file is logged and the running config stays.
    async fn reload(&mut self, path: &Path) {
        match config::load(path) {
            Ok(new) => {
                if new.node.interface.get_ref() != self.cfg.node.interface.get_ref() {
                    tracing::warn!(
                        "reload: changing [node] interface needs a restart; kept {}",
                        self.link.name
                    );
                }
                self.cfg = new;
                self.refresh_neighbours().await;
                self.sync("reload");
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                for p in &e.problems {
                    tracing::error!("reload rejected: {p}");
                }
                tracing::warn!("keeping the running configuration");
            }
        }
    }

    /// Learns backend MACs from the neighbour table, asking the kernel to
    /// resolve the missing ones. Returns whether anything changed.
    async fn refresh_neighbours(&mut self) -> bool {
        let wanted: Vec<Ipv4Addr> = specs::backend_addresses(&self.cfg);
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
}
