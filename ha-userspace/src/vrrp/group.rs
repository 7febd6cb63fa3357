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
//!   the wanting ones become master at once: the group comes back together;
//! - a weight one member's tracking applies is applied to every member
//!   ([`shared_effect`]): their priorities move together, so a weighted
//!   script or backend tracking moves the whole group to the peer node.

use super::machine::State;
use super::track::Effect;

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

/// What one member must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Held back by the group.
    pub hold: bool,
    /// In FAULT for the group: some *other* member is in FAULT of its own
    /// (a member's own fault is its own already).
    pub fault: bool,
}

/// The decision for `members`, and the order for each of them. A caller
/// sends each member its order whenever it differs from the last one sent
/// to that member (not when the group's decision changes: a member's own
/// fault changes what the others are told without changing the decision).
pub fn orders(members: &[Member]) -> (Decision, Vec<Order>) {
    let d = decide(members);
    let orders = (0..members.len())
        .map(|i| Order {
            hold: d.hold,
            fault: members
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && m.own_fault),
        })
        .collect();
    (d, orders)
}

/// A tracked source of one member, as every other member of its group
/// applies it: weights are shared (under the member's name), so that every
/// member's priority moves by the same amount and they fail over together
/// (keepalived refuses weights in sync groups for this reason; sharing them
/// keeps them usable). A FAULT is not shared here: the group's FAULT rule
/// carries it.
pub fn shared_effect(member: &str, source: &str, effect: Effect) -> (String, Effect) {
    let shared = match effect {
        Effect::Weight(w) => Effect::Weight(w),
        Effect::None | Effect::Fault => Effect::None,
    };
    (format!("{member}/{source}"), shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::machine::{Action, Input, Machine, Params};
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
            primary: Ipv4Addr::new(10, 77, 0, 2).into(),
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

    /// Two nodes, each running a group of two instances (node 0 at 150,
    /// node 1 at 100), wired the way the agent wires them: adverts of an
    /// instance reach the other node's router of that instance, each node's
    /// group hands out its orders, tracked weights are shared in the group.
    struct TwoNodes {
        m: [[Machine; 2]; 2],
        t: [[crate::vrrp::track::Tracking; 2]; 2],
        sent: [[Option<Order>; 2]; 2],
        now: Duration,
    }

    const NAMES: [&str; 2] = ["VI_1", "VI_2"];

    impl TwoNodes {
        fn new() -> Self {
            let p = |n: u8| Params {
                advert_interval: Duration::from_millis(100),
                preempt: true,
                preempt_delay: Duration::ZERO,
                primary: Ipv4Addr::new(10, 77, 0, 2 + n).into(),
                garp_refresh: Duration::ZERO,
            };
            use crate::vrrp::track::Tracking;
            let mut s = Self {
                m: [
                    [Machine::new(p(0), 150), Machine::new(p(0), 150)],
                    [Machine::new(p(1), 100), Machine::new(p(1), 100)],
                ],
                t: [
                    [Tracking::new(150), Tracking::new(150)],
                    [Tracking::new(100), Tracking::new(100)],
                ],
                sent: [[None; 2]; 2],
                now: Duration::ZERO,
            };
            for n in 0..2 {
                for i in 0..2 {
                    let out = s.m[n][i].handle(s.now, Input::Startup);
                    s.deliver(n, i, &out);
                }
            }
            s
        }

        fn deliver(&mut self, from: usize, inst: usize, out: &[Action]) {
            let to = 1 - from;
            for a in out {
                if let Action::Send { priority } = a {
                    let back = self.m[to][inst].handle(
                        self.now,
                        Input::Advert {
                            src: Ipv4Addr::new(10, 77, 0, 2 + from as u8).into(),
                            priority: *priority,
                            interval: Duration::from_millis(100),
                        },
                    );
                    self.deliver(to, inst, &back);
                }
            }
        }

        fn feed(&mut self, node: usize, inst: usize, input: Input) {
            let out = self.m[node][inst].handle(self.now, input);
            self.deliver(node, inst, &out);
        }

        /// A tracked source of `inst` on `node` changes; its group shares it.
        fn track(&mut self, node: usize, inst: usize, source: &str, effect: Effect) {
            for j in 0..2 {
                let (src, eff) = if j == inst {
                    (source.to_string(), effect)
                } else {
                    shared_effect(NAMES[inst], source, effect)
                };
                if self.t[node][j].set(&src, eff) {
                    let p = self.t[node][j].priority();
                    self.feed(node, j, Input::Priority(p));
                }
            }
        }

        fn group(&mut self, node: usize) {
            let members: Vec<Member> = (0..2)
                .map(|i| Member {
                    state: self.m[node][i].state(),
                    wants: self.m[node][i].wants_master(),
                    own_fault: self.t[node][i].fault(),
                })
                .collect();
            let (_, orders) = orders(&members);
            for (i, o) in orders.into_iter().enumerate() {
                let last = self.sent[node][i];
                if last.map(|l| l.hold) != Some(o.hold) {
                    self.feed(node, i, Input::Hold(o.hold));
                }
                if last.map(|l| l.fault) != Some(o.fault) {
                    let own = self.t[node][i].fault();
                    self.feed(node, i, Input::Fault(own || o.fault));
                }
                self.sent[node][i] = Some(o);
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(10);
                for n in 0..2 {
                    for i in 0..2 {
                        let out = self.m[n][i].poll(self.now);
                        self.deliver(n, i, &out);
                    }
                    self.group(n);
                }
            }
        }

        fn masters(&self) -> [[bool; 2]; 2] {
            let m = |n: usize, i: usize| self.m[n][i].state() == State::Master;
            [[m(0, 0), m(0, 1)], [m(1, 0), m(1, 1)]]
        }
    }

    /// keepalived's usual layout: the group on both nodes, a weighted
    /// script on one member. Its weight drops node 0 below node 1: both
    /// members move to node 1 together, and come back together.
    #[test]
    fn a_weight_on_one_member_moves_the_whole_group() {
        let mut n = TwoNodes::new();
        n.run(Duration::from_secs(2));
        assert_eq!(n.masters(), [[true, true], [false, false]]);
        n.track(0, 1, "script:chk", Effect::Weight(-60));
        assert_eq!(n.t[0][0].priority(), 90, "the weight is shared");
        n.run(Duration::from_secs(2));
        assert_eq!(
            n.masters(),
            [[false, false], [true, true]],
            "the whole group moved"
        );
        n.track(0, 1, "script:chk", Effect::None);
        n.run(Duration::from_secs(2));
        assert_eq!(n.masters(), [[true, true], [false, false]], "and back");
    }

    /// A's own fault puts B in the group's FAULT; then B faults of its own
    /// and A recovers: A must now be told of B's fault (the decision did not
    /// change, the orders did).
    #[test]
    fn orders_follow_each_members_fault() {
        let m = |own_fault| Member {
            state: State::Fault,
            wants: false,
            own_fault,
        };
        let (_, o) = orders(&[m(true), m(false)]);
        assert_eq!((o[0].fault, o[1].fault), (false, true));
        let (_, o) = orders(&[m(true), m(true)]);
        assert_eq!((o[0].fault, o[1].fault), (true, true));
        let (d, o) = orders(&[m(false), m(true)]);
        assert!(d.fault);
        assert_eq!(
            (o[0].fault, o[1].fault),
            (true, false),
            "A hears of B's fault"
        );
    }
}
