//! The VRRP I/O layer: a raw IP socket (protocol 112) on the interface,
//! multicast to 224.0.0.18 or ff02::12 or unicast to configured peers, the
//! virtual addresses through netlink (/32 or /128), bursts of gratuitous
//! ARP or unsolicited Neighbor Advertisements, and the notify hook.
//! It runs the [`Machine`] and the address [`Keeper`] and turns their
//! actions into system calls; it holds no protocol logic of its own beyond
//! packet filtering. Address operations run on a worker task with a time
//! limit each, and the notify hook on a worker of its own, so the router's
//! timers never wait for netlink or a hook.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::addresses::{Keeper, Op};
use super::machine::{Action, Input, Machine, Params, State};
use super::notify::{Hook, Notifier};
use super::packet::{self, Advert, Auth, Expect, Reject, Version};
use super::socket::{Arrival, VrrpSocket};
use crate::net::arp::{announce_frame, RawSender};
use crate::net::{host_len, Link, Netlink};
use crate::watchdog::Beat;

/// Everything the runner needs to know about its virtual router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Instance name (logs).
    pub instance: String,
    /// VRRP version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Initial effective priority.
    pub priority: u8,
    /// Protocol parameters.
    pub params: Params,
    /// Unicast peers (empty: multicast), of the router's family.
    pub unicast_peers: Vec<IpAddr>,
    /// The virtual addresses (added as /32 or /128), of the router's family.
    pub addresses: Vec<IpAddr>,
    /// v2 authentication.
    pub auth: Auth,
    /// Gratuitous ARPs (or unsolicited NAs) per burst.
    pub garp_count: u32,
    /// Spacing of a burst's frames.
    pub garp_interval: Duration,
    /// Hook run with MASTER, BACKUP or FAULT.
    pub notify: Option<PathBuf>,
}

/// What the rest of the agent can see of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Protocol state.
    pub state: State,
    /// Effective priority.
    pub priority: u8,
    /// The master we hear (when backup).
    pub master: Option<IpAddr>,
    /// Our primary address (IPv6: link-local).
    pub primary: IpAddr,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Advertisements accepted.
    pub adverts_received: u64,
    /// Packets rejected, by reason.
    pub rejected: BTreeMap<Reject, u64>,
    /// State changes.
    pub transitions: u64,
    /// Times this node became master.
    pub became_master: u64,
    /// Lower-priority masters answered (split brain), rate-limited.
    pub split_brain_answers: u64,
    /// VIP address operations that failed (each retried).
    pub address_failures: u64,
    /// Failing address operations hold a fault now.
    pub address_fault: bool,
    /// Held by its sync group, it would be master now.
    pub wants_master: bool,
    /// In FAULT by its own tracking or addresses (not its group's).
    pub own_fault: bool,
}

/// Commands from the agent.
#[derive(Debug)]
pub enum Control {
    /// New effective priority.
    Priority(u8),
    /// A tracked fault set or cleared.
    Fault(bool),
    /// The VIP addresses after a reload (a master adds the new ones with
    /// gratuitous ARP and removes the gone ones).
    Addresses(Vec<IpAddr>),
    /// Its sync group holds it back (see `vrrp::group`).
    Hold(bool),
    /// Its sync group is in FAULT (another member's own fault).
    GroupFault(bool),
    /// Give up mastership (priority 0), remove the addresses, stop; the
    /// sender is told when that is done.
    Shutdown(oneshot::Sender<()>),
}

/// Errors that stop the runner from starting.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Socket set-up failed.
    #[error("VRRP socket on {iface}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The interface has no usable address of the kind the instance sends
    /// from (IPv4; IPv6 link-local, or global with global unicast peers),
    /// also after waiting for duplicate address detection.
    #[error("interface {0} has no {1} address to send VRRP from (after waiting 3 s for DAD)")]
    NoAddress(String, &'static str),
    /// The configured source is not on the interface.
    #[error("[vrrp] source = \"{addr}\" is not an address of {iface}")]
    NotLocal {
        /// The address.
        addr: IpAddr,
        /// The interface.
        iface: String,
    },
    /// Netlink failed.
    #[error("{0}")]
    Net(#[from] crate::net::NetError),
    /// The VIP address worker ended: addresses can no longer be set.
    #[error("the VIP address worker stopped")]
    Worker,
}

/// Time a netlink address operation may take.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// A virtual router whose sockets are open: everything that can fail at
/// start-up has been tried ([`Router::open`]) before [`Router::run`] starts.
pub struct Router {
    cfg: RouterConfig,
    link: Link,
    sock: VrrpSocket,
    garp: Arc<RawSender>,
}

impl Router {
    /// Opens the VRRP socket (joining the multicast group unless unicast)
    /// and the gratuitous ARP sender. Errors here (a missing CAP_NET_RAW, a
    /// failed multicast join) stop the agent's start.
    pub fn open(cfg: RouterConfig, link: Link) -> Result<Self, IoError> {
        let multicast = cfg.unicast_peers.is_empty();
        let sock =
            VrrpSocket::open(&link, cfg.params.primary, multicast, cfg.vrid).map_err(|source| {
                IoError::Socket {
                    iface: link.name.clone(),
                    source,
                }
            })?;
        let garp = Arc::new(
            RawSender::open(link.index).map_err(|source| IoError::Socket {
                iface: link.name.clone(),
                source,
            })?,
        );
        Ok(Self {
            cfg,
            link,
            sock,
            garp,
        })
    }

    /// Runs the router until shut down. `beat` is touched at least once a
    /// second while its timers run (the watchdog's view of VRRP).
    pub async fn run(
        self,
        netlink: Netlink,
        mut control: mpsc::Receiver<Control>,
        status: watch::Sender<Status>,
        beat: Beat,
    ) -> Result<(), IoError> {
        let src = self.cfg.params.primary;
        let expect = Expect {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            auth: self.cfg.auth.clone(),
            interval_cs: interval_cs(self.cfg.params.advert_interval),
            link_local_source: self.cfg.unicast_peers.is_empty(),
        };
        let (ops_tx, mut results) = address_worker(netlink, self.link.index);
        let notifier = self.cfg.notify.clone().map(|path| {
            Notifier::start(
                Hook {
                    path,
                    env: vec![
                        ("HALB_INTERFACE".into(), self.link.name.clone()),
                        ("HALB_VRID".into(), self.cfg.vrid.to_string()),
                        ("HALB_INSTANCE".into(), self.cfg.instance.clone()),
                    ],
                    timeout: super::notify::HOOK_TIMEOUT,
                },
                None,
            )
        });
        let mut io = Io {
            keeper: Keeper::new(&self.cfg.addresses),
            cfg: self.cfg,
            link: self.link,
            sock: self.sock,
            garp: self.garp,
            garp_tasks: Vec::new(),
            ops: ops_tx,
            notifier,
            agent_fault: false,
            group_fault: false,
            fed_fault: false,
            worker_gone: false,
            status: Status {
                state: State::Initialize,
                priority: 0,
                master: None,
                primary: src,
                adverts_sent: 0,
                adverts_received: 0,
                rejected: BTreeMap::new(),
                transitions: 0,
                became_master: 0,
                split_brain_answers: 0,
                address_failures: 0,
                address_fault: false,
                wants_master: false,
                own_fault: false,
            },
        };
        let epoch = Instant::now();
        let mut machine = Machine::new(io.cfg.params.clone(), io.cfg.priority);
        let actions = machine.handle(epoch.elapsed(), Input::Startup);
        io.execute(&mut machine, actions, epoch);
        io.publish(&machine, &status);

        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 2048];
        let mut recv_errors = 0u64;
        loop {
            if io.worker_gone {
                return Err(IoError::Worker);
            }
            beat.beat();
            let deadline = [machine.next_deadline(), io.keeper.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .map(|d| epoch + d)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = io.sock.recv(&mut buf) => {
                    let arrival = match r {
                        Ok(a) => {
                            recv_errors = 0;
                            a
                        }
                        Err(e) => {
                            // Logged on the first and then every 100th in a
                            // row, with a growing pause, never a flood.
                            if recv_errors.is_multiple_of(100) {
                                tracing::warn!(in_a_row = recv_errors + 1, "VRRP receive: {e}");
                            }
                            recv_errors += 1;
                            let pause = Duration::from_millis(10 * recv_errors.min(10));
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                    };
                    if let Some(input) = io.accept(&buf, arrival, &expect) {
                        let actions = machine.handle(epoch.elapsed(), input);
                        io.execute(&mut machine, actions, epoch);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = epoch.elapsed();
                    let actions = machine.poll(now);
                    io.execute(&mut machine, actions, epoch);
                    let (ops, change) = io.keeper.poll(now);
                    io.send_ops(ops);
                    if change.is_some() {
                        io.feed_fault(&mut machine, epoch);
                    }
                }
                r = results.recv() => {
                    let Some((op, result)) = r else {
                        return Err(IoError::Worker);
                    };
                    let ok = match &result {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(?op, "VIP address operation failed: {e}");
                            false
                        }
                    };
                    if io.keeper.done(op, ok, epoch.elapsed()).is_some() {
                        if io.keeper.fault() {
                            tracing::error!(
                                "cannot put the VIP addresses on {}: giving up mastership \
                                 (FAULT) for {:?}, then trying again",
                                io.link.name,
                                super::addresses::FAULT_HOLD
                            );
                        }
                        io.feed_fault(&mut machine, epoch);
                    }
                }
                _ = tick.tick() => {}
                c = control.recv() => match c {
                    Some(Control::Priority(p)) => {
                        let actions = machine.handle(epoch.elapsed(), Input::Priority(p));
                        io.execute(&mut machine, actions, epoch);
                    }
                    Some(Control::Fault(f)) => {
                        io.agent_fault = f;
                        io.feed_fault(&mut machine, epoch);
                    }
                    Some(Control::Addresses(addrs)) => io.set_addresses(&addrs),
                    Some(Control::Hold(h)) => {
                        let actions = machine.handle(epoch.elapsed(), Input::Hold(h));
                        io.execute(&mut machine, actions, epoch);
                    }
                    Some(Control::GroupFault(f)) => {
                        io.group_fault = f;
                        io.feed_fault(&mut machine, epoch);
                    }
                    Some(Control::Shutdown(done)) => {
                        io.shutdown(&mut machine, epoch, &mut results).await;
                        io.publish(&machine, &status);
                        let _ = done.send(());
                        return Ok(());
                    }
                    None => {
                        io.shutdown(&mut machine, epoch, &mut results).await;
                        return Ok(());
                    }
                },
            }
            io.publish(&machine, &status);
        }
    }
}

/// Advertisement interval in centiseconds, as carried on the wire.
pub fn interval_cs(d: Duration) -> u16 {
    (d.as_millis() / 10).clamp(1, 4095) as u16
}

type OpResult = (Op, Result<(), String>);

/// A task that carries out address operations one by one, each with a time
/// limit, so that a slow netlink never stalls the router's timers.
fn address_worker(
    netlink: Netlink,
    ifindex: u32,
) -> (mpsc::UnboundedSender<Op>, mpsc::UnboundedReceiver<OpResult>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
    let (res_tx, res_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(op) = rx.recv().await {
            let fut = async {
                match op {
                    Op::Add(a) => netlink.add_address(ifindex, a, host_len(a)).await,
                    Op::Remove(a) => netlink.del_address(ifindex, a, host_len(a)).await,
                }
            };
            let r = match tokio::time::timeout(NETLINK_TIMEOUT, fut).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {NETLINK_TIMEOUT:?}")),
            };
            if res_tx.send((op, r)).is_err() {
                return;
            }
        }
    });
    (tx, res_rx)
}

struct Io {
    cfg: RouterConfig,
    link: Link,
    sock: VrrpSocket,
    garp: Arc<RawSender>,
    garp_tasks: Vec<tokio::task::JoinHandle<()>>,
    keeper: Keeper,
    ops: mpsc::UnboundedSender<Op>,
    notifier: Option<Notifier>,
    /// The agent's tracking holds a fault.
    agent_fault: bool,
    /// Its sync group holds a fault.
    group_fault: bool,
    /// The fault the machine was last told.
    fed_fault: bool,
    /// The address worker ended (the router stops: it is supervised).
    worker_gone: bool,
    status: Status,
}

impl Io {
    /// Checks a received packet; returns the input for the machine, or
    /// None (counted) when it must not be trusted.
    fn accept(&mut self, buf: &[u8], arrival: Arrival, expect: &Expect) -> Option<Input> {
        // Our own packets (multicast loop is off; unicast to ourselves is a
        // misconfiguration) are ignored silently.
        if arrival.source(buf) == Some(self.cfg.params.primary) {
            return None;
        }
        match arrival.parse(buf, expect) {
            Ok(r) => {
                if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&r.src) {
                    *self.status.rejected.entry(Reject::NotPeer).or_default() += 1;
                    tracing::debug!(src = %r.src, "VRRP advert from a non-peer dropped");
                    return None;
                }
                self.status.adverts_received += 1;
                Some(Input::Advert {
                    src: r.src,
                    priority: r.advert.priority,
                    interval: Duration::from_millis(r.advert.interval_cs as u64 * 10),
                })
            }
            Err(reason) => {
                *self.status.rejected.entry(reason).or_default() += 1;
                tracing::debug!(%reason, "VRRP packet rejected");
                None
            }
        }
    }

    /// Tells the machine the combined fault (the agent's tracking or
    /// addresses that cannot be set) when it changed.
    fn feed_fault(&mut self, machine: &mut Machine, epoch: Instant) {
        let fault = self.agent_fault || self.group_fault || self.keeper.fault();
        if fault != self.fed_fault {
            self.fed_fault = fault;
            let actions = machine.handle(epoch.elapsed(), Input::Fault(fault));
            self.execute(machine, actions, epoch);
        }
    }

    fn send_ops(&mut self, ops: Vec<Op>) {
        for op in ops {
            if self.ops.send(op).is_err() {
                tracing::error!("the VIP address worker is gone");
                self.worker_gone = true;
            }
        }
    }

    fn set_addresses(&mut self, addrs: &[IpAddr]) {
        let (ops, fresh) = self.keeper.set_addresses(addrs);
        self.send_ops(ops);
        if !fresh.is_empty() {
            tracing::info!(addresses = ?fresh, "reload: new VIP addresses on this master");
            self.garp_burst(fresh);
        }
    }

    fn execute(&mut self, machine: &mut Machine, actions: Vec<Action>, epoch: Instant) {
        let _ = epoch;
        for a in actions {
            match a {
                Action::Send { priority } => self.send(priority),
                Action::AddAddresses => {
                    let ops = self.keeper.set_present(true);
                    self.send_ops(ops);
                }
                Action::RemoveAddresses => {
                    // A burst from our time as master must not go on
                    // pointing clients at us.
                    for t in self.garp_tasks.drain(..) {
                        t.abort();
                    }
                    let ops = self.keeper.set_present(false);
                    self.send_ops(ops);
                }
                Action::Garp => {
                    for t in self.garp_tasks.drain(..) {
                        t.abort();
                    }
                    self.garp_burst(self.keeper.addresses());
                }
                Action::Notify(state) => {
                    tracing::info!(
                        instance = %self.cfg.instance,
                        vrid = self.cfg.vrid,
                        state = state.name(),
                        priority = machine.priority(),
                        "VRRP state change"
                    );
                    if let Some(n) = self.notifier.as_mut() {
                        n.notify(state);
                    }
                }
            }
        }
    }

    /// Leaves: priority 0, addresses off (waiting, a bounded time, for the
    /// removals to be done).
    async fn shutdown(
        &mut self,
        machine: &mut Machine,
        epoch: Instant,
        results: &mut mpsc::UnboundedReceiver<OpResult>,
    ) {
        let actions = machine.handle(epoch.elapsed(), Input::Shutdown);
        self.execute(machine, actions, epoch);
        // Whatever the state, no VIP stays behind.
        let ops = self.keeper.set_present(false);
        self.send_ops(ops);
        let end = Instant::now() + Duration::from_secs(3);
        while self.keeper.busy() {
            let retry = self
                .keeper
                .next_deadline()
                .map(|d| (epoch + d).min(end))
                .unwrap_or(end);
            tokio::select! {
                r = results.recv() => {
                    let Some((op, r)) = r else { break };
                    if let Err(e) = &r {
                        tracing::error!(?op, "VIP address operation failed: {e}");
                    }
                    self.keeper.done(op, r.is_ok(), epoch.elapsed());
                }
                _ = tokio::time::sleep_until(retry) => {
                    if Instant::now() >= end {
                        tracing::error!("VIP addresses may remain on {}", self.link.name);
                        return;
                    }
                    let (ops, _) = self.keeper.poll(epoch.elapsed());
                    self.send_ops(ops);
                }
            }
        }
    }

    fn send(&mut self, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: match self.cfg.version {
                Version::V3 => interval_cs(self.cfg.params.advert_interval),
                Version::V2 => {
                    (self.cfg.params.advert_interval.as_secs().clamp(1, 255) * 100) as u16
                }
            },
            addresses: self.keeper.addresses(),
            auth: self.cfg.auth.clone(),
        };
        let src = self.cfg.params.primary;
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![packet::multicast_for(src)]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            let pkt = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => advert.build_ip(s, d),
                // IPv6: the kernel builds the header (hop limit 255).
                (s, d) => advert.build(s, d),
            };
            match self.sock.send(dst, &pkt) {
                Ok(()) => self.status.adverts_sent += 1,
                Err(e) => tracing::debug!(%dst, "VRRP send: {e}"),
            }
        }
    }

    /// Sends `garp_count` gratuitous ARPs (IPv4) or unsolicited Neighbor
    /// Advertisements (IPv6) per address, spaced by `garp_interval`, on a
    /// task of its own.
    fn garp_burst(&mut self, addrs: Vec<IpAddr>) {
        self.garp_tasks.retain(|t| !t.is_finished());
        let frames: Vec<Vec<u8>> = addrs
            .iter()
            .map(|a| announce_frame(self.link.mac, *a))
            .collect();
        let sender = self.garp.clone();
        let count = self.cfg.garp_count.max(1);
        let gap = self.cfg.garp_interval;
        self.garp_tasks.push(tokio::spawn(async move {
            for i in 0..count {
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                for f in &frames {
                    if let Err(e) = sender.send(f) {
                        tracing::warn!("address announcement (gratuitous ARP or NA): {e}");
                    }
                }
            }
        }));
    }

    fn publish(&mut self, machine: &Machine, status: &watch::Sender<Status>) {
        self.status.state = machine.state();
        self.status.priority = machine.priority();
        self.status.master = machine.master();
        self.status.transitions = machine.stats().transitions;
        self.status.became_master = machine.stats().became_master;
        self.status.split_brain_answers = machine.stats().split_brain_answers;
        self.status.address_failures = self.keeper.failures;
        self.status.address_fault = self.keeper.fault();
        self.status.wants_master = machine.wants_master();
        self.status.own_fault = self.agent_fault || self.keeper.fault();
        status.send_if_modified(|s| {
            if *s != self.status {
                *s = self.status.clone();
                true
            } else {
                false
            }
        });
    }
}
