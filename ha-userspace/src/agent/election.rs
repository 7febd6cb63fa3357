//! The agent's side of VRRP: builds the router from the config, starts it,
//! and runs the tracking probes (interfaces, data plane, scripts) whose
//! results [`Tracking`] combines into a priority or a fault.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, TrackScript};
use crate::health::RiseFall;
use crate::net::{Link, Netlink};
use crate::vrrp::io::{self, Control, RouterConfig, Status};
use crate::vrrp::machine::Params;
use crate::vrrp::packet::{Auth, Version};
use crate::vrrp::track::{script_effect, Effect, Tracking};

/// A tracked source changed: (source name, its effect now).
pub type TrackEvent = (String, Effect);

/// A running virtual router and its tracking.
pub struct Election {
    control: mpsc::Sender<Control>,
    /// Router status, updated on every change.
    pub status: watch::Receiver<Status>,
    tracking: Tracking,
    probes: Vec<tokio::task::JoinHandle<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts VRRP for `cfg` (which has a `[vrrp]` section) on `link`;
    /// tracking events arrive on the returned receiver and must be fed back
    /// through [`Election::track`].
    pub async fn start(
        cfg: &Config,
        link: &Link,
        netlink: &Netlink,
    ) -> Result<(Self, mpsc::Receiver<TrackEvent>), io::IoError> {
        let Some(v) = cfg.vrrp() else {
            return Err(io::IoError::NoAddress("no [vrrp] section".into()));
        };
        let vips = vip_addresses(cfg);
        let primary = match v.source {
            Some(a) => a,
            None => netlink
                .addresses(link.index)
                .await?
                .into_iter()
                .map(|(a, _)| a)
                .find(|a| !vips.contains(a))
                .ok_or_else(|| io::IoError::NoAddress(link.name.clone()))?,
        };
        let version = if v.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let router = RouterConfig {
            version,
            vrid: v.router_id,
            priority: v.priority,
            params: Params {
                advert_interval: Duration::from_millis(v.advert_interval_ms as u64),
                preempt: v.preempt,
                preempt_delay: Duration::from_millis(v.preempt_delay_ms as u64),
                primary,
                garp_refresh: Duration::from_millis(v.garp_refresh_ms as u64),
            },
            unicast_peers: v.unicast_peers.clone(),
            addresses: vips,
            auth: match (&v.auth_pass, version) {
                (Some(p), Version::V2) => Auth::simple(p.get_ref()),
                _ => Auth::None,
            },
            garp_count: v.garp_count,
            garp_interval: Duration::from_millis(v.garp_interval_ms as u64),
            notify: v.notify.clone(),
        };
        tracing::info!(
            vrid = v.router_id,
            version = v.version,
            priority = v.priority,
            source = %primary,
            mode = if v.unicast_peers.is_empty() { "multicast" } else { "unicast" },
            "starting VRRP"
        );
        let (control, control_rx) = mpsc::channel(16);
        let (status_tx, status) = watch::channel(Status {
            state: crate::vrrp::machine::State::Initialize,
            priority: v.priority,
            master: None,
            primary,
            adverts_sent: 0,
            adverts_received: 0,
            rejected: Default::default(),
            transitions: 0,
            became_master: 0,
        });
        let (track_tx, track_rx) = mpsc::channel(64);
        let task = {
            let link = link.clone();
            let netlink = netlink.clone();
            tokio::spawn(async move {
                if let Err(e) = io::run(router, link, netlink, control_rx, status_tx).await {
                    tracing::error!("VRRP stopped: {e}");
                }
            })
        };
        let mut probes = Vec::new();
        for name in &v.track_interfaces {
            probes.push(tokio::spawn(watch_interface(
                netlink.clone(),
                name.clone(),
                track_tx.clone(),
            )));
        }
        if v.track_dataplane {
            probes.push(tokio::spawn(watch_dataplane(
                netlink.clone(),
                link.name.clone(),
                track_tx.clone(),
            )));
        }
        for s in &v.track_scripts {
            probes.push(tokio::spawn(run_script(s.clone(), track_tx.clone())));
        }
        Ok((
            Self {
                control,
                status,
                tracking: Tracking::new(v.priority),
                probes,
                task,
            },
            track_rx,
        ))
    }

    /// Applies a tracking event, telling the router when its priority or
    /// fault state changes.
    pub async fn track(&mut self, (source, effect): TrackEvent) {
        let fault_before = self.tracking.fault();
        if !self.tracking.set(&source, effect) {
            return;
        }
        tracing::info!(
            %source,
            ?effect,
            priority = self.tracking.priority(),
            fault = self.tracking.fault(),
            "VRRP tracking changed"
        );
        let _ = self
            .control
            .send(Control::Priority(self.tracking.priority()))
            .await;
        if self.tracking.fault() != fault_before {
            let _ = self
                .control
                .send(Control::Fault(self.tracking.fault()))
                .await;
        }
    }

    /// The tracking state.
    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// Gives up mastership (priority 0), removes the VIPs and stops.
    pub async fn shutdown(self) {
        for p in &self.probes {
            p.abort();
        }
        let active: Vec<String> = self
            .tracking()
            .active()
            .map(|(s, e)| format!("{s}={e:?}"))
            .collect();
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        let st = self.status.borrow().clone();
        let rejected: Vec<String> = st
            .rejected
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let rejected = if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(",")
        };
        tracing::info!(
            adverts_sent = st.adverts_sent,
            adverts_received = st.adverts_received,
            %rejected,
            transitions = st.transitions,
            became_master = st.became_master,
            tracking = %active.join(","),
            "VRRP stopped"
        );
    }
}

/// Every VIP address in `cfg`, once, in order of appearance.
pub fn vip_addresses(cfg: &Config) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for v in cfg.vips() {
        if !out.contains(&v.address) {
            out.push(v.address);
        }
    }
    out
}

/// Link up/down of a tracked interface: down (or gone) is a FAULT.
async fn watch_interface(netlink: Netlink, name: String, tx: mpsc::Sender<TrackEvent>) {
    let source = format!("interface:{name}");
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let up = netlink.link(&name).await.map(|l| l.up).unwrap_or(false);
        if last != Some(up) {
            last = Some(up);
            let effect = if up { Effect::None } else { Effect::Fault };
            if tx.send((source.clone(), effect)).await.is_err() {
                return;
            }
        }
    }
}

/// The data plane being attached: no XDP program on the interface is a FAULT.
async fn watch_dataplane(netlink: Netlink, name: String, tx: mpsc::Sender<TrackEvent>) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let attached = netlink
            .link(&name)
            .await
            .map(|l| l.xdp_prog.is_some())
            .unwrap_or(false);
        if last != Some(attached) {
            last = Some(attached);
            let effect = if attached {
                Effect::None
            } else {
                Effect::Fault
            };
            if tx.send(("dataplane".into(), effect)).await.is_err() {
                return;
            }
        }
    }
}

/// A keepalived-style `vrrp_script`: run every interval, rise/fall applied.
async fn run_script(s: TrackScript, tx: mpsc::Sender<TrackEvent>) {
    let source = format!("script:{}", s.name);
    let mut state = RiseFall::new(s.rise, s.fall, true);
    let mut tick = tokio::time::interval(Duration::from_millis(s.interval_ms as u64));
    let timeout = Duration::from_millis(s.timeout_ms as u64);
    // Announce the initial state.
    if tx
        .send((source.clone(), script_effect(s.weight, true)))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tick.tick().await;
        let ok = match tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&s.script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(mut child) => matches!(
                tokio::time::timeout(timeout, child.wait()).await,
                Ok(Ok(st)) if st.success()
            ),
            Err(e) => {
                tracing::warn!(script = %s.name, "cannot run tracked script: {e}");
                false
            }
        };
        if let Some(up) = state.record(ok) {
            tracing::info!(script = %s.name, ok = up, "tracked script changed state");
            if tx
                .send((source.clone(), script_effect(s.weight, up)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
