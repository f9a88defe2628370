//! Echo server: every text or binary message comes back unchanged.
//!
//! `cargo run --release -p sockeye --example echo -- 127.0.0.1:9001 [MAX_BACKPRESSURE] [DEFLATE] [WORKERS]`
//!
//! permessage-deflate is on (DEFLATE `on`, the default: no context takeover either way, so
//! the sessions share the worker's compressor); `takeover` lets both sides keep their context
//! (a compressor and an inflater per session), `off` turns it off.
//! Limits are raised to what the Autobahn testsuite sends (16 MiB messages, 4 MiB in 64-byte
//! fragments), and the send queue cap (`max_backpressure`, the second argument, in bytes) to
//! hold a few of them: 64 MiB by default. One worker unless WORKERS says more (the testsuite
//! opens one connection at a time; `benches/scripts/scale.sh` runs 1, 2, 4, …).
//! No automatic pings: the testsuite checks every frame it receives.
//! SIGINT / SIGTERM shut it down gracefully (a second one exits at once).
//!
//! Built with feature `tls`, `SOCKEYE_TLS_CERT=chain.pem SOCKEYE_TLS_KEY=key.pem` make it a
//! wss:// server (scripts/test-ca.sh makes a pair).

use std::net::SocketAddr;

use sockeye::deflate::DeflateConfig;
use sockeye::handshake::Request;
use sockeye::server::{
    shutdown_on_signals, Handler, Message, Rejection, Server, ServerConfig, Session, Upgrading,
};

struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad address: {e}"),
            )
        })?;
    let max_backpressure = match std::env::args().nth(2) {
        Some(cap) => cap.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad max_backpressure {cap:?}: {e}"),
            )
        })?,
        None => 64 << 20,
    };
    let deflate = match std::env::args().nth(3).as_deref() {
        None | Some("on") => Some(DeflateConfig::default()),
        Some("takeover") => Some(DeflateConfig::with_context_takeover()),
        Some("off") => None,
        Some(other) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad DEFLATE {other:?}: on, takeover or off"),
            ))
        }
    };
    let workers = match std::env::args().nth(4) {
        Some(n) => n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad WORKERS {n:?}: a count of at least 1"),
            )
        })?,
        None => 1,
    };
    let mut config = ServerConfig {
        workers,
        max_backpressure,
        ping_interval: None,
        deflate,
        ..ServerConfig::default()
    };
    #[cfg(feature = "tls")]
    if let (Some(cert), Some(key)) = (
        std::env::var_os("SOCKEYE_TLS_CERT"),
        std::env::var_os("SOCKEYE_TLS_KEY"),
    ) {
        let tls = sockeye::tls::ServerTls::from_pem_files(cert.as_ref(), key.as_ref())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        config.tls = Some(tls);
    }
    config.limits.max_frame_size = 16 << 20;
    config.limits.max_message_size = 16 << 20;
    config.limits.max_fragments = 1 << 20;
    let server = Server::bind(addr, config)?;
    shutdown_on_signals(server.shutdown_handle())?;
    eprintln!("echo server listening on ws://{}", server.local_addr());
    server.run(|| Echo)
}
