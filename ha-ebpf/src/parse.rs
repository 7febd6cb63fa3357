//! Packet parsing: Ethernet, IPv4 and the first bytes of TCP/UDP, with every
//! bound checked against the frame's end. Pure: no map access.

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ETH_P_IP_RAW: u16 = 0x0800u16.to_be();
/// MF flag and fragment offset, raw.
const IP_FRAG_MASK_RAW: u16 = 0x3fffu16.to_be();
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
    /// Shorter than Ethernet, or an IPv4 header cut short.
    Truncated,
    /// Not IPv4.
    NotIpv4,
    /// An IPv4 header of at least 20 bytes, destination `daddr` (raw).
    Ipv4 {
        /// Start of the IP header.
        ip: usize,
        /// Destination address, raw.
        daddr: u32,
    },
}

/// Ethernet and the fixed part of IPv4.
#[inline(always)]
pub fn head(data: usize, end: usize) -> Head {
    if data + ETH_HLEN + IPV4_HLEN > end {
        if data + ETH_HLEN > end {
            return Head::Truncated;
        }
        // SAFETY: 14 bytes present.
        if unsafe { load::<u16>(data + 12) } != ETH_P_IP_RAW {
            return Head::NotIpv4;
        }
        return Head::Truncated;
    }
    // SAFETY (all packet loads below): inside the range checked above.
    if unsafe { load::<u16>(data + 12) } != ETH_P_IP_RAW {
        return Head::NotIpv4;
    }
    let ip = data + ETH_HLEN;
    Head::Ipv4 {
        ip,
        daddr: unsafe { load(ip + 16) },
    }
}

/// A TCP or UDP packet whose headers are all present and consistent.
pub struct L4 {
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// Source address, raw.
    pub saddr: u32,
    /// Source and destination port as they sit in the header.
    pub ports: u32,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

/// Why an IPv4 packet cannot be balanced.
pub enum Bad {
    /// Version, IHL, total length or L4 header inconsistent with the frame.
    Malformed,
    /// A fragment (MF set or offset non-zero).
    Fragment,
    /// Neither TCP nor UDP.
    OtherProto,
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
    let l4 = unsafe { core::ptr::read_volatile(&l4) };
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
        // SAFETY: inside the IP header checked by `head`, and the first 4
        // bytes of the L4 header checked above.
        saddr: unsafe { load(ip + 12) },
        ports: unsafe { load(l4) },
        tcp_flags,
    })
}
