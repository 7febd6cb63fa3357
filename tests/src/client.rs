//! Client-side helpers for tests: plain HTTP/1.0 over std sockets (run them
//! inside a namespace with [`crate::lab::Lab::in_ns`]) and nftables counters.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One answered request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Client's source port.
    pub local_port: u16,
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// `GET path` on a new connection to `addr:port` (IPv4 or IPv6).
pub fn http_get(
    addr: impl Into<IpAddr>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<Reply> {
    let addr = addr.into();
    let sa = SocketAddr::new(addr, port);
    let s = TcpStream::connect_timeout(&sa, timeout).with_context(|| format!("connect {sa}"))?;
    get_on(s, addr, path, timeout)
}

/// [`http_get`] from source address `src` (one of the caller's addresses;
/// the kernel picks the port).
pub fn http_get_from(
    src: Ipv4Addr,
    addr: Ipv4Addr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<Reply> {
    use std::os::fd::FromRawFd;
    let sockaddr = |a: Ipv4Addr, p: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: p.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned here; the stream
    // takes it over (and closes it) right after creation.
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    };
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid descriptor, pointers to live locals of the right sizes.
    unsafe {
        let local = sockaddr(src, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            bail!("bind {src}: {}", std::io::Error::last_os_error());
        }
        // connect() honours the send timeout.
        let tv_len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            tv_len,
        );
        let remote = sockaddr(addr, port);
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            bail!(
                "connect {addr}:{port} from {src}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    get_on(s, addr.into(), path, timeout)
}

/// The Host header's value for `addr` (an IPv6 literal in brackets).
fn host(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

fn get_on(mut s: TcpStream, addr: IpAddr, path: &str, timeout: Duration) -> Result<Reply> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let local_port = s.local_addr()?.port();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", host(addr))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("read reply")?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok(Reply {
        local_port,
        status,
        body: body.to_string(),
    })
}

/// What a long download saw.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Client's source port.
    pub local_port: u16,
    /// Body bytes received.
    pub bytes: usize,
    /// Longest time without any data arriving.
    pub max_gap: Duration,
    /// Whole duration.
    pub elapsed: Duration,
}

/// Downloads `path` from `addr:80` (IPv4 or IPv6), timing the gaps between
/// reads; calls `started` once the first body bytes have arrived.
pub fn download(addr: impl Into<IpAddr>, path: &str, started: impl FnOnce(u16)) -> Result<Stream> {
    let addr = addr.into();
    let sa = SocketAddr::new(addr, 80);
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let local_port = s.local_addr()?.port();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", host(addr))?;
    let begin = Instant::now();
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    let mut total = 0usize;
    let mut header_done = false;
    let mut head = Vec::new();
    let mut started = Some(started);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).context("read")?;
        let now = Instant::now();
        if n == 0 {
            break;
        }
        if header_done {
            max_gap = max_gap.max(now - last);
            total += n;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                header_done = true;
                total += head.len() - i - 4;
                if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                    bail!("bad reply: {}", String::from_utf8_lossy(&head[..i]));
                }
                if let Some(f) = started.take() {
                    f(local_port);
                }
            }
        }
        last = now;
    }
    Ok(Stream {
        local_port,
        bytes: total,
        max_gap,
        elapsed: begin.elapsed(),
    })
}

/// `PUT path` of `len` bytes to `addr:80` (nginx's WebDAV stores it): the
/// HTTP status once the whole body is sent and answered.
pub fn upload(addr: impl Into<IpAddr>, path: &str, len: usize) -> Result<u16> {
    let addr = addr.into();
    let sa = SocketAddr::new(addr, 80);
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {len}\r\n\r\n",
        host(addr)
    )?;
    let chunk = vec![b'u'; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).context("send the body")?;
        left -= n;
    }
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).context("read the reply")?;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad reply: {text}"))
}

/// Packets and bytes an nftables counter saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NftCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes (IP datagram lengths).
    pub bytes: u64,
}

/// Parses the `counter packets N bytes M` of the first rule in `nft list` output.
pub fn parse_nft_counter(text: &str) -> Option<NftCounter> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "packets")?;
    let packets = words.get(i + 1)?.parse().ok()?;
    let j = words.iter().position(|w| *w == "bytes")?;
    let bytes = words.get(j + 1)?.parse().ok()?;
    Some(NftCounter { packets, bytes })
}
