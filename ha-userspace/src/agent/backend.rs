//! `halb backend`, the backend side of routed VIPs: wires the
//! decapsulation program (`dataplane::decap`) to an interface, puts the
//! VIPs on `lo` with the ARP settings of a DSR backend, keeps the
//! program's idea of this host's addresses current, and undoes all of it
//! on SIGTERM or SIGINT.

use std::net::IpAddr;
use std::time::Duration;

use crate::dataplane::decap::{Decap, DecapConf};
use crate::dataplane::{self, ModeWanted};
use crate::net::{host_len, NetError, Netlink};

/// How `halb backend` was asked to run.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// The interface tunnel packets arrive on.
    pub interface: String,
    /// The VIPs served here (inner destinations).
    pub vips: Vec<IpAddr>,
    /// Decapsulate IP in IP.
    pub ipip: bool,
    /// Decapsulate GUE on this port.
    pub gue_port: Option<u16>,
    /// XDP attach mode.
    pub xdp_mode: ModeWanted,
    /// Where a run records what it changed (for the next run after a crash).
    pub state_dir: std::path::PathBuf,
}

/// What a run changed, kept on disk while it runs: the VIPs it added to
/// `lo` and the original values of the sysctls it set. A clean exit puts
/// it all back and removes the record; the next start after a crash reads
/// it, so that it still removes those VIPs and restores those values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// VIPs added to `lo`.
    pub added: Vec<IpAddr>,
    /// (sysctl file, original value).
    pub sysctls: Vec<(String, String)>,
}

impl Record {
    /// The record's file for `interface` in `dir`.
    pub fn path(dir: &std::path::Path, interface: &str) -> std::path::PathBuf {
        dir.join(format!("{interface}.state"))
    }

    /// The record at `path`; empty when there is none (or it is unreadable:
    /// then this run only knows what it sees).
    pub fn read(path: &std::path::Path) -> Record {
        std::fs::read_to_string(path)
            .map(|t| Record::parse(&t))
            .unwrap_or_default()
    }

    /// Parses `added ADDR` and `sysctl PATH VALUE` lines (pure: unit-tested).
    pub fn parse(text: &str) -> Record {
        let mut r = Record::default();
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("added"), Some(a), None) => r.added.extend(a.parse::<IpAddr>().ok()),
                (Some("sysctl"), Some(p), Some(v)) if p.starts_with("/proc/sys/") => {
                    r.sysctls.push((p.to_string(), v.to_string()))
                }
                _ => {}
            }
        }
        r
    }

    fn write(path: &std::path::Path, added: &[IpAddr], sysctls: &[(String, String)]) {
        let mut text = String::new();
        for a in added {
            text.push_str(&format!("added {a}\n"));
        }
        for (p, v) in sysctls {
            text.push_str(&format!("sysctl {p} {v}\n"));
        }
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, text));
        if let Err(e) = result {
            tracing::warn!(
                "cannot record what this run changed in {} ({e}); after a crash the next \
                 start would not know it",
                path.display()
            );
        }
    }
}

/// `halb backend` errors.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Nothing to do, or a VIP that cannot be one.
    #[error("{0}")]
    Usage(String),
    /// The program did not load or attach.
    #[error("decapsulation program: {0}")]
    DataPlane(#[from] dataplane::Error),
    /// Netlink failed.
    #[error("{0}")]
    Net(#[from] NetError),
    /// A sysctl could not be read or written.
    #[error("{path}: {source}")]
    Sysctl {
        /// The file under /proc/sys.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

/// How often this host's own addresses (the outer destinations) are re-read.
const ADDRESS_REFRESH: Duration = Duration::from_secs(2);

/// The ARP settings of a host that holds VIPs on `lo` (as for keepalived's
/// DR backends): answer ARP only for addresses of the asking interface,
/// and never source ARP from a VIP.
fn arp_sysctls(interface: &str) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for dev in ["all", interface] {
        out.push((format!("/proc/sys/net/ipv4/conf/{dev}/arp_ignore"), "1"));
        out.push((format!("/proc/sys/net/ipv4/conf/{dev}/arp_announce"), "2"));
    }
    out
}

fn sysctl_err(path: &str) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Sysctl {
        path: path.to_string(),
        source,
    }
}

/// Checks the options (pure: unit-tested).
pub fn check(opts: &BackendOptions) -> Result<(), BackendError> {
    if opts.vips.is_empty() {
        return Err(BackendError::Usage(
            "no VIP to serve: give --vip ADDRESS (once per VIP)".into(),
        ));
    }
    if !opts.ipip && opts.gue_port.is_none() {
        return Err(BackendError::Usage(
            "nothing to decapsulate: IP in IP is off (--no-ipip) and no --gue-port".into(),
        ));
    }
    if opts.gue_port == Some(0) {
        return Err(BackendError::Usage("--gue-port must be 1-65535".into()));
    }
    for v in &opts.vips {
        if v.is_unspecified() || v.is_loopback() || v.is_multicast() || crate::net::link_local(v) {
            return Err(BackendError::Usage(format!(
                "--vip {v} cannot be a VIP (unspecified, loopback, multicast or link-local)"
            )));
        }
    }
    Ok(())
}

/// Runs the backend side until SIGTERM or SIGINT.
pub async fn run(opts: BackendOptions) -> Result<(), BackendError> {
    check(&opts)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(BackendError::Signal)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(BackendError::Signal)?;
    let (netlink, conn) = Netlink::open()?;
    let link = netlink.link(&opts.interface).await?;
    let lo = netlink.link("lo").await?;
    let mut decap = Decap::load(DecapConf {
        ipip: opts.ipip,
        gue_port: opts.gue_port,
    })?;
    let mut local = own_addresses(&netlink, link.index).await?;
    decap.set_addresses(&opts.vips, &local)?;

    // What was there before is put back (or left) on exit. A run that
    // died without cleaning up left its record: what it added is still
    // ours to remove, and its saved sysctls are the originals.
    let record = Record::path(&opts.state_dir, &opts.interface);
    let prior = Record::read(&record);
    let mut saved: Vec<(String, String)> = Vec::new();
    let mut added: Vec<IpAddr> = prior.added.clone();
    let mut result: Result<(), BackendError> = Ok(());
    if opts.vips.iter().any(|v| v.is_ipv4()) {
        for (path, value) in arp_sysctls(&opts.interface) {
            let old = match prior.sysctls.iter().find(|(p, _)| *p == path) {
                Some((_, v)) => Ok(v.clone()),
                None => std::fs::read_to_string(&path)
                    .map(|v| v.trim().to_string())
                    .map_err(sysctl_err(&path)),
            };
            let step = old.and_then(|old| {
                std::fs::write(&path, value).map_err(sysctl_err(&path))?;
                saved.push((path.clone(), old));
                Ok(())
            });
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
    }
    let before: Vec<IpAddr> = match &result {
        Ok(()) => match netlink.addresses(lo.index).await {
            Ok(a) => a.into_iter().map(|(a, _)| a).collect(),
            Err(e) => {
                result = Err(e.into());
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    };
    if result.is_ok() {
        for v in &opts.vips {
            if before.contains(v) {
                continue;
            }
            // Recorded before it is added: a crash in between leaves a
            // record of at most one address too many (removing an absent
            // address is fine).
            if !added.contains(v) {
                added.push(*v);
            }
            Record::write(&record, &added, &saved);
            if let Err(e) = netlink.add_address(lo.index, *v, host_len(*v)).await {
                result = Err(e.into());
                break;
            }
        }
        Record::write(&record, &added, &saved);
    }
    let attached = match result {
        Ok(()) => decap
            .attach(&opts.interface, link.index, opts.xdp_mode)
            .map_err(BackendError::from),
        Err(e) => Err(e),
    };
    if let Ok(mode) = &attached {
        let vips: Vec<String> = opts.vips.iter().map(|v| v.to_string()).collect();
        tracing::info!(
            interface = %opts.interface,
            mode = mode.as_str(),
            ipip = opts.ipip,
            gue_port = opts.gue_port.unwrap_or(0),
            vips = %vips.join(","),
            "backend side ready: decapsulating for the VIPs on lo"
        );
        let mut refresh = tokio::time::interval(ADDRESS_REFRESH);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = refresh.tick() => {
                    match own_addresses(&netlink, link.index).await {
                        Ok(now) if now != local => {
                            if let Err(e) = decap.set_addresses(&opts.vips, &now) {
                                tracing::warn!("address update: {e}");
                            } else {
                                tracing::info!(addresses = ?now, "this host's addresses changed");
                                local = now;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("address dump: {e}"),
                    }
                }
            }
        }
        if let Ok(stats) = decap.stats() {
            for (s, c) in stats {
                tracing::info!(
                    stat = s.name(),
                    packets = c.packets,
                    "decapsulation counter"
                );
            }
        }
    }
    // Clean up: detach, remove what was added, restore the sysctls.
    drop(decap);
    for v in added {
        if let Err(e) = netlink.del_address(lo.index, v, host_len(v)).await {
            tracing::warn!("remove {v} from lo: {e}");
        }
    }
    for (path, old) in saved {
        if let Err(e) = std::fs::write(&path, &old) {
            tracing::warn!("restore {path}: {e}");
        }
    }
    if let Err(e) = std::fs::remove_file(&record) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("remove {}: {e}", record.display());
        }
    }
    conn.abort();
    attached.map(|_| {
        tracing::info!("backend side stopped: program detached, VIPs removed from lo");
    })
}

async fn own_addresses(netlink: &Netlink, ifindex: u32) -> Result<Vec<IpAddr>, NetError> {
    let mut a: Vec<IpAddr> = netlink
        .addresses(ifindex)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    a.sort();
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BackendOptions {
        BackendOptions {
            interface: "eth0".into(),
            vips: vec!["10.77.0.100".parse().expect("vip")],
            ipip: true,
            gue_port: None,
            xdp_mode: ModeWanted::Auto,
            state_dir: "/run/halb-backend".into(),
        }
    }

    #[test]
    fn a_record_round_trips_and_ignores_what_it_cannot_trust() {
        let text =
            "added 10.77.0.100\nadded fd77::100\nsysctl /proc/sys/net/ipv4/conf/all/arp_ignore 0\n\
                    sysctl /etc/passwd x\nadded nonsense\n";
        let r = Record::parse(text);
        assert_eq!(
            r.added,
            [
                "10.77.0.100".parse::<IpAddr>().expect("a"),
                "fd77::100".parse().expect("a")
            ]
        );
        assert_eq!(
            r.sysctls,
            [(
                "/proc/sys/net/ipv4/conf/all/arp_ignore".to_string(),
                "0".to_string()
            )]
        );
    }

    #[test]
    fn options_that_cannot_work_are_refused_with_the_reason() {
        assert!(check(&opts()).is_ok());
        let mut o = opts();
        o.vips.clear();
        assert!(check(&o).unwrap_err().to_string().contains("--vip"));
        let mut o = opts();
        o.ipip = false;
        assert!(check(&o)
            .unwrap_err()
            .to_string()
            .contains("nothing to decapsulate"));
        o.gue_port = Some(0);
        assert!(check(&o).unwrap_err().to_string().contains("1-65535"));
        let mut o = opts();
        o.vips.push("fe80::1".parse().expect("ll"));
        assert!(check(&o).unwrap_err().to_string().contains("fe80::1"));
    }

    #[test]
    fn arp_settings_cover_all_and_the_interface() {
        let s = arp_sysctls("eth1");
        assert!(s.contains(&("/proc/sys/net/ipv4/conf/all/arp_ignore".into(), "1")));
        assert!(s.contains(&("/proc/sys/net/ipv4/conf/eth1/arp_announce".into(), "2")));
    }
}
