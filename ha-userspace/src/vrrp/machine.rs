//! The VRRP state machine (RFC 5798 section 6.4, with RFC 3768 timing for
//! v2), sans-IO: inputs and the current time in, actions out. It never
//! touches a socket or a clock; the I/O layer asks [`Machine::next_deadline`]
//! when to call [`Machine::poll`] next.
//!
//! Beyond the RFC, as keepalived does:
//! - a master that hears a lower-priority master answers at once with an
//!   advertisement and gratuitous ARP, so a split brain heals; at most once
//!   per advertisement interval per sender and [`ANSWERED_PEERS`] times per
//!   interval in all, so spoofed adverts cannot turn the master into an
//!   amplifier;
//! - `preempt = false` (nopreempt): a backup never takes over from a live
//!   master, whatever the priorities;
//! - `preempt_delay`: a backup that sees a lower-priority master waits this
//!   long before preempting;
//! - a FAULT state (tracked interface down, tracked script failing): the
//!   node gives up mastership (sending priority 0) and ignores adverts until
//!   the fault clears;
//! - gratuitous ARP refresh while master;
//! - a router that starts (or recovers from FAULT) as backup does not take
//!   the virtual addresses off at once: it may be an agent restarted after
//!   a crash, whose addresses are still there. It removes them when it
//!   hears a master it accepts (within one advert interval when there is
//!   one), or when it goes to FAULT; when it becomes master instead (no
//!   master, or it preempts) it keeps them all along. So a restarted
//!   backup holds no VIP, and a lone node's restart never drops them.

use std::net::IpAddr;
use std::time::Duration;

/// Split-brain answers per advertisement interval, at most (one per
/// sender): a spoofer varying its source address gets no more than this.
pub const ANSWERED_PEERS: usize = 16;

/// Protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running (before start-up, after shutdown).
    Initialize,
    /// Listening to a master.
    Backup,
    /// Owning the addresses and advertising.
    Master,
    /// A tracked condition failed: not participating.
    Fault,
}

impl State {
    /// Name as the notify hook and the API show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start participating.
    Startup,
    /// Stop (gives up mastership with priority 0).
    Shutdown,
    /// An advertisement that passed every packet check.
    Advert {
        /// Sender's primary address.
        src: IpAddr,
        /// Sender's priority.
        priority: u8,
        /// Sender's advertisement interval.
        interval: Duration,
    },
    /// The effective priority changed (tracking).
    Priority(u8),
    /// A tracked condition failed (true) or recovered (false).
    Fault(bool),
    /// A sync group holds this router back (true) or lets it go (false).
    /// Held, a master gives mastership up (priority 0) and a backup whose
    /// master-down timer runs out does not take over but *wants* to
    /// ([`Machine::wants_master`]); let go, a router that wants becomes
    /// master at once.
    Hold(bool),
}

/// What the machine wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    Send {
        /// Priority to advertise (0 when leaving).
        priority: u8,
    },
    /// Put the virtual addresses on the interface.
    AddAddresses,
    /// Take them off.
    RemoveAddresses,
    /// Announce the virtual addresses: gratuitous ARP (IPv4), unsolicited
    /// Neighbor Advertisements (IPv6).
    Garp,
    /// Run the notify hook for the new state.
    Notify(State),
}

/// Static parameters of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Our advertisement interval.
    pub advert_interval: Duration,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// Wait before preempting.
    pub preempt_delay: Duration,
    /// Our primary address (equal-priority tie-break).
    pub primary: IpAddr,
    /// Gratuitous ARP refresh while master (zero: none).
    pub garp_refresh: Duration,
}

/// Times and counts the rest of the agent shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// State changes.
    pub transitions: u64,
    /// Times this node became master.
    pub became_master: u64,
    /// When the last state change happened.
    pub last_transition: Option<Duration>,
    /// Lower-priority masters answered (split brain).
    pub split_brain_answers: u64,
}

/// One virtual router's state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    priority: u8,
    state: State,
    faulted: bool,
    master_adver_interval: Duration,
    adver_at: Option<Duration>,
    master_down_at: Option<Duration>,
    garp_at: Option<Duration>,
    lower_master_since: Option<Duration>,
    master: Option<IpAddr>,
    stats: Stats,
    /// When each lower-priority master was last answered.
    answered: Vec<(IpAddr, Duration)>,
    /// Started as backup and not yet told whether the addresses stay.
    unsettled: bool,
    /// Held back by a sync group.
    held: bool,
    /// Held, it would have become master.
    wants: bool,
}

impl Machine {
    /// A machine in Initialize with `priority` (1–255).
    pub fn new(params: Params, priority: u8) -> Self {
        Self {
            master_adver_interval: params.advert_interval,
            params,
            priority,
            state: State::Initialize,
            faulted: false,
            adver_at: None,
            master_down_at: None,
            garp_at: None,
            lower_master_since: None,
            master: None,
            stats: Stats::default(),
            answered: Vec::new(),
            unsettled: false,
            held: false,
            wants: false,
        }
    }

    /// Held by its sync group, it would be master now.
    pub fn wants_master(&self) -> bool {
        self.wants
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The master we last heard (None while we are master or know none).
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The interval the master advertises (ours when we are master).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time: ((256 − priority) × Master_Adver_Interval) / 256.
    pub fn skew(&self) -> Duration {
        self.master_adver_interval * (256 - self.priority as u32) / 256
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew()
    }

    /// When [`Machine::poll`] must be called next.
    pub fn next_deadline(&self) -> Option<Duration> {
        [self.adver_at, self.master_down_at, self.garp_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup => {
                if self.state == State::Initialize {
                    self.start(now, &mut out);
                }
            }
            Input::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::Send { priority: 0 });
                    out.push(Action::RemoveAddresses);
                }
                self.cancel_timers();
                self.set_state(now, State::Initialize, &mut out, false);
            }
            Input::Fault(true) => {
                self.faulted = true;
                self.wants = false;
                if self.state == State::Master {
                    out.push(Action::Send { priority: 0 });
                    out.push(Action::RemoveAddresses);
                } else if self.state == State::Backup && self.unsettled {
                    self.unsettled = false;
                    out.push(Action::RemoveAddresses);
                }
                if matches!(self.state, State::Master | State::Backup) {
                    self.cancel_timers();
                    self.set_state(now, State::Fault, &mut out, true);
                }
            }
            Input::Fault(false) => {
                self.faulted = false;
                if self.state == State::Fault {
                    self.start(now, &mut out);
                }
            }
            Input::Hold(true) => {
                self.held = true;
                if self.state == State::Master {
                    out.push(Action::Send { priority: 0 });
                    out.push(Action::RemoveAddresses);
                    self.garp_at = None;
                    self.adver_at = None;
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.set_state(now, State::Backup, &mut out, true);
                }
            }
            Input::Hold(false) => {
                self.held = false;
                if self.state == State::Backup && self.wants {
                    self.wants = false;
                    self.become_master(now, &mut out);
                }
            }
            Input::Priority(p) => {
                let p = p.max(1);
                if p != self.priority {
                    self.priority = p;
                    if self.state == State::Master {
                        out.push(Action::Send { priority: p });
                        self.adver_at = Some(now + self.params.advert_interval);
                    }
                }
            }
            Input::Advert {
                src,
                priority,
                interval,
            } => match self.state {
                State::Backup => self.backup_advert(now, src, priority, interval, &mut out),
                State::Master => self.master_advert(now, src, priority, interval, &mut out),
                State::Initialize | State::Fault => {}
            },
        }
        out
    }

    /// Fires every timer due at `now`.
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Backup && self.master_down_at.is_some_and(|t| t <= now) {
            if self.held {
                // Its group is not ready: it waits, wanting.
                self.master_down_at = None;
                self.wants = true;
            } else {
                self.become_master(now, &mut out);
            }
        }
        if self.state == State::Master {
            if let Some(t) = self.adver_at {
                if t <= now {
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    let next = t + self.params.advert_interval;
                    self.adver_at = Some(if next <= now {
                        now + self.params.advert_interval
                    } else {
                        next
                    });
                }
            }
            if let Some(t) = self.garp_at {
                if t <= now {
                    out.push(Action::Garp);
                    self.garp_at = Some(now + self.params.garp_refresh);
                }
            }
        }
        out
    }

    fn start(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.faulted {
            self.set_state(now, State::Fault, out, true);
            return;
        }
        self.master_adver_interval = self.params.advert_interval;
        if self.priority == 255 {
            self.become_master(now, out);
        } else {
            // The addresses' fate waits for the first advert or the timer.
            self.unsettled = true;
            self.master_down_at = Some(now + self.master_down_interval());
            self.set_state(now, State::Backup, out, true);
        }
    }

    fn become_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.wants = false;
        out.push(Action::Send {
            priority: self.priority,
        });
        out.push(Action::AddAddresses);
        out.push(Action::Garp);
        self.master_down_at = None;
        self.master = None;
        self.lower_master_since = None;
        self.unsettled = false;
        self.master_adver_interval = self.params.advert_interval;
        self.adver_at = Some(now + self.params.advert_interval);
        self.garp_at =
            (!self.params.garp_refresh.is_zero()).then(|| now + self.params.garp_refresh);
        self.stats.became_master += 1;
        self.set_state(now, State::Master, out, true);
    }

    fn backup_advert(
        &mut self,
        now: Duration,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        out: &mut Vec<Action>,
    ) {
        if priority == 0 {
            // The master is leaving: take over after Skew_Time only.
            self.master_down_at = Some(now + self.skew());
            return;
        }
        let lower = priority < self.priority;
        let hold_back = if lower && self.params.preempt {
            // Preempt, unless the delay since we first saw this lower master runs.
            let since = *self.lower_master_since.get_or_insert(now);
            now < since + self.params.preempt_delay
        } else {
            self.lower_master_since = None;
            true
        };
        if hold_back {
            self.wants = false;
            // A master we stay backup to: no VIP of ours may remain.
            if self.unsettled {
                self.unsettled = false;
                out.push(Action::RemoveAddresses);
            }
            self.master = Some(src);
            if !interval.is_zero() {
                self.master_adver_interval = interval;
            }
            self.master_down_at = Some(now + self.master_down_interval());
        }
        // else: discard; Master_Down_Timer runs out and we preempt.
    }

    fn master_advert(
        &mut self,
        now: Duration,
        src: IpAddr,
        priority: u8,
        interval: Duration,
        out: &mut Vec<Action>,
    ) {
        if priority == 0 {
            out.push(Action::Send {
                priority: self.priority,
            });
            self.adver_at = Some(now + self.params.advert_interval);
            return;
        }
        let wins =
            priority > self.priority || (priority == self.priority && src > self.params.primary);
        if wins {
            self.adver_at = None;
            self.garp_at = None;
            self.master = Some(src);
            if !interval.is_zero() {
                self.master_adver_interval = interval;
            }
            self.master_down_at = Some(now + self.master_down_interval());
            out.push(Action::RemoveAddresses);
            self.set_state(now, State::Backup, out, true);
        } else {
            // Another master with lower priority: a split brain. Assert
            // ourselves at once so it steps down and clients follow us, but
            // once per interval per sender: the regular advert follows anyway.
            let gap = self.params.advert_interval;
            self.answered.retain(|(_, t)| now < *t + gap);
            if self.answered.iter().any(|(a, _)| *a == src) || self.answered.len() >= ANSWERED_PEERS
            {
                return;
            }
            self.answered.push((src, now));
            self.stats.split_brain_answers += 1;
            out.push(Action::Send {
                priority: self.priority,
            });
            out.push(Action::Garp);
            self.adver_at = Some(now + self.params.advert_interval);
        }
    }

    fn cancel_timers(&mut self) {
        self.adver_at = None;
        self.master_down_at = None;
        self.garp_at = None;
        self.lower_master_since = None;
    }

    fn set_state(&mut self, now: Duration, s: State, out: &mut Vec<Action>, notify: bool) {
        if s == self.state {
            return;
        }
        self.state = s;
        if s != State::Backup {
            self.master = None;
        }
        self.stats.transitions += 1;
        self.stats.last_transition = Some(now);
        if notify {
            out.push(Action::Notify(s));
        }
    }
}

#[cfg(test)]
mod tests;
