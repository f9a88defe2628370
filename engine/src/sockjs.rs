//! SockJS (protocol 0.3.x, as `sockjs-client` 1.x speaks it): WebSocket-like sessions over
//! HTTP streaming and polling, for clients whose WebSocket upgrade is blocked by a proxy.
//!
//! This module holds the protocol's sans-IO pieces: the URL scheme ([`route`]), its JSON
//! ([`json`]), frames and their per-transport wrapping ([`frame`]) and a service's settings
//! ([`Service`]). The server side that keeps sessions across requests lives in
//! `server::sockjs`; to an application a SockJS session is a session like any other.

use std::time::Duration;

pub mod frame;
pub mod json;
pub mod route;

pub use route::{Route, Transport};

/// One SockJS service: everything under `prefix` (which starts with `/` and does not end with
/// one), and its settings, each default with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub prefix: String,
    /// Offer the WebSocket transport (`/info` says so). Default true; off behind proxies that
    /// are known to break upgrades.
    pub websocket: bool,
    /// Set `JSESSIONID` on session requests, for load balancers whose sticky sessions need a
    /// cookie. Default false.
    pub cookie_needed: bool,
    /// Interval of heart-beat frames while nothing else is sent. Default 25 s: under the idle
    /// timeouts of common proxies.
    pub heartbeat: Duration,
    /// How long a session lives without a receiving request before it is closed. Default 5 s:
    /// long enough for a polling client to come back.
    pub disconnect_delay: Duration,
    /// Bytes after which a streaming response is ended (the client opens a new one), so that
    /// neither the browser nor a proxy holds the whole stream. Default 128 KiB.
    pub streaming_limit: usize,
    /// Where the iframe page loads the client from.
    pub client_url: String,
    /// Largest body of an `xhr_send` or `jsonp_send` (a batch of messages, JSON-escaped: a
    /// message may take six times its size). Default 8 MiB; the messages in it are held to
    /// the server's message size limit.
    pub max_send_bytes: usize,
}

impl Service {
    /// A service at `prefix` with the default settings.
    pub fn new(prefix: &str) -> Service {
        Service {
            prefix: prefix.trim_end_matches('/').to_owned(),
            websocket: true,
            cookie_needed: false,
            heartbeat: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            streaming_limit: 128 << 10,
            client_url: "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js".into(),
            max_send_bytes: 8 << 20,
        }
    }
}
