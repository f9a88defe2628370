//! Echo server on tokio: every text or binary message comes back unchanged. A plain tokio
//! listener; the sans-IO core does the handshake through the adapter (`sockeye::tokio`).
//!
//! `cargo run --release -p sockeye --features tokio --example tokio_echo -- 127.0.0.1:9001`
//!
//! One current-thread runtime, a task per connection. No permessage-deflate (the adapter does
//! not negotiate it yet). Limits are the defaults, which cover what the Autobahn testsuite sends.

use std::net::SocketAddr;

use sockeye::tokio::{Config, WebSocketStream};
use tokio::net::{TcpListener, TcpStream};

async fn serve(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) = WebSocketStream::accept(tcp, Config::default()).await else {
        return;
    };
    while let Some(item) = ws.next().await {
        match item {
            Ok(message) if message.is_data() => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            // Pings are answered by the adapter; the close handshake runs until `None`.
            Ok(_) => {}
            // Protocol errors are answered with the right close code; keep reading to finish.
            Err(sockeye::tokio::Error::Protocol(_)) => {}
            Err(_) => return,
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::spawn(serve(tcp));
        }
    })
}
