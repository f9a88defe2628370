//! Echo over WebSocket on an axum route: axum (hyper) does the HTTP upgrade, the tokio adapter
//! (`sockeye::tokio`) runs the connection.
//!
//! `cargo run --release -p sockeye-embedding --example axum_echo -- 127.0.0.1:9002`, then
//! connect to `ws://127.0.0.1:9002/`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;
use sockeye::connection::Role;
use sockeye::handshake::accept_key;
use sockeye::tokio::{Config, WebSocketStream};

/// The `Sec-WebSocket-Key` of a valid opening handshake (RFC 6455 §4.2.1), if it is one.
fn upgrade_key(method: &Method, headers: &HeaderMap) -> Option<Vec<u8>> {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let upgrade = has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade");
    if method != Method::GET || !upgrade || !version_13 {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(key.as_bytes().to_vec())
}

async fn ws(req: Request) -> Response {
    let Some(key) = upgrade_key(req.method(), req.headers()) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n").into_response();
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = TokioIo::new(upgraded);
        let mut ws = WebSocketStream::from_upgraded(io, Role::Server, Config::default());
        // An error ends the connection: a protocol error's close frame is already written.
        while let Some(Ok(message)) = ws.next().await {
            if message.is_data() && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let accept = accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, &accept[..])
        .body(Body::empty())
        .unwrap_or_default()
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, Router::new().route("/", any(ws))).await
    })
}
