//! Keeping the virtual addresses on the interface in step with the VRRP
//! state, when netlink fails: sans-IO (wishes, results and the time in;
//! address operations and fault changes out).
//!
//! Every operation that fails is retried with a growing delay (100 ms,
//! doubling, at most 2 s). A master whose addresses cannot be added after
//! [`ADD_TRIES`] tries is not a master clients can reach: the keeper raises a
//! fault, so the machine advertises priority 0 and a peer takes over, and
//! clears it [`FAULT_HOLD`] later to try again. Removals are retried until
//! they succeed (a backup that keeps a VIP duplicates it on the LAN), and
//! counted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Adds that may fail in a row before the keeper raises a fault.
pub const ADD_TRIES: u32 = 3;
/// How long a fault raised by failing adds is held before trying again.
pub const FAULT_HOLD: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// An operation for the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// Put the address on the interface.
    Add(IpAddr),
    /// Take it off.
    Remove(IpAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Present,
    Absent,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    want: Want,
    /// Believed to match `want`.
    done: bool,
    /// An operation is out and not answered yet.
    pending: bool,
    failures: u32,
    retry_at: Option<Duration>,
    /// In the configured set (not only waiting to be taken off).
    member: bool,
}

impl Slot {
    fn new(want: Want) -> Self {
        Slot {
            want,
            done: false,
            pending: false,
            failures: 0,
            retry_at: None,
            member: true,
        }
    }

    /// Wants `want` from now on; returns the operation to send, if one
    /// can go out now.
    fn wish(&mut self, a: IpAddr, want: Want) -> Option<Op> {
        if self.want == want && self.done {
            return None;
        }
        self.want = want;
        self.done = false;
        self.failures = 0;
        self.retry_at = None;
        if self.pending {
            return None;
        }
        self.pending = true;
        Some(op(a, want))
    }
}

/// The keeper (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Keeper {
    slots: BTreeMap<IpAddr, Slot>,
    present: bool,
    fault_until: Option<Duration>,
    /// Operations that failed, in all.
    pub failures: u64,
}

impl Keeper {
    /// A keeper for `addrs`; whether they are on the interface is not known
    /// (a crashed agent may have left them), so the first wish is acted on.
    pub fn new(addrs: &[IpAddr]) -> Self {
        let mut k = Keeper::default();
        for a in addrs {
            k.slots.insert(*a, Slot::new(Want::Absent));
        }
        k
    }

    /// The configured addresses.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.slots
            .iter()
            .filter(|(_, s)| s.member)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Whether failing adds hold a fault now.
    pub fn fault(&self) -> bool {
        self.fault_until.is_some()
    }

    /// The addresses go on (`true`, a master) or off.
    pub fn set_present(&mut self, present: bool) -> Vec<Op> {
        self.present = present;
        let want = if present { Want::Present } else { Want::Absent };
        self.slots
            .iter_mut()
            .filter(|(_, s)| s.member)
            .filter_map(|(a, s)| s.wish(*a, want))
            .collect()
    }

    /// A reload changed the set: new addresses follow the current state,
    /// removed ones are taken off. Returns the operations and the addresses
    /// that are new and go on now (they need gratuitous ARP).
    pub fn set_addresses(&mut self, addrs: &[IpAddr]) -> (Vec<Op>, Vec<IpAddr>) {
        let want = if self.present {
            Want::Present
        } else {
            Want::Absent
        };
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for (a, s) in self.slots.iter_mut() {
            if !addrs.contains(a) {
                s.member = false;
                out.extend(s.wish(*a, Want::Absent));
            }
        }
        for a in addrs {
            let s = self.slots.entry(*a).or_insert_with(|| {
                if want == Want::Present {
                    fresh.push(*a);
                }
                Slot::new(Want::Absent)
            });
            s.member = true;
            out.extend(s.wish(*a, want));
        }
        (out, fresh)
    }

    /// The I/O layer's answer for `o`. Returns a fault change, if any.
    pub fn done(&mut self, o: Op, ok: bool, now: Duration) -> Option<bool> {
        let (addr, want) = match o {
            Op::Add(a) => (a, Want::Present),
            Op::Remove(a) => (a, Want::Absent),
        };
        let s = self.slots.get_mut(&addr)?;
        s.pending = false;
        if s.want != want {
            // The wish changed while it was out: do what is wanted now.
            s.retry_at = Some(now);
            return None;
        }
        if ok {
            s.done = true;
            s.failures = 0;
            s.retry_at = None;
            if !s.member {
                self.slots.remove(&addr);
            }
            return None;
        }
        self.failures += 1;
        s.failures += 1;
        let delay = (FIRST_RETRY * 2u32.saturating_pow(s.failures.min(16) - 1)).min(MAX_RETRY);
        s.retry_at = Some(now + delay);
        if want == Want::Present && s.failures >= ADD_TRIES && self.fault_until.is_none() {
            self.fault_until = Some(now + FAULT_HOLD);
            return Some(true);
        }
        None
    }

    /// Operations due at `now`, and a fault change when the hold ended.
    pub fn poll(&mut self, now: Duration) -> (Vec<Op>, Option<bool>) {
        let mut change = None;
        if self.fault_until.is_some_and(|t| t <= now) {
            self.fault_until = None;
            change = Some(false);
        }
        let mut out = Vec::new();
        for (a, s) in self.slots.iter_mut() {
            if !s.pending && !s.done && s.retry_at.is_some_and(|t| t <= now) {
                s.retry_at = None;
                s.pending = true;
                out.push(op(*a, s.want));
            }
        }
        (out, change)
    }

    /// Some operation is out or waiting for a retry.
    pub fn busy(&self) -> bool {
        self.slots.values().any(|s| s.pending || !s.done)
    }

    /// When [`Keeper::poll`] must run next.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.slots
            .values()
            .filter(|s| !s.pending && !s.done)
            .filter_map(|s| s.retry_at)
            .chain(self.fault_until)
            .min()
    }
}

fn op(a: IpAddr, want: Want) -> Op {
    match want {
        Want::Present => Op::Add(a),
        Want::Absent => Op::Remove(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 100));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 77, 0, 101));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn start_clears_what_a_crashed_agent_left() {
        let mut k = Keeper::new(&[A]);
        assert_eq!(k.set_present(false), [Op::Remove(A)]);
        assert_eq!(k.done(Op::Remove(A), true, ms(0)), None);
        assert_eq!(k.set_present(false), [], "already off");
        assert_eq!(k.set_present(true), [Op::Add(A)]);
    }

    #[test]
    fn failing_adds_are_retried_then_fault_then_clear() {
        let mut k = Keeper::new(&[A]);
        assert_eq!(k.set_present(true), [Op::Add(A)]);
        assert_eq!(k.done(Op::Add(A), false, ms(0)), None);
        assert_eq!(k.next_deadline(), Some(ms(100)));
        assert_eq!(k.poll(ms(50)), (vec![], None), "not yet");
        assert_eq!(k.poll(ms(100)), (vec![Op::Add(A)], None));
        assert_eq!(k.done(Op::Add(A), false, ms(100)), None);
        assert_eq!(k.next_deadline(), Some(ms(300)), "backoff doubles");
        assert_eq!(k.poll(ms(300)), (vec![Op::Add(A)], None));
        // Third failure: fault (the machine gives up mastership).
        assert_eq!(k.done(Op::Add(A), false, ms(300)), Some(true));
        assert!(k.fault());
        // As FAULT, the machine asks for the addresses off.
        assert_eq!(k.set_present(false), [Op::Remove(A)]);
        assert_eq!(k.done(Op::Remove(A), true, ms(310)), None);
        // The hold ends: the fault clears and the machine may try again.
        let (ops, change) = k.poll(ms(300) + FAULT_HOLD);
        assert_eq!((ops, change), (vec![], Some(false)));
        assert!(!k.fault());
        assert_eq!(k.set_present(true), [Op::Add(A)]);
        assert_eq!(k.done(Op::Add(A), true, ms(6000)), None);
        assert_eq!(k.failures, 3);
    }

    #[test]
    fn failing_removals_are_retried_until_done() {
        let mut k = Keeper::new(&[A]);
        k.set_present(true);
        k.done(Op::Add(A), true, ms(0));
        assert_eq!(k.set_present(false), [Op::Remove(A)]);
        let mut now = ms(0);
        for i in 0..10u64 {
            assert_eq!(
                k.done(Op::Remove(A), false, now),
                None,
                "no fault for a removal"
            );
            now = k.next_deadline().expect("a retry is due");
            assert!(now <= ms(i * 2000 + 100_000));
            assert_eq!(k.poll(now).0, [Op::Remove(A)]);
        }
        k.done(Op::Remove(A), true, now);
        assert_eq!(k.next_deadline(), None);
    }

    #[test]
    fn a_wish_that_changes_while_out_is_followed() {
        let mut k = Keeper::new(&[A]);
        assert_eq!(k.set_present(true), [Op::Add(A)]);
        assert_eq!(k.set_present(false), [], "the add is still out");
        assert_eq!(k.done(Op::Add(A), true, ms(5)), None);
        assert_eq!(k.poll(ms(5)).0, [Op::Remove(A)]);
    }

    #[test]
    fn reload_adds_new_addresses_on_a_master_and_removes_gone_ones() {
        let mut k = Keeper::new(&[A]);
        k.set_present(true);
        k.done(Op::Add(A), true, ms(0));
        let (ops, fresh) = k.set_addresses(&[B]);
        assert_eq!(ops, [Op::Remove(A), Op::Add(B)]);
        assert_eq!(fresh, [B]);
        assert_eq!(k.addresses(), [B]);
        k.done(Op::Remove(A), true, ms(1));
        k.done(Op::Add(B), true, ms(1));
        // On a backup, a new address is only made sure to be absent.
        let mut backup = Keeper::new(&[A]);
        backup.set_present(false);
        backup.done(Op::Remove(A), true, ms(0));
        let (ops, fresh) = backup.set_addresses(&[A, B]);
        assert_eq!(ops, [Op::Remove(B)]);
        assert!(fresh.is_empty());
    }
}
