//! The API router on arbitrary requests (method, path, headers, body):
//! never a panic, an answer for every request, and no write reaches the
//! agent unless it is a same-origin JSON call with the token (or, without a
//! token, one that names the server by address).
#![no_main]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use halb::api::{self, ApiState, Command, Published};
use libfuzzer_sys::fuzz_target;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token-0123456789";

/// Set when a command reaches the (mock) agent.
static OBEYED: AtomicBool = AtomicBool::new(false);

struct Env {
    rt: tokio::runtime::Runtime,
    with_token: axum::Router,
    without_token: axum::Router,
}

fn router(rt: &tokio::runtime::Runtime, token: Option<&str>) -> axum::Router {
    let (status_tx, status) = watch::channel(Published::default());
    let (commands, mut rx) = mpsc::channel::<Command>(16);
    // The agent's side: every command is noted and answered (not found).
    rt.spawn(async move {
        let _keep = status_tx;
        while let Some(c) = rx.recv().await {
            OBEYED.store(true, Ordering::SeqCst);
            match c {
                Command::Backend { reply, .. } => {
                    let _ = reply.send(Err(api::CommandError::NotFound("fuzz".into())));
                }
                Command::Reload { reply } => {
                    let _ = reply.send(Err(vec!["fuzz".into()]));
                }
                Command::Node { reply, .. } => {
                    let _ = reply.send(Err(api::CommandError::BadRequest("fuzz".into())));
                }
            }
        }
    });
    api::router(ApiState {
        status,
        commands,
        token: token.map(Into::into),
    })
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let with_token = router(&rt, Some(TOKEN));
        let without_token = router(&rt, None);
        Env {
            rt,
            with_token,
            without_token,
        }
    })
}

/// Whether the request was allowed to make the agent act.
fn may_write(h: &HeaderMap, token: bool) -> bool {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    let json = get("content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let site = get("sec-fetch-site").is_none_or(|s| s == "same-origin" || s == "none");
    let host = get("host").unwrap_or("");
    let origin = get("origin").is_none_or(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host))
    });
    let auth = if token {
        get("authorization") == Some(&format!("Bearer {TOKEN}"))
    } else {
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || host.starts_with('[')
    };
    json && site && origin && auth
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let (Some(line), Some(head), body) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (method, path) = line.split_once(' ').unwrap_or(("GET", line));
    let mut b = Request::builder().method(method).uri(path);
    for h in head.split('|') {
        if let Some((k, v)) = h.split_once(':') {
            b = b.header(k.trim(), v.trim());
        }
    }
    let Ok(req) = b.body(Body::from(body.unwrap_or("").to_string())) else {
        return;
    };
    let headers = req.headers().clone();
    let token = sel & 1 == 0;
    let e = env();
    let app = if token {
        e.with_token.clone()
    } else {
        e.without_token.clone()
    };
    OBEYED.store(false, Ordering::SeqCst);
    let resp = e.rt.block_on(app.oneshot(req)).expect("the router answers");
    let code = resp.status().as_u16();
    assert!((200..600).contains(&code));
    if OBEYED.load(Ordering::SeqCst) {
        assert!(
            may_write(&headers, token),
            "a write reached the agent: {headers:?}"
        );
    }
});
