//! Backend MAC addresses from the kernel's neighbour table, resolved on a
//! task of its own: the kernel is asked to ARP for missing ones, and waiting
//! for their answers (up to a second, more for a powered-off backend) never
//! holds up the agent's loop. The loop gets a new map whenever it changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::net::Netlink;

/// Backend address → MAC.
pub type Macs = HashMap<IpAddr, [u8; 6]>;

/// How long answers to one round of ARP requests are waited for.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// One resolution round: the table, with the kernel asked to resolve what
/// is missing and its answers awaited up to [`ANSWER_WAIT`]. None when the
/// table could not be read at all: "no answer" is not "no neighbours", and
/// must never take every backend out.
pub async fn resolve(netlink: &Netlink, ifindex: u32, wanted: &[IpAddr]) -> Option<Macs> {
    let mut table = match netlink.neighbours(ifindex).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("neighbour dump failed (backend MACs kept as they were): {e}");
            return None;
        }
    };
    let missing: Vec<IpAddr> = wanted
        .iter()
        .filter(|a| !table.contains_key(a))
        .copied()
        .collect();
    if !missing.is_empty() {
        for a in &missing {
            if let Err(e) = netlink.probe_neighbour(ifindex, *a).await {
                tracing::debug!("probe {a}: {e}");
            }
        }
        let end = tokio::time::Instant::now() + ANSWER_WAIT;
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        while tokio::time::Instant::now() < end {
            poll.tick().await;
            if let Ok(t) = netlink.neighbours(ifindex).await {
                table = t;
            }
            if missing.iter().all(|a| table.contains_key(a)) {
                break;
            }
        }
    }
    Some(
        wanted
            .iter()
            .filter_map(|a| table.get(a).map(|m| (*a, *m)))
            .collect(),
    )
}

/// How soon a round follows one that left a backend without a MAC.
pub const MISSING_RETRY: Duration = Duration::from_secs(1);

/// The resolver task's handles.
pub struct Resolver {
    wanted: watch::Sender<Vec<IpAddr>>,
}

impl Resolver {
    /// Starts resolving `wanted` every `every` (and at once when the wanted
    /// set changes), sending each changed map on `tx`, beginning from `known`.
    pub fn start(
        netlink: Netlink,
        ifindex: u32,
        wanted: Vec<IpAddr>,
        known: Macs,
        every: Duration,
        tx: mpsc::Sender<Macs>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        // What is missing now was reported by the caller already.
        let mut warned: std::collections::HashSet<IpAddr> = wanted
            .iter()
            .filter(|a| !known.contains_key(a))
            .copied()
            .collect();
        let (wtx, mut wrx) = watch::channel(wanted);
        // While a backend has no MAC, ask again sooner than `every`: a node
        // that boots cannot send ND (or ARP) until its own address is
        // usable, and a backend must not wait a whole refresh for that.
        let pace = move |missing: bool| {
            if missing {
                every.min(MISSING_RETRY)
            } else {
                every
            }
        };
        let mut wait = pace(!warned.is_empty());
        let task = tokio::spawn(async move {
            let mut last = known;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = wrx.changed() => if r.is_err() { return },
                }
                let wanted = wrx.borrow_and_update().clone();
                let Some(macs) = resolve(&netlink, ifindex, &wanted).await else {
                    wait = every;
                    continue;
                };
                wait = pace(wanted.iter().any(|a| !macs.contains_key(a)));
                for a in &wanted {
                    if macs.contains_key(a) {
                        warned.remove(a);
                    } else if warned.insert(*a) {
                        tracing::warn!(backend = %a, "no MAC address for backend (no ARP or ND reply); it gets no traffic");
                    }
                }
                if macs != last {
                    last = macs.clone();
                    if tx.send(macs).await.is_err() {
                        return;
                    }
                }
            }
        });
        (Self { wanted: wtx }, task)
    }

    /// The backends to resolve changed (a reload).
    pub fn want(&self, wanted: Vec<IpAddr>) {
        self.wanted.send_if_modified(|w| {
            if *w != wanted {
                *w = wanted;
                true
            } else {
                false
            }
        });
    }
}
