//! Crafted Ethernet frames for program tests: valid by default, with knobs to
//! break exactly one thing (IHL, version, total length, fragment bits).

/// An Ethernet + IPv4 frame under construction.
#[derive(Debug, Clone)]
pub struct Frame {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    l4: Vec<u8>,
    payload: Vec<u8>,
    options: Vec<u8>,
    ihl_override: Option<u8>,
    version: u8,
    total_len_override: Option<u16>,
    frag: u16,
}

impl Frame {
    fn new(src: [u8; 4], dst: [u8; 4], proto: u8, l4: Vec<u8>) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0xff],
            src_mac: [0x02, 0, 0, 0, 0, 0xfe],
            src,
            dst,
            proto,
            l4,
            payload: Vec::new(),
            options: Vec::new(),
            ihl_override: None,
            version: 4,
            total_len_override: None,
            frag: 0,
        }
    }

    /// A TCP SYN-less segment header (20 bytes, ACK set).
    pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = 0x10;
        h[14..16].copy_from_slice(&64240u16.to_be_bytes());
        Self::new(src, dst, 6, h)
    }

    /// A UDP datagram header.
    pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        Self::new(src, dst, 17, h)
    }

    /// Any IP protocol with the given payload.
    pub fn raw_ip(src: [u8; 4], dst: [u8; 4], proto: u8, body: Vec<u8>) -> Self {
        Self::new(src, dst, proto, body)
    }

    /// Source and destination MAC.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// L4 payload bytes.
    pub fn payload(mut self, p: Vec<u8>) -> Self {
        self.payload = p;
        self
    }

    /// IP options (padded to 4 bytes; IHL follows).
    pub fn options(mut self, mut o: Vec<u8>) -> Self {
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        self.options = o;
        self
    }

    /// Forces the IHL field.
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl_override = Some(ihl);
        self
    }

    /// Forces the version field.
    pub fn version(mut self, v: u8) -> Self {
        self.version = v;
        self
    }

    /// Forces the total-length field.
    pub fn total_len(mut self, l: u16) -> Self {
        self.total_len_override = Some(l);
        self
    }

    /// TCP flags byte (default ACK); no effect on other protocols.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        if self.proto == 6 {
            self.l4[13] = flags;
        }
        self
    }

    /// Flags and fragment offset field (host order, e.g. 0x2000 = MF).
    pub fn frag(mut self, f: u16) -> Self {
        self.frag = f;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let ihl = 5 + (self.options.len() / 4) as u8;
        let mut l4 = self.l4.clone();
        l4.extend_from_slice(&self.payload);
        let total = (ihl as usize * 4 + l4.len()) as u16;
        if self.proto == 17 && l4.len() >= 8 {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let mut ip = vec![0u8; 20];
        ip[0] = (self.version << 4) | self.ihl_override.unwrap_or(ihl);
        ip[2..4].copy_from_slice(&self.total_len_override.unwrap_or(total).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        if (self.proto == 6 && l4.len() >= 20) || (self.proto == 17 && l4.len() >= 8) {
            let mut pseudo = Vec::with_capacity(12 + l4.len());
            pseudo.extend_from_slice(&self.src);
            pseudo.extend_from_slice(&self.dst);
            pseudo.extend_from_slice(&[0, self.proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&l4);
            let at = if self.proto == 6 { 16 } else { 6 };
            let s = checksum(&pseudo);
            l4[at..at + 2].copy_from_slice(&s.to_be_bytes());
        }
        let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// An ARP who-has request, broadcast.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mac = [0x02, 0, 0, 0, 0, 0x10];
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// A minimal IPv6 UDP frame.
pub fn ipv6_udp() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x10, 0x86, 0xdd];
    let mut ip = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    ip.extend_from_slice(&[0xfd; 16]);
    ip.extend_from_slice(&[0xfe; 16]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 8, 0, 0]);
    f
}

/// The Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv6 frame under construction: valid by default, with
/// knobs for extension headers, the payload length and the version.
#[derive(Debug, Clone)]
pub struct Frame6 {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    l4: Vec<u8>,
    payload: Vec<u8>,
    /// (next-header value of this header, its bytes after the first two).
    ext: Vec<(u8, Vec<u8>)>,
    payload_len_override: Option<u16>,
    version: u8,
}

/// IPv6 next-header values of extension headers.
pub mod nh {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

impl Frame6 {
    fn new(src: [u8; 16], dst: [u8; 16], proto: u8, l4: Vec<u8>) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0xff],
            src_mac: [0x02, 0, 0, 0, 0, 0xfe],
            src,
            dst,
            proto,
            l4,
            payload: Vec::new(),
            ext: Vec::new(),
            payload_len_override: None,
            version: 6,
        }
    }

    /// A TCP segment header (20 bytes, ACK set).
    pub fn tcp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        let f = Frame::tcp([0; 4], [0; 4], sport, dport);
        Self::new(src, dst, 6, f.l4)
    }

    /// A UDP datagram header.
    pub fn udp(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        let f = Frame::udp([0; 4], [0; 4], sport, dport);
        Self::new(src, dst, 17, f.l4)
    }

    /// Any next header with the given body.
    pub fn raw_ip(src: [u8; 16], dst: [u8; 16], proto: u8, body: Vec<u8>) -> Self {
        Self::new(src, dst, proto, body)
    }

    /// Source and destination MAC.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// TCP flags (TCP frames only).
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        if self.proto == 6 {
            self.l4[13] = flags;
        }
        self
    }

    /// L4 payload bytes.
    pub fn payload(mut self, p: Vec<u8>) -> Self {
        self.payload = p;
        self
    }

    /// Appends an extension header of kind `kind` (see [`nh`]) with 6 bytes
    /// of body after its next-header and length bytes, padded to 8: an
    /// 8-byte header (a routing header's segments left is its 4th byte).
    pub fn ext(mut self, kind: u8, body: [u8; 6]) -> Self {
        self.ext.push((kind, body.to_vec()));
        self
    }

    /// Overrides the payload length field.
    pub fn payload_len(mut self, n: u16) -> Self {
        self.payload_len_override = Some(n);
        self
    }

    /// Overrides the version nibble.
    pub fn version(mut self, v: u8) -> Self {
        self.version = v;
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut after = Vec::new();
        for (i, (_, body)) in self.ext.iter().enumerate() {
            let next = self.ext.get(i + 1).map_or(self.proto, |(k, _)| *k);
            after.push(next);
            after.push(0); // (0 + 1) * 8 bytes
            after.extend_from_slice(body);
        }
        after.extend_from_slice(&self.l4);
        after.extend_from_slice(&self.payload);
        let first = self.ext.first().map_or(self.proto, |(k, _)| *k);
        let plen = self.payload_len_override.unwrap_or(after.len() as u16);
        let mut f = Vec::with_capacity(54 + after.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[self.version << 4, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&after);
        f
    }
}
