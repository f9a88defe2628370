//! `sockeye-chat`: the chat server on the embedded STOMP broker.
//!
//! HTTP pages, the JSON API and STOMP over WebSocket (`/ws`) share one port; STOMP over TCP has
//! its own. `cargo run --release -p sockeye-chat -- --help` lists the flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use sockeye::handshake::Origins;
use sockeye::server::{shutdown_on_signals, Server, ServerConfig};
use sockeye_chat::app::ChatApp;
use sockeye_chat::rooms::{Chat, ChatConfig, Store};
use sockeye_chat::server::{heartbeat, Hub, StompConfig, StompHandler, SUB_PROTOCOLS};
use tracing::{error, info};

/// Chat rooms over STOMP, on the Sockeye WebSocket engine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// HTTP and WebSocket address (STOMP over WebSocket at /ws).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// STOMP over TCP address ("off" to disable).
    #[arg(long)]
    stomp_listen: Option<String>,
    /// Where rooms and history are stored (SQLite). "off" keeps everything in memory.
    #[arg(long)]
    data_dir: Option<String>,
    /// Comma-separated browser origins allowed to open WebSockets, or "*" for any.
    #[arg(long)]
    allowed_origins: Option<String>,
    /// Event-loop threads (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Largest WebSocket message and STOMP body, in bytes.
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Most simultaneous connections.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Bytes queued per connection before the slow-consumer policy applies.
    #[arg(long)]
    max_backpressure: Option<usize>,
    /// Server heart-beat offer in ms, "send,receive" (STOMP heart-beat header).
    #[arg(long)]
    heart_beat: Option<String>,
    /// A JSON file with any of the settings above (snake_case keys); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The settings a config file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    stomp_listen: Option<String>,
    data_dir: Option<String>,
    allowed_origins: Option<String>,
    workers: Option<usize>,
    max_message_size: Option<usize>,
    max_connections: Option<usize>,
    max_backpressure: Option<usize>,
    heart_beat: Option<String>,
}

fn load_file(path: &PathBuf) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))
}

fn parse_heart_beat(value: &str) -> Result<(u64, u64), String> {
    let bad = || format!("--heart-beat wants \"send,receive\" in ms, got {value:?}");
    let (a, b) = value.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = run(Args::parse()) {
        error!("{e}");
        eprintln!("sockeye-chat: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal"));
    let stomp_listen = args
        .stomp_listen
        .or(file.stomp_listen)
        .unwrap_or_else(|| "127.0.0.1:61613".into());
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| "chat-data".into());
    let origins = args
        .allowed_origins
        .or(file.allowed_origins)
        .unwrap_or_else(|| "*".into());
    let max_message = args
        .max_message_size
        .or(file.max_message_size)
        .unwrap_or(1 << 20);
    let heart_beat = match args.heart_beat.or(file.heart_beat) {
        Some(v) => parse_heart_beat(&v)?,
        None => (10_000, 10_000),
    };

    let mut config = ServerConfig::default();
    if let Some(w) = args.workers.or(file.workers) {
        config.workers = w.max(1);
    }
    if let Some(m) = args.max_connections.or(file.max_connections) {
        config.max_connections = m;
    }
    if let Some(b) = args.max_backpressure.or(file.max_backpressure) {
        config.max_backpressure = b;
    }
    // Room for the STOMP head around the largest body.
    config.limits.max_message_size = max_message + (64 << 10);
    config.limits.max_frame_size = config.limits.max_message_size;
    config.handshake.protocols = SUB_PROTOCOLS.iter().map(|p| p.to_string()).collect();
    config.handshake.allowed_origins = if origins.trim() == "*" {
        Origins::Any
    } else {
        Origins::List(
            origins
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    };
    // The STOMP heart-beat is the liveness check here; WebSocket pings stay on as a backstop.
    config.ping_interval = Some(Duration::from_secs(30));

    let (chat, store) = if data_dir == "off" {
        (Chat::new(ChatConfig::default()), None)
    } else {
        let (store, loaded) = Store::open(&data_dir)
            .map_err(|e| format!("cannot open the data directory {data_dir}: {e}"))?;
        info!(rooms = loaded.rooms.len(), path = %store.path().display(), "loaded chat state");
        (Chat::restore(ChatConfig::default(), loaded), Some(store))
    };
    let app = Arc::new(ChatApp::new(chat, store));
    let mut stomp = StompConfig::default();
    stomp.limits.max_body = max_message;
    stomp.broker.heart_beat = heart_beat;
    let hub = Hub::new(stomp, Box::new(app.clone()));

    let mut server =
        Server::bind(listen, config).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let http_addr = server.local_addr();
    let tcp_addr = if stomp_listen == "off" {
        None
    } else {
        let addr: SocketAddr = stomp_listen
            .parse()
            .map_err(|e| format!("bad --stomp-listen {stomp_listen:?}: {e}"))?;
        Some(
            server
                .bind_stream(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        )
    };
    let beats =
        heartbeat::spawn(&hub).map_err(|e| format!("cannot start the heart-beat thread: {e}"))?;
    let handler_hub = hub.clone();
    let running = server
        .spawn(move || StompHandler::new(handler_hub.clone()))
        .map_err(|e| format!("cannot start: {e}"))?;
    shutdown_on_signals(running.shutdown_handle())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    println!("sockeye-chat: open http://{http_addr}/ in a browser");
    println!(
        "sockeye-chat: STOMP over WebSocket at ws://{http_addr}/ws (sub-protocols {})",
        SUB_PROTOCOLS.join(", ")
    );
    if let Some(addr) = tcp_addr {
        println!("sockeye-chat: STOMP over TCP at {addr}");
    }
    let result = running.join();
    hub.stop();
    let _ = beats.join();
    app.flush();
    info!("stopped");
    result.map_err(|e| format!("server failed: {e}"))
}
