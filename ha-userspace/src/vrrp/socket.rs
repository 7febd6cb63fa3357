//! The VRRP socket of one virtual router: a raw socket for protocol 112 on
//! one interface, IPv4 (we build the IP header, TTL 255) or IPv6 (the
//! kernel builds it from our link-local source with hop limit 255; the
//! hop limit and destination of what arrives come back as control
//! messages, since an IPv6 raw socket delivers no IP header).

use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, MaybeUninitSlice, MsgHdrMut, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{self, Expect, Received, Reject};
use crate::net::Link;

/// A raw socket for VRRP on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    v6: bool,
}

/// One packet as received: the bytes the socket delivered and, for IPv6,
/// the header facts the kernel reported beside them.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Bytes in the buffer (IPv4: from the IP header; IPv6: VRRP only).
    pub len: usize,
    /// IPv6: source, destination and hop limit.
    pub v6: Option<(Ipv6Addr, Ipv6Addr, u8)>,
}

impl Arrival {
    /// Parses what arrived in `buf`.
    pub fn parse(&self, buf: &[u8], expect: &Expect) -> Result<Received, Reject> {
        let pkt = &buf[..self.len.min(buf.len())];
        match self.v6 {
            None => packet::parse(pkt, expect),
            Some((src, dst, hops)) => packet::parse6(pkt, src, dst, hops, expect),
        }
    }

    /// The sender's address, when it can be told before parsing.
    pub fn source(&self, buf: &[u8]) -> Option<IpAddr> {
        match self.v6 {
            Some((src, _, _)) => Some(IpAddr::V6(src)),
            None if self.len >= 16 && buf.len() >= 16 => Some(IpAddr::V4(std::net::Ipv4Addr::new(
                buf[12], buf[13], buf[14], buf[15],
            ))),
            None => None,
        }
    }
}

impl VrrpSocket {
    /// Opens it for `src`'s family: bound to the interface, TTL or hop
    /// limit 255, joined to the VRRP group (224.0.0.18 or ff02::12) when
    /// `multicast`, not looping our own packets, and receiving only packets
    /// for `vrid` (a socket filter: the other instances on the link are not
    /// this router's business, and not rejections either).
    pub fn open(link: &Link, src: IpAddr, multicast: bool, vrid: u8) -> std::io::Result<Self> {
        let proto = Some(Protocol::from(packet::IPPROTO_VRRP as i32));
        let s = match src {
            IpAddr::V4(src) => {
                let s = Socket::new_raw(Domain::IPV4, Type::RAW, proto)?;
                // IPv4 raw sockets see the IP header: skip it.
                s.attach_filter(&vrid_filter(vrid, true))?;
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
                s
            }
            IpAddr::V6(src) => {
                let s = Socket::new_raw(Domain::IPV6, Type::RAW, proto)?;
                s.attach_filter(&vrid_filter(vrid, false))?;
                s.bind_device(Some(link.name.as_bytes()))?;
                // The source of what we send: the kernel must not pick one.
                let scope = if src.is_unicast_link_local() {
                    link.index
                } else {
                    0
                };
                s.bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, scope)))?;
                s.set_multicast_loop_v6(false)?;
                s.set_multicast_hops_v6(packet::TTL as u32)?;
                s.set_unicast_hops_v6(packet::TTL as u32)?;
                s.set_multicast_if_v6(link.index)?;
                // Traffic class 0xc0 (network control), as the IPv4 TOS.
                s.set_tclass_v6(0xc0)?;
                s.set_recv_hoplimit_v6(true)?;
                set_recv_pktinfo6(&s)?;
                if multicast {
                    s.join_multicast_v6(&packet::MULTICAST6, link.index)?;
                }
                s
            }
        };
        s.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd from here on and closed
        // only when it is dropped, after deregistration.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            ifindex: link.index,
            v6: src.is_ipv6(),
        })
    }

    /// Receives one packet into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<Arrival> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                let s = inner.get_ref();
                // SAFETY: recv writes at most buf.len() initialised bytes.
                let uninit = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                        buf.len(),
                    )
                };
                if self.v6 {
                    recv6(s, uninit)
                } else {
                    s.recv(uninit).map(|len| Arrival { len, v6: None })
                }
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one packet to `dst`: a whole IPv4 packet, or the VRRP part of
    /// an IPv6 one.
    pub fn send(&self, dst: IpAddr, pkt: &[u8]) -> std::io::Result<()> {
        let addr = match dst {
            IpAddr::V4(d) => SockAddr::from(SocketAddrV4::new(d, 0)),
            IpAddr::V6(d) => {
                let scope = if d.is_multicast() || d.is_unicast_link_local() {
                    self.ifindex
                } else {
                    0
                };
                SockAddr::from(SocketAddrV6::new(d, 0, 0, scope))
            }
        };
        self.fd.get_ref().send_to(pkt, &addr).map(|_| ())
    }
}

/// Receives one IPv6 packet with its source (the socket address), its
/// destination (IPV6_PKTINFO) and its hop limit (IPV6_HOPLIMIT). A packet
/// without both control messages reports hop limit 0, which the parser
/// rejects, rather than being trusted.
fn recv6(s: &Socket, buf: &mut [MaybeUninit<u8>]) -> std::io::Result<Arrival> {
    let mut control = [MaybeUninit::<u8>::uninit(); 128];
    // Overwritten by recvmsg with the sender's address.
    let mut from = SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut bufs = [MaybeUninitSlice::new(buf)];
    let mut msg = MsgHdrMut::new()
        .with_addr(&mut from)
        .with_buffers(&mut bufs)
        .with_control(&mut control);
    let len = s.recvmsg(&mut msg, 0)?;
    let control_len = msg.control_len().min(128);
    // SAFETY: the kernel initialised the first control_len bytes.
    let control: &[u8] =
        unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), control_len) };
    let src = match from.as_socket() {
        Some(SocketAddr::V6(a)) => *a.ip(),
        _ => Ipv6Addr::UNSPECIFIED,
    };
    let (mut dst, mut hops) = (Ipv6Addr::UNSPECIFIED, 0u8);
    for (level, kind, data) in cmsgs(control) {
        if level != libc::IPPROTO_IPV6 {
            continue;
        }
        match kind {
            libc::IPV6_HOPLIMIT if data.len() >= 4 => {
                let h = i32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                hops = u8::try_from(h).unwrap_or(0);
            }
            libc::IPV6_PKTINFO if data.len() >= 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&data[..16]);
                dst = Ipv6Addr::from(a);
            }
            _ => {}
        }
    }
    Ok(Arrival {
        len,
        v6: Some((src, dst, hops)),
    })
}

/// The control messages in `buf`: (level, type, data), by the Linux
/// layout (a `cmsghdr` of length, level and type, data and each message
/// aligned to the size of a `usize`). A message cut short ends the walk.
fn cmsgs(buf: &[u8]) -> Vec<(i32, i32, &[u8])> {
    const W: usize = std::mem::size_of::<usize>();
    let head = W + 8;
    let align = |n: usize| n.div_ceil(W) * W;
    let mut out = Vec::new();
    let mut at = 0;
    while at + head <= buf.len() {
        let mut lb = [0u8; W];
        lb.copy_from_slice(&buf[at..at + W]);
        let len = usize::from_ne_bytes(lb);
        if len < head || at + len > buf.len() {
            break;
        }
        let word = |o: usize| i32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        out.push((
            word(at + W),
            word(at + W + 4),
            &buf[at + align(head)..at + len],
        ));
        at += align(len);
    }
    out
}

fn set_recv_pktinfo6(s: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and an int-sized option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A classic BPF program that keeps VRRP packets whose VRID byte (the
/// second byte of the VRRP header) is `vrid`. An IPv4 raw socket sees the
/// packet from the IP header on (`skip_ip`), an IPv6 one from VRRP on.
fn vrid_filter(vrid: u8, skip_ip: bool) -> Vec<socket2::SockFilter> {
    use socket2::SockFilter as F;
    const LDX_MSH: u16 = 0xb1; // X = 4 * (P[k] & 0xf): the IP header length
    const LDB_IND: u16 = 0x50; // A = P[X + k]
    const LDB_ABS: u16 = 0x30; // A = P[k]
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let mut f = Vec::with_capacity(5);
    if skip_ip {
        f.push(F::new(LDX_MSH, 0, 0, 0));
        f.push(F::new(LDB_IND, 0, 0, 1));
    } else {
        f.push(F::new(LDB_ABS, 0, 0, 1));
    }
    f.push(F::new(JEQ_K, 0, 1, vrid as u32));
    f.push(F::new(RET_K, 0, 0, u32::MAX));
    f.push(F::new(RET_K, 0, 0, 0));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_walked_and_a_cut_one_ends_the_walk() {
        const W: usize = std::mem::size_of::<usize>();
        let msg = |level: i32, kind: i32, data: &[u8]| {
            let mut m = Vec::new();
            m.extend_from_slice(&(W + 8 + data.len()).to_ne_bytes());
            m.extend_from_slice(&level.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(data);
            while m.len() % W != 0 {
                m.push(0);
            }
            m
        };
        let mut buf = msg(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &255i32.to_ne_bytes(),
        );
        buf.extend(msg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &[7; 20]));
        let all = cmsgs(&buf);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_HOPLIMIT,
                &255i32.to_ne_bytes()[..]
            )
        );
        assert_eq!(all[1].2, &[7; 20][..]);
        // A length beyond the buffer stops the walk at that message.
        let cut = &buf[..buf.len() - 8];
        assert_eq!(cmsgs(cut).len(), 1);
        // A length below the header's size is not trusted either.
        let mut bad = buf.clone();
        bad[..W].copy_from_slice(&3usize.to_ne_bytes());
        assert!(cmsgs(&bad).is_empty());
    }
}
