//! The agent's side of the BGP scale-out mode: the announce device and the
//! gate, fed with the agent's facts (health, weights, the data plane, the
//! operator's drain, shutdown), every change logged with its reason; and a
//! task of its own that reads the routing daemon's sessions for the status.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::supervise::Supervised;
use crate::announce::bird::{self, Protocol};
use crate::announce::device::{Device, DeviceError};
use crate::announce::gate::{Facts, Gate, Reason};
use crate::api::model::{Announcement, BgpSession, BgpStatus};
use crate::config::Bgp;
use crate::net::Netlink;

/// Per VIP address, names of services.
type AddressFacts = std::collections::BTreeMap<std::net::IpAddr, Vec<String>>;

/// The daemon's sessions as last read, or why they could not be.
pub type Sessions = Result<Vec<Protocol>, String>;

/// The running announcement.
pub struct Announcing {
    device: Device,
    gate: Gate,
    epoch: Instant,
    /// `[bgp]` as it started (a reload changes it only at a restart).
    pub settings: Bgp,
    /// The operator drained the node.
    pub drained: bool,
    /// Where a drain is kept across restarts.
    drain_file: std::path::PathBuf,
    /// The last table update succeeded.
    in_sync: bool,
    /// Announcements and withdrawals so far.
    changes: u64,
    /// The agent is stopping.
    pub stopping: bool,
    /// The XDP program was attached at the last look.
    pub dataplane: bool,
    /// Id of the XDP program the agent attached or adopted.
    pub program: Option<u32>,
    sessions: Option<watch::Receiver<Sessions>>,
}

impl Announcing {
    /// Creates the announce device (nothing announced yet) and, with
    /// `[bgp] bird_socket`, the task that reads the daemon's sessions.
    pub async fn start(
        bgp: &Bgp,
        node: &str,
        netlink: &Netlink,
        tasks: &mut Supervised,
    ) -> Result<Self, DeviceError> {
        let device =
            Device::create(netlink, bgp.device.get_ref(), bgp.table, bgp.route_protocol).await?;
        tracing::info!(
            device = device.name(),
            table = bgp.table,
            protocol = bgp.route_protocol,
            "announce device up: the routing daemon exports what this table holds"
        );
        let sessions = bgp.bird_socket.clone().map(|path| {
            let (tx, rx) = watch::channel(Err("not read yet".to_string()));
            tasks.spawn("the routing daemon's sessions".to_string(), async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.is_closed() {
                        return Ok(());
                    }
                    let r = bird::protocols(&path).await.map_err(|e| e.to_string());
                    tx.send_if_modified(|s| {
                        let changed = *s != r;
                        if changed {
                            if let Err(e) = &r {
                                tracing::warn!("routing daemon: {e}");
                            }
                            *s = r.clone();
                        }
                        changed
                    });
                }
            });
            rx
        });
        let drain_file = bgp.state_dir.join(format!("{node}.drained"));
        let drained = drain_file.exists();
        if drained {
            tracing::warn!(
                file = %drain_file.display(),
                "the node was drained before this agent started and stays drained: \
                 `halb node enable` announces again"
            );
        }
        Ok(Self {
            device,
            gate: Gate::new(Duration::from_millis(bgp.hold_down_ms)),
            epoch: Instant::now(),
            settings: bgp.clone(),
            drain_file,
            in_sync: true,
            changes: 0,
            drained,
            stopping: false,
            dataplane: true,
            program: None,
            sessions,
        })
    }

    /// Applies the facts now: every change is logged with its reason, and
    /// the table made to hold exactly what the gate announces.
    pub async fn update(&mut self, (addresses, pending): (AddressFacts, AddressFacts)) {
        let facts = Facts {
            dataplane: self.dataplane,
            drained: self.drained,
            stopping: self.stopping,
            addresses,
            pending,
        };
        for c in self.gate.update(self.epoch.elapsed(), &facts) {
            self.changes += 1;
            let reason = c.reason.describe();
            if c.announce {
                tracing::info!(address = %c.addr, %reason, "announcing VIP");
            } else {
                tracing::warn!(address = %c.addr, %reason, "withdrawing VIP");
            }
        }
        let wanted: BTreeSet<_> = self.gate.announced().into_iter().collect();
        match self.device.set(&wanted).await {
            Ok((added, deleted)) => {
                if !added.is_empty() || !deleted.is_empty() {
                    tracing::debug!(?added, ?deleted, "announce table updated");
                }
                self.in_sync = true;
            }
            Err(e) => {
                tracing::error!("announce table: {e}");
                self.in_sync = false;
            }
        }
    }

    /// Drains (or enables) the node, and keeps that across agent restarts;
    /// when it cannot be kept, nothing changes.
    pub fn set_drained(&mut self, drain: bool) -> Result<(), String> {
        let f = &self.drain_file;
        let r = if drain {
            f.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(f, "drained by `halb node drain`\n"))
        } else {
            match std::fs::remove_file(f) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        r.map_err(|e| format!("cannot keep the drain in {}: {e}", f.display()))?;
        self.drained = drain;
        Ok(())
    }

    /// When a hold-down ends next, as a timer instant.
    pub fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let t = self.gate.next_deadline()?;
        let left = t.saturating_sub(self.epoch.elapsed());
        Some(tokio::time::Instant::now() + left + Duration::from_millis(1))
    }

    /// Withdraws everything at once by removing the device (the kernel
    /// deletes its routes): for a stop whose table update failed.
    pub fn withdraw_by_closing(self) {
        tracing::warn!(device = self.device.name(), "removing the announce device");
        drop(self);
    }

    /// The table holds exactly what the gate announces (as last written).
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// The addresses announced now.
    pub fn announced(&self) -> Vec<std::net::IpAddr> {
        self.gate.announced()
    }

    /// The status document's `bgp`.
    pub fn status(&self) -> BgpStatus {
        let now = self.epoch.elapsed();
        let announcements = self
            .gate
            .entries()
            .map(|(a, e)| Announcement {
                address: a.to_string(),
                announced: e.announced,
                reason: match &e.reason {
                    Reason::HoldDown(t) => format!(
                        "hold-down after a withdrawal ({:.1} s left)",
                        t.saturating_sub(now).as_secs_f64()
                    ),
                    r => r.describe(),
                },
                since_s: now.saturating_sub(e.since).as_secs_f64(),
            })
            .collect();
        let (sessions, daemon_error) = match self.sessions.as_ref().map(|r| r.borrow().clone()) {
            None => (Vec::new(), None),
            Some(Ok(p)) => (
                p.into_iter()
                    .filter(|p| p.proto == "BGP" || p.proto == "BFD")
                    .map(|p| BgpSession {
                        established: p.proto == "BGP" && p.info.starts_with("Established"),
                        name: p.name,
                        kind: p.proto,
                        state: p.state,
                        info: p.info,
                    })
                    .collect(),
                None,
            ),
            Some(Err(e)) => (Vec::new(), Some(e)),
        };
        BgpStatus {
            drained: self.drained,
            dataplane_attached: self.dataplane,
            device: self.device.name().to_string(),
            table: self.settings.table,
            announcements,
            sessions,
            daemon_error,
            table_in_sync: self.in_sync,
            changes: self.changes,
        }
    }
}
