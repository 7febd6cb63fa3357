//! The probes: a TCP connect, or an HTTP GET whose status must match,
//! each within a timeout, from a given source address. Thin I/O; what a
//! result means is decided by [`super::RiseFall`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect succeeds.
    Tcp,
    /// `GET path` answers `expect_status`.
    Http {
        /// Request path.
        path: String,
        /// Host header.
        host: Option<String>,
        /// Status that counts as healthy.
        expect_status: u16,
    },
    /// Cannot be run as it must be (a probe through the tunnel without the
    /// program that encapsulates it): every run fails with this reason.
    Unavailable(String),
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Healthy.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
    /// What happened, for logs and the status page ("HTTP 200", "connection refused", ...).
    pub detail: String,
}

/// Probes `target` once, from `source` when given, within `timeout`; its
/// packets carry `mark` (`SO_MARK`) when given.
pub async fn run(
    probe: &Probe,
    target: SocketAddr,
    source: Option<IpAddr>,
    mark: Option<u32>,
    timeout: Duration,
) -> Outcome {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, attempt(probe, target, source, mark)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(detail)) => Outcome {
            ok: true,
            latency,
            detail,
        },
        Ok(Err(detail)) => Outcome {
            ok: false,
            latency,
            detail,
        },
        Err(_) => Outcome {
            ok: false,
            latency,
            detail: format!("timeout after {} ms", timeout.as_millis()),
        },
    }
}

/// Sets `SO_MARK` on `sock` (needs CAP_NET_ADMIN).
fn set_mark(sock: &TcpSocket, mark: u32) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket this function borrows, with a
    // pointer to a u32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "mark {mark:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

async fn attempt(
    probe: &Probe,
    target: SocketAddr,
    source: Option<IpAddr>,
    mark: Option<u32>,
) -> Result<String, String> {
    if let Probe::Unavailable(why) = probe {
        return Err(why.clone());
    }
    let sock = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(m) = mark {
        set_mark(&sock, m)?;
    }
    if let Some(src) = source {
        sock.bind(SocketAddr::from((src, 0)))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let mut stream = sock.connect(target).await.map_err(|e| e.to_string())?;
    match probe {
        Probe::Unavailable(why) => Err(why.clone()),
        Probe::Tcp => Ok("connected".into()),
        Probe::Http {
            path,
            host,
            expect_status,
        } => {
            let host = host.clone().unwrap_or_else(|| match target.ip() {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            });
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: halb-check\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut buf = Vec::with_capacity(256);
            let mut chunk = [0u8; 256];
            // The status line is all we need.
            while !buf.contains(&b'\n') && buf.len() < 4096 {
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = parse_status(&buf).ok_or_else(|| "no HTTP status line".to_string())?;
            if status == *expect_status {
                Ok(format!("HTTP {status}"))
            } else {
                Err(format!("HTTP {status}, expected {expect_status}"))
            }
        }
    }
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    (100..=599).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 999 Nope\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    /// A server on IPv4 loopback answering every connection with `reply`.
    async fn server(reply: &'static [u8]) -> SocketAddr {
        server_on("127.0.0.1:0", reply, None).await
    }

    /// A server on `bind` answering every connection with `reply`, and
    /// handing the first request it reads to `seen`.
    async fn server_on(
        bind: &str,
        reply: &'static [u8],
        seen: Option<tokio::sync::oneshot::Sender<Vec<u8>>>,
    ) -> SocketAddr {
        let l = TcpListener::bind(bind).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut seen = seen;
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if let Some(tx) = seen.take() {
                    let _ = tx.send(buf[..n].to_vec());
                }
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn ipv6_backends_are_probed_over_ipv6_with_a_bracketed_host() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let up = server_on("[::1]:0", b"HTTP/1.1 200 OK\r\n\r\n", Some(tx)).await;
        assert!(up.is_ipv6());
        let t = Duration::from_secs(2);
        let o = run(
            &http(200),
            up,
            Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            None,
            t,
        )
        .await;
        assert!(o.ok, "{}", o.detail);
        let req = String::from_utf8(rx.await.expect("request")).expect("text");
        assert!(req.contains("\r\nHost: [::1]\r\n"), "{req}");
        // A source of the other family cannot be bound: a clear failure.
        let o = run(
            &Probe::Tcp,
            up,
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            None,
            t,
        )
        .await;
        assert!(
            !o.ok && o.detail.starts_with("bind 127.0.0.1"),
            "{}",
            o.detail
        );
    }

    fn http(status: u16) -> Probe {
        Probe::Http {
            path: "/".into(),
            host: None,
            expect_status: status,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_and_http_outcomes() {
        let t = Duration::from_millis(500);
        let up = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert!(run(&Probe::Tcp, up, None, None, t).await.ok);
        let o = run(
            &http(200),
            up,
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            None,
            t,
        )
        .await;
        assert!(o.ok, "{o:?}");
        assert_eq!(o.detail, "HTTP 200");
        let o = run(&http(204), up, None, None, t).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "HTTP 200, expected 204");

        let junk = server(b"hello\r\n").await;
        assert_eq!(
            run(&http(200), junk, None, None, t).await.detail,
            "no HTTP status line"
        );

        // Nothing listens: refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = l.local_addr().expect("addr");
        drop(l);
        let o = run(&Probe::Tcp, closed, None, None, t).await;
        assert!(!o.ok && o.detail.contains("refused"), "{o:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        // Accepts but never answers.
        tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        let o = run(&http(200), addr, None, None, Duration::from_millis(100)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "timeout after 100 ms");
        assert!(o.latency >= Duration::from_millis(100));
    }
}
