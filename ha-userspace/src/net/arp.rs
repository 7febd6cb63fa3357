//! Address announcements on takeover: gratuitous ARP (IPv4) and
//! unsolicited Neighbor Advertisements (IPv6, RFC 4861 §7.2.6), as raw
//! Ethernet frames on an `AF_PACKET` socket. Built by hand: two fixed
//! layouts of a few fields, where a packet crate would add a dependency
//! for less code than its glue.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// A gratuitous ARP request for `addr` from `mac`: sender and target
/// address both `addr`, to the broadcast address (what keepalived sends;
/// Linux hosts update an existing neighbour entry from it).
pub fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&addr.octets());
    f
}

const ETH_P_IPV6: u16 = 0x86dd;
/// ICMPv6 next header.
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type Neighbor Advertisement.
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NA flag Override: receivers replace the MAC they have.
const NA_OVERRIDE: u8 = 0x20;

/// An unsolicited Neighbor Advertisement for `addr` from `mac`: to
/// all-nodes (ff02::1), from `addr` itself, hop limit 255, the Override
/// flag set and a target link-layer address option (what keepalived sends;
/// hosts and routers replace the MAC of an existing entry from it).
pub fn una_frame(mac: [u8; 6], addr: Ipv6Addr) -> [u8; 86] {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // IPv6 header: version 6, payload 32 (NA 24 + option 8), ICMPv6, 255.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = IPPROTO_ICMPV6;
    f[21] = 255;
    f[22..38].copy_from_slice(&addr.octets());
    f[38..54].copy_from_slice(&all_nodes.octets());
    // ICMPv6 NA: type, code 0, checksum, flags, reserved, target, option.
    f[54] = ND_NEIGHBOR_ADVERT;
    f[58] = NA_OVERRIDE;
    f[62..78].copy_from_slice(&addr.octets());
    f[78] = 2; // target link-layer address
    f[79] = 1; // in units of 8 bytes
    f[80..86].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&addr.octets(), &all_nodes.octets(), &f[54..86]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The announcement frame for `addr`: gratuitous ARP or unsolicited NA.
pub fn announce_frame(mac: [u8; 6], addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => garp_frame(mac, a).to_vec(),
        IpAddr::V6(a) => una_frame(mac, a).to_vec(),
    }
}

/// The ICMPv6 checksum of `body` (its checksum field zero) over the IPv6
/// pseudo-header of `src` and `dst`.
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], body: &[u8]) -> u16 {
    let pseudo = crate::net::pseudo_header6(src, dst, body.len(), IPPROTO_ICMPV6);
    crate::net::checksum(&[&pseudo, body])
}

/// A socket that sends raw frames out of one interface.
pub struct RawSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl RawSender {
    /// Opens an `AF_PACKET` socket for `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, ifindex })
    }

    /// Sends one frame (destination MAC taken from the frame).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        if frame.len() >= 6 {
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        }
        // SAFETY: frame and sll are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsolicited_na_layout_and_checksum() {
        let vip: Ipv6Addr = "fd77::100".parse().expect("address");
        let mac = [2, 0, 0, 0, 0, 9];
        let f = una_frame(mac, vip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[21], 255, "hop limit");
        assert_eq!(&f[22..38], &vip.octets(), "source is the VIP");
        assert_eq!(f[54], 136);
        assert_eq!(
            f[58] & 0xe0,
            NA_OVERRIDE,
            "override set, solicited and router clear"
        );
        assert_eq!(&f[62..78], &vip.octets());
        assert_eq!(&f[78..86], &[2, 1, 2, 0, 0, 0, 0, 9]);
        // Over a correct checksum the sum folds to zero.
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        assert_eq!(icmpv6_checksum(&vip.octets(), &all_nodes, &f[54..86]), 0);
        let mut bad = f;
        bad[70] ^= 1;
        assert_ne!(icmpv6_checksum(&vip.octets(), &all_nodes, &bad[54..86]), 0);
        assert_eq!(announce_frame(mac, IpAddr::V6(vip)), f.to_vec());
        // The same frame as scapy builds it (Ether/IPv6(hlim=255)/
        // ICMPv6ND_NA(O=1)/ICMPv6NDOptDstLLAddr), checksum included: a
        // known answer from another implementation.
        let scapy = "33330000000102000000000986dd6000000000203afffd77000000000000000000000000\
                     0100ff020000000000000000000000000001880057a720000000fd770000000000000000\
                     0000000001000201020000000009";
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, scapy);
    }

    #[test]
    fn garp_layout() {
        let f = garp_frame([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[10, 77, 0, 100]);
        assert_eq!(&f[38..42], &[10, 77, 0, 100]);
    }
}
