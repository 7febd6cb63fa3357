//! The announcement gate (sans-IO): an address is announced only while the
//! agent runs, its XDP program is attached, the node is not drained or
//! stopping, and every service on the address has a backend that can take
//! new connections. A withdrawal is immediate; after a withdrawal for health
//! or the data plane, the address must hold again for the hold-down before
//! it is announced again, so a flapping backend does not flap the route.
//! An operator's drain and enable take effect at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Why an address is, or is not, announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Every service on it can serve.
    Serving,
    /// These services have no backend that can take a new connection.
    NoHealthyBackend(Vec<String>),
    /// The XDP program is not attached.
    DataplaneDetached,
    /// `halb node drain`.
    Drained,
    /// The agent is stopping.
    Stopping,
    /// Healthy again, waiting out the hold-down until this time.
    HoldDown(Duration),
    /// Its VIPs left the config.
    Removed,
    /// These services have no backend whose check passed yet, but some not
    /// checked yet (after a start or a reload that changed their check): an
    /// address not yet announced waits for them; one announced stays.
    ChecksPending(Vec<String>),
}

impl Reason {
    /// Text for status and logs.
    pub fn describe(&self) -> String {
        match self {
            Reason::Serving => "serving".into(),
            Reason::NoHealthyBackend(v) => format!("no healthy backend ({})", v.join(", ")),
            Reason::DataplaneDetached => "XDP program not attached".into(),
            Reason::Drained => "node drained".into(),
            Reason::Stopping => "agent stopping".into(),
            Reason::HoldDown(_) => "hold-down after a withdrawal".into(),
            Reason::Removed => "removed from the config".into(),
            Reason::ChecksPending(v) => format!("health checks pending ({})", v.join(", ")),
        }
    }
}

/// The facts at one moment.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The XDP program is attached.
    pub dataplane: bool,
    /// The operator drained the node.
    pub drained: bool,
    /// The agent is shutting down.
    pub stopping: bool,
    /// Every VIP address, with the names of its services that cannot serve
    /// (empty: all can).
    pub addresses: BTreeMap<IpAddr, Vec<String>>,
    /// Per address, the services whose backends are not checked yet (none
    /// passed, none failed for good); missing or empty: none.
    pub pending: BTreeMap<IpAddr, Vec<String>>,
}

/// One address's announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Announced now.
    pub announced: bool,
    /// Why.
    pub reason: Reason,
    /// Since when (gate time) it is announced or withdrawn.
    pub since: Duration,
    /// Withdrawn for health or the data plane: the hold-down applies.
    damped: bool,
    /// Since when it has held continuously.
    ok_since: Option<Duration>,
}

/// A change to carry out (and log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The address.
    pub addr: IpAddr,
    /// Announce (true) or withdraw (false).
    pub announce: bool,
    /// Why.
    pub reason: Reason,
}

/// The gate: every address's state.
#[derive(Debug, Clone)]
pub struct Gate {
    hold_down: Duration,
    entries: BTreeMap<IpAddr, Entry>,
}

impl Gate {
    /// A gate with `hold_down`.
    pub fn new(hold_down: Duration) -> Self {
        Self {
            hold_down,
            entries: BTreeMap::new(),
        }
    }

    /// Applies `facts` at `now`; returns what changed. Call again at
    /// [`Gate::next_deadline`] (hold-downs end) and on every new fact.
    pub fn update(&mut self, now: Duration, facts: &Facts) -> Vec<Change> {
        let mut out = Vec::new();
        self.entries.retain(|addr, e| {
            let keep = facts.addresses.contains_key(addr);
            if !keep && e.announced {
                out.push(Change {
                    addr: *addr,
                    announce: false,
                    reason: Reason::Removed,
                });
            }
            keep
        });
        for (addr, unserved) in &facts.addresses {
            let e = self.entries.entry(*addr).or_insert(Entry {
                announced: false,
                reason: Reason::NoHealthyBackend(Vec::new()),
                since: now,
                damped: false,
                ok_since: None,
            });
            let blocker = if facts.stopping {
                Some((Reason::Stopping, false))
            } else if facts.drained {
                Some((Reason::Drained, false))
            } else if !facts.dataplane {
                Some((Reason::DataplaneDetached, true))
            } else if !unserved.is_empty() {
                Some((Reason::NoHealthyBackend(unserved.clone()), true))
            } else {
                None
            };
            match blocker {
                Some((reason, damp)) => {
                    e.ok_since = None;
                    if e.announced {
                        e.announced = false;
                        e.since = now;
                        e.damped = damp;
                        out.push(Change {
                            addr: *addr,
                            announce: false,
                            reason: reason.clone(),
                        });
                    }
                    e.reason = reason;
                }
                None => {
                    let pending = facts.pending.get(addr).filter(|p| !p.is_empty());
                    if let (Some(p), false) = (pending, e.announced) {
                        // Not announced yet: wait for evidence (no damping).
                        e.reason = Reason::ChecksPending(p.clone());
                        continue;
                    }
                    let ok = *e.ok_since.get_or_insert(now);
                    if e.announced {
                        e.reason = Reason::Serving;
                    } else if e.damped && now < ok + self.hold_down {
                        e.reason = Reason::HoldDown(ok + self.hold_down);
                    } else {
                        e.announced = true;
                        e.damped = false;
                        e.since = now;
                        e.reason = Reason::Serving;
                        out.push(Change {
                            addr: *addr,
                            announce: true,
                            reason: Reason::Serving,
                        });
                    }
                }
            }
        }
        out
    }

    /// When a hold-down ends next, if one runs.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.entries
            .values()
            .filter_map(|e| match e.reason {
                Reason::HoldDown(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// The addresses announced now.
    pub fn announced(&self) -> Vec<IpAddr> {
        self.entries
            .iter()
            .filter(|(_, e)| e.announced)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Every address's state.
    pub fn entries(&self) -> impl Iterator<Item = (&IpAddr, &Entry)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 100));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 101));

    fn s(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn facts(unserved_a: &[&str]) -> Facts {
        let mut addresses = BTreeMap::new();
        addresses.insert(A, unserved_a.iter().map(|x| x.to_string()).collect());
        addresses.insert(B, Vec::new());
        Facts {
            dataplane: true,
            addresses,
            ..Facts::default()
        }
    }

    fn changes(c: &[Change]) -> Vec<(IpAddr, bool)> {
        c.iter().map(|c| (c.addr, c.announce)).collect()
    }

    #[test]
    fn announces_serving_addresses_at_once() {
        let mut g = Gate::new(s(3000));
        let c = g.update(s(0), &facts(&["web"]));
        assert_eq!(changes(&c), [(B, true)], "A's service has no backend yet");
        let c = g.update(s(500), &facts(&[]));
        assert_eq!(changes(&c), [(A, true)], "first health: no hold-down");
        assert_eq!(g.announced(), [A, B]);
    }

    #[test]
    fn a_flapping_backend_is_held_down() {
        let mut g = Gate::new(s(3000));
        g.update(s(0), &facts(&[]));
        let c = g.update(s(1000), &facts(&["web"]));
        assert_eq!(changes(&c), [(A, false)], "withdrawn at once");
        assert_eq!(c[0].reason, Reason::NoHealthyBackend(vec!["web".into()]));
        // Back at 1500, down at 2000, back at 2500: no announcement yet.
        assert!(g.update(s(1500), &facts(&[])).is_empty());
        assert!(g.update(s(2000), &facts(&["web"])).is_empty());
        assert!(g.update(s(2500), &facts(&[])).is_empty());
        assert_eq!(g.next_deadline(), Some(s(5500)));
        assert!(g.update(s(5499), &facts(&[])).is_empty());
        let c = g.update(s(5500), &facts(&[]));
        assert_eq!(changes(&c), [(A, true)]);
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn the_data_plane_drain_and_stop_withdraw_everything() {
        let mut g = Gate::new(s(3000));
        g.update(s(0), &facts(&[]));
        let mut f = facts(&[]);
        f.dataplane = false;
        assert_eq!(changes(&g.update(s(10), &f)), [(A, false), (B, false)]);
        // Reattached: held down like a health withdrawal.
        assert!(g.update(s(20), &facts(&[])).is_empty());
        assert_eq!(
            changes(&g.update(s(3020), &facts(&[]))),
            [(A, true), (B, true)]
        );
        // A drain and an enable act at once, without hold-down.
        let mut f = facts(&[]);
        f.drained = true;
        let c = g.update(s(4000), &f);
        assert_eq!(changes(&c), [(A, false), (B, false)]);
        assert_eq!(c[0].reason, Reason::Drained);
        assert_eq!(
            changes(&g.update(s(4001), &facts(&[]))),
            [(A, true), (B, true)]
        );
        let mut f = facts(&[]);
        f.stopping = true;
        assert_eq!(changes(&g.update(s(5000), &f)), [(A, false), (B, false)]);
        assert!(g.announced().is_empty());
    }

    #[test]
    fn pending_checks_hold_a_new_address_back_but_never_withdraw_one() {
        let mut g = Gate::new(s(3000));
        let mut f = facts(&[]);
        f.pending.insert(A, vec!["web".into()]);
        assert_eq!(changes(&g.update(s(0), &f)), [(B, true)]);
        assert_eq!(
            g.entries().next().map(|(_, e)| e.reason.clone()),
            Some(Reason::ChecksPending(vec!["web".into()]))
        );
        // Checked: announced at once, no hold-down.
        assert_eq!(changes(&g.update(s(100), &facts(&[]))), [(A, true)]);
        // A reload resets the check: pending again, still announced.
        assert!(g.update(s(200), &f).is_empty());
        assert_eq!(g.announced(), [A, B]);
    }

    #[test]
    fn a_removed_vip_is_withdrawn() {
        let mut g = Gate::new(s(3000));
        g.update(s(0), &facts(&[]));
        let mut f = facts(&[]);
        f.addresses.remove(&B);
        assert_eq!(changes(&g.update(s(10), &f)), [(B, false)]);
        assert_eq!(g.announced(), [A]);
    }
}
