// The scenarios of `tests.rs`, included once per address family (A and B
// are the two nodes' primary addresses, A < B; `spoofed(n)` the n-th of
// many other sources).

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn params(primary: IpAddr) -> Params {
    Params {
        advert_interval: ms(100),
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary,
        garp_refresh: Duration::ZERO,
    }
}

/// A machine and a virtual clock; every action is logged with its time.
struct Sim {
    m: Machine,
    now: Duration,
    log: Vec<(Duration, Action)>,
}

impl Sim {
    fn new(p: Params, prio: u8) -> Self {
        Self {
            m: Machine::new(p, prio),
            now: Duration::ZERO,
            log: Vec::new(),
        }
    }

    /// Advances to `t`, firing timers on the way, then applies `input`.
    fn at(&mut self, t: Duration, input: Input) -> Vec<Action> {
        self.until(t);
        let out = self.m.handle(t, input);
        self.log.extend(out.iter().map(|a| (t, *a)));
        out
    }

    fn until(&mut self, t: Duration) {
        while let Some(d) = self.m.next_deadline() {
            if d > t {
                break;
            }
            self.now = d;
            let out = self.m.poll(d);
            self.log.extend(out.iter().map(|a| (d, *a)));
        }
        self.now = t;
    }

    fn first(&self, want: Action) -> Option<Duration> {
        self.log.iter().find(|(_, a)| *a == want).map(|(t, _)| *t)
    }

    fn advert(&mut self, t: Duration, src: IpAddr, priority: u8) -> Vec<Action> {
        self.at(
            t,
            Input::Advert {
                src,
                priority,
                interval: ms(100),
            },
        )
    }
}

#[test]
fn owner_starts_as_master_at_once() {
    let mut s = Sim::new(params(A), 255);
    let out = s.at(ms(0), Input::Startup);
    assert_eq!(
        out,
        [
            Action::Send { priority: 255 },
            Action::AddAddresses,
            Action::Garp,
            Action::Notify(State::Master)
        ]
    );
    // Adverts every interval afterwards.
    s.until(ms(1000));
    let sends = s
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send { .. }))
        .count();
    assert_eq!(sends, 11);
}

#[test]
fn backup_takes_over_after_master_down_interval() {
    // Priority 100, 100 ms: skew = 100 × 156/256 ms = 60.9375 ms; MDI = 360.9375 ms.
    let mut s = Sim::new(params(A), 100);
    assert_eq!(s.at(ms(0), Input::Startup), [Action::Notify(State::Backup)]);
    assert_eq!(
        s.m.master_down_interval(),
        Duration::from_micros(360_937) + Duration::from_nanos(500)
    );
    // A master advertises every 100 ms for 5 s: we stay backup.
    for i in 0..50 {
        s.advert(ms(i * 100), B, 150);
    }
    assert_eq!(s.m.state(), State::Backup);
    assert_eq!(s.m.master(), Some(B));
    // It dies after its advert at 4.9 s: we take over exactly MDI later.
    s.until(ms(6000));
    let t = s.first(Action::AddAddresses).expect("took over");
    assert_eq!(t, ms(4900) + s.m.master_down_interval());
    assert_eq!(s.m.state(), State::Master);
}

#[test]
fn priority_zero_hands_over_after_skew_only() {
    let mut s = Sim::new(params(A), 200);
    s.at(ms(0), Input::Startup);
    s.advert(ms(100), B, 250);
    s.advert(ms(150), B, 0);
    s.until(ms(1000));
    let skew = ms(100) * 56 / 256;
    assert_eq!(s.first(Action::AddAddresses), Some(ms(150) + skew));
}

#[test]
fn preempt_and_preempt_delay() {
    // Higher-priority backup hearing a lower master preempts once its timer runs out.
    let mut s = Sim::new(params(A), 200);
    s.at(ms(0), Input::Startup);
    for i in 0..20 {
        s.advert(ms(i * 100), B, 100);
    }
    let took = s.first(Action::AddAddresses).expect("preempted");
    assert_eq!(took, s.m.master_down_interval());

    // With a 1 s delay it keeps listening for 1 s first.
    let mut p = params(A);
    p.preempt_delay = ms(1000);
    let mut s = Sim::new(p, 200);
    s.at(ms(0), Input::Startup);
    for i in 0..40 {
        s.advert(ms(i * 100), B, 100);
    }
    let took = s
        .first(Action::AddAddresses)
        .expect("preempted after the delay");
    assert!(took >= ms(1000), "{took:?}");
    assert!(took <= ms(1000) + s.m.master_down_interval(), "{took:?}");
}

#[test]
fn nopreempt_never_takes_over_from_a_live_master() {
    let mut p = params(A);
    p.preempt = false;
    let mut s = Sim::new(p, 200);
    s.at(ms(0), Input::Startup);
    for i in 0..100 {
        s.advert(ms(i * 100), B, 100);
    }
    assert_eq!(s.m.state(), State::Backup);
    assert_eq!(s.first(Action::AddAddresses), None);
    // But it does take over when that master dies.
    s.until(ms(11_000));
    assert_eq!(s.m.state(), State::Master);
}

#[test]
fn equal_priority_goes_to_the_higher_address() {
    // We are .2, master; an equal-priority advert from .3 wins.
    let mut s = Sim::new(params(A), 100);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    assert_eq!(s.m.state(), State::Master);
    let out = s.advert(ms(550), B, 100);
    assert_eq!(
        out,
        [Action::RemoveAddresses, Action::Notify(State::Backup)]
    );
    // We are .3; an equal-priority advert from .2 loses and is answered.
    let mut s = Sim::new(params(B), 100);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    let out = s.advert(ms(550), A, 100);
    assert_eq!(out, [Action::Send { priority: 100 }, Action::Garp]);
    assert_eq!(s.m.state(), State::Master);
}

#[test]
fn split_brain_heals_with_advert_and_garp() {
    let mut s = Sim::new(params(A), 200);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    // A lower-priority master appears (a partition healed).
    let out = s.advert(ms(510), B, 100);
    assert_eq!(out, [Action::Send { priority: 200 }, Action::Garp]);
    assert_eq!(s.m.state(), State::Master);
    // The other side, hearing us, steps down.
    let mut other = Sim::new(params(B), 100);
    other.at(ms(0), Input::Startup);
    other.until(ms(500));
    assert_eq!(other.m.state(), State::Master);
    let out = other.advert(ms(511), A, 200);
    assert_eq!(
        out,
        [Action::RemoveAddresses, Action::Notify(State::Backup)]
    );
}

#[test]
fn spoofed_lower_adverts_get_one_answer_per_interval() {
    let mut s = Sim::new(params(A), 200);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    assert_eq!(s.m.state(), State::Master);
    s.log.clear();
    // 10,000 lower-priority adverts in one second from one source (100 µs apart).
    for i in 0..10_000u64 {
        s.advert(Duration::from_micros(500_000 + i * 100), B, 100);
    }
    s.until(ms(1500));
    let garps = s.log.iter().filter(|(_, a)| *a == Action::Garp).count();
    let sends = s
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send { .. }))
        .count();
    // One answer per 100 ms interval (10) plus the regular adverts (10).
    assert!(garps <= 11, "{garps} gratuitous ARP bursts");
    assert!(sends <= 22, "{sends} adverts");
    assert!(garps >= 9, "still answers: {garps}");
    // From many spoofed sources: bounded by the remembered set.
    s.log.clear();
    for i in 0..10_000u64 {
        let src = spoofed(i % 1000);
        s.advert(Duration::from_micros(1_600_000 + i * 100), src, 100);
    }
    let garps = s.log.iter().filter(|(_, a)| *a == Action::Garp).count();
    assert!(
        garps <= ANSWERED_PEERS * 11,
        "{garps} answers to 10,000 spoofed adverts"
    );
    assert_eq!(s.m.state(), State::Master);
}

#[test]
fn shutdown_sends_priority_zero() {
    let mut s = Sim::new(params(A), 150);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    let out = s.at(ms(600), Input::Shutdown);
    assert_eq!(out, [Action::Send { priority: 0 }, Action::RemoveAddresses]);
    assert_eq!(s.m.state(), State::Initialize);
    assert_eq!(s.m.next_deadline(), None);
}

#[test]
fn fault_gives_up_and_recovery_rejoins() {
    let mut s = Sim::new(params(A), 150);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    let out = s.at(ms(600), Input::Fault(true));
    assert_eq!(
        out,
        [
            Action::Send { priority: 0 },
            Action::RemoveAddresses,
            Action::Notify(State::Fault)
        ]
    );
    // Adverts are ignored while faulted; no timers run.
    assert!(s.advert(ms(700), B, 100).is_empty());
    assert_eq!(s.m.next_deadline(), None);
    let out = s.at(ms(800), Input::Fault(false));
    assert_eq!(out, [Action::Notify(State::Backup)]);
    s.until(ms(2000));
    assert_eq!(s.m.state(), State::Master);
    // A fault before start-up: start-up lands in FAULT.
    let mut s = Sim::new(params(A), 150);
    s.at(ms(0), Input::Fault(true));
    assert_eq!(s.at(ms(1), Input::Startup), [Action::Notify(State::Fault)]);
}

#[test]
fn backup_adopts_the_masters_interval() {
    let mut s = Sim::new(params(A), 100);
    s.at(ms(0), Input::Startup);
    s.at(
        ms(10),
        Input::Advert {
            src: B,
            priority: 200,
            interval: ms(1000),
        },
    );
    assert_eq!(s.m.master_adver_interval(), ms(1000));
    s.until(ms(20_000));
    let t = s.first(Action::AddAddresses).expect("took over");
    assert_eq!(t, ms(10) + ms(3000) + ms(1000) * 156 / 256);
}

#[test]
fn lowered_priority_is_advertised_at_once() {
    let mut s = Sim::new(params(A), 150);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    assert_eq!(
        s.at(ms(520), Input::Priority(90)),
        [Action::Send { priority: 90 }]
    );
    assert_eq!(s.m.priority(), 90);
}

#[test]
fn garp_refresh_while_master() {
    let mut p = params(A);
    p.garp_refresh = ms(1000);
    let mut s = Sim::new(p, 255);
    s.at(ms(0), Input::Startup);
    s.until(ms(3500));
    let garps: Vec<Duration> = s
        .log
        .iter()
        .filter(|(_, a)| *a == Action::Garp)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(garps, [ms(0), ms(1000), ms(2000), ms(3000)]);
}

/// Two machines on a simulated link, driven by a random sequence of
/// crashes, restarts, priority changes and partitions. After every quiet
/// period longer than the master-down interval, with both alive and
/// connected, exactly one is master, and with preempt it is the one with
/// the higher priority (on equal priorities a live master stays, as the
/// RFC has it: the address tie-break applies only between two masters).
#[test]
fn two_nodes_always_settle_on_one_master() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for scenario in 0..2000 {
        let preempt = scenario % 3 != 0;
        let mk = |addr| Params {
            preempt,
            ..params(addr)
        };
        let mut nodes = [Machine::new(mk(A), 150), Machine::new(mk(B), 100)];
        let addrs = [A, B];
        let mut alive = [true, true];
        let mut connected = true;
        let mut now = Duration::ZERO;
        for n in &mut nodes {
            let _ = n.handle(now, Input::Startup);
        }
        // In-flight adverts: (deliver_at, to, src, priority).
        let mut wire: Vec<(Duration, usize, IpAddr, u8)> = Vec::new();
        for _step in 0..12 {
            // A random event...
            let who = (next() % 2) as usize;
            match next() % 5 {
                0 => {
                    alive[who] = false; // crash: silent
                    nodes[who] = Machine::new(mk(addrs[who]), nodes[who].priority());
                }
                1 if !alive[who] => {
                    alive[who] = true;
                    let _ = nodes[who].handle(now, Input::Startup);
                }
                2 => {
                    let p = 1 + (next() % 254) as u8;
                    let _ = nodes[who].handle(now, Input::Priority(p));
                }
                3 => connected = !connected,
                _ => {}
            }
            // ...then 2 s of protocol.
            let end = now + ms(2000);
            loop {
                let t_timer = nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| alive[*i])
                    .filter_map(|(_, n)| n.next_deadline())
                    .min();
                let t_wire = wire.iter().map(|w| w.0).min();
                let t = match (t_timer, t_wire) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => match a.or(b) {
                        Some(t) => t,
                        None => break,
                    },
                };
                if t > end {
                    break;
                }
                now = t;
                let mut outs: Vec<(usize, Action)> = Vec::new();
                let due: Vec<_> = wire.iter().filter(|w| w.0 <= now).copied().collect();
                wire.retain(|w| w.0 > now);
                for (_, to, src, priority) in due {
                    if alive[to] {
                        let out = nodes[to].handle(
                            now,
                            Input::Advert {
                                src,
                                priority,
                                interval: ms(100),
                            },
                        );
                        outs.extend(out.into_iter().map(|a| (to, a)));
                    }
                }
                for i in 0..2 {
                    if alive[i] {
                        outs.extend(nodes[i].poll(now).into_iter().map(|a| (i, a)));
                    }
                }
                for (from, a) in outs {
                    if let Action::Send { priority } = a {
                        if connected {
                            wire.push((now + ms(1), 1 - from, addrs[from], priority));
                        }
                    }
                }
            }
            now = end;
            if alive == [true, true] && connected {
                let masters: Vec<usize> = (0..2)
                    .filter(|&i| nodes[i].state() == State::Master)
                    .collect();
                assert_eq!(masters.len(), 1, "scenario {scenario}: masters {masters:?}");
                let (p0, p1) = (nodes[0].priority(), nodes[1].priority());
                if preempt && p0 != p1 {
                    let want = if p0 > p1 { 0 } else { 1 };
                    assert_eq!(
                        masters[0], want,
                        "scenario {scenario}: priorities {p0}/{p1}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_restarted_backup_drops_its_addresses_when_it_hears_a_master() {
    // Restarted after a crash, lower priority: the first advert of the
    // master it accepts takes any address it left off.
    let mut s = Sim::new(params(A), 100);
    assert_eq!(s.at(ms(0), Input::Startup), [Action::Notify(State::Backup)]);
    assert_eq!(s.advert(ms(30), B, 150), [Action::RemoveAddresses]);
    assert!(s.advert(ms(130), B, 150).is_empty(), "once");
    // A FAULT before any advert also clears them.
    let mut s = Sim::new(params(A), 100);
    s.at(ms(0), Input::Startup);
    assert_eq!(
        s.at(ms(10), Input::Fault(true)),
        [Action::RemoveAddresses, Action::Notify(State::Fault)]
    );
}

#[test]
fn a_restarted_node_that_becomes_master_never_drops_its_addresses() {
    // Alone (no advert): master after the master-down interval, and the
    // addresses were never taken off in between.
    let mut s = Sim::new(params(A), 100);
    s.at(ms(0), Input::Startup);
    s.until(ms(1000));
    assert_eq!(s.m.state(), State::Master);
    assert!(s.first(Action::RemoveAddresses).is_none(), "{:?}", s.log);
    assert!(s.first(Action::AddAddresses).is_some());
    // Higher and preempting, it hears the lower master and takes over
    // without dropping them either.
    let mut s = Sim::new(params(A), 200);
    s.at(ms(0), Input::Startup);
    assert!(s.advert(ms(20), B, 100).is_empty());
    s.until(ms(1000));
    assert_eq!(s.m.state(), State::Master);
    assert!(s.first(Action::RemoveAddresses).is_none(), "{:?}", s.log);
}

#[test]
fn a_held_router_gives_up_waits_and_goes_when_released() {
    // A master held by its group: priority 0, addresses off, backup.
    let mut s = Sim::new(params(A), 150);
    s.at(ms(0), Input::Startup);
    s.until(ms(500));
    assert_eq!(s.m.state(), State::Master);
    assert_eq!(
        s.at(ms(600), Input::Hold(true)),
        [
            Action::Send { priority: 0 },
            Action::RemoveAddresses,
            Action::Notify(State::Backup)
        ]
    );
    // No master appears: when its timer runs out it wants, but waits.
    s.log.clear();
    s.until(ms(2000));
    assert_eq!(s.m.state(), State::Backup);
    assert!(s.m.wants_master());
    assert!(s.first(Action::AddAddresses).is_none(), "{:?}", s.log);
    // Let go: master at once.
    let out = s.at(ms(2100), Input::Hold(false));
    assert!(out.contains(&Action::AddAddresses), "{out:?}");
    assert_eq!(s.m.state(), State::Master);
    assert!(!s.m.wants_master());
    // Held again while a master is heard: it stops wanting.
    let mut b = Sim::new(params(A), 100);
    b.at(ms(0), Input::Startup);
    b.at(ms(10), Input::Hold(true));
    b.until(ms(1000));
    assert!(b.m.wants_master());
    b.advert(ms(1010), B, 200);
    assert!(!b.m.wants_master(), "a live master ends the wish");
    assert!(b.at(ms(1020), Input::Hold(false)).is_empty());
    assert_eq!(b.m.state(), State::Backup);
}

/// Two nodes, two instances each (one VRID per instance): adverts of an
/// instance reach only the other node's router of that instance.
struct Pair {
    /// [node][instance]
    m: [[Machine; 2]; 2],
    up: [bool; 2],
    now: Duration,
}

impl Pair {
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        for inst in 0..2 {
            for node in 0..2 {
                if !self.up[node] {
                    continue;
                }
                let out = self.m[node][inst].poll(self.now);
                self.deliver(node, inst, &out);
            }
        }
    }

    fn deliver(&mut self, from: usize, inst: usize, out: &[Action]) {
        let to = 1 - from;
        let src = if from == 0 { A } else { B };
        for a in out {
            if let Action::Send { priority } = a {
                if self.up[to] {
                    let interval = self.m[from][inst].master_adver_interval();
                    let back = self.m[to][inst].handle(
                        self.now,
                        Input::Advert {
                            src,
                            priority: *priority,
                            interval,
                        },
                    );
                    self.deliver(to, inst, &back);
                }
            }
        }
    }

    fn states(&self) -> [[State; 2]; 2] {
        [
            [self.m[0][0].state(), self.m[0][1].state()],
            [self.m[1][0].state(), self.m[1][1].state()],
        ]
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(ms(5));
        }
    }
}

#[test]
fn two_instances_per_node_elect_independently() {
    let p = |primary, interval: u64, preempt| Params {
        advert_interval: ms(interval),
        preempt,
        ..params(primary)
    };
    // Instance 0: 100 ms adverts, preempt, node A higher.
    // Instance 1: 300 ms adverts, nopreempt, node B higher.
    let mut n = Pair {
        m: [
            [
                Machine::new(p(A, 100, true), 150),
                Machine::new(p(A, 300, false), 100),
            ],
            [
                Machine::new(p(B, 100, true), 100),
                Machine::new(p(B, 300, false), 150),
            ],
        ],
        up: [true, false],
        now: Duration::ZERO,
    };
    use State::*;
    for i in 0..2 {
        let out = n.m[0][i].handle(n.now, Input::Startup);
        n.deliver(0, i, &out);
    }
    n.run(ms(2000));
    assert_eq!(n.states()[0], [Master, Master], "A alone masters both");
    // B starts: instance 0 stays with A (higher); instance 1 stays with A
    // too, since B's higher router does not preempt.
    n.up[1] = true;
    for i in 0..2 {
        let out = n.m[1][i].handle(n.now, Input::Startup);
        n.deliver(1, i, &out);
    }
    n.run(ms(3000));
    assert_eq!(n.states(), [[Master, Master], [Backup, Backup]]);
    // A dies: B takes both (instance 0 within 3 × 100 ms + skew).
    n.up[0] = false;
    n.run(ms(450));
    assert_eq!(n.states()[1][0], Master, "fast instance taken over");
    assert_eq!(
        n.states()[1][1],
        Backup,
        "slow instance not yet (3 × 300 ms)"
    );
    n.run(ms(1000));
    assert_eq!(n.states()[1], [Master, Master]);
    // A returns: it preempts instance 0 back; instance 1 stays with B.
    n.up[0] = true;
    for i in 0..2 {
        n.m[0][i] = Machine::new(
            if i == 0 {
                p(A, 100, true)
            } else {
                p(A, 300, false)
            },
            if i == 0 { 150 } else { 100 },
        );
        let out = n.m[0][i].handle(n.now, Input::Startup);
        n.deliver(0, i, &out);
    }
    n.run(ms(3000));
    assert_eq!(n.states(), [[Master, Backup], [Backup, Master]]);
}

/// Node A masters both instances (150 against B's 100); VIP "web2", owned
/// by instance 1, loses its last healthy backend. The tracking of each
/// instance (as the agent feeds it, `track_backends_weight = -60`) lowers
/// only instance 1: B takes it over, instance 0 stays with A; when the
/// backend is back, A preempts instance 1 back.
#[test]
fn a_vip_without_backends_lowers_only_the_instance_that_owns_it() {
    use crate::vrrp::track::{backends_effect, Tracking};
    use State::*;
    let owned = [vec!["web"], vec!["web2"]];
    let mut n = Pair {
        m: [
            [Machine::new(params(A), 150), Machine::new(params(A), 150)],
            [Machine::new(params(B), 100), Machine::new(params(B), 100)],
        ],
        up: [true, true],
        now: Duration::ZERO,
    };
    let mut tracking = [Tracking::new(150), Tracking::new(150)];
    for node in 0..2 {
        for i in 0..2 {
            let out = n.m[node][i].handle(n.now, Input::Startup);
            n.deliver(node, i, &out);
        }
    }
    n.run(ms(2000));
    assert_eq!(n.states(), [[Master, Master], [Backup, Backup]]);
    let mut health = |n: &mut Pair, empty: &[&str]| {
        for i in 0..2 {
            if tracking[i].set("backends", backends_effect(&owned[i], empty, -60)) {
                let out = n.m[0][i].handle(n.now, Input::Priority(tracking[i].priority()));
                n.deliver(0, i, &out);
            }
        }
    };
    health(&mut n, &["web2"]);
    assert_eq!(n.m[0][0].priority(), 150, "instance 0 untouched");
    assert_eq!(n.m[0][1].priority(), 90);
    n.run(ms(1000));
    assert_eq!(
        n.states(),
        [[Master, Backup], [Backup, Master]],
        "B took instance 1 only"
    );
    health(&mut n, &[]);
    n.run(ms(1000));
    assert_eq!(n.states(), [[Master, Master], [Backup, Backup]]);
}
