//! Types, constants and hash functions shared by the XDP program and the agent.
//!
//! Everything in here is `#![no_std]` and `#[repr(C)]`: the same bytes are
//! written by userspace into BPF maps and read by the kernel program. Addresses
//! and ports are kept exactly as they sit on the wire (network byte order
//! loaded into a native integer, the "raw" form), so the program never swaps
//! bytes on the hot path; [`VipKey::new`] and friends convert from host values.
//!
//! The hash functions ([`flow_hash`], [`vip_filter_bit`]) live here so the
//! program and userspace (tests, `halb` tooling) compute identical results:
//! two nodes with the same backend set pick the same backend for a flow.
#![no_std]

/// Bumped whenever a map's key or value layout, or a map's meaning, changes.
/// A pinned data plane with another ABI is not adopted.
pub const ABI_VERSION: u32 = 10;

/// Most VIP services (address, port, protocol) one node can hold.
pub const MAX_VIPS: u32 = 64;
/// Most backends over all VIPs; a backend id is an index below this.
pub const MAX_BACKENDS: u32 = 4096;
/// Capacity of one Maglev ring (entries); the largest allowed table size.
pub const RING_MAX: usize = 65537;
/// Default Maglev table size: a prime, as Maglev requires.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Ring entry meaning "no backend" (the VIP has no usable backend).
pub const NO_BACKEND: u16 = u16::MAX;
/// Default flow-table capacity (flows).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;
/// Entries per flow-table set (the table is set-associative; a set is one
/// 64-byte cache line).
pub const FLOW_WAYS: usize = 4;
/// Sets of the default flow table (a power of two).
pub const DEFAULT_FLOW_SETS: u32 = DEFAULT_FLOW_TABLE_SIZE / FLOW_WAYS as u32;
/// Slots in the VIP address pre-filter (one byte each).
pub const VIP_FILTER_BITS: u32 = 4096;

/// Map names, shared so that userspace opens exactly what the program declares.
pub mod maps {
    /// `HASH` [`crate::VipKey`] → [`crate::VipInfo`] (IPv4 services and address markers).
    pub const VIPS: &str = "HALB_VIPS";
    /// `HASH` [`crate::VipKey6`] → [`crate::VipInfo`] (IPv6 services and address markers).
    pub const VIPS6: &str = "HALB_VIPS6";
    /// `ARRAY` of one [`crate::VipFilter`]: VIP addresses, checked before any hash lookup.
    pub const VIP_FILTER: &str = "HALB_VIP_FILTER";
    /// `ARRAY` [`crate::RingId`] → [`crate::Ring`]: two Maglev rings per VIP.
    pub const RINGS: &str = "HALB_RINGS";
    /// `ARRAY` backend id → [`crate::BackendInfo`].
    pub const BACKENDS: &str = "HALB_BACKENDS";
    /// `ARRAY` of [`crate::FlowSet`]: the flow table (see [`crate::FlowSet`]).
    pub const FLOWS: &str = "HALB_FLOWS";
    /// `PERCPU_ARRAY` [`crate::Stat`] index → [`crate::Counter`].
    pub const STATS: &str = "HALB_STATS";
    /// `PERCPU_ARRAY` backend id → [`crate::BackendCounter`].
    pub const BACKEND_STATS: &str = "HALB_BACKEND_STATS";
    /// `ARRAY` of one [`crate::Meta`]: ABI version and attach facts of the pinned data plane.
    pub const META: &str = "HALB_META";
    /// `PERCPU_ARRAY` [`crate::FlowStat`] index → `u64`: flow-table events.
    pub const FLOW_STATS: &str = "HALB_FLOW_STATS";
    /// `ARRAY` of [`crate::ServiceSlot`]: a direct-mapped cache of the
    /// services in `VIPS`.
    pub const SERVICES: &str = "HALB_SERVICES";
    /// `ARRAY` of [`crate::ServiceSlot6`]: the same for `VIPS6`.
    pub const SERVICES6: &str = "HALB_SERVICES6";
    /// Every map that is pinned (all of them).
    pub const ALL: [&str; 12] = [
        VIPS,
        VIPS6,
        VIP_FILTER,
        RINGS,
        BACKENDS,
        FLOWS,
        STATS,
        BACKEND_STATS,
        META,
        FLOW_STATS,
        SERVICES,
        SERVICES6,
    ];
}

/// IP protocol numbers the data plane balances.
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u8 = 17;

/// Key of the IPv4 VIP map, and the program's 32-bit identity of any
/// service. A service key has a port and protocol; an address marker
/// (`port == 0 && proto == 0`) records that `addr` is a VIP address at
/// all, so fragments and malformed packets to it are recognised exactly.
///
/// An IPv6 service is looked up in its own map by its whole address
/// ([`VipKey6`]); from then on the program knows it by
/// [`VipKey6::identity`]: `addr` is the [`addr6_digest`] of its address
/// and `family` is [`FAMILY_IPV6`]. Backends ([`BackendInfo::vip`]), flow
/// entries and the flow hash all work on that identity, so one pipeline,
/// one flow table and one set of rings serve both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VipKey {
    /// IPv4 address, raw (wire order); for IPv6 the address digest.
    pub addr: u32,
    /// Port, raw (wire order).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`FAMILY_IPV4`] (0: every key of the IPv4 map, which hashes keys as
    /// bytes) or [`FAMILY_IPV6`].
    pub family: u8,
}

/// [`VipKey::family`] of IPv4 services.
pub const FAMILY_IPV4: u8 = 0;
/// [`VipKey::family`] of IPv6 services.
pub const FAMILY_IPV6: u8 = 6;

/// Key of the IPv6 VIP map: the whole address, port and protocol. An
/// address marker has port and protocol 0, as in [`VipKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VipKey6 {
    /// IPv6 address, raw (the four 32-bit words as they sit on the wire).
    pub addr: [u32; 4],
    /// Port, raw (wire order).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Zero (the key is hashed as bytes).
    pub pad: u8,
}

impl VipKey6 {
    /// Service key from host-order values.
    pub const fn new(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr: addr6_words(addr),
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }

    /// Address-marker key for `addr`.
    pub const fn address(addr: [u8; 16]) -> Self {
        Self::new(addr, 0, 0)
    }

    /// The program's identity of this service (see [`VipKey`]).
    pub const fn identity(&self) -> VipKey {
        VipKey {
            addr: vip6_digest(self.addr),
            port: self.port,
            proto: self.proto,
            family: FAMILY_IPV6,
        }
    }
}

/// An IPv6 address (octets) as the four raw words the program loads.
pub const fn addr6_words(a: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The 32-bit digest through which an IPv6 source address enters the
/// flow hash and the flow table, keyed with the flow hash seed (outsiders
/// cannot choose sources that collide, not even inside their own /64).
/// Two live flows whose sources share a digest and whose ports, VIP and
/// protocol match are one flow to the table: about one pair in 2^32.
///
/// The halves (words 0 and 2, words 1 and 3, each with the key in its low
/// word) are mixed side by side: a multiply, a fold and a multiply each,
/// with their own constants; the two are combined and folded. Within one
/// /64 (words 0 and 1 fixed) each half is a bijection of the word a sender
/// chooses, and a difference it chooses leaves the first multiply as a
/// difference that depends on the unknown key, so two sources collide only
/// through seeded values. Four 64-bit multiplies, two deep.
#[inline(always)]
pub const fn addr6_digest(key: u32, a: [u32; 4]) -> u32 {
    let x0 = ((a[2] as u64) << 32) | (a[0] ^ key) as u64;
    let x1 = ((a[3] as u64) << 32) | (a[1] ^ !key) as u64;
    let mut h0 = x0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut h1 = x1.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h0 ^= h0 >> 32;
    h1 ^= h1 >> 29;
    let h = h0.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ h1.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h >> 32) as u32 ^ h as u32
}

/// The digest of an IPv6 VIP address: its identity's `addr` (see
/// [`VipKey`]). One multiply: VIP addresses are the operator's, and the
/// agent refuses two IPv6 VIP addresses with one digest, so no two
/// services a node holds share an identity.
#[inline(always)]
pub const fn vip6_digest(a: [u32; 4]) -> u32 {
    let x = (((a[1] ^ a[3]) as u64) << 32) | (a[0] ^ a[2]) as u64;
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Pre-filter bit of an IPv6 address (raw words): [`vip_filter_bit`] of
/// their exclusive or, so a non-VIP packet costs no digest.
#[inline(always)]
pub const fn vip_filter_bit6(a: [u32; 4]) -> u32 {
    vip_filter_bit(a[0] ^ a[1] ^ a[2] ^ a[3])
}

impl VipKey {
    /// Service key from host-order values.
    pub const fn new(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr),
            port: port.to_be(),
            proto,
            family: FAMILY_IPV4,
        }
    }

    /// Address-marker key for `addr`.
    pub const fn address(addr: [u8; 4]) -> Self {
        Self::new(addr, 0, 0)
    }
}

impl VipKey {
    /// The key as one integer: how the IPv4 service cache compares it,
    /// and what both caches index and tag slots by (an IPv6 identity has
    /// its family in the top byte).
    pub const fn raw(&self) -> u64 {
        self.addr as u64
            | (self.port as u64) << 32
            | (self.proto as u64) << 48
            | (self.family as u64) << 56
    }
}

/// Slots of the service cache (a power of two).
pub const SERVICE_SLOTS: u32 = 1024;

/// One slot of the service cache: a direct-mapped copy of one service's
/// [`VipInfo`], so that a VIP packet costs an array read instead of a hash
/// lookup. The agent writes `state` with single 8-byte atomic stores
/// through a memory mapping (the map is `BPF_F_MMAPABLE`); `state` carries a
/// tag of the key, so a reader that sees `key` and `state` of two different
/// writes rejects the pair. A slot that misses (empty, another service, a
/// tag mismatch, two services hashing to one slot) falls back to `VIPS`,
/// which stays the truth.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceSlot {
    /// [`VipKey::raw`] of the service.
    pub key: u64,
    /// [`service_state`] of its `VipInfo`, 0 when empty.
    pub state: u64,
}

/// One slot of the IPv6 service cache (`SERVICES6`): the whole key, so a
/// hit is exact, and the state of [`ServiceSlot`], indexed and tagged by
/// the [`VipKey::raw`] of the service's identity. The agent clears
/// `state`, writes the key, then writes `state` (8-byte atomic stores):
/// a reader that sees a key and a state of two different writes rejects
/// the pair by the tag, as in [`ServiceSlot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceSlot6 {
    /// The service's key.
    pub key: VipKey6,
    /// Zero.
    pub pad: u32,
    /// [`service_state`] of its identity's raw key and `VipInfo`, 0 when empty.
    pub state: u64,
}

/// [`ServiceSlot::state`]: the slot holds a service.
pub const SERVICE_VALID: u64 = 1 << 63;

/// The slot of service `raw` ([`VipKey::raw`]).
#[inline(always)]
pub const fn service_index(raw: u64) -> u32 {
    (raw.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SERVICE_SLOTS.trailing_zeros())) as u32
}

/// A 31-bit tag of service `raw`, kept in its slot's state.
#[inline(always)]
pub const fn service_tag(raw: u64) -> u64 {
    (raw.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> 33) & 0x7fff_ffff
}

/// [`ServiceSlot::state`]: the service hashes by source address
/// ([`VIP_F_SOURCE_HASH`]).
const SERVICE_SOURCE_HASH: u64 = 1 << 27;

/// The slot state for service `raw` with `info`: valid, tag, source-hash
/// flag, ring size, live ring and VIP id in one word.
#[inline(always)]
pub const fn service_state(raw: u64, info: &VipInfo) -> u64 {
    let source = if info.flags & VIP_F_SOURCE_HASH != 0 {
        SERVICE_SOURCE_HASH
    } else {
        0
    };
    SERVICE_VALID
        | service_tag(raw) << 32
        | source
        | (info.ring_size as u64 & 0x3_ffff) << 9
        | (info.ring_slot as u64 & 1) << 8
        | (info.id as u64 & 0xff)
}

/// The `VipInfo` in a slot state that is valid for service `raw`.
#[inline(always)]
pub const fn service_info(raw: u64, state: u64) -> Option<VipInfo> {
    if state & SERVICE_VALID == 0 || (state >> 32) & 0x7fff_ffff != service_tag(raw) {
        return None;
    }
    Some(VipInfo {
        id: (state & 0xff) as u32,
        ring_slot: ((state >> 8) & 1) as u32,
        ring_size: ((state >> 9) & 0x3_ffff) as u32,
        flags: if state & SERVICE_SOURCE_HASH != 0 {
            VIP_F_SOURCE_HASH
        } else {
            0
        },
    })
}

/// [`VipInfo::flags`]: this entry is an address marker, not a service.
pub const VIP_F_ADDRESS: u32 = 1;

/// [`VipInfo::flags`]: source-IP affinity. The ring slot of a flow is
/// chosen by [`ring_hash`] of its tuple without the source port, so every
/// connection of one client address to this service lands on one backend
/// (HAProxy's `balance source`, LVS persistence). The flow table still
/// uses the full [`flow_hash`], so one client's connections spread over
/// the table's sets.
pub const VIP_F_SOURCE_HASH: u32 = 2;

/// Value of the VIP map.
///
/// The map is created with `BPF_F_NO_PREALLOC`, so replacing an entry is an
/// RCU-protected pointer swap: a packet sees the old or the new value, never a
/// mix. Switching `ring_slot` is how a new Maglev table goes live.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Index of this VIP (below [`MAX_VIPS`]); selects its rings.
    pub id: u32,
    /// Which of the VIP's two rings is live (0 or 1).
    pub ring_slot: u32,
    /// Maglev table size in use (a prime ≤ [`RING_MAX`]).
    pub ring_size: u32,
    /// `VIP_F_*` flags.
    pub flags: u32,
}

/// The VIP address pre-filter: byte [`vip_filter_bit`]`(addr)` is non-zero
/// when some VIP has an address hashing there. One byte per slot, so the
/// program tests it with a single load (the map has one element, looked up
/// with a constant key, which the verifier turns into a direct address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipFilter {
    /// One flag per slot.
    pub slots: [u8; VIP_FILTER_BITS as usize],
}

impl Default for VipFilter {
    fn default() -> Self {
        Self {
            slots: [0; VIP_FILTER_BITS as usize],
        }
    }
}

/// Index into the ring map for `vip_id`'s ring `slot`.
#[inline(always)]
pub const fn ring_index(vip_id: u32, slot: u32) -> u32 {
    vip_id * 2 + (slot & 1)
}

/// Words of a ring's changed-slot bitmap.
pub const RING_WORDS: usize = RING_MAX.div_ceil(64);

/// One Maglev lookup table, with what the flow table needs to know about it.
///
/// Slot `i` of a flow is [`ring_slot`]`(`[`ring_hash`]`, ring_size)` (its
/// flow hash, or under source-IP affinity the hash without the source
/// port). A slot whose bit in
/// `changed` is clear has named the same backend since every live flow in
/// it began, so a packet there is sent to `entries[i]` without touching the
/// flow table. A changed slot (set by the agent when a new table gives the
/// slot another backend) consults the flow table: a known flow keeps its
/// backend; a TCP SYN takes `entries[i]` and is recorded; any other packet
/// of an unknown flow began before the change, so it takes `previous[i]`
/// (the slot's backend before the change, while usable) and is recorded.
/// The agent clears a slot's bit once every flow that began before the
/// change has been idle past the flow idle timeout and no live entry in
/// the slot names another backend than `entries[i]`. The whole value is
/// swapped at once, so a packet sees one consistent table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ring {
    /// Changed-slot bitmap: bit `i % 64` of word `i / 64`.
    pub changed: [u64; RING_WORDS],
    /// Backend of each slot; entries `0..ring_size` are meaningful.
    pub entries: [u16; RING_MAX],
    /// Backend of each changed slot before its change ([`NO_BACKEND`]: none).
    pub previous: [u16; RING_MAX],
    /// Zero.
    pub pad: [u16; 2],
}

impl Ring {
    /// A ring with no backend and no changed slot.
    pub const EMPTY: Ring = Ring {
        changed: [0; RING_WORDS],
        entries: [NO_BACKEND; RING_MAX],
        previous: [NO_BACKEND; RING_MAX],
        pad: [0; 2],
    };

    /// Whether slot `i` is marked changed.
    #[inline(always)]
    pub const fn is_changed(&self, i: usize) -> bool {
        i < RING_MAX && self.changed[i / 64] & (1 << (i % 64)) != 0
    }
}

/// [`BackendInfo::flags`]: the backend is healthy and may keep or get flows.
/// A backend without it is down: its flows move to others.
pub const BACKEND_F_UP: u16 = 1;
/// [`BackendInfo::flags`]: the backend's address ([`BackendInfo::addr`])
/// is IPv6 (an IPv4 service reached through IPv4-in-IPv6).
pub const BACKEND_F_ADDR6: u16 = 4;

/// [`BackendInfo::encap`]: layer-2 DSR, only the MAC addresses change.
pub const ENCAP_DSR: u8 = 0;
/// [`BackendInfo::encap`]: IP in IP (IPv4 in IPv4 is protocol 4, IPv6 in
/// IPv6 next header 41, IPv4 in IPv6 next header 4), as the kernel's
/// `ipip`/`ip6tnl` devices send and receive it.
pub const ENCAP_IPIP: u8 = 1;
/// [`BackendInfo::encap`]: GUE variant 1 (the inner IP packet directly
/// after a UDP header, RFC draft-ietf-intarea-gue §5; what the kernel's
/// `fou` decapsulates) to [`BackendInfo::gue_port`].
pub const ENCAP_GUE: u8 = 2;
/// Outer IPv4 header bytes of an encapsulation.
pub const OUTER4_LEN: u16 = 20;
/// Outer IPv6 header bytes of an encapsulation.
pub const OUTER6_LEN: u16 = 40;
/// UDP header bytes GUE adds.
pub const GUE_UDP_LEN: u16 = 8;
/// Hop limit (TTL) of an outer header.
pub const ENCAP_TTL: u8 = 64;

/// Value of the backend map: where and how to send a frame. The MAC comes
/// first so the program can copy it with one 4-byte and one 2-byte load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendInfo {
    /// The new destination MAC: the backend's own (DSR, or an encapsulated
    /// backend on the link), or its next hop's (a router).
    pub mac: [u8; 6],
    /// `BACKEND_F_*` flags.
    pub flags: u16,
    /// VIP id this backend serves (selects nothing in the program; kept for tools).
    pub vip_id: u32,
    /// The VIP service this backend serves (its identity, see [`VipKey`]).
    /// A flow-table entry naming this backend is trusted only for packets
    /// of exactly this service, so an id that a removed VIP or backend
    /// released and a new one reuses never carries the old flows to the new
    /// service.
    pub vip: VipKey,
    /// Backend address, octets (an IPv4 address in its first 4 bytes, the
    /// rest zero, unless [`BACKEND_F_ADDR6`]): the outer destination of an
    /// encapsulated packet. The agent learns its backends back from it.
    pub addr: [u8; 16],
    /// Outer source address (octets, as `addr`): the node's address on the
    /// route to the backend. Unused under DSR.
    pub src: [u8; 16],
    /// `ENCAP_*`.
    pub encap: u8,
    /// Zero.
    pub pad: u8,
    /// GUE destination port, raw (network order).
    pub gue_port: u16,
    /// The largest outer IP packet the path to the backend takes (its
    /// route's MTU): a client packet that would exceed it once encapsulated
    /// is answered with an ICMP "too big" (DF set, or IPv6) or dropped.
    pub mtu: u16,
    /// IPv4 outer header: the one's-complement sum of the words that are
    /// the same in every packet to this backend (flags, TTL and protocol,
    /// both addresses), folded to 16 bits, as the raw words load
    /// ([`outer4_csum_base`]); the program adds the TOS and length words.
    pub csum_base: u16,
}

/// [`BackendInfo::csum_base`] for an IPv4 outer header from `src` to `dst`
/// carrying `proto` with DF set and TTL [`ENCAP_TTL`].
pub const fn outer4_csum_base(src: [u8; 4], dst: [u8; 4], proto: u8) -> u16 {
    let words = [
        [0x40, 0],
        [ENCAP_TTL, proto],
        [src[0], src[1]],
        [src[2], src[3]],
        [dst[0], dst[1]],
        [dst[2], dst[3]],
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < words.len() {
        sum += u16::from_ne_bytes(words[i]) as u32;
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Key of the flow table: the 5-tuple, raw. Four 4-byte words, so the
/// program fills it with four stores and nothing needs zeroing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address, raw.
    pub saddr: u32,
    /// Destination (VIP) address, raw.
    pub daddr: u32,
    /// Source and destination port as the 4 bytes sit in the L4 header
    /// (see [`ports_raw`]).
    pub ports: u32,
    /// IP protocol (upper bytes zero).
    pub proto: u32,
}

/// The L4 header's first four bytes (source port, destination port, both
/// big-endian) loaded as one native integer, as the program does.
#[inline(always)]
pub const fn ports_raw(sport: u16, dport: u16) -> u32 {
    let s = sport.to_be_bytes();
    let d = dport.to_be_bytes();
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

impl FlowKey {
    /// The key of an IPv6 flow as the program sees it: the source digested
    /// with the flow hash `seed`, the VIP by its identity's digest.
    pub const fn ipv6(seed: u32, saddr: [u8; 16], daddr: [u8; 16], ports: u32, proto: u8) -> Self {
        FlowKey {
            saddr: addr6_digest(seed, addr6_words(saddr)),
            daddr: vip6_digest(addr6_words(daddr)),
            ports,
            proto: proto as u32,
        }
    }

    /// Source port, host order.
    pub const fn sport(&self) -> u16 {
        let b = self.ports.to_ne_bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Destination port, host order.
    pub const fn dport(&self) -> u16 {
        let b = self.ports.to_ne_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }
}

/// One flow-table entry (16 bytes): a flow and the backend it is pinned to.
///
/// The entry keeps the source address and the ports; the destination
/// address and protocol are those of the backend's service (a backend serves
/// exactly one), and the check covers the high half of the full 5-tuple
/// hash, so two flows that differ only in VIP address or protocol do not
/// match each other's entries (and when they would, the backend's service
/// does not match the packet's, and the packet is treated as unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    /// Source address, raw.
    pub saddr: u32,
    /// Source and destination port as in [`FlowKey::ports`].
    pub ports: u32,
    /// Backend id the flow is pinned to.
    pub backend: u16,
    /// [`flow_check`] of the flow's hash and backend; 0 is an empty entry,
    /// and an entry whose check does not match (torn by a concurrent write)
    /// is ignored.
    pub check: u16,
    /// [`FLOW_REFERENCED`] (set on a hit), [`FLOW_CLOSING`] (the client
    /// sent FIN or RST), and above [`FLOW_TIME_SHIFT`] the time of the
    /// flow's last packet in [`flow_time`] units. The program rewrites it
    /// only when a bit or the time unit changes: at most about once a
    /// second per flow.
    pub stamp: u32,
}

/// [`FlowEntry::stamp`]: the entry was hit since it was recorded.
pub const FLOW_REFERENCED: u32 = 1;
/// [`FlowEntry::stamp`]: the client sent a FIN or RST on this flow.
pub const FLOW_CLOSING: u32 = 2;
/// Flow-time units a flow stays live after its client sent FIN or RST.
pub const CLOSING_LIVE_UNITS: u32 = 2;
/// [`FlowEntry::stamp`]: where the time of the last packet starts.
pub const FLOW_TIME_SHIFT: u32 = 2;
/// A flow time unit is 2^30 ns of the monotonic clock (about 1.07 s).
pub const FLOW_TIME_UNIT_SHIFT: u32 = 30;

/// Flow time (units of 2^30 ns, wrapping in 30 bits) of a monotonic
/// clock reading in nanoseconds (`bpf_ktime_get_coarse_ns`, or
/// `CLOCK_MONOTONIC` in userspace).
#[inline(always)]
pub const fn flow_time(monotonic_ns: u64) -> u32 {
    ((monotonic_ns >> FLOW_TIME_UNIT_SHIFT) as u32) & (u32::MAX >> FLOW_TIME_SHIFT)
}

impl FlowEntry {
    /// The flow time of its last packet.
    pub const fn last_seen(&self) -> u32 {
        self.stamp >> FLOW_TIME_SHIFT
    }

    /// Whether the client has sent FIN or RST.
    pub const fn closing(&self) -> bool {
        self.stamp & FLOW_CLOSING != 0
    }

    /// Flow-time units since its last packet, at flow time `now`. A stamp
    /// newer than `now` (written after the reader took its clock) is idle 0.
    pub const fn idle_units(&self, now: u32) -> u32 {
        const MASK: u32 = u32::MAX >> FLOW_TIME_SHIFT;
        let d = now.wrapping_sub(self.last_seen()) & MASK;
        if d > MASK / 2 {
            0
        } else {
            d
        }
    }

    /// Whether the flow is live at `now`: its last packet less than
    /// `live_units` ago, or less than [`CLOSING_LIVE_UNITS`] once the client
    /// sent FIN or RST.
    pub const fn is_live(&self, now: u32, live_units: u32) -> bool {
        let idle = self.idle_units(now);
        if self.closing() {
            idle < CLOSING_LIVE_UNITS
        } else {
            idle < live_units
        }
    }
}

/// A set of the flow table: one 64-byte cache line.
///
/// The flow table is a set-associative cache in one `ARRAY` map, managed by
/// the program itself: the set is `flow_hash & (sets - 1)`; a hit is a
/// source address and ports match with a valid check; a new flow takes an
/// empty entry of its set, or else the oldest entry never hit since it was
/// recorded, or else the one whose last packet is oldest.
/// This replaces a kernel LRU hash, whose insert costs ~180 ns per new flow
/// on the project's machines (locks with interrupts off), with plain memory
/// writes, and a lookup touches one cache line. The map is
/// `BPF_F_MMAPABLE`, so its values start page-aligned and no set straddles
/// two lines. Writes from two CPUs to one entry at once can tear it; the
/// check turns a torn entry into a miss. Only flows in changed ring slots
/// are recorded (see [`Ring`]).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSet {
    /// Entries.
    pub entries: [FlowEntry; FLOW_WAYS],
}

/// The check value of a flow entry (see [`FlowEntry::check`]); `hash` is the
/// flow's [`flow_hash`]. Never zero.
#[inline(always)]
pub const fn flow_check(hash: u32, backend: u16) -> u16 {
    let c = ((hash >> 16) as u16) ^ backend.wrapping_mul(0x9e37) ^ 0x5bd1;
    if c == 0 {
        1
    } else {
        c
    }
}

impl FlowEntry {
    /// The flow's 5-tuple, given the service of its backend.
    pub const fn key(&self, service: &VipKey) -> FlowKey {
        FlowKey {
            saddr: self.saddr,
            daddr: service.addr,
            ports: self.ports,
            proto: service.proto as u32,
        }
    }

    /// Whether this entry holds a flow (its check matches) under hash
    /// `seed`, given the service of its backend.
    pub const fn is_valid(&self, seed: u32, service: &VipKey) -> bool {
        self.check != 0
            && self.check
                == flow_check(
                    flow_hash(
                        seed,
                        self.saddr,
                        service.addr,
                        self.ports,
                        service.proto as u32,
                    ),
                    self.backend,
                )
    }
}

/// Flow-table events, counted per CPU in the `FLOW_STATS` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowStat {
    /// A flow was recorded (a new entry written).
    Recorded = 0,
    /// Recording took the entry of a flow that was still live (its last
    /// packet within the idle timeout): the table is too small for the
    /// flows in changed slots.
    EvictedLive = 1,
    /// Recording took the entry of a flow idle past the timeout.
    EvictedIdle = 2,
}

/// Number of [`FlowStat`] entries.
pub const FLOW_STAT_COUNT: u32 = 3;

impl FlowStat {
    /// All, in index order.
    pub const ALL: [FlowStat; FLOW_STAT_COUNT as usize] = [
        FlowStat::Recorded,
        FlowStat::EvictedLive,
        FlowStat::EvictedIdle,
    ];

    /// Name used in JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            FlowStat::Recorded => "recorded",
            FlowStat::EvictedLive => "evicted_live",
            FlowStat::EvictedIdle => "evicted_idle",
        }
    }
}

/// A packet and byte counter (per CPU in the kernel, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames, as seen by XDP).
    pub bytes: u64,
}

/// Per-backend counters (per CPU in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendCounter {
    /// Packets forwarded to the backend.
    pub packets: u64,
    /// Bytes forwarded to the backend.
    pub bytes: u64,
    /// Flows newly assigned to the backend.
    pub new_flows: u64,
    /// Zero (keeps the value 32 bytes).
    pub pad: u64,
}

/// Contents of the META map: identifies a pinned data plane, and tells
/// the program its interface's MAC address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// The interface's MAC address: VIP frames sent to another MAC (a
    /// switch flooding unknown unicast) are not this node's to forward.
    pub mac: [u8; 6],
    /// Zero.
    pub pad: u16,
    /// [`ABI_VERSION`] of the program that created the maps.
    pub abi: u32,
    /// Interface index the program is attached to (0: not attached).
    pub ifindex: u32,
    /// XDP attach mode in use (`XDP_MODE_*`).
    pub mode: u32,
    /// Seed of [`flow_hash`] (`[node] flow_hash_seed`; the same on every
    /// node of a site, so that they pick the same backends).
    pub hash_seed: u32,
    /// The flow idle timeout in [`flow_time`] units: an entry idle for less
    /// is live, and recording over it counts [`FlowStat::EvictedLive`].
    pub live_units: u32,
    /// Zero.
    pub pad2: u32,
}

/// [`Meta::mode`]: generic (SKB) mode.
pub const XDP_MODE_GENERIC: u32 = 1;
/// [`Meta::mode`]: native (driver) mode.
pub const XDP_MODE_NATIVE: u32 = 2;

/// Why the program did what it did with a packet: the index into the stats map.
/// Every packet bumps exactly one of these; the per-action totals (tx, pass,
/// drop, aborted) are sums over [`Stat::action`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// Changed ring slot: forwarded on the flow's flow-table entry.
    TxFlowHit = 0,
    /// A TCP SYN: forwarded to the ring's backend (and recorded when its
    /// slot has changed).
    TxNewFlow = 1,
    /// Neither IPv4 nor IPv6 (ARP, LLDP, VLAN-tagged, ...): passed.
    PassNotIp = 2,
    /// IP not addressed to a VIP service: passed.
    PassNotVip = 3,
    /// To a VIP address but neither TCP nor UDP (ICMP, ...): passed.
    PassVipOtherProto = 4,
    /// Too short for Ethernet or the fixed IP header, destination unknown:
    /// passed to the kernel, which drops it.
    PassTruncated = 5,
    /// To a VIP service but sent to another node's MAC (flooded unknown
    /// unicast): passed, and the kernel drops it as not for this host.
    PassOtherHost = 10,
    /// Fragment (first or later) to a VIP address: dropped (no ports to balance on).
    DropFragment = 6,
    /// Malformed IP/TCP/UDP header to a VIP address: dropped.
    DropMalformed = 7,
    /// VIP service without a usable backend: dropped.
    DropNoBackend = 8,
    /// Inconsistent maps (cannot happen unless maps are edited by hand): aborted.
    Aborted = 9,
    /// Unchanged ring slot, not a TCP SYN: forwarded to the ring's backend
    /// without a flow-table access.
    TxRing = 11,
    /// Changed ring slot, not a TCP SYN, no entry: the flow began before
    /// the change, so it went to the slot's previous backend (or, when that
    /// one is unusable, the current one), and was recorded.
    TxFlowMiss = 12,
    /// IPv6 to a VIP address whose extension headers the program does not
    /// walk through (more than [`IPV6_EXT_WALK`] of them, or a routing
    /// header with segments left): dropped, never balanced on a guess.
    DropExtHeaders = 13,
    /// An ICMP error (IPv4 destination unreachable or time exceeded, ICMPv6
    /// destination unreachable, packet too big or time exceeded) to a VIP
    /// address quoting a packet of a VIP flow: forwarded to the flow's
    /// backend, so its TCP learns the path MTU.
    TxIcmp = 14,
    /// Too big for the tunnel to its backend, DF set (or IPv6): an ICMP
    /// fragmentation-needed / packet-too-big with the tunnel's MTU was sent
    /// back to the client.
    TxTooBig = 15,
    /// Too big for the tunnel to its backend, DF clear: dropped (an XDP
    /// program cannot fragment).
    DropTooBig = 16,
    /// No headroom in front of the frame for the outer headers (a driver
    /// without XDP headroom): dropped.
    DropNoRoom = 17,
}

/// Number of [`Stat`] entries (size of the stats map).
pub const STAT_COUNT: u32 = 18;

/// IPv6 extension headers (hop-by-hop, routing with no segments left,
/// destination options) the program walks before the TCP or UDP header.
pub const IPV6_EXT_WALK: usize = 4;

/// The XDP action a [`Stat`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `XDP_TX`.
    Tx,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_ABORTED`.
    Aborted,
}

impl Stat {
    /// All statistics in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::TxFlowHit,
        Stat::TxNewFlow,
        Stat::PassNotIp,
        Stat::PassNotVip,
        Stat::PassVipOtherProto,
        Stat::PassTruncated,
        Stat::DropFragment,
        Stat::DropMalformed,
        Stat::DropNoBackend,
        Stat::Aborted,
        Stat::PassOtherHost,
        Stat::TxRing,
        Stat::TxFlowMiss,
        Stat::DropExtHeaders,
        Stat::TxIcmp,
        Stat::TxTooBig,
        Stat::DropTooBig,
        Stat::DropNoRoom,
    ];

    /// Action taken for packets counted here.
    pub const fn action(self) -> Action {
        match self {
            Stat::TxFlowHit
            | Stat::TxNewFlow
            | Stat::TxRing
            | Stat::TxFlowMiss
            | Stat::TxIcmp
            | Stat::TxTooBig => Action::Tx,
            Stat::PassNotIp
            | Stat::PassNotVip
            | Stat::PassVipOtherProto
            | Stat::PassTruncated
            | Stat::PassOtherHost => Action::Pass,
            Stat::DropFragment
            | Stat::DropMalformed
            | Stat::DropNoBackend
            | Stat::DropExtHeaders
            | Stat::DropTooBig
            | Stat::DropNoRoom => Action::Drop,
            Stat::Aborted => Action::Aborted,
        }
    }

    /// Name used in logs, JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::TxFlowHit => "tx_flow_hit",
            Stat::TxNewFlow => "tx_new_flow",
            Stat::PassNotIp => "pass_not_ip",
            Stat::PassNotVip => "pass_not_vip",
            Stat::PassVipOtherProto => "pass_vip_other_proto",
            Stat::PassTruncated => "pass_truncated",
            Stat::PassOtherHost => "pass_other_host",
            Stat::DropFragment => "drop_fragment",
            Stat::DropMalformed => "drop_malformed",
            Stat::DropNoBackend => "drop_no_backend",
            Stat::Aborted => "aborted",
            Stat::TxRing => "tx_ring",
            Stat::TxFlowMiss => "tx_flow_miss",
            Stat::DropExtHeaders => "drop_ext_headers",
            Stat::TxIcmp => "tx_icmp",
            Stat::TxTooBig => "tx_too_big",
            Stat::DropTooBig => "drop_too_big",
            Stat::DropNoRoom => "drop_no_room",
        }
    }
}

/// A 32-bit finaliser (from the "lowbias32" family): cheap, well mixed.
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Hash of a flow's 5-tuple (raw values, ports as in [`ports_raw`]), the
/// Maglev lookup key and the flow-table set. Every node of a site runs this
/// function with the same `seed`, so a flow maps to the same ring entry on
/// any of them. The seed keeps outsiders from choosing tuples that land in
/// one flow-table set (to evict a chosen flow) without knowing it; the
/// function is a fast mixer, not a cryptographic PRF.
///
/// Three 64-bit multiplies, two of them independent: the addresses and the
/// ports each fill a 64-bit word that is multiplied by an odd constant, the
/// two products are combined, folded and multiplied once more, and the
/// high half is the hash. On the packet path that is about a third of the
/// latency of three chained 32-bit finalisers.
#[inline(always)]
pub const fn flow_hash(seed: u32, saddr: u32, daddr: u32, ports: u32, proto: u32) -> u32 {
    hash_tail(hash_head(seed, saddr, daddr), seed, ports, proto)
}

/// The part of [`flow_hash`] that depends on the addresses only, so that
/// the program computes it once for both of a flow's hashes.
#[inline(always)]
pub const fn hash_head(seed: u32, saddr: u32, daddr: u32) -> u64 {
    let a = (((daddr ^ !seed) as u64) << 32) | (saddr ^ seed) as u64;
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The rest of [`flow_hash`]: `head` ([`hash_head`]) with the ports and
/// the protocol mixed in.
#[inline(always)]
pub const fn hash_tail(head: u64, seed: u32, ports: u32, proto: u32) -> u32 {
    let b = (((proto ^ seed) as u64) << 32) | ports as u64;
    let mut h = head ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= h >> 32;
    (h.wrapping_mul(0xd6e8_feb8_6659_fd93) >> 32) as u32
}

/// `ports` ([`ports_raw`]) with the source port zeroed: what source-IP
/// affinity hashes.
#[inline(always)]
pub const fn affinity_ports(ports: u32) -> u32 {
    ports & ports_raw(0, 0xffff)
}

/// The hash that picks a flow's ring slot: its [`flow_hash`], or with
/// `source` (the service's [`VIP_F_SOURCE_HASH`]) the hash of the same
/// tuple with the source port zeroed. The program, the agent and the tests
/// all place flows with this function.
#[inline(always)]
pub const fn ring_hash(
    seed: u32,
    saddr: u32,
    daddr: u32,
    ports: u32,
    proto: u32,
    source: bool,
) -> u32 {
    let p = if source { affinity_ports(ports) } else { ports };
    flow_hash(seed, saddr, daddr, p, proto)
}

/// The ring slot of a flow: `hash` mapped onto `0..size` by a multiply
/// and a shift (Lemire's fast range) instead of a division. Every node and
/// the agent use this same function.
#[inline(always)]
pub const fn ring_slot(hash: u32, size: u32) -> u32 {
    ((hash as u64 * size as u64) >> 32) as u32
}

/// Bit of the VIP address pre-filter that `addr` (raw) sets: Fibonacci
/// hashing, one multiply and one shift on the hot path.
#[inline(always)]
pub const fn vip_filter_bit(addr: u32) -> u32 {
    addr.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_BITS.trailing_zeros())
}

/// Layouts of the live-frames bench programs (`cargo xtask bench live`):
/// the frame generator's settings and the reference balancer's values.
/// Not part of the data plane's ABI.
pub mod bench {
    /// Generator mode: flow `seq % flows` (established flows, round robin).
    pub const GEN_CYCLE: u32 = 0;
    /// Generator mode: every frame a flow never seen before.
    pub const GEN_STORM: u32 = 1;

    /// Settings of the frame generator (one element of `GEN_CONFIG`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct GenConfig {
        /// Destination MAC (the node's interface).
        pub dst_mac: [u8; 6],
        /// Source MAC (the generator's interface).
        pub src_mac: [u8; 6],
        /// Destination (VIP) address, raw.
        pub daddr: u32,
        /// Destination port, raw.
        pub dport: u16,
        /// IP protocol (TCP or UDP).
        pub proto: u8,
        /// TCP flags of every frame (ACK for established flows, SYN for a storm).
        pub tcp_flags: u8,
        /// Concurrent flows in [`GEN_CYCLE`] mode.
        pub flows: u32,
        /// [`GEN_CYCLE`] or [`GEN_STORM`].
        pub mode: u32,
        /// Generator cores: core `k` sends the flows `i` with `i % cores == k`,
        /// as receive-side scaling would spread them.
        pub cores: u32,
        /// Destination (VIP) address when `family` is IPv6, raw.
        pub daddr6: [u8; 16],
        /// [`crate::FAMILY_IPV4`] or [`crate::FAMILY_IPV6`].
        pub family: u8,
        /// Zero.
        pub pad: [u8; 3],
    }

    /// Frame length of an IPv4 frame (60 bytes, 64 on a wire).
    pub const GEN_FRAME4: usize = 60;
    /// Frame length of an IPv6 frame: Ethernet, IPv6 and 20 bytes of
    /// TCP header or UDP header and payload.
    pub const GEN_FRAME6: usize = 74;

    /// The IPv6 source address (raw words) of flow `i` whose IPv4 source
    /// ([`gen_flow`]) is `saddr`: `fd77:1::` with `saddr` as its last word.
    #[inline(always)]
    pub const fn gen_saddr6(saddr: u32) -> [u32; 4] {
        [0xfd77_0001u32.to_be(), 0, 0, saddr]
    }

    /// A flow of the generator: source address (raw) and the L4 ports word
    /// (raw, as [`crate::ports_raw`]) of flow `i`. Sources are the 2^20
    /// addresses of 172.16.0.0/12, each flow below 2^20 from its own
    /// address; further flows reuse them with other source ports.
    #[inline(always)]
    pub const fn gen_flow(i: u32, dport_raw: u16) -> (u32, u32) {
        let saddr = (0xac10_0000u32 | (i & 0x000f_ffff)).to_be();
        let sport = (1024 + ((i >> 20) & 0x3fff)) as u16;
        let s = sport.to_be_bytes();
        let d = dport_raw.to_ne_bytes();
        (saddr, u32::from_ne_bytes([s[0], s[1], d[0], d[1]]))
    }

    /// Key of the reference balancer's IPv6 flow map: the whole tuple, as
    /// Katran keys its IPv6 flows.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct FlowKey6 {
        /// Source address, raw words.
        pub saddr: [u32; 4],
        /// Destination address, raw words.
        pub daddr: [u32; 4],
        /// Ports word ([`crate::ports_raw`]).
        pub ports: u32,
        /// IP protocol.
        pub proto: u32,
    }

    /// Value of the reference balancer's VIP map.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct RefVip {
        /// Index of the VIP's ring.
        pub ring: u32,
        /// Entries of the ring in use.
        pub ring_size: u32,
    }
}

/// Health checks through the tunnel: a tc egress program on the node's
/// interface (`halb-hc`) encapsulates the agent's probe packets for a
/// backend of an encapsulating VIP exactly as that VIP's traffic is, so a
/// check passes only when the backend decapsulates. A probe socket carries
/// the mark [`hc::MARK_BASE`]` | index` (`SO_MARK`); the index selects its
/// [`hc::HcTarget`].
pub mod hc {
    /// Program name in the object.
    pub const PROGRAM: &str = "halb_hc";
    /// `HASH` probe index → [`HcTarget`].
    pub const TARGETS: &str = "HALB_HC_TARGETS";
    /// The marks of tunnelled probes: `MARK_BASE | index`, index below 65536.
    pub const MARK_BASE: u32 = 0x6862_0000;
    /// The bits of a mark that say "halb probe".
    pub const MARK_MASK: u32 = 0xffff_0000;
    /// Most tunnelled probe targets.
    pub const MAX_TARGETS: u32 = 4096;

    /// How one probe target's packets are encapsulated: to its own address
    /// (the probe's destination), from the probe's source.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct HcTarget {
        /// The backend's address (octets; IPv4 in the first 4): packets of
        /// the probe must be to it, and are encapsulated to it.
        pub dst: [u8; 16],
        /// `crate::ENCAP_IPIP` or `crate::ENCAP_GUE`.
        pub encap: u8,
        /// 1: IPv6.
        pub v6: u8,
        /// GUE destination port, raw (network order).
        pub gue_port: u16,
    }
}

/// The backend side: the decapsulation program `halb backend` attaches
/// (`halb-decap`), its maps and counters.
pub mod decap {
    /// Program name in the object.
    pub const PROGRAM: &str = "halb_decap";
    /// `HASH` [`AddrKey`] → `ADDR_*` flags: the VIP addresses served here
    /// (inner destinations) and this host's own (outer destinations).
    pub const ADDRS: &str = "HALB_DECAP_ADDRS";
    /// `ARRAY` of [`CACHE_SLOTS`] [`AddrSlot`]: a direct-mapped cache of
    /// [`ADDRS`] (slot [`AddrKey::slot`]), read first: one array read
    /// instead of a hash lookup. A key not in its slot is looked up in
    /// [`ADDRS`], which stays the truth.
    pub const CACHE: &str = "HALB_DECAP_CACHE";
    /// The program's read-only global of type [`Conf`], set at load.
    pub const CONF: &str = "DECAP_CONF";
    /// Slots of [`CACHE`] (a power of two).
    pub const CACHE_SLOTS: u32 = 256;
    /// `PERCPU_ARRAY` [`DecapStat`] index → [`crate::Counter`].
    pub const STATS: &str = "HALB_DECAP_STATS";

    /// [`ADDRS`] value flag: a VIP this backend serves.
    pub const ADDR_VIP: u32 = 1;
    /// [`ADDRS`] value flag: an address of this host (a tunnel endpoint).
    pub const ADDR_LOCAL: u32 = 2;

    /// Key of [`ADDRS`]: an address of either family, raw words (IPv4 in
    /// the first, the rest zero), and its family.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct AddrKey {
        /// Address words as they sit in the header.
        pub addr: [u32; 4],
        /// [`crate::FAMILY_IPV4`] or [`crate::FAMILY_IPV6`].
        pub family: u32,
    }

    impl AddrKey {
        /// An IPv4 address.
        pub const fn v4(a: [u8; 4]) -> Self {
            Self {
                addr: [u32::from_ne_bytes(a), 0, 0, 0],
                family: crate::FAMILY_IPV4 as u32,
            }
        }

        /// An IPv6 address.
        pub const fn v6(a: [u8; 16]) -> Self {
            Self {
                addr: crate::addr6_words(a),
                family: crate::FAMILY_IPV6 as u32,
            }
        }

        /// Its slot in [`CACHE`].
        #[inline(always)]
        pub const fn slot(&self) -> u32 {
            let a = self.addr;
            crate::mix32(
                a[0] ^ a[1].rotate_left(8)
                    ^ a[2].rotate_left(16)
                    ^ a[3].rotate_left(24)
                    ^ self.family,
            ) & (CACHE_SLOTS - 1)
        }
    }

    /// A slot of [`CACHE`]: a key and its `ADDR_*` flags (0: empty).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct AddrSlot {
        /// The address.
        pub key: AddrKey,
        /// Its flags; 0 for an empty slot.
        pub flags: u32,
    }

    /// The decapsulation settings.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Conf {
        /// GUE port, raw (network order); 0: GUE is not decapsulated.
        pub gue_port: u16,
        /// Non-zero: IP in IP is decapsulated.
        pub ipip: u16,
        /// Zero.
        pub pad: u32,
    }

    /// What the decapsulation program did with a frame.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum DecapStat {
        /// An IP-in-IP packet for a served VIP: decapsulated, passed.
        Ipip = 0,
        /// A GUE packet for a served VIP: decapsulated, passed.
        Gue = 1,
        /// No tunnel packet (another protocol, port or ethertype): passed untouched.
        PassNotTunnel = 2,
        /// A well-formed tunnel packet whose outer destination is no address
        /// of this host or whose inner destination is no served VIP: passed untouched.
        PassNotOurs = 3,
        /// A tunnel packet with inconsistent lengths, a fragment, IP options,
        /// a cut inner header or a GUE checksum: passed untouched.
        PassMalformed = 4,
    }

    /// Number of [`DecapStat`] entries.
    pub const STAT_COUNT: u32 = 5;

    impl DecapStat {
        /// All, in index order.
        pub const ALL: [DecapStat; STAT_COUNT as usize] = [
            DecapStat::Ipip,
            DecapStat::Gue,
            DecapStat::PassNotTunnel,
            DecapStat::PassNotOurs,
            DecapStat::PassMalformed,
        ];

        /// Name in logs and metrics.
        pub const fn name(self) -> &'static str {
            match self {
                DecapStat::Ipip => "decap_ipip",
                DecapStat::Gue => "decap_gue",
                DecapStat::PassNotTunnel => "pass_not_tunnel",
                DecapStat::PassNotOurs => "pass_not_ours",
                DecapStat::PassMalformed => "pass_malformed",
            }
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): plain `#[repr(C)]` structs of integers with explicit padding
    // fields, valid for any bit pattern.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipKey6 {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::Ring {}
    unsafe impl aya::Pod for super::BackendInfo {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::FlowSet {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::BackendCounter {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::ServiceSlot6 {}
    unsafe impl aya::Pod for super::VipFilter {}
    unsafe impl aya::Pod for super::bench::GenConfig {}
    unsafe impl aya::Pod for super::bench::RefVip {}
    unsafe impl aya::Pod for super::bench::FlowKey6 {}
    unsafe impl aya::Pod for super::decap::AddrKey {}
    unsafe impl aya::Pod for super::decap::Conf {}
    unsafe impl aya::Pod for super::decap::AddrSlot {}
    unsafe impl aya::Pod for super::hc::HcTarget {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<VipKey>(), 8);
        assert_eq!(size_of::<VipInfo>(), 16);
        assert_eq!(size_of::<VipKey6>(), 20);
        assert_eq!(size_of::<BackendInfo>(), 60);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowEntry>(), 16);
        assert_eq!(size_of::<FlowSet>(), 64, "a set is one cache line");
        assert_eq!(core::mem::align_of::<FlowSet>(), 64);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<BackendCounter>(), 32);
        assert_eq!(size_of::<Meta>(), 32);
        assert_eq!(size_of::<ServiceSlot>(), 16);
        assert_eq!(size_of::<ServiceSlot6>(), 32);
        assert_eq!(size_of::<Ring>(), RING_WORDS * 8 + RING_MAX * 4 + 4);
        assert_eq!(size_of::<bench::GenConfig>(), 52);
        assert_eq!(size_of::<bench::RefVip>(), 8);
        assert_eq!(size_of::<decap::AddrKey>(), 20);
        assert_eq!(size_of::<decap::Conf>(), 8);
        assert_eq!(size_of::<decap::AddrSlot>(), 24);
        assert_eq!(size_of::<hc::HcTarget>(), 20);
    }

    #[test]
    fn vip_key_is_wire_order() {
        let k = VipKey::new([10, 77, 0, 100], 80, IPPROTO_TCP);
        assert_eq!(k.addr.to_ne_bytes(), [10, 77, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
    }

    #[test]
    fn stats_table_is_consistent() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn flow_hash_spreads_real_traffic_over_slots_and_sets() {
        // Real traffic: a few clients, each with consecutive source ports;
        // many clients in one /14 with one port. Each must fill ring slots
        // and flow-table sets as evenly as a random function would.
        const BUCKETS: usize = 1024;
        let check = |tuples: &mut dyn Iterator<Item = (u32, u32)>, what: &str| {
            let mut slots = [0u32; BUCKETS];
            let mut sets = [0u32; BUCKETS];
            let mut n = 0u32;
            for (saddr, ports) in tuples {
                let h = flow_hash(0x1234_5678, saddr, 0x0a4d_0064, ports, 6);
                slots[ring_slot(h, BUCKETS as u32) as usize] += 1;
                sets[(h as usize) & (BUCKETS - 1)] += 1;
                n += 1;
            }
            // Chi-square over the buckets: about BUCKETS - 1 (sd 45) for a
            // uniform hash; the bound is six standard deviations above.
            let mean = n as f64 / BUCKETS as f64;
            for (name, b) in [("slots", &slots), ("sets", &sets)] {
                let chi: f64 = b.iter().map(|&o| (o as f64 - mean).powi(2) / mean).sum();
                assert!(chi < 1300.0, "{what}: {name} chi-square {chi:.0}");
            }
        };
        check(
            &mut (0..4u32).flat_map(|c| {
                (0..65536u32).map(move |p| (0xc0a8_0001 + c, ports_raw(p as u16, 443)))
            }),
            "four clients, every source port",
        );
        check(
            &mut (0..262_144u32).map(|c| ((0xac10_0000 | c).to_be(), ports_raw(40000, 80))),
            "a /14 of clients, one port",
        );
        let prefix = addr6_words([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        check(
            &mut (0..262_144u32).map(|c| {
                let a = [prefix[0], prefix[1], 0, c.to_be()];
                (addr6_digest(0x1234_5678, a), ports_raw(40000, 80))
            }),
            "IPv6 clients of one /64 (their digests), one port",
        );
    }

    #[test]
    fn flow_hash_changes_about_half_its_bits_for_any_input_bit() {
        let mut x = 0x243f_6a88_85a3_08d3u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for field in 0..4 {
            // The protocol (field 3) is one byte.
            for bit in 0..if field == 3 { 8 } else { 32 } {
                let mut flipped = 0u32;
                const N: u32 = 2000;
                for _ in 0..N {
                    let v = [
                        next() as u32,
                        next() as u32,
                        next() as u32,
                        (next() as u32) & 0xff,
                    ];
                    let mut w = v;
                    w[field] ^= 1 << bit;
                    let h = |v: [u32; 4]| flow_hash(0x5eed, v[0], v[1], v[2], v[3]);
                    flipped += (h(v) ^ h(w)).count_ones();
                }
                let mean = flipped as f64 / N as f64;
                assert!(
                    (12.0..=20.0).contains(&mean),
                    "field {field} bit {bit}: {mean} output bits change on average"
                );
            }
        }
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let p = ports_raw(3, 4);
        let base = flow_hash(0, 1, 2, p, 6);
        assert_ne!(base, flow_hash(0, 9, 2, p, 6));
        assert_ne!(base, flow_hash(0, 1, 9, p, 6));
        assert_ne!(base, flow_hash(0, 1, 2, ports_raw(9, 4), 6));
        assert_ne!(base, flow_hash(0, 1, 2, ports_raw(3, 9), 6));
        assert_ne!(base, flow_hash(0, 1, 2, p, 17));
        assert_ne!(base, flow_hash(7, 1, 2, p, 6), "the seed changes the hash");
    }

    #[test]
    fn source_affinity_ignores_the_source_port_only() {
        let h = |s, sp, d, dp, src| ring_hash(5, s, d, ports_raw(sp, dp), 6, src);
        assert_eq!(h(1, 1000, 2, 80, true), h(1, 61000, 2, 80, true));
        assert_ne!(h(1, 1000, 2, 80, true), h(9, 1000, 2, 80, true));
        assert_ne!(h(1, 1000, 2, 80, true), h(1, 1000, 2, 443, true));
        assert_ne!(h(1, 1000, 2, 80, true), h(1, 1000, 3, 80, true));
        assert_ne!(h(1, 1000, 2, 80, false), h(1, 61000, 2, 80, false));
        assert_eq!(
            h(1, 1000, 2, 80, false),
            flow_hash(5, 1, 2, ports_raw(1000, 80), 6)
        );
        assert_eq!(affinity_ports(ports_raw(1234, 80)), ports_raw(0, 80));
    }

    #[test]
    fn the_service_state_keeps_the_source_hash_flag() {
        let raw = VipKey {
            addr: 7,
            port: 80,
            proto: 6,
            family: FAMILY_IPV4,
        }
        .raw();
        for flags in [0, VIP_F_SOURCE_HASH] {
            let info = VipInfo {
                id: 3,
                ring_slot: 1,
                ring_size: 65537,
                flags,
            };
            assert_eq!(service_info(raw, service_state(raw, &info)), Some(info));
        }
    }

    #[test]
    fn a_crafted_set_scatters_under_another_seed() {
        // An attacker who knows seed 1 finds 8 tuples that share one set;
        // under seed 2 they spread over different sets.
        let sets = 1u32 << 15;
        let set_of = |seed: u32, saddr: u32, sport: u16| {
            flow_hash(seed, saddr, 100, ports_raw(sport, 80), 6) & (sets - 1)
        };
        let target = set_of(1, 0, 1024);
        let mut crafted = [(0u32, 0u16); 8];
        let mut n = 0;
        'search: for saddr in 0..64u32 {
            for sport in 1024..=u16::MAX {
                if set_of(1, saddr, sport) == target {
                    crafted[n] = (saddr, sport);
                    n += 1;
                    if n == crafted.len() {
                        break 'search;
                    }
                }
            }
        }
        assert_eq!(n, 8, "found a crafted set");
        let mut other = [0u32; 8];
        for (i, (a, p)) in crafted.iter().enumerate() {
            other[i] = set_of(2, *a, *p);
        }
        let most = other
            .iter()
            .map(|s| other.iter().filter(|t| *t == s).count())
            .max()
            .unwrap_or(0);
        assert!(most <= 2, "{other:?}");
    }

    #[test]
    fn flow_stamps_carry_time_and_closing() {
        let e = FlowEntry {
            stamp: (flow_time(5 << FLOW_TIME_UNIT_SHIFT) << FLOW_TIME_SHIFT) | FLOW_CLOSING,
            ..Default::default()
        };
        assert_eq!(e.last_seen(), 5);
        assert!(e.closing());
        assert_eq!(e.idle_units(7), 2);
        assert_eq!(e.idle_units(5), 0);
        assert_eq!(e.idle_units(4), 0, "a stamp newer than the reader's clock");
        assert!(e.is_live(6, 60), "closing, 1 unit ago");
        assert!(!e.is_live(7, 60), "closing, 2 units ago");
        let open = FlowEntry {
            stamp: 5 << FLOW_TIME_SHIFT,
            ..e
        };
        assert!(open.is_live(64, 60));
        assert!(!open.is_live(65, 60));
    }

    #[test]
    fn flow_checks_are_never_empty_and_name_the_backend() {
        for h in [0u32, 0x5bd1_0000, u32::MAX, 0x1234_5678] {
            for b in [0u16, 1, 7, 4095] {
                assert_ne!(flow_check(h, b), 0);
            }
            assert_ne!(flow_check(h, 1), flow_check(h, 2));
        }
        let service = VipKey::new([10, 77, 0, 100], 80, IPPROTO_TCP);
        let (saddr, ports) = (u32::from_ne_bytes([10, 0, 0, 1]), ports_raw(40000, 80));
        let h = flow_hash(3, saddr, service.addr, ports, IPPROTO_TCP as u32);
        let e = FlowEntry {
            saddr,
            ports,
            backend: 5,
            check: flow_check(h, 5),
            stamp: 0,
        };
        assert!(e.is_valid(3, &service));
        assert!(!e.is_valid(4, &service), "another seed");
        let other = VipKey::new([10, 77, 0, 100], 80, IPPROTO_UDP);
        assert!(!e.is_valid(3, &other), "another protocol");
        assert_eq!(e.key(&service).ports, ports);
    }

    #[test]
    fn service_states_round_trip_and_reject_other_keys() {
        let a = VipKey::new([10, 77, 0, 100], 80, IPPROTO_TCP);
        let b = VipKey::new([10, 77, 0, 100], 81, IPPROTO_TCP);
        let info = VipInfo {
            id: 63,
            ring_slot: 1,
            ring_size: 65537,
            flags: 0,
        };
        let st = service_state(a.raw(), &info);
        assert_eq!(service_info(a.raw(), st), Some(info));
        assert_eq!(service_info(b.raw(), st), None, "another key's state");
        assert_eq!(service_info(a.raw(), 0), None, "an empty slot");
        assert!(service_index(a.raw()) < SERVICE_SLOTS);
        assert_ne!(a.raw(), b.raw());
    }

    #[test]
    fn ipv6_identities_differ_by_address_port_and_protocol() {
        let a = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut b = a;
        b[15] = 1;
        let ka = VipKey6::new(a, 80, IPPROTO_TCP);
        assert_eq!(ka.identity().family, FAMILY_IPV6);
        assert_ne!(ka.identity(), VipKey6::new(b, 80, IPPROTO_TCP).identity());
        assert_ne!(ka.identity(), VipKey6::new(a, 81, IPPROTO_TCP).identity());
        assert_ne!(ka.identity(), VipKey6::new(a, 80, IPPROTO_UDP).identity());
        assert_eq!(ka.addr[0].to_ne_bytes(), [0xfd, 0x77, 0, 0]);
        // Structured addresses (words swapped) do not collide, and the
        // source digest depends on the seed.
        let w = addr6_words(a);
        assert_ne!(
            addr6_digest(0, w),
            addr6_digest(0, [w[0], w[1], w[3], w[2]])
        );
        assert_ne!(addr6_digest(1, w), addr6_digest(2, w));
        // Inside one /64, sources that differ in either low word (or both)
        // give distinct digests (4096 of each kind, deterministic inputs:
        // a birthday pair among them would be a 1-in-500 accident).
        for shape in 0..3u32 {
            let mut d = [0u32; 4096];
            for (i, x) in d.iter_mut().enumerate() {
                let i = i as u32;
                let (lo2, lo3) = match shape {
                    0 => (0, i),
                    1 => (i, 0),
                    _ => (i.wrapping_mul(0x9e37_79b9), i),
                };
                *x = addr6_digest(0x1234_5678, [w[0], w[1], lo2, lo3]);
            }
            d.sort_unstable();
            assert!(
                d.windows(2).all(|p| p[0] != p[1]),
                "a collision, shape {shape}"
            );
        }
    }

    #[test]
    fn ring_changed_bits() {
        let mut r = Ring::EMPTY;
        r.changed[1] |= 1 << 3;
        assert!(r.is_changed(67));
        assert!(!r.is_changed(66));
        assert!(!r.is_changed(RING_MAX), "out of range is unchanged");
    }

    #[test]
    fn ports_round_trip() {
        let k = FlowKey {
            ports: ports_raw(40000, 80),
            ..Default::default()
        };
        assert_eq!((k.sport(), k.dport()), (40000, 80));
        assert_eq!(k.ports.to_ne_bytes(), [0x9c, 0x40, 0, 80]);
    }

    #[test]
    fn filter_bits_spread_a_subnet() {
        let mut seen = [false; VIP_FILTER_BITS as usize];
        for last in 0..=255u8 {
            let b = vip_filter_bit(u32::from_ne_bytes([10, 77, 0, last]));
            assert!(b < VIP_FILTER_BITS);
            seen[b as usize] = true;
        }
        assert!(
            seen.iter().filter(|&&x| x).count() > 240,
            "few collisions in a /24"
        );
    }
}
