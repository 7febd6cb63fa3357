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

    // What was there before is put back (or left) on exit.
    let mut saved = Vec::new();
    if opts.vips.iter().any(|v| v.is_ipv4()) {
        for (path, value) in arp_sysctls(&opts.interface) {
            let old = std::fs::read_to_string(&path).map_err(sysctl_err(&path))?;
            std::fs::write(&path, value).map_err(sysctl_err(&path))?;
            saved.push((path, old.trim().to_string()));
        }
    }
    let before: Vec<IpAddr> = netlink
        .addresses(lo.index)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let mut added = Vec::new();
    let mut result = Ok(());
    for v in &opts.vips {
        if before.contains(v) {
            continue;
        }
        if let Err(e) = netlink.add_address(lo.index, *v, host_len(*v)).await {
            result = Err(e.into());
            break;
        }
        added.push(*v);
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
        }
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
