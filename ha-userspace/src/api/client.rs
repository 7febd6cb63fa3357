//! A small blocking HTTP/1.1 client for the `halb` commands that talk to a
//! running agent (`status`, `drain`, `enable`, `weight`, `reload`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers there.
    #[error("no halb agent answers at {addr} ({source}); is `halb run` running, and is [api] listen right?")]
    Unreachable {
        /// Where we looked.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not HTTP.
    #[error("bad answer from {addr}: {what}")]
    Protocol {
        /// Where.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
}

/// Where the agent listens, and the token for write calls.
#[derive(Debug, Clone)]
pub struct Client {
    /// Agent address.
    pub addr: SocketAddr,
    /// Bearer token.
    pub token: Option<String>,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

impl Client {
    /// A client for the agent at `addr` (answers awaited up to 10 s).
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self {
            addr,
            token,
            timeout: Duration::from_secs(10),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body (`{}` when none is given): write calls
    /// must be `application/json` (see `api`'s cross-site protection).
    pub fn post(&self, path: &str, json: Option<&str>) -> Result<Answer, ClientError> {
        self.request("POST", path, Some(json.unwrap_or("{}")))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.request("DELETE", path, None)
    }

    /// Any method, with an optional JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let addr = self.addr;
        let unreachable = |source| ClientError::Unreachable { addr, source };
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(unreachable)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(unreachable)?;
        let body = json.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if json.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).map_err(unreachable)?;
        // Read until the answer is complete (some servers keep the
        // connection open despite `Connection: close`).
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if answer_complete(&raw) {
                break;
            }
            let n = s.read(&mut buf).map_err(unreachable)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        parse_answer(&raw).map_err(|what| ClientError::Protocol { addr, what })
    }
}

/// Whether `raw` holds a whole response: headers and, when the length is
/// known, the whole body (Content-Length, or a chunked body's last chunk).
fn answer_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.split("\r\n") {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or to close).
pub fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = std::str::from_utf8(&b[..nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .ok_or("bad chunk size")?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("short chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a =
            parse_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\nnope!").expect("ok");
        assert_eq!((a.status, a.body.as_str()), (404, "nope!"));
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("ok");
        assert_eq!(a.body, "abcde");
        assert!(parse_answer(b"garbage").is_err());
        assert!(answer_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ));
        assert!(!answer_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"
        ));
        assert!(!answer_complete(b"HTTP/1.1 200 OK\r\n\r\nto-close"));
    }
}
