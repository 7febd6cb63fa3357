//! The agent's side of VRRP: builds the router from the config, starts it,
//! and runs the tracking probes (interfaces, data plane, scripts) whose
//! results [`Tracking`] combines into a priority or a fault.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::supervise::Supervised;
use crate::config::{Config, TrackScript};
use crate::health::RiseFall;
use crate::net::{Link, Netlink};
use crate::vrrp::io::{self, Control, Router, RouterConfig, Status};
use crate::vrrp::machine::Params;
use crate::vrrp::packet::{Auth, Version};
use crate::vrrp::track::{script_effect, Effect, Tracking};
use crate::watchdog::Beat;

/// A tracked source changed: (source name, its effect now).
pub type TrackEvent = (String, Effect);

/// A running virtual router and its tracking.
pub struct Election {
    control: mpsc::Sender<Control>,
    /// Router status, updated on every change.
    pub status: watch::Receiver<Status>,
    tracking: Tracking,
    probes: Supervised,
    router: Supervised,
    /// The router's timers beat here (the watchdog reads it).
    pub beat: Beat,
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
        let local: Vec<Ipv4Addr> = netlink
            .addresses(link.index)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        let primary = match v.source {
            Some(a) if local.contains(&a) => a,
            Some(a) => {
                return Err(io::IoError::NotLocal {
                    addr: a,
                    iface: link.name.clone(),
                })
            }
            None => local
                .into_iter()
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
        // Sockets now: a missing capability or a failed multicast join stops
        // the start instead of a task that logs and ends.
        let opened = Router::open(router, link.clone())?;
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
            split_brain_answers: 0,
            address_failures: 0,
            address_fault: false,
        });
        let (track_tx, track_rx) = mpsc::channel(64);
        let beat = Beat::new();
        let mut router = Supervised::default();
        {
            let netlink = netlink.clone();
            let beat = beat.clone();
            router.spawn("VRRP", async move {
                opened
                    .run(netlink, control_rx, status_tx, beat)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        let mut probes = Supervised::default();
        for name in &v.track_interfaces {
            probes.spawn(
                format!("interface tracking {name}"),
                watch_interface(netlink.clone(), name.clone(), track_tx.clone()),
            );
        }
        if v.track_dataplane {
            probes.spawn(
                "data plane tracking",
                watch_dataplane(netlink.clone(), link.name.clone(), track_tx.clone()),
            );
        }
        for s in &v.track_scripts {
            let s = s.get_ref().clone();
            probes.spawn(
                format!("track_script {}", s.name),
                run_script(s, track_tx.clone()),
            );
        }
        Ok((
            Self {
                control,
                status,
                tracking: Tracking::new(v.priority),
                probes,
                router,
                beat,
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

    /// A reload changed the VIP addresses.
    pub async fn set_addresses(&self, addrs: Vec<Ipv4Addr>) {
        let _ = self.control.send(Control::Addresses(addrs)).await;
    }

    /// Waits for the router or a tracking probe to end (they must not).
    pub async fn ended(&mut self) -> String {
        tokio::select! {
            e = self.router.ended() => e,
            e = self.probes.ended() => e,
        }
    }

    /// Gives up mastership (priority 0), removes the VIPs and stops.
    pub async fn shutdown(mut self) {
        self.probes.abort_all();
        let active: Vec<String> = self
            .tracking()
            .active()
            .map(|(s, e)| format!("{s}={e:?}"))
            .collect();
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(4), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.router.ended()).await;
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
async fn watch_interface(
    netlink: Netlink,
    name: String,
    tx: mpsc::Sender<TrackEvent>,
) -> Result<(), String> {
    let source = format!("interface:{name}");
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A link that is gone is down; a netlink request that fails or
        // times out says nothing about the link (no failover for it).
        let up = match netlink.link(&name).await {
            Ok(l) => l.up,
            Err(crate::net::NetError::NoSuchLink(_)) => false,
            Err(e) => {
                tracing::debug!(interface = %name, "link state unknown: {e}");
                continue;
            }
        };
        if last != Some(up) {
            last = Some(up);
            let effect = if up { Effect::None } else { Effect::Fault };
            if tx.send((source.clone(), effect)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The data plane being attached: no XDP program on the interface is a FAULT.
async fn watch_dataplane(
    netlink: Netlink,
    name: String,
    tx: mpsc::Sender<TrackEvent>,
) -> Result<(), String> {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let attached = match netlink.link(&name).await {
            Ok(l) => l.xdp_prog.is_some(),
            Err(crate::net::NetError::NoSuchLink(_)) => false,
            Err(e) => {
                tracing::debug!(interface = %name, "XDP state unknown: {e}");
                continue;
            }
        };
        if last != Some(attached) {
            last = Some(attached);
            let effect = if attached {
                Effect::None
            } else {
                Effect::Fault
            };
            if tx.send(("dataplane".into(), effect)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A keepalived-style `vrrp_script`: run every interval, rise/fall applied.
/// A run that overruns `timeout_ms` fails and its process group is killed
/// (see `crate::proc`); missed intervals are not made up for.
async fn run_script(s: TrackScript, tx: mpsc::Sender<TrackEvent>) -> Result<(), String> {
    let source = format!("script:{}", s.name);
    let mut state = RiseFall::new(s.rise, s.fall, true);
    let interval = Duration::from_millis(s.interval_ms as u64);
    let timeout = Duration::from_millis(s.timeout_ms() as u64);
    // Between the end of a run and the next start, at least what the
    // interval leaves beside the timeout: runs never go back to back.
    let gap = interval
        .saturating_sub(timeout)
        .max(Duration::from_millis(1));
    // Announce the initial state.
    if tx
        .send((source.clone(), script_effect(s.weight, true)))
        .await
        .is_err()
    {
        return Ok(());
    }
    loop {
        let start = tokio::time::Instant::now();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&s.script);
        let run = crate::proc::run(cmd, timeout).await;
        if !run.success() {
            tracing::debug!(
                script = %s.name,
                output = %run.output.trim_end(),
                "tracked script: {}",
                run.describe()
            );
        }
        if let Some(up) = state.record(run.success()) {
            if up {
                tracing::info!(script = %s.name, "tracked script succeeds again");
            } else {
                tracing::warn!(
                    script = %s.name,
                    result = %run.describe(),
                    output = %run.output.trim_end(),
                    "tracked script fails"
                );
            }
            if tx
                .send((source.clone(), script_effect(s.weight, up)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        let next = (start + interval).max(tokio::time::Instant::now() + gap);
        tokio::time::sleep_until(next).await;
    }
}
