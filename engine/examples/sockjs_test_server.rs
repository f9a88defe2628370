//! The SockJS protocol test server: the services the reference SockJS protocol test suite
//! (and `sockjs-client`'s tests) expect, on the engine's SockJS layer.
//!
//! `cargo run --release -p sockeye --example sockjs_test_server -- 127.0.0.1:8081`
//!
//! * `/echo`: echoes every message; streaming responses end after 4,096 bytes (so that the
//!   suite sees them end).
//! * `/disabled_websocket_echo`: the same, with the WebSocket transport off.
//! * `/cookie_needed_echo`: the same, with `JSESSIONID` cookies.
//! * `/close`: closes every session as it opens, with `c[3000,"Go away!"]`.
//!
//! Sessions time out 5 s after their last receiving request, as the suite expects. SIGINT /
//! SIGTERM shut it down gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::handshake::Request;
use sockeye::server::{
    shutdown_on_signals, Handler, Message, Rejection, Server, ServerConfig, Session, Upgrading,
};
use sockeye::sockjs::Service;

/// Which service a session belongs to.
struct TestServices;

impl Handler for TestServices {
    /// The service's prefix.
    type Data = String;

    fn on_upgrade(
        &mut self,
        _req: &Request<'_, '_>,
        up: &mut Upgrading,
    ) -> Result<String, Rejection> {
        Ok(up
            .sockjs
            .as_ref()
            .map(|(p, _)| p.clone())
            .unwrap_or_default())
    }

    fn on_open(&mut self, session: &mut Session<'_, String>) {
        if session.data() == "/close" {
            let _ = session.close(3000, "Go away!");
        }
    }

    fn on_message(&mut self, session: &mut Session<'_, String>, message: Message<'_>) {
        let _ = session.send(message);
    }
}

/// The suite's services.
fn services() -> Vec<Service> {
    let echo = Service {
        streaming_limit: 4096,
        disconnect_delay: Duration::from_secs(5),
        ..Service::new("/echo")
    };
    vec![
        echo.clone(),
        Service {
            websocket: false,
            ..Service {
                prefix: "/disabled_websocket_echo".into(),
                ..echo.clone()
            }
        },
        Service {
            cookie_needed: true,
            ..Service {
                prefix: "/cookie_needed_echo".into(),
                ..echo.clone()
            }
        },
        Service {
            prefix: "/close".into(),
            ..echo
        },
    ]
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad address: {e}"),
            )
        })?;
    let config = ServerConfig {
        sockjs: services(),
        ..ServerConfig::default()
    };
    let server = Server::bind(addr, config)?;
    shutdown_on_signals(server.shutdown_handle())?;
    eprintln!("SockJS test server on http://{}", server.local_addr());
    server.run(|| TestServices)
}
