//! The agent's side of VRRP: builds one router per instance from the
//! config, starts it, runs its tracking probes (interfaces, data plane,
//! scripts) whose results [`Tracking`] combines into a priority or a fault,
//! and runs the sync groups that make instances change state together.

use std::net::IpAddr;
use std::time::Duration;

use crate::net::link_local;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::supervise::Supervised;
use crate::config::{Config, Instance, TrackScript};
use crate::health::RiseFall;
use crate::net::{Link, Netlink};
use crate::vrrp::group;
use crate::vrrp::io::{self, Control, Router, RouterConfig, Status};
use crate::vrrp::machine::{Params, State};
use crate::vrrp::notify::{Hook, Notifier};
use crate::vrrp::packet::{Auth, Version};
use crate::vrrp::track::{script_effect, Effect, Tracking};
use crate::watchdog::Beat;

/// A tracked source changed: (source name, its effect now).
pub type TrackEvent = (String, Effect);

/// A running virtual router (one instance) and its tracking.
pub struct Election {
    /// Instance name.
    pub name: String,
    /// Names of the VIPs it owns.
    pub vips: Vec<String>,
    /// The interface it runs on.
    pub link: Link,
    /// Its settings as it started with them.
    pub settings: crate::config::Vrrp,
    control: mpsc::Sender<Control>,
    /// Router status, updated on every change.
    pub status: watch::Receiver<Status>,
    tracking: Tracking,
    /// The router's timers beat here (the watchdog reads it).
    pub beat: Beat,
}

/// Where the tasks of an instance go, and what they report.
pub struct Wiring<'a> {
    /// Supervised tasks (router, probes).
    pub tasks: &'a mut Supervised,
    /// Tracking events, tagged with the instance's index.
    pub track: mpsc::Sender<(usize, TrackEvent)>,
    /// Told whenever an instance's role, priority or master changes.
    pub roles: mpsc::Sender<()>,
}

impl Election {
    /// Starts instance number `idx` of `cfg`; its tasks go to
    /// `wiring.tasks`, its tracking events to `wiring.track` (to be fed back
    /// through [`Election::track`]).
    pub async fn start(
        cfg: &Config,
        inst: &Instance<'_>,
        idx: usize,
        netlink: &Netlink,
        wiring: &mut Wiring<'_>,
    ) -> Result<Self, io::IoError> {
        let v = inst.vrrp;
        let link = netlink.link(&inst.interface).await?;
        let addrs = instance_addresses(cfg, &inst.vips);
        let all_vips = vip_addresses(cfg);
        // One family per instance (validated): its VIPs'.
        let v6 = addrs.first().is_some_and(|a| a.is_ipv6());
        let global_peers = v
            .unicast_peers
            .iter()
            .any(|p| p.get_ref().is_ipv6() && !link_local(p.get_ref()));
        let local = local_addresses(netlink, link.index, v6, global_peers, &all_vips).await?;
        let primary = match v.source.as_ref().map(|a| *a.get_ref()) {
            Some(a) if local.contains(&a) => a,
            Some(a) => {
                return Err(io::IoError::NotLocal {
                    addr: a,
                    iface: link.name.clone(),
                })
            }
            // IPv4: the first address that is no VIP. IPv6: the link-local
            // address (RFC 5798 §5.1.2.1); with unicast peers at global
            // addresses, a global one (no VIP), so that each side's source
            // is the address the other lists as its peer.
            None => {
                let usable: Vec<IpAddr> = local
                    .into_iter()
                    .filter(|a| sends_from(a, global_peers, &all_vips))
                    .collect();
                // IPv4: the primary (listed first). IPv6 toward global
                // peers: the address sharing the longest prefix with the
                // first peer (the one on its segment), the lowest on a tie:
                // the same address at every start, whatever order the
                // kernel lists them in.
                let first_peer = v.unicast_peers.first().map(|p| *p.get_ref());
                match (v6 && global_peers, first_peer) {
                    (true, Some(peer)) => usable
                        .iter()
                        .copied()
                        .max_by_key(|a| (common_prefix(*a, peer), std::cmp::Reverse(*a))),
                    _ => usable.first().copied(),
                }
                .ok_or_else(|| {
                    let family = match (v6, global_peers) {
                        (false, _) => "IPv4",
                        (true, false) => "IPv6 link-local",
                        (true, true) => "global IPv6 (its unicast peers are global)",
                    };
                    io::IoError::NoAddress(link.name.clone(), family)
                })?
            }
        };
        let version = if v.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let router = RouterConfig {
            instance: inst.name.clone(),
            version,
            vrid: v.router_id,
            priority: v.priority,
            params: Params {
                advert_interval: Duration::from_millis(v.advert_interval_ms as u64),
                preempt: v.preempt,
                preempt_delay: Duration::from_millis(v.preempt_delay_ms as u64),
                primary,
                garp_refresh: Duration::from_millis(v.garp_refresh_ms as u64),
            },
            unicast_peers: v.unicast_peers.iter().map(|p| *p.get_ref()).collect(),
            addresses: addrs,
            auth: match (&v.auth_pass, version) {
                (Some(p), Version::V2) => Auth::simple(p.get_ref()),
                _ => Auth::None,
            },
            garp_count: v.garp_count,
            garp_interval: Duration::from_millis(v.garp_interval_ms as u64),
            notify: v.notify.clone(),
        };
        let span = tracing::info_span!("vrrp", instance = %inst.name);
        span.in_scope(|| {
            tracing::info!(
                vrid = v.router_id,
                version = v.version,
                priority = v.priority,
                interface = %link.name,
                source = %primary,
                vips = %inst.vips.join(","),
                mode = if v.unicast_peers.is_empty() { "multicast" } else { "unicast" },
                "starting VRRP"
            )
        });
        // Sockets now: a missing capability or a failed multicast join stops
        // the start instead of a task that logs and ends.
        let opened = Router::open(router, link.clone())?;
        let (control, control_rx) = mpsc::channel(16);
        let (status_tx, status) = watch::channel(Status {
            state: State::Initialize,
            priority: v.priority,
            master: None,
            primary,
            adverts_sent: 0,
            adverts_received: 0,
            rejected: Default::default(),
            transitions: 0,
            became_master: 0,
            split_brain_answers: 0,
            address_failures: 0,
            address_fault: false,
            wants_master: false,
            own_fault: false,
        });
        let beat = Beat::new();
        let name = &inst.name;
        {
            let netlink = netlink.clone();
            let beat = beat.clone();
            wiring.tasks.spawn(
                format!("VRRP instance {name}"),
                async move {
                    opened
                        .run(netlink, control_rx, status_tx, beat)
                        .await
                        .map_err(|e| e.to_string())
                }
                .instrument(span.clone()),
            );
        }
        // Role changes (not counters) wake the agent to publish at once.
        {
            let mut rx = status.clone();
            let roles = wiring.roles.clone();
            wiring
                .tasks
                .spawn(format!("VRRP status of {name}"), async move {
                    loop {
                        let before = {
                            let s = rx.borrow();
                            (s.state, s.priority, s.master)
                        };
                        if rx.changed().await.is_err() {
                            return Ok(());
                        }
                        let now = {
                            let s = rx.borrow_and_update();
                            (s.state, s.priority, s.master)
                        };
                        if now != before && roles.send(()).await.is_err() {
                            return Ok(());
                        }
                    }
                });
        }
        let tx = tagged(wiring.track.clone(), idx);
        for iface in &v.track_interfaces {
            wiring.tasks.spawn(
                format!("{name}: interface tracking {iface}"),
                watch_interface(netlink.clone(), iface.clone(), tx.clone())
                    .instrument(span.clone()),
            );
        }
        if v.track_dataplane {
            wiring.tasks.spawn(
                format!("{name}: data plane tracking"),
                watch_dataplane(
                    netlink.clone(),
                    cfg.node.interface.get_ref().clone(),
                    tx.clone(),
                )
                .instrument(span.clone()),
            );
        }
        for s in &v.track_scripts {
            let s = s.get_ref().clone();
            wiring.tasks.spawn(
                format!("{name}: track_script {}", s.name),
                run_script(s, tx.clone()).instrument(span.clone()),
            );
        }
        Ok(Self {
            name: inst.name.clone(),
            vips: inst.vips.clone(),
            link,
            settings: v.clone(),
            control,
            status,
            tracking: Tracking::new(v.priority),
            beat,
        })
    }

    /// Applies a tracking event, telling the router when its priority or
    /// fault state changes.
    pub async fn track(&mut self, (source, effect): TrackEvent) {
        let fault_before = self.tracking.fault();
        if !self.tracking.set(&source, effect) {
            return;
        }
        tracing::info!(
            instance = %self.name,
            %source,
            ?effect,
            priority = self.tracking.priority(),
            fault = self.tracking.fault(),
            "VRRP tracking changed"
        );
        let _ = self
            .control
            .send(Control::Priority(self.tracking.priority()))
            .await;
        if self.tracking.fault() != fault_before {
            let _ = self
                .control
                .send(Control::Fault(self.tracking.fault()))
                .await;
        }
    }

    /// The tracking state.
    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// A reload changed the instance's VIP addresses.
    pub async fn set_addresses(&self, addrs: Vec<IpAddr>) {
        let _ = self.control.send(Control::Addresses(addrs)).await;
    }

    /// A sender of controls (sync groups).
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// Gives up mastership (priority 0), removes the VIPs and stops.
    pub async fn shutdown(self) {
        let active: Vec<String> = self
            .tracking()
            .active()
            .map(|(s, e)| format!("{s}={e:?}"))
            .collect();
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(4), rx).await;
        }
        let st = self.status.borrow().clone();
        let rejected: Vec<String> = st
            .rejected
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let rejected = if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(",")
        };
        tracing::info!(
            instance = %self.name,
            adverts_sent = st.adverts_sent,
            adverts_received = st.adverts_received,
            %rejected,
            transitions = st.transitions,
            became_master = st.became_master,
            tracking = %active.join(","),
            "VRRP stopped"
        );
    }
}

/// A tracking sender that tags events with the instance index.
fn tagged(tx: mpsc::Sender<(usize, TrackEvent)>, idx: usize) -> mpsc::Sender<TrackEvent> {
    let (itx, mut irx) = mpsc::channel::<TrackEvent>(64);
    tokio::spawn(async move {
        while let Some(ev) = irx.recv().await {
            if tx.send((idx, ev)).await.is_err() {
                return;
            }
        }
    });
    itx
}

/// A sync group as it runs: its members' statuses in, holds and faults out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// Name.
    pub name: String,
    /// Member instances.
    pub instances: Vec<String>,
    /// The group's state.
    pub state: Option<State>,
}

/// Starts the sync group task for `members` (their status and control).
pub fn start_group(
    name: String,
    members: Vec<(String, watch::Receiver<Status>, mpsc::Sender<Control>)>,
    notify: Option<std::path::PathBuf>,
    tasks: &mut Supervised,
) -> watch::Receiver<GroupStatus> {
    let instances: Vec<String> = members.iter().map(|(n, _, _)| n.clone()).collect();
    let (tx, rx) = watch::channel(GroupStatus {
        name: name.clone(),
        instances: instances.clone(),
        state: None,
    });
    let span = tracing::info_span!("sync_group", group = %name);
    tasks.spawn(
        format!("sync group {name}"),
        async move {
            let mut notifier = notify.map(|path| {
                Notifier::start(
                    Hook {
                        path,
                        env: vec![("HALB_SYNC_GROUP".into(), name.clone())],
                        timeout: crate::vrrp::notify::HOOK_TIMEOUT,
                    },
                    None,
                )
            });
            let mut rxs: Vec<watch::Receiver<Status>> =
                members.iter().map(|(_, r, _)| r.clone()).collect();
            let controls: Vec<mpsc::Sender<Control>> =
                members.iter().map(|(_, _, c)| c.clone()).collect();
            // The last order each member was given.
            let mut sent: Vec<Option<group::Order>> = vec![None; controls.len()];
            let mut last_state = None;
            loop {
                let views: Vec<group::Member> = rxs
                    .iter()
                    .map(|r| {
                        let s = r.borrow();
                        group::Member {
                            state: s.state,
                            wants: s.wants_master,
                            own_fault: s.own_fault,
                        }
                    })
                    .collect();
                let (d, orders) = group::orders(&views);
                for ((c, o), last) in controls.iter().zip(orders).zip(sent.iter_mut()) {
                    if last.map(|l| l.hold) != Some(o.hold) {
                        let _ = c.send(Control::Hold(o.hold)).await;
                    }
                    if last.map(|l| l.fault) != Some(o.fault) {
                        let _ = c.send(Control::GroupFault(o.fault)).await;
                    }
                    *last = Some(o);
                }
                if last_state != Some(d.state) && d.state != State::Initialize {
                    last_state = Some(d.state);
                    tracing::info!(state = d.state.name(), "sync group state change");
                    if let Some(n) = notifier.as_mut() {
                        n.notify(d.state);
                    }
                    tx.send_modify(|g| g.state = Some(d.state));
                }
                // Wait for any member to change.
                let changed =
                    futures_util::future::select_all(rxs.iter_mut().map(|r| Box::pin(r.changed())))
                        .await;
                if changed.0.is_err() {
                    return Ok(());
                }
            }
        }
        .instrument(span),
    );
    rx
}

/// Leading bits `a` and `b` share (0 across families).
fn common_prefix(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

/// Whether an instance may send its adverts from `a`: IPv4, an address
/// that is no VIP; IPv6, its link-local address, or with `global` unicast
/// peers a global one that is no VIP (each side's source is then the
/// address the other lists as its peer).
fn sends_from(a: &IpAddr, global: bool, vips: &[IpAddr]) -> bool {
    match a {
        IpAddr::V6(_) if !global => link_local(a),
        _ => !link_local(a) && !vips.contains(a),
    }
}

/// How long an IPv6 instance waits at start for the interface's
/// link-local address to leave duplicate address detection (one probe,
/// one second by default, after the link comes up).
const LINK_LOCAL_WAIT: Duration = Duration::from_secs(3);

/// The interface's usable addresses of one family. For IPv6, when the
/// kind of address the instance sends from is not usable yet (a node
/// started as its link came up, the address still in DAD): a link-local
/// one, or with global unicast peers a global one that is no VIP, this
/// waits for it, a bounded time.
async fn local_addresses(
    netlink: &Netlink,
    ifindex: u32,
    v6: bool,
    global: bool,
    vips: &[IpAddr],
) -> Result<Vec<IpAddr>, crate::net::NetError> {
    let deadline = tokio::time::Instant::now() + LINK_LOCAL_WAIT;
    loop {
        let local: Vec<IpAddr> = netlink
            .source_addresses(ifindex)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| a.is_ipv6() == v6)
            .collect();
        let ready = !v6 || local.iter().any(|a| sends_from(a, global, vips));
        if ready || tokio::time::Instant::now() >= deadline {
            return Ok(local);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every VIP address in `cfg`, once, in order of appearance.
pub fn vip_addresses(cfg: &Config) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for v in cfg.vips() {
        if !out.contains(v.address.get_ref()) {
            out.push(*v.address.get_ref());
        }
    }
    out
}

/// The addresses of the VIPs named `vips`, once each.
pub fn instance_addresses(cfg: &Config, vips: &[String]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for v in cfg.vips().filter(|v| vips.contains(v.name.get_ref())) {
        if !out.contains(v.address.get_ref()) {
            out.push(*v.address.get_ref());
        }
    }
    out
}

/// Link up/down of a tracked interface: down (or gone) is a FAULT.
async fn watch_interface(
    netlink: Netlink,
    name: String,
    tx: mpsc::Sender<TrackEvent>,
) -> Result<(), String> {
    let source = format!("interface:{name}");
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A link that is gone is down; a netlink request that fails or
        // times out says nothing about the link (no failover for it).
        let up = match netlink.link(&name).await {
            Ok(l) => l.up,
            Err(crate::net::NetError::NoSuchLink(_)) => false,
            Err(e) => {
                tracing::debug!(interface = %name, "link state unknown: {e}");
                continue;
            }
        };
        if last != Some(up) {
            last = Some(up);
            let effect = if up { Effect::None } else { Effect::Fault };
            if tx.send((source.clone(), effect)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The data plane being attached: no XDP program on the interface is a FAULT.
async fn watch_dataplane(
    netlink: Netlink,
    name: String,
    tx: mpsc::Sender<TrackEvent>,
) -> Result<(), String> {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let attached = match netlink.link(&name).await {
            Ok(l) => l.xdp_prog.is_some(),
            Err(crate::net::NetError::NoSuchLink(_)) => false,
            Err(e) => {
                tracing::debug!(interface = %name, "XDP state unknown: {e}");
                continue;
            }
        };
        if last != Some(attached) {
            last = Some(attached);
            let effect = if attached {
                Effect::None
            } else {
                Effect::Fault
            };
            if tx.send(("dataplane".into(), effect)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A keepalived-style `vrrp_script`: run every interval, rise/fall applied.
/// A run that overruns `timeout_ms` fails and its process group is killed
/// (see `crate::proc`); missed intervals are not made up for.
async fn run_script(s: TrackScript, tx: mpsc::Sender<TrackEvent>) -> Result<(), String> {
    let source = format!("script:{}", s.name);
    let mut state = RiseFall::new(s.rise, s.fall, true);
    let interval = Duration::from_millis(s.interval_ms as u64);
    let timeout = Duration::from_millis(s.timeout_ms() as u64);
    // Between the end of a run and the next start, at least what the
    // interval leaves beside the timeout: runs never go back to back.
    let gap = interval
        .saturating_sub(timeout)
        .max(Duration::from_millis(1));
    // Announce the initial state.
    if tx
        .send((source.clone(), script_effect(s.weight, true)))
        .await
        .is_err()
    {
        return Ok(());
    }
    loop {
        let start = tokio::time::Instant::now();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&s.script);
        let run = crate::proc::run(cmd, timeout).await;
        if !run.success() {
            tracing::debug!(
                script = %s.name,
                output = %run.output.trim_end(),
                "tracked script: {}",
                run.describe()
            );
        }
        if let Some(up) = state.record(run.success()) {
            if up {
                tracing::info!(script = %s.name, "tracked script succeeds again");
            } else {
                tracing::warn!(
                    script = %s.name,
                    result = %run.describe(),
                    output = %run.output.trim_end(),
                    "tracked script fails"
                );
            }
            if tx
                .send((source.clone(), script_effect(s.weight, up)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        let next = (start + interval).max(tokio::time::Instant::now() + gap);
        tokio::time::sleep_until(next).await;
    }
}

/// Prepares `new`'s VRRP sections for a reload from `running`: the running
/// instances keep their settings until a restart (true when some changed),
/// while the VIPs they own follow the new file. Adding or removing an
/// instance, switching between `[vrrp]` and `[[vrrp_instance]]`, or moving a
/// VIP address from one instance to another needs a restart: an error. The
/// sync groups, too, stay as they run until a restart.
pub fn for_reload(running: &Config, new: &mut Config) -> Result<bool, String> {
    // By name: reordering the sections changes nothing.
    let names = |c: &Config| {
        let mut n: Vec<String> = c.instances().iter().map(|i| i.name.clone()).collect();
        n.sort();
        n
    };
    if running.has_vrrp() != new.has_vrrp()
        || running.vrrp.is_some() != new.vrrp.is_some()
        || names(running) != names(new)
    {
        return Err(format!(
            "the VRRP instances change ({:?} → {:?}): adding, removing or renaming \
             instances needs a restart",
            names(running),
            names(new)
        ));
    }
    // An address owned by another instance than before.
    let owner = |c: &Config| {
        let mut m = std::collections::HashMap::new();
        for i in c.instances() {
            for a in instance_addresses(c, &i.vips) {
                m.insert(a, i.name.clone());
            }
        }
        m
    };
    // An instance of another family than before: its socket, source and
    // peers are of the running family (RFC 5798: a virtual router is of
    // one family), and its settings stay as they run until a restart.
    let family = |c: &Config| {
        c.instances()
            .iter()
            .map(|i| {
                let v6 = instance_addresses(c, &i.vips).first().map(IpAddr::is_ipv6);
                (i.name.clone(), v6)
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let (fam_before, fam_after) = (family(running), family(new));
    for (inst, after) in &fam_after {
        if let (Some(Some(b)), Some(a)) = (fam_before.get(inst), after) {
            if b != a {
                let name = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
                return Err(format!(
                    "instance {inst:?} changes from {} to {} VIPs: an instance's address \
                     family changes only with a restart",
                    name(*b),
                    name(*a)
                ));
            }
        }
    }
    let (before, after) = (owner(running), owner(new));
    for (addr, inst) in &after {
        if let Some(prev) = before.get(addr) {
            if prev != inst {
                return Err(format!(
                    "VIP address {addr} moves from instance {prev:?} to {inst:?}: that needs a restart"
                ));
            }
        }
    }
    let mut changed = false;
    if let (Some(old), Some(n)) = (&running.vrrp, &mut new.vrrp) {
        if old.get_ref() != n.get_ref() {
            changed = true;
            *n = old.clone();
        }
    }
    for n in &mut new.vrrp_instances {
        let name = n.get_ref().name.as_ref().map(|x| x.get_ref().clone());
        let Some(old) = running
            .vrrp_instances
            .iter()
            .find(|o| o.get_ref().name.as_ref().map(|x| x.get_ref()) == name.as_ref())
        else {
            continue;
        };
        let mut kept = old.get_ref().clone();
        kept.vips = n.get_ref().vips.clone();
        if &kept != n.get_ref() {
            changed = true;
            let span = n.span();
            *n = toml::Spanned::new(span, kept);
        }
    }
    if running.sync_groups != new.sync_groups {
        changed = true;
        new.sync_groups = running.sync_groups.clone();
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PAIR: &str = include_str!("../../../deploy/examples/active-active/halb-lb1.toml");

    fn cfg(text: &str) -> Config {
        crate::config::parse(Path::new("halb.toml"), text).expect("valid config")
    }

    fn prio(c: &Config, name: &str) -> u8 {
        c.instances()
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.vrrp.priority)
            .expect("instance")
    }

    #[test]
    fn a_reload_keeps_instance_settings_and_follows_the_vips() {
        let running = cfg(PAIR);
        let mut new = cfg(&PAIR
            .replacen("priority = 150", "priority = 200", 1)
            .replacen("address = \"10.77.0.101\"", "address = \"10.77.0.102\"", 1));
        assert_eq!(for_reload(&running, &mut new), Ok(true));
        assert_eq!(prio(&new, "VI_1"), 150, "settings kept until a restart");
        let vi2 = new
            .instances()
            .into_iter()
            .find(|i| i.name == "VI_2")
            .expect("VI_2");
        assert_eq!(
            instance_addresses(&new, &vi2.vips),
            [IpAddr::from([10, 77, 0, 102])],
            "the VIP address follows the file"
        );
        let mut same = cfg(PAIR);
        assert_eq!(for_reload(&running, &mut same), Ok(false));
    }

    #[test]
    fn a_reload_that_needs_a_restart_is_refused() {
        let running = cfg(PAIR);
        // A VIP address moving to the other instance.
        let mut swapped = cfg(&PAIR
            .replacen("vips = [\"web\"]", "vips = [\"x\"]", 1)
            .replacen("vips = [\"api\"]", "vips = [\"web\"]", 1)
            .replacen("vips = [\"x\"]", "vips = [\"api\"]", 1));
        let e = for_reload(&running, &mut swapped).expect_err("refused");
        assert!(e.contains("moves from instance"), "{e}");
        // VI_2's VIP (and its backends) turned IPv6: the instance's family.
        let (head, api) = PAIR.split_at(PAIR.find("name = \"api\"").expect("api vip"));
        let api6 = api
            .replace("10.77.0.101", "fd77::101")
            .replace("\"10.77.0.2", "\"fd77::2");
        // (Its peer too, or the file itself is refused.)
        let (h1, h2) = head.split_at(head.find("name = \"VI_2\"").expect("VI_2"));
        let h2 = h2.replace("[\"10.77.0.3\"]", "[\"fd77::3\"]");
        let mut v6 = cfg(&format!("{h1}{h2}{api6}"));
        let e = for_reload(&running, &mut v6).expect_err("refused");
        assert!(e.contains("changes from IPv4 to IPv6 VIPs"), "{e}");
        // A renamed instance.
        let mut renamed = cfg(&PAIR.replacen("name = \"VI_2\"", "name = \"VI_3\"", 1));
        let e = for_reload(&running, &mut renamed).expect_err("refused");
        assert!(e.contains("needs a restart"), "{e}");
    }

    #[test]
    fn sync_groups_stay_as_they_run_until_a_restart() {
        let running = cfg(PAIR);
        let mut grouped = cfg(&format!(
            "{PAIR}\n[[vrrp_sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n"
        ));
        assert_eq!(for_reload(&running, &mut grouped), Ok(true));
        assert!(grouped.sync_groups.is_empty());
    }
}
