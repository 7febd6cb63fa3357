//! Packet parsing: Ethernet, IPv4, IPv6 (with the extension headers it
//! walks) and the first bytes of TCP/UDP, with every bound checked against
//! the frame's end. Pure: no map access.

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// EtherType IPv4, raw (as it sits in the frame).
pub const ETH_P_IP_RAW: u16 = 0x0800u16.to_be();
/// EtherType IPv6, raw.
pub const ETH_P_IPV6_RAW: u16 = 0x86ddu16.to_be();
/// IPv6 next-header values of the extension headers the program knows.
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DEST_OPTS: u8 = 60;
/// ICMPv6 (next header).
pub const NH_ICMPV6: u8 = 58;
/// ICMP (IPv4 protocol).
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 inside (IP protocol / next header 4: IP in IP).
pub const NH_IPV4: u8 = 4;
/// IPv6 inside (41).
pub const NH_IPV6: u8 = 41;
/// MF flag and fragment offset, raw.
pub const IP_FRAG_MASK_RAW: u16 = 0x3fffu16.to_be();
/// TCP flags.
pub const TCP_FIN: u8 = 0x01;
/// See [`TCP_FIN`].
pub const TCP_SYN: u8 = 0x02;
/// See [`TCP_FIN`].
pub const TCP_RST: u8 = 0x04;
/// See [`TCP_FIN`].
pub const TCP_ACK: u8 = 0x10;

/// Loads a `T` from packet memory. Packet fields are at most 2-byte aligned;
/// the BPF target and its JITs permit such loads (the verifier allows
/// unaligned packet access where the CPU does), so this is one load
/// instruction instead of a byte-by-byte assembly.
///
/// # Safety
/// `addr .. addr + size_of::<T>()` must have been checked against `data_end`.
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { *(addr as *const T) }
}

/// What the first look at a frame found.
pub enum Head {
    /// Shorter than Ethernet, or an IP header cut short.
    Truncated,
    /// Neither IPv4 nor IPv6.
    NotIp,
    /// An IPv4 header of at least 20 bytes, destination `daddr` (raw).
    Ipv4 {
        /// Start of the IP header.
        ip: usize,
        /// Destination address, raw.
        daddr: u32,
    },
    /// An IPv6 fixed header (40 bytes present).
    Ipv6 {
        /// Start of the IP header.
        ip: usize,
    },
}

/// Ethernet and the fixed part of IPv4 or IPv6.
#[inline(always)]
pub fn head(data: usize, end: usize) -> Head {
    if data + ETH_HLEN + IPV4_HLEN > end {
        if data + ETH_HLEN > end {
            return Head::Truncated;
        }
        // SAFETY: 14 bytes present.
        let et = unsafe { load::<u16>(data + 12) };
        if et != ETH_P_IP_RAW && et != ETH_P_IPV6_RAW {
            return Head::NotIp;
        }
        return Head::Truncated;
    }
    // SAFETY (all packet loads below): inside the range checked above.
    let et = unsafe { load::<u16>(data + 12) };
    let ip = data + ETH_HLEN;
    if et == ETH_P_IP_RAW {
        return Head::Ipv4 {
            ip,
            daddr: unsafe { load(ip + 16) },
        };
    }
    if et != ETH_P_IPV6_RAW {
        return Head::NotIp;
    }
    if ip + IPV6_HLEN > end {
        return Head::Truncated;
    }
    Head::Ipv6 { ip }
}

/// The IPv4 source address, raw (`ip .. ip + 20` checked by [`head`]).
#[inline(always)]
pub fn saddr4(ip: usize) -> u32 {
    // SAFETY: inside the IP header checked by `head`.
    unsafe { load(ip + 12) }
}

/// Source (`at` = 8) or destination (`at` = 24) address of an IPv6
/// header whose 40 bytes [`head`] checked, as four raw words.
#[inline(always)]
pub fn addr6(ip: usize, at: usize) -> [u32; 4] {
    // SAFETY: `ip + at .. ip + at + 16` lies in the checked fixed header.
    unsafe {
        [
            load(ip + at),
            load(ip + at + 4),
            load(ip + at + 8),
            load(ip + at + 12),
        ]
    }
}

/// A TCP or UDP packet whose headers are all present and consistent.
pub struct L4 {
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// Source and destination port as they sit in the header.
    pub ports: u32,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

/// Why an IP packet cannot be balanced.
pub enum Bad {
    /// Version, header or payload length, or L4 header inconsistent with
    /// the frame.
    Malformed,
    /// A fragment (IPv4: MF set or offset non-zero; IPv6: a fragment header).
    Fragment,
    /// Neither TCP nor UDP.
    OtherProto,
    /// IPv6 extension headers the program does not walk through.
    ExtHeaders,
    /// ICMP (IPv4) or ICMPv6: its header starts here (nothing of it checked).
    Icmp(usize),
}

/// The rest of IPv4 and the L4 header. The packet is well-formed when
/// `ihl*4 + l4_min <= tot_len <= bytes after the Ethernet header`: a total
/// length beyond the frame means a cut packet, and one shorter than the
/// headers would make the ports and flags come from Ethernet padding.
#[inline(always)]
pub fn l4(ip: usize, end: usize) -> Result<L4, Bad> {
    // SAFETY (all loads): `ip .. ip + 20` was checked by `head`.
    let vihl: u8 = unsafe { load(ip) };
    let tot_len = u16::from_be(unsafe { load(ip + 2) }) as usize;
    let frag: u16 = unsafe { load(ip + 6) };
    let proto: u8 = unsafe { load(ip + 9) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    // Compared as lengths, not as `ip + tot_len > end`: older verifiers
    // (Linux 6.1) do not bound a byte-swapped value and refuse pointer
    // arithmetic with it.
    let room = end - ip;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || tot_len < ihl || tot_len > room {
        return Err(Bad::Malformed);
    }
    if frag & IP_FRAG_MASK_RAW != 0 {
        return Err(Bad::Fragment);
    }
    let l4_min = match proto {
        ha_common::IPPROTO_TCP => TCP_HLEN,
        ha_common::IPPROTO_UDP => UDP_HLEN,
        IPPROTO_ICMP => return Err(Bad::Icmp(ip + (ihl & 0x3c))),
        _ => return Err(Bad::OtherProto),
    };
    if tot_len < ihl + l4_min {
        return Err(Bad::Malformed);
    }
    // ihl is 20..=60 here, so the verifier can bound `l4`. It is read back
    // through memory so that LLVM cannot prove the L4 bounds checks below
    // redundant from the total-length checks above (they are, arithmetically,
    // but the verifier does not follow that reasoning and needs to see them).
    let l4 = ip + (ihl & 0x3c);
    // SAFETY: a plain read of a local.
    transport(unsafe { core::ptr::read_volatile(&l4) }, end, proto)
}

/// The TCP or UDP header (`proto`) at `l4`, checked against the frame's
/// end: its ports and (TCP) flags. `l4` must be read back through memory
/// by the caller (see [`l4`]), so the verifier sees these checks.
#[inline(always)]
fn transport(l4: usize, end: usize, proto: u8) -> Result<L4, Bad> {
    let tcp_flags = if proto == ha_common::IPPROTO_TCP {
        if l4 + TCP_HLEN > end {
            return Err(Bad::Malformed);
        }
        // SAFETY: the 20 bytes of a TCP header were checked just above.
        unsafe { load::<u8>(l4 + 13) }
    } else {
        if l4 + UDP_HLEN > end {
            return Err(Bad::Malformed);
        }
        0
    };
    Ok(L4 {
        proto,
        // SAFETY: the first 4 bytes of the L4 header were checked above.
        ports: unsafe { load(l4) },
        tcp_flags,
    })
}

/// The L4 header of an IPv6 packet, after up to
/// [`ha_common::IPV6_EXT_WALK`] hop-by-hop, routing (no segments left) and
/// destination-options headers. Well-formed when the version is 6, the
/// payload length is not 0 (a jumbogram) and fits the frame, and every
/// header up to the L4 one lies inside the payload.
#[inline(always)]
pub fn l4_v6(ip: usize, end: usize) -> Result<L4, Bad> {
    // SAFETY (the fixed-header loads): `ip .. ip + 40` was checked by `head`.
    let version: u8 = unsafe { load(ip) };
    let payload = u16::from_be(unsafe { load(ip + 4) }) as usize;
    let mut nh: u8 = unsafe { load(ip + 6) };
    let room = end - ip;
    if version >> 4 != 6 || payload == 0 || IPV6_HLEN + payload > room {
        return Err(Bad::Malformed);
    }
    let mut off = IPV6_HLEN;
    for _ in 0..ha_common::IPV6_EXT_WALK {
        match nh {
            NH_HOP_BY_HOP | NH_DEST_OPTS | NH_ROUTING => {}
            _ => break,
        }
        // An extension header is at least 8 bytes, in units of 8.
        let at = ip + (off & 0x3fff);
        // SAFETY: a plain read of a local (keeps the bounds check below
        // visible to the verifier, as in `l4`).
        let at = unsafe { core::ptr::read_volatile(&at) };
        if at + 8 > end {
            return Err(Bad::Malformed);
        }
        // SAFETY: 8 bytes at `at` were checked just above.
        let (next, units, left) = unsafe {
            (
                load::<u8>(at),
                load::<u8>(at + 1) as usize,
                load::<u8>(at + 3),
            )
        };
        if nh == NH_ROUTING && left != 0 {
            // The VIP is a waypoint, not the destination.
            return Err(Bad::ExtHeaders);
        }
        nh = next;
        off += (units + 1) * 8;
    }
    let l4_min = match nh {
        ha_common::IPPROTO_TCP => TCP_HLEN,
        ha_common::IPPROTO_UDP => UDP_HLEN,
        NH_FRAGMENT => return Err(Bad::Fragment),
        NH_ICMPV6 => return Err(Bad::Icmp(ip + (off & 0x3fff))),
        NH_HOP_BY_HOP | NH_DEST_OPTS | NH_ROUTING => return Err(Bad::ExtHeaders),
        _ => return Err(Bad::OtherProto),
    };
    if off + l4_min > IPV6_HLEN + payload {
        return Err(Bad::Malformed);
    }
    let l4 = ip + (off & 0x3fff);
    // SAFETY: a plain read of a local (see `l4`).
    transport(unsafe { core::ptr::read_volatile(&l4) }, end, nh)
}
