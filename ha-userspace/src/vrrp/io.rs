//! The VRRP I/O layer: a raw IP socket (protocol 112) on the interface,
//! multicast to 224.0.0.18 or unicast to configured peers, the virtual
//! addresses through netlink, gratuitous ARP bursts, and the notify hook.
//! It runs the [`Machine`] and turns its actions into system calls; it holds
//! no protocol logic of its own beyond packet filtering.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::machine::{Action, Input, Machine, Params, State};
use super::packet::{self, Advert, Auth, Expect, Reject, Version};
use crate::net::arp::{garp_frame, RawSender};
use crate::net::{Link, Netlink};

/// Everything the runner needs to know about its virtual router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// VRRP version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Initial effective priority.
    pub priority: u8,
    /// Protocol parameters.
    pub params: Params,
    /// Unicast peers (empty: multicast).
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The virtual addresses (added as /32).
    pub addresses: Vec<Ipv4Addr>,
    /// v2 authentication.
    pub auth: Auth,
    /// Gratuitous ARPs per burst.
    pub garp_count: u32,
    /// Spacing of a burst's gratuitous ARPs.
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
    pub master: Option<Ipv4Addr>,
    /// Our primary address.
    pub primary: Ipv4Addr,
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
}

/// Commands from the agent.
#[derive(Debug)]
pub enum Control {
    /// New effective priority.
    Priority(u8),
    /// A tracked fault set or cleared.
    Fault(bool),
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
    /// The interface has no IPv4 address to send from.
    #[error("interface {0} has no IPv4 address to send VRRP from")]
    NoAddress(String),
    /// Netlink failed.
    #[error("{0}")]
    Net(#[from] crate::net::NetError),
}

/// A raw socket for VRRP on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens it: bound to the interface, IP header built by us (TTL 255),
    /// joined to 224.0.0.18 when `multicast`, not looping our own packets.
    pub fn open(link: &Link, src: Ipv4Addr, multicast: bool) -> std::io::Result<Self> {
        let s = Socket::new_raw(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(packet::IPPROTO_VRRP as i32)),
        )?;
        s.bind_device(Some(link.name.as_bytes()))?;
        s.set_header_included_v4(true)?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(packet::TTL as u32)?;
        s.set_multicast_if_v4(&src)?;
        if multicast {
            s.join_multicast_v4_n(
                &packet::MULTICAST,
                &socket2::InterfaceIndexOrAddress::Index(link.index),
            )?;
        }
        s.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd from here on and closed
        // only when it is dropped, after deregistration.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Receives one packet (IP header included).
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                let s = inner.get_ref();
                // SAFETY: recv writes at most buf.len() initialised bytes.
                let uninit = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(),
                        buf.len(),
                    )
                };
                s.recv(uninit)
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a whole IP packet to `dst`.
    pub fn send(&self, dst: Ipv4Addr, pkt: &[u8]) -> std::io::Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
        self.fd.get_ref().send_to(pkt, &addr).map(|_| ())
    }
}

/// Runs one virtual router until shut down.
pub async fn run(
    cfg: RouterConfig,
    link: Link,
    netlink: Netlink,
    mut control: mpsc::Receiver<Control>,
    status: watch::Sender<Status>,
) -> Result<(), IoError> {
    let src = cfg.params.primary;
    let multicast = cfg.unicast_peers.is_empty();
    let sock = VrrpSocket::open(&link, src, multicast).map_err(|source| IoError::Socket {
        iface: link.name.clone(),
        source,
    })?;
    let garp = Arc::new(
        RawSender::open(link.index).map_err(|source| IoError::Socket {
            iface: link.name.clone(),
            source,
        })?,
    );
    let expect = Expect {
        version: cfg.version,
        vrid: cfg.vrid,
        auth: cfg.auth.clone(),
        interval_cs: interval_cs(cfg.params.advert_interval),
    };
    let mut io = Io {
        cfg,
        link,
        netlink,
        sock,
        garp,
        garp_task: None,
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
        },
    };
    let epoch = Instant::now();
    let mut machine = Machine::new(io.cfg.params.clone(), io.cfg.priority);
    let actions = machine.handle(epoch.elapsed(), Input::Startup);
    io.execute(&machine, actions).await;
    io.publish(&machine, &status);

    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = machine
            .next_deadline()
            .map(|d| epoch + d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = io.sock.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!("VRRP receive: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if let Some(input) = io.accept(&buf[..n], &expect) {
                    let actions = machine.handle(epoch.elapsed(), input);
                    io.execute(&machine, actions).await;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let actions = machine.poll(epoch.elapsed());
                io.execute(&machine, actions).await;
            }
            c = control.recv() => match c {
                Some(Control::Priority(p)) => {
                    let actions = machine.handle(epoch.elapsed(), Input::Priority(p));
                    io.execute(&machine, actions).await;
                }
                Some(Control::Fault(f)) => {
                    let actions = machine.handle(epoch.elapsed(), Input::Fault(f));
                    io.execute(&machine, actions).await;
                }
                Some(Control::Shutdown(done)) => {
                    let actions = machine.handle(epoch.elapsed(), Input::Shutdown);
                    io.execute(&machine, actions).await;
                    io.publish(&machine, &status);
                    let _ = done.send(());
                    return Ok(());
                }
                None => {
                    let actions = machine.handle(epoch.elapsed(), Input::Shutdown);
                    io.execute(&machine, actions).await;
                    return Ok(());
                }
            },
        }
        io.publish(&machine, &status);
    }
}

/// Advertisement interval in centiseconds, as carried on the wire.
pub fn interval_cs(d: Duration) -> u16 {
    (d.as_millis() / 10).clamp(1, 4095) as u16
}

struct Io {
    cfg: RouterConfig,
    link: Link,
    netlink: Netlink,
    sock: VrrpSocket,
    garp: Arc<RawSender>,
    garp_task: Option<tokio::task::JoinHandle<()>>,
    status: Status,
}

impl Io {
    /// Checks a received packet; returns the input for the machine, or
    /// None (counted) when it must not be trusted.
    fn accept(&mut self, pkt: &[u8], expect: &Expect) -> Option<Input> {
        // Our own packets (multicast loop is off; unicast to ourselves is a
        // misconfiguration) are ignored silently.
        if pkt.len() >= 16 && pkt[12..16] == self.cfg.params.primary.octets() {
            return None;
        }
        match packet::parse(pkt, expect) {
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

    async fn execute(&mut self, machine: &Machine, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { priority } => self.send(priority),
                Action::AddAddresses => {
                    for addr in &self.cfg.addresses {
                        if let Err(e) = self.netlink.add_address(self.link.index, *addr, 32).await {
                            tracing::error!("cannot add VIP {addr}: {e}");
                        }
                    }
                }
                Action::RemoveAddresses => {
                    // A burst from our time as master must not go on
                    // pointing clients at us.
                    if let Some(t) = self.garp_task.take() {
                        t.abort();
                    }
                    for addr in &self.cfg.addresses {
                        if let Err(e) = self.netlink.del_address(self.link.index, *addr, 32).await {
                            tracing::error!("cannot remove VIP {addr}: {e}");
                        }
                    }
                }
                Action::Garp => self.garp_burst(),
                Action::Notify(state) => {
                    tracing::info!(
                        state = state.name(),
                        priority = machine.priority(),
                        "VRRP state change"
                    );
                    self.notify(state);
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
            addresses: self.cfg.addresses.clone(),
            auth: self.cfg.auth.clone(),
        };
        let src = self.cfg.params.primary;
        let dsts: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![packet::MULTICAST]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            let pkt = advert.build_ip(src, dst);
            match self.sock.send(dst, &pkt) {
                Ok(()) => self.status.adverts_sent += 1,
                Err(e) => tracing::debug!(%dst, "VRRP send: {e}"),
            }
        }
    }

    /// Sends `garp_count` gratuitous ARPs per address, spaced by
    /// `garp_interval`, on a task of its own (a newer burst replaces it).
    fn garp_burst(&mut self) {
        if let Some(t) = self.garp_task.take() {
            t.abort();
        }
        let frames: Vec<[u8; 42]> = self
            .cfg
            .addresses
            .iter()
            .map(|a| garp_frame(self.link.mac, *a))
            .collect();
        let sender = self.garp.clone();
        let count = self.cfg.garp_count.max(1);
        let gap = self.cfg.garp_interval;
        self.garp_task = Some(tokio::spawn(async move {
            for i in 0..count {
                if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                for f in &frames {
                    if let Err(e) = sender.send(f) {
                        tracing::warn!("gratuitous ARP: {e}");
                    }
                }
            }
        }));
    }

    /// Runs the notify hook without waiting for it (it is killed after 30 s).
    fn notify(&self, state: State) {
        let Some(hook) = self.cfg.notify.clone() else {
            return;
        };
        let name = state.name();
        let mut cmd = tokio::process::Command::new(&hook);
        cmd.arg(name)
            .env("HALB_STATE", name)
            .env("HALB_INTERFACE", &self.link.name)
            .env("HALB_VRID", self.cfg.vrid.to_string())
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        tokio::spawn(async move {
            match cmd.spawn() {
                Ok(mut child) => {
                    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                        Ok(Ok(s)) if s.success() => {}
                        Ok(Ok(s)) => {
                            tracing::warn!(hook = %hook.display(), "notify {name} exited with {s}")
                        }
                        Ok(Err(e)) => tracing::warn!(hook = %hook.display(), "notify {name}: {e}"),
                        Err(_) => {
                            tracing::warn!(hook = %hook.display(), "notify {name} timed out; killed")
                        }
                    }
                }
                Err(e) => tracing::warn!(hook = %hook.display(), "cannot run notify hook: {e}"),
            }
        });
    }

    fn publish(&mut self, machine: &Machine, status: &watch::Sender<Status>) {
        self.status.state = machine.state();
        self.status.priority = machine.priority();
        self.status.master = machine.master();
        self.status.transitions = machine.stats().transitions;
        self.status.became_master = machine.stats().became_master;
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
