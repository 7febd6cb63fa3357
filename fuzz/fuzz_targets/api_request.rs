//! The API router on arbitrary requests (method, path, headers, body):
//! never a panic, an answer for every request, and no write obeyed unless
//! it is a same-origin JSON call.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use halb::api::{self, ApiState, Command, Published};
use libfuzzer_sys::fuzz_target;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

struct Env {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (_status_tx, status) = watch::channel(Published::default());
        let (commands, mut rx) = mpsc::channel::<Command>(16);
        // The agent's side: every command is answered (not found).
        rt.spawn(async move {
            let _keep = _status_tx;
            while let Some(c) = rx.recv().await {
                match c {
                    Command::Backend { reply, .. } => {
                        let _ = reply.send(Err(api::CommandError::NotFound("fuzz".into())));
                    }
                    Command::Reload { reply } => {
                        let _ = reply.send(Err(vec!["fuzz".into()]));
                    }
                }
            }
        });
        let app = api::router(ApiState {
            status,
            commands,
            token: Some("fuzz-token-0123456789".into()),
        });
        Env { rt, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
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
    let e = env();
    let resp =
        e.rt.block_on(e.app.clone().oneshot(req))
            .expect("the router answers");
    let code = resp.status().as_u16();
    assert!((200..600).contains(&code));
});
