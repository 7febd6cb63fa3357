//! Sync groups (keepalived's `vrrp_sync_group`): instances that change state
//! together. Sans-IO: the members' states in, what each member must be told
//! out.
//!
//! Rules:
//! - a member in FAULT of its own (its tracking, its addresses) puts the whole
//!   group in FAULT; when it recovers, they all start again together;
//! - the group is master only when every member is: while some member has a
//!   live master elsewhere (it is BACKUP and does not want mastership), every
//!   member is held ([`super::machine::Input::Hold`]): a master gives up
//!   (priority 0), a backup whose timer runs out waits, wanting;
//! - when every member is master or wants to be, the hold is released and
//!   the wanting ones become master at once: the group comes back together.

use super::machine::State;

/// What a member reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its state.
    pub state: State,
    /// Held, it would be master now.
    pub wants: bool,
    /// It is in FAULT by its own tracking or addresses (not the group's).
    pub own_fault: bool,
}

/// What the members must be told, and the group's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Hold every member back.
    pub hold: bool,
    /// Put every member in FAULT.
    pub fault: bool,
    /// The group's state (for its notify hook and the status).
    pub state: State,
}

/// The decision for `members` (empty: nothing to do).
pub fn decide(members: &[Member]) -> Decision {
    let fault = members.iter().any(|m| m.own_fault);
    let able = members.iter().all(|m| m.state == State::Master || m.wants);
    let state = if fault {
        State::Fault
    } else if !members.is_empty() && members.iter().all(|m| m.state == State::Master) {
        State::Master
    } else if members.iter().any(|m| m.state == State::Initialize) {
        State::Initialize
    } else {
        State::Backup
    };
    Decision {
        hold: !able,
        fault,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::machine::{Input, Machine, Params};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn m(state: State, wants: bool, own_fault: bool) -> Member {
        Member {
            state,
            wants,
            own_fault,
        }
    }

    #[test]
    fn decisions() {
        use State::*;
        let d = decide(&[m(Master, false, false), m(Master, false, false)]);
        assert_eq!((d.hold, d.fault, d.state), (false, false, Master));
        // One member hears a live master: everyone is held.
        let d = decide(&[m(Master, false, false), m(Backup, false, false)]);
        assert_eq!((d.hold, d.state), (true, Backup));
        // Both would be master: released together.
        let d = decide(&[m(Backup, true, false), m(Backup, true, false)]);
        assert!(!d.hold);
        // A member's own fault: the group is in FAULT.
        let d = decide(&[m(Fault, false, true), m(Master, false, false)]);
        assert_eq!((d.fault, d.state), (true, Fault));
    }

    /// Two instances of one group on one node, run with the decisions fed
    /// back, the way the agent does: a tracked interface of one fails, the
    /// other follows into FAULT; it recovers, they come back together.
    #[test]
    fn members_follow_each_other_through_a_fault() {
        let params = |ms: u64| Params {
            advert_interval: Duration::from_millis(ms),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: Ipv4Addr::new(10, 77, 0, 2),
            garp_refresh: Duration::ZERO,
        };
        // Different priorities and advert intervals: they still move as one.
        let mut a = Machine::new(params(100), 150);
        let mut b = Machine::new(params(200), 100);
        let (mut a_fault, mut fed) = (false, (false, false));
        let mut now = Duration::ZERO;
        let mut states = Vec::new();
        a.handle(now, Input::Startup);
        b.handle(now, Input::Startup);
        for step in 0..400u64 {
            now = Duration::from_millis(step * 10);
            if step == 150 {
                a_fault = true; // a's tracked interface goes down
                a.handle(now, Input::Fault(true));
            }
            if step == 250 {
                a_fault = false;
                a.handle(now, Input::Fault(false));
            }
            a.poll(now);
            b.poll(now);
            let d = decide(&[
                Member {
                    state: a.state(),
                    wants: a.wants_master(),
                    own_fault: a_fault,
                },
                Member {
                    state: b.state(),
                    wants: b.wants_master(),
                    own_fault: false,
                },
            ]);
            if (d.hold, d.fault) != fed {
                // b gets the group fault; both get the hold.
                if d.fault != fed.1 {
                    b.handle(now, Input::Fault(d.fault));
                }
                a.handle(now, Input::Hold(d.hold));
                b.handle(now, Input::Hold(d.hold));
                fed = (d.hold, d.fault);
            }
            states.push((step, a.state(), b.state()));
        }
        let at = |s: u64| states[s as usize];
        assert_eq!(
            (at(140).1, at(140).2),
            (State::Master, State::Master),
            "master together"
        );
        assert_eq!(
            (at(160).1, at(160).2),
            (State::Fault, State::Fault),
            "b follows a into FAULT"
        );
        assert_eq!(
            (at(399).1, at(399).2),
            (State::Master, State::Master),
            "back together"
        );
        // Never one master and the other not, once both came up.
        let split = states
            .iter()
            .skip(100)
            .filter(|(_, x, y)| (*x == State::Master) != (*y == State::Master))
            .count();
        assert!(split <= 1, "{split} steps with a split group");
    }
}
