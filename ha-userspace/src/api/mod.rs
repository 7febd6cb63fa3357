//! The agent's HTTP interface on `[api] listen`: the status document, the
//! operator's write calls (drain, enable, weight, reload), the stats page
//! and Prometheus metrics. Handlers read a published snapshot and send
//! commands to the agent; they never touch the data plane themselves.
//!
//! Protection, since anyone who reaches the listener (or a page in the
//! operator's browser) can send requests:
//! - write calls need `Content-Type: application/json`, which a page on
//!   another origin cannot send without a CORS preflight this server never
//!   grants, and are refused (403) when `Origin` names another origin or
//!   `Sec-Fetch-Site` says `cross-site`/`same-site`; with `token_file`, they
//!   also need the token (compared in constant time);
//! - without a token, a write must name this server by address in `Host`
//!   (an IP literal or `localhost`): a DNS-rebinding page on the attacker's
//!   domain sends its own name;
//! - at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//!   once, so the agent's file descriptors stay for health checks and
//!   netlink); request headers must arrive within [`HEADER_TIMEOUT`] and
//!   fit [`MAX_HEADER_BYTES`]; a request, body included, takes at most
//!   [`REQUEST_TIMEOUT`]; a connection lives at most
//!   [`CONNECTION_LIFETIME`]; bodies are limited to [`MAX_BODY_BYTES`].

pub mod client;
pub mod metrics;
pub mod model;
pub mod page;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use model::{BackendChange, ErrorBody, Status};

/// What an operator asked for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOp {
    /// Weight 0 until enabled: existing flows stay, no new ones.
    Drain,
    /// Undo a drain.
    Enable,
    /// Set the weight.
    Weight(u32),
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown VIP or backend.
    NotFound(String),
    /// The request makes no sense.
    BadRequest(String),
    /// It could not be carried out (nothing changed).
    Failed(String),
}

/// A command for the agent, with its reply channel.
#[derive(Debug)]
pub enum Command {
    /// Drain, enable or re-weight a backend.
    Backend {
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
        /// What to do.
        op: BackendOp,
        /// The answer.
        reply: oneshot::Sender<Result<BackendChange, CommandError>>,
    },
    /// Re-read the config file.
    Reload {
        /// A summary of what changed, or the problems that kept the old config.
        reply: oneshot::Sender<Result<String, Vec<String>>>,
    },
    /// Drain (withdraw every announcement, keep forwarding) or enable the
    /// node (BGP mode).
    Node {
        /// Drain (true) or enable.
        drain: bool,
        /// The answer.
        reply: oneshot::Sender<Result<model::NodeChange, CommandError>>,
    },
}

/// A status document as published: the value, and its JSON and metrics
/// renderings made once per publication (requests only copy bytes).
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The document.
    pub status: Arc<Status>,
    /// `GET /api/v1/status` body.
    pub json: axum::body::Bytes,
    /// `GET /metrics` body.
    pub metrics: axum::body::Bytes,
}

impl Published {
    /// Renders `status` once.
    pub fn new(status: Status) -> Self {
        let json = serde_json::to_vec(&status).unwrap_or_default().into();
        let metrics = metrics::render(&status).into_bytes().into();
        Self {
            status: Arc::new(status),
            json,
            metrics,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The latest status.
    pub status: watch::Receiver<Published>,
    /// Commands to the agent.
    pub commands: mpsc::Sender<Command>,
    /// Token that write calls must carry (None: no token needed).
    pub token: Option<Arc<str>>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Cannot listen.
    #[error("API cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Connections served at once, at most.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept (it is then closed after its current request).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Time a request may take, body included (a body trickled byte by byte
/// cannot hold a connection slot for long).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections refused because [`MAX_CONNECTIONS`] were open.
pub static REFUSED_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Binds `addr` (done first at start-up: a busy port stops the start
/// before anything is attached).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen { addr, source })
}

/// Serves on `listener` until the task is dropped.
pub fn serve(listener: tokio::net::TcpListener, state: ApiState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(listener, router(state)))
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            REFUSED_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
                }
            }
        });
    }
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(stats_page))
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/reload", post(reload))
        .route(
            "/api/v1/vips/{vip}/backends/{backend}/{action}",
            post(backend_op),
        )
        .route("/api/v1/node/{action}", post(node_op))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(deadline))
        .with_state(state)
}

/// Answers 408 when a request (reading its body included) takes longer than
/// [`REQUEST_TIMEOUT`].
async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(StatusCode::REQUEST_TIMEOUT, "the request took too long"),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    let body = s.status.borrow().json.clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn stats_page() -> Html<&'static str> {
    Html(page::HTML)
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    let body = s.status.borrow().metrics.clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ErrorBody { error: msg.into() })).into_response()
}

/// Whether the request carries the write token (when one is required). A
/// missing header is never a token.
fn authorized(s: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = &s.token else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare without an early exit on the first differing byte.
    let (a, b) = (given.as_bytes(), token.as_bytes());
    !b.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses write calls a page on another origin could have sent: a
/// cross-site `Sec-Fetch-Site`, an `Origin` that is not this server's, or a
/// body that is not `application/json` (the "simple" content types need no
/// CORS preflight; JSON does, and this server answers none).
/// Whether `host` (a `Host` header) names this server by address: an IP
/// literal or `localhost`, with or without a port. A DNS name there, on a
/// server without a token, is how DNS rebinding reaches a loopback API from
/// a page on the attacker's domain.
fn host_is_address(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(
            host,
            |(h, port)| {
                if port.parse::<u16>().is_ok() {
                    h
                } else {
                    host
                }
            },
        )
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn same_origin_write(headers: &HeaderMap, token: bool) -> Result<(), Box<Response>> {
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if !token {
        let host = text(header::HOST).unwrap_or("");
        if !host_is_address(host) {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                format!(
                    "write refused: Host {host:?} is not an address of this server \
                     (without a token, writes must name it by IP or localhost)"
                ),
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                format!("cross-site write refused (Sec-Fetch-Site: {site})"),
            )));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                format!("write from another origin refused (Origin: {origin})"),
            )));
        }
    }
    let json = text(header::CONTENT_TYPE).is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "write calls need Content-Type: application/json",
        )));
    }
    Ok(())
}

/// `POST /api/v1/node/{drain,enable}` (BGP mode).
async fn node_op(
    State(s): State<ApiState>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = same_origin_write(&headers, s.token.is_some()) {
        return *r;
    }
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let drain = match action.as_str() {
        "drain" => true,
        "enable" => false,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: drain or enable"),
            )
        }
    };
    let (reply, rx) = oneshot::channel();
    if s.commands
        .send(Command::Node { drain, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down");
    }
    answer(rx.await)
}

/// The agent's answer to a command as a response.
fn answer<T: serde::Serialize>(
    r: Result<Result<T, CommandError>, oneshot::error::RecvError>,
) -> Response {
    match r {
        Ok(Ok(change)) => Json(change).into_response(),
        Ok(Err(CommandError::NotFound(m))) => error(StatusCode::NOT_FOUND, m),
        Ok(Err(CommandError::BadRequest(m))) => error(StatusCode::BAD_REQUEST, m),
        Ok(Err(CommandError::Failed(m))) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down"),
    }
}

#[derive(Deserialize)]
struct WeightBody {
    weight: u32,
}

async fn backend_op(
    State(s): State<ApiState>,
    Path((vip, backend, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = same_origin_write(&headers, s.token.is_some()) {
        return *r;
    }
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let op = match action.as_str() {
        "drain" => BackendOp::Drain,
        "enable" => BackendOp::Enable,
        "weight" => match serde_json::from_slice::<WeightBody>(&body) {
            Ok(b) => BackendOp::Weight(b.weight),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected a JSON body {{\"weight\": N}}: {e}"),
                )
            }
        },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}: drain, enable or weight"),
            )
        }
    };
    let (reply, rx) = oneshot::channel();
    if s.commands
        .send(Command::Backend {
            vip,
            backend,
            op,
            reply,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down");
    }
    answer(rx.await)
}

async fn reload(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = same_origin_write(&headers, s.token.is_some()) {
        return *r;
    }
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let (reply, rx) = oneshot::channel();
    if s.commands.send(Command::Reload { reply }).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down");
    }
    match rx.await {
        Ok(Ok(summary)) => Json(serde_json::json!({ "reloaded": summary })).into_response(),
        Ok(Err(problems)) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "config rejected, running config kept:\n{}",
                problems.join("\n")
            ),
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_name_the_server_by_address() {
        for ok in [
            "127.0.0.1:8480",
            "127.0.0.1",
            "localhost:8480",
            "LOCALHOST",
            "[::1]:8480",
            "[::1]",
            "10.77.0.2:9191",
        ] {
            assert!(host_is_address(ok), "{ok}");
        }
        for bad in [
            "evil.example:8480",
            "evil.example",
            "127.0.0.1.evil.example:8480",
            "[::1]x",
            "",
            "localhost.evil:80",
        ] {
            assert!(!host_is_address(bad), "{bad}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:8480");
        let code = |h: &[(&str, &str)], token: bool| {
            same_origin_write(&headers(h), token).map_err(|r| r.status().as_u16())
        };
        assert_eq!(code(&[json, host], false), Ok(()));
        assert_eq!(
            code(&[json, ("host", "evil.example:8480")], false),
            Err(403)
        );
        assert_eq!(code(&[json, ("host", "evil.example:8480")], true), Ok(()));
        assert_eq!(
            code(&[json, host, ("origin", "http://attacker.example")], true),
            Err(403)
        );
        assert_eq!(
            code(&[json, host, ("origin", "http://127.0.0.1:8480")], false),
            Ok(())
        );
        assert_eq!(
            code(&[json, host, ("sec-fetch-site", "cross-site")], false),
            Err(403)
        );
        assert_eq!(
            code(&[json, host, ("sec-fetch-site", "same-site")], false),
            Err(403)
        );
        assert_eq!(
            code(&[host, ("content-type", "text/plain")], false),
            Err(415)
        );
        assert_eq!(code(&[host], false), Err(415));
    }
}
