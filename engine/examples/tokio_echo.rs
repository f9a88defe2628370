//! Echo server on tokio: every text or binary message comes back unchanged. A plain tokio
//! listener; the sans-IO core does the handshake through the adapter (`sockeye::tokio`).
//!
//! `cargo run --release -p sockeye --features tokio --example tokio_echo -- 127.0.0.1:9001 [DEFLATE]`
//!
//! One current-thread runtime, a task per connection. permessage-deflate is accepted when
//! offered (DEFLATE `on`, the default; `off` turns it off). Limits are the defaults, which
//! cover what the Autobahn testsuite sends.

use std::net::SocketAddr;
use std::time::Duration;

use sockeye::deflate::DeflateConfig;
use sockeye::tokio::{Config, Error, WebSocketStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout_at, Instant};

/// How long the peer has to answer our close after a protocol error (the mio server's default).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

async fn serve(tcp: TcpStream, config: Config) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) = WebSocketStream::accept(tcp, config).await else {
        return;
    };
    let mut deadline = None;
    loop {
        let item = match deadline {
            // The adapter reads no clock: the close handshake is bounded here.
            Some(at) => match timeout_at(at, ws.next()).await {
                Ok(item) => item,
                Err(_) => return,
            },
            None => ws.next().await,
        };
        match item {
            None => return,
            Some(Ok(message)) if message.is_data() => {
                // `next` writes what was fed before it waits for the socket: one write for
                // all the echoes of a batch read at once.
                if ws.feed(message).await.is_err() {
                    return;
                }
            }
            // Pings are answered by the adapter; the close handshake runs until `None`.
            Some(Ok(_)) => {}
            // Our close with the right code is out. The rest of a bad frame is skipped before
            // the peer's close can be seen, and the peer may never send it: wait only so long.
            Some(Err(Error::Protocol(_))) => deadline = Some(Instant::now() + CLOSE_TIMEOUT),
            Some(Err(_)) => return,
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let deflate = match std::env::args().nth(2).as_deref() {
        None | Some("on") => Some(DeflateConfig::default()),
        Some("off") => None,
        Some(other) => {
            let why = format!("DEFLATE must be on or off, not {other:?}");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
        }
    };
    let config = Config {
        deflate,
        ..Config::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::spawn(serve(tcp, config.clone()));
        }
    })
}
