//! The announce device: a TUN device that exists only while the agent's
//! process holds it open, and one host route per announced address through
//! it in the `[bgp] table`, with the `[bgp] route_protocol`. The routing
//! daemon exports that table. Nothing is ever routed through the device
//! (no rule points at the table); it carries the announcement's lifetime:
//! when the agent dies, SIGKILL included, the kernel closes the descriptor,
//! deletes the device and every route through it, and the daemon withdraws.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use crate::net::{NetError, Netlink};

/// Errors of the announce device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// /dev/net/tun could not be opened or the device not created.
    #[error("cannot create the announce device {name:?}: {why}")]
    Create {
        /// Device name.
        name: String,
        /// What failed.
        why: String,
    },
    /// A netlink request failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// The device and the routes through it.
pub struct Device {
    /// Keeps the device alive; dropped, the kernel removes it.
    _fd: File,
    name: String,
    index: u32,
    table: u32,
    proto: u8,
    netlink: Netlink,
}

impl Device {
    /// Creates the device `name`, which must not exist, and sets it up;
    /// refuses when `table` holds routes of `proto` already (an agent's
    /// routes die with its device, so they are someone else's).
    pub async fn create(
        netlink: &Netlink,
        name: &str,
        table: u32,
        proto: u8,
    ) -> Result<Self, DeviceError> {
        let err = |why: String| DeviceError::Create {
            name: name.into(),
            why,
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(err("the name must be 1-15 bytes".into()));
        }
        // A device of that name that is not ours (a persistent TUN, another
        // program's) would outlive the agent, and its routes with it.
        match netlink.link(name).await {
            Ok(_) => {
                return Err(err(
                    "a device of that name exists already (a persistent TUN or another \
                     program's); the announce device must be the agent's own, gone with it"
                        .into(),
                ))
            }
            Err(NetError::NoSuchLink(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Routes of our protocol in our table through anything else would
        // be exported by the daemon whatever the agent decides.
        let foreign: Vec<String> = netlink
            .routes(table, proto)
            .await?
            .into_iter()
            .map(|(a, plen, _)| format!("{a}/{plen}"))
            .collect();
        if !foreign.is_empty() {
            return Err(err(format!(
                "table {table} holds routes of protocol {proto} that are not the agent's \
                 ({}): remove them (ip route flush table {table} proto {proto})",
                foreign.join(", ")
            )));
        }
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| err(format!("/dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is
        // (name, flags, and padding to the full size) and outlives the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                " (another process holds a device of that name: is another agent running?)"
            } else {
                ""
            };
            return Err(err(format!("TUNSETIFF: {e}{hint}")));
        }
        let link = netlink.link(name).await?;
        netlink.set_up(link.index).await?;
        let dev = Self {
            _fd: fd,
            name: name.into(),
            index: link.index,
            table,
            proto,
            netlink: netlink.clone(),
        };
        Ok(dev)
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the table hold exactly `wanted` (host routes through the
    /// device): adds what is missing, deletes the rest of this protocol's
    /// routes. Returns (added, deleted).
    pub async fn set(
        &self,
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), DeviceError> {
        let have: BTreeSet<IpAddr> = self
            .netlink
            .routes(self.table, self.proto)
            .await?
            .into_iter()
            .filter(|(a, plen, oif)| *plen == crate::net::host_len(*a) && *oif == self.index)
            .map(|(a, _, _)| a)
            .collect();
        let mut added = Vec::new();
        for a in wanted.difference(&have) {
            self.netlink
                .add_host_route(self.table, self.proto, *a, self.index)
                .await?;
            added.push(*a);
        }
        let mut deleted = Vec::new();
        for a in have.difference(wanted) {
            self.netlink
                .del_host_route(self.table, self.proto, *a, self.index)
                .await?;
            deleted.push(*a);
        }
        Ok((added, deleted))
    }
}
