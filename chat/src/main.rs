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
use sockeye::deflate::DeflateConfig;
use sockeye::handshake::Origins;
use sockeye::server::{reload_tls_on_sighup, shutdown_on_signals, Server, ServerConfig};
use sockeye::tls::ServerTls;
use sockeye_chat::app::ChatApp;
use sockeye_chat::auth::{authenticator, hash_password, Users};
use sockeye_chat::broker::limits::SendRate;
use sockeye_chat::broker::permissions::{Permissions, Rule};
use sockeye_chat::cluster::{random_node_id, Cluster};
use sockeye_chat::relay::RelayConfig;
use sockeye_chat::rooms::{
    redact_url, Chat, ChatConfig, ClusterConfig, Store, StoreConfig, StoreOptions, CLUSTER_TOPIC,
    ROOMS_PATTERN,
};
use sockeye_chat::server::{
    heartbeat, Hub, OriginPolicy, SlowConsumer, StompConfig, StompHandler, SUB_PROTOCOLS,
};
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
    /// Where rooms and history are stored (SQLite, the default). "off" keeps everything in
    /// memory.
    #[arg(long)]
    data_dir: Option<String>,
    /// Store rooms and history in PostgreSQL instead of SQLite (not with --data-dir):
    /// postgres://user:password@host:port/database. Logs show it with the password masked.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Hand /topic, /queue and users' destinations to an external STOMP broker (RabbitMQ,
    /// ActiveMQ) over a small pool of connections, so that several nodes serve one set of
    /// rooms: stomp://LOGIN:PASSCODE@HOST:PORT/VHOST (options: ?pool=N&dialect=rabbitmq|activemq|sockeye).
    /// Without it the embedded broker serves this node alone.
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// This node's number among the nodes of one relay (1-65535; default random): it keeps
    /// message and room ids apart between nodes.
    #[arg(long, value_name = "N")]
    node_id: Option<u16>,
    /// Web origins allowed to open sessions besides the server's own (a page whose Origin
    /// names the request's Host): comma-separated, like https://chat.example.com, or "*" for
    /// any. Default: same-origin only.
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
    /// What happens to a subscriber that does not read as fast as it is sent to:
    /// "disconnect" (default: ERROR "slow consumer", then close), "drop" (drop what does not
    /// fit, counted and logged), or "throttle" (pause reading from its publishers while it
    /// has more than half of --max-backpressure queued; disconnect it after --throttle-limit).
    #[arg(long, value_name = "POLICY")]
    slow_consumer: Option<String>,
    /// Seconds a subscriber may hold its publishers up under "throttle" (default 10).
    #[arg(long, value_name = "SECS")]
    throttle_limit: Option<u64>,
    /// permessage-deflate for WebSocket clients that offer it (browsers do): "on" (default:
    /// each message compressed alone, so an idle connection holds no compression memory and
    /// a room's message is compressed once for all its subscribers), "takeover" (each side
    /// keeps its context: better ratios, about 300 KB per connection), or "off".
    #[arg(long, value_name = "MODE")]
    deflate: Option<String>,
    /// Server heart-beat offer in ms, "send,receive" (STOMP heart-beat header).
    #[arg(long)]
    heart_beat: Option<String>,
    /// A JSON object {"user": "$argon2id$...", ...} of password hashes made by
    /// `sockeye-chat hash-password` (a plain-text passcode is refused at start): CONNECT must
    /// then carry a matching login/passcode, or gets ERROR "not authorized" (late, from an
    /// address that keeps failing). Without it (the development default) there is no password
    /// check: a CONNECT's `login` header alone names the session's user (for /user/...
    /// destinations), and a CONNECT without `login` is anonymous.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// SENDs a second per session, with bursts of five seconds' worth (0: no limit). Over it:
    /// ERROR "SEND rate over ..." and close. Default 200.
    #[arg(long, value_name = "N")]
    max_send_rate: Option<u32>,
    /// Subscriptions per session (0: no limit). Default 1000.
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Of those, subscriptions to a queue pattern such as /queue/jobs.* (each holds a part in
    /// every one of the queues' 64 shards). Default 16.
    #[arg(long, value_name = "N")]
    max_queue_patterns: Option<usize>,
    /// Messages a queue holds while no subscriber can take them (none, or all at their
    /// unacknowledged limit); past it the oldest are dropped, counted in
    /// sockeye_broker_queue_dropped_total and warned of. Default 1000.
    #[arg(long, value_name = "N")]
    max_held_per_queue: Option<usize>,
    /// Connected sessions per user (0: no limit); the next CONNECT gets ERROR. Default 100.
    #[arg(long, value_name = "N")]
    max_sessions_per_user: Option<usize>,
    /// Connected sessions per client address (0: no limit). Default 1000.
    #[arg(long, value_name = "N")]
    max_sessions_per_address: Option<usize>,
    /// Longest chat message, in characters. Default 2000.
    #[arg(long, value_name = "CHARS")]
    max_chat_message: Option<usize>,
    /// Longest room name, in characters. Default 64.
    #[arg(long, value_name = "CHARS")]
    max_room_name: Option<usize>,
    /// Rooms one client address may create in any hour (POST /api/rooms, which has no login;
    /// 0: no limit); over it, 429. Default 20.
    #[arg(long, value_name = "N")]
    max_rooms_per_hour: Option<usize>,
    /// Log lines as "text" (default) or "json" (one object per line, for log collectors). The
    /// level comes from RUST_LOG (default info: one line per session connected or closed, per
    /// ERROR and per refusal; nothing per message).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// PEM certificate chain (leaf first): serve the pages, the API, /ws and /sockjs over
    /// https and wss (with --tls-key). SIGHUP reloads it and the key without dropping open
    /// sessions.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Also speak TLS on the STOMP over TCP port (with --tls-cert and --tls-key).
    #[arg(long)]
    stomp_tls: bool,
    /// A JSON file with any of the settings above (snake_case keys); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Tool>,
}

/// Tools besides serving.
#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Reads a password from standard input (to its end; one trailing newline is dropped) and
    /// prints its argon2id hash, for the --users file.
    HashPassword,
}

/// `sockeye-chat hash-password`.
fn hash_password_tool() -> Result<(), String> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    if password.is_empty() {
        return Err("hash-password: empty password (write it to standard input)".into());
    }
    println!("{}", hash_password(password)?);
    Ok(())
}

/// The settings a config file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    stomp_listen: Option<String>,
    data_dir: Option<String>,
    database: Option<String>,
    relay: Option<String>,
    node_id: Option<u16>,
    allowed_origins: Option<String>,
    workers: Option<usize>,
    max_message_size: Option<usize>,
    max_connections: Option<usize>,
    max_backpressure: Option<usize>,
    slow_consumer: Option<String>,
    throttle_limit: Option<u64>,
    deflate: Option<String>,
    heart_beat: Option<String>,
    users: Option<PathBuf>,
    max_send_rate: Option<u32>,
    max_subscriptions: Option<usize>,
    max_queue_patterns: Option<usize>,
    max_held_per_queue: Option<usize>,
    max_sessions_per_user: Option<usize>,
    max_sessions_per_address: Option<usize>,
    max_chat_message: Option<usize>,
    max_room_name: Option<usize>,
    max_rooms_per_hour: Option<usize>,
    log_format: Option<String>,
    /// Who may SEND and SUBSCRIBE where, first matching rule deciding (file only; see
    /// `sockeye_chat::broker::permissions`).
    #[serde(default)]
    permissions: Vec<Rule>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    stomp_tls: Option<bool>,
}

/// `--tls-cert` and `--tls-key` (both or neither), and whether the STOMP port gets TLS too.
#[derive(Debug)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    stomp: bool,
}

fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    stomp: bool,
) -> Result<Option<TlsFiles>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key, stomp })),
        (None, None) if stomp => Err("--stomp-tls needs --tls-cert and --tls-key".into()),
        (None, None) => Ok(None),
        _ => Err("--tls-cert and --tls-key go together".into()),
    }
}

fn load_file(path: &PathBuf) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))
}

/// `--database` (PostgreSQL) or `--data-dir` (SQLite, the default, in `chat-data`; "off" keeps
/// everything in memory), not both.
fn store_config(
    database: Option<String>,
    data_dir: Option<String>,
) -> Result<Option<StoreConfig>, String> {
    match (database, data_dir) {
        (Some(_), Some(_)) => {
            Err("--database (PostgreSQL) and --data-dir (SQLite) both given: choose one".into())
        }
        (Some(url), None) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Some(StoreConfig::Postgres(url)))
        }
        (Some(url), None) => Err(format!(
            "--database wants postgres://user:password@host:port/database, got {:?}",
            redact_url(&url)
        )),
        (None, dir) => {
            let dir = dir.unwrap_or_else(|| "chat-data".into());
            Ok((dir != "off").then(|| StoreConfig::Sqlite(dir.into())))
        }
    }
}

/// A limit flag: `default` when not given, none when 0.
fn limit(value: Option<usize>, default: usize) -> Option<usize> {
    Some(value.unwrap_or(default)).filter(|&n| n > 0)
}

fn parse_heart_beat(value: &str) -> Result<(u64, u64), String> {
    sockeye_chat::stomp::parse_heart_beat(value)
        .ok_or_else(|| format!("--heart-beat wants \"send,receive\" in ms, got {value:?}"))
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// `--log-format`, or the config file's `log_format` (read here already: logging starts
/// before the rest of the settings are checked).
fn log_format(args: &Args) -> Result<LogFormat, String> {
    let from_file = || {
        args.config
            .as_ref()
            .and_then(|p| load_file(p).ok())
            .and_then(|f| f.log_format)
    };
    match args.log_format.clone().or_else(from_file).as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(format!("--log-format must be text or json, not {other:?}")),
    }
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours for a terminal only: a file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() {
    let args = Args::parse();
    let format = log_format(&args).unwrap_or_else(|e| {
        eprintln!("sockeye-chat: {e}");
        std::process::exit(2);
    });
    init_logs(format);
    let result = match args.command {
        Some(Tool::HashPassword) => hash_password_tool(),
        None => run(args),
    };
    if let Err(e) = result {
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
    let store_config = store_config(
        args.database.or(file.database),
        args.data_dir.or(file.data_dir),
    )?;
    let tls = tls_files(
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
        args.stomp_tls || file.stomp_tls.unwrap_or(false),
    )?;
    let origins = match args.allowed_origins.or(file.allowed_origins) {
        Some(value) => OriginPolicy::parse(&value)?,
        None => OriginPolicy::SameOrigin,
    };
    info!(allowed = %origins, "web origins");
    let max_message = args
        .max_message_size
        .or(file.max_message_size)
        .unwrap_or(1 << 20);
    let heart_beat = match args.heart_beat.or(file.heart_beat) {
        Some(v) => parse_heart_beat(&v)?,
        None => (10_000, 10_000),
    };
    let mut slow_consumer: SlowConsumer = args
        .slow_consumer
        .or(file.slow_consumer)
        .as_deref()
        .unwrap_or("disconnect")
        .parse()?;
    if let (SlowConsumer::Throttle { limit }, Some(secs)) = (
        &mut slow_consumer,
        args.throttle_limit.or(file.throttle_limit),
    ) {
        *limit = Duration::from_secs(secs.max(1));
    }
    info!(policy = %slow_consumer, "slow consumers");
    let users = match args.users.or(file.users) {
        Some(path) => Some(Users::load(&path).map_err(|e| e.to_string())?),
        None => None,
    };
    match &users {
        Some(u) => info!(users = u.len(), "CONNECT needs a login and passcode"),
        None => info!("no --users: a CONNECT's login names its user, unchecked"),
    }

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
    let deflate = args.deflate.or(file.deflate).unwrap_or_else(|| "on".into());
    config.deflate = match deflate.as_str() {
        "on" => Some(DeflateConfig::default()),
        "takeover" => Some(DeflateConfig::with_context_takeover()),
        "off" => None,
        other => {
            return Err(format!(
                "--deflate must be on, takeover or off, not {other:?}"
            ))
        }
    };
    info!(mode = %deflate, "permessage-deflate");
    // Room for the STOMP head around the largest body.
    config.limits.max_message_size = max_message + (64 << 10);
    config.limits.max_frame_size = config.limits.max_message_size;
    config.handshake.protocols = SUB_PROTOCOLS.iter().map(|p| p.to_string()).collect();
    // STOMP over SockJS beside /ws, for browsers whose WebSocket upgrade is blocked.
    config.sockjs.push(sockeye::sockjs::Service::new("/sockjs"));
    // The STOMP handler judges origins (it knows the request's Host); the engine lets all by.
    config.handshake.allowed_origins = Origins::Any;
    // The STOMP heart-beat is the liveness check here; WebSocket pings stay on as a backstop.
    config.ping_interval = Some(Duration::from_secs(30));
    if let Some(files) = &tls {
        let server_tls = ServerTls::from_pem_files(&files.cert, &files.key)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        info!(cert = %files.cert.display(), stomp = files.stomp, "TLS on (rustls, ring)");
        // STOMP clients offer no ALPN; the clone shares the certificates (and their reloads).
        config.stream_tls = files.stomp.then(|| server_tls.with_alpn(Vec::new()));
        config.tls = Some(server_tls);
    }
    let reload = config.tls.clone();

    let relay = match args.relay.or(file.relay) {
        Some(url) => Some(RelayConfig::from_url(&url).map_err(|e| format!("--relay: {e}"))?),
        None => None,
    };
    let node_id = args.node_id.or(file.node_id);
    if node_id == Some(0) {
        return Err("--node-id wants a number from 1 to 65535".into());
    }
    let defaults = ChatConfig::default();
    let chat_config = ChatConfig {
        // With passcodes checked, a member's name is the user's, not what the page says.
        sender_is_user: users.is_some(),
        max_message_chars: args
            .max_chat_message
            .or(file.max_chat_message)
            .unwrap_or(defaults.max_message_chars)
            .max(1),
        max_room_name_chars: args
            .max_room_name
            .or(file.max_room_name)
            .unwrap_or(defaults.max_room_name_chars)
            .max(1),
        ..defaults
    };
    let (mut chat, store) = match store_config {
        None => (Chat::new(chat_config), None),
        Some(config) => {
            let (store, loaded) = Store::open_with(&config, StoreOptions::default())
                .map_err(|e| format!("cannot open {config}: {e}"))?;
            info!(rooms = loaded.rooms.len(), %store, "loaded chat state");
            (Chat::restore(chat_config, loaded), Some(store))
        }
    };
    if relay.is_some() {
        // Cluster mode: the nodes of one relay agree on rooms, members and history.
        let node = node_id.unwrap_or_else(|| {
            let node = random_node_id();
            info!(node, "no --node-id: node {node}, chosen at random");
            node
        });
        chat.enable_cluster(ClusterConfig {
            // A store of its own (SQLite) keeps the other nodes' rooms and messages too; a
            // shared one (PostgreSQL) has them from the nodes that made them.
            persist_remote: store.as_ref().is_some_and(|s| !s.is_shared()),
            ..ClusterConfig::new(node)
        });
    } else if node_id.is_some() {
        info!("--node-id has no effect without --relay");
    }
    let rooms_per_hour = args
        .max_rooms_per_hour
        .or(file.max_rooms_per_hour)
        .unwrap_or(20);
    let app = Arc::new(ChatApp::new(chat, store).with_room_quota(rooms_per_hour));
    let mut stomp = StompConfig::default();
    stomp.limits.max_body = max_message;
    stomp.broker.heart_beat = heart_beat;
    stomp.broker.authenticator = Some(authenticator(users));
    if !file.permissions.is_empty() {
        info!(rules = file.permissions.len(), "permission rules");
    }
    stomp.broker.permissions = Permissions::new(file.permissions);
    let send_rate = args.max_send_rate.or(file.max_send_rate).unwrap_or(200);
    stomp.broker.max_send_rate = (send_rate > 0).then(|| SendRate::per_second(send_rate));
    stomp.broker.max_subscriptions =
        limit(args.max_subscriptions.or(file.max_subscriptions), 1000).unwrap_or(usize::MAX);
    stomp.broker.max_queue_patterns = args
        .max_queue_patterns
        .or(file.max_queue_patterns)
        .unwrap_or(16);
    stomp.broker.max_held_per_queue = args
        .max_held_per_queue
        .or(file.max_held_per_queue)
        .unwrap_or(1000);
    stomp.broker.max_sessions_per_user = limit(
        args.max_sessions_per_user.or(file.max_sessions_per_user),
        100,
    );
    stomp.broker.max_sessions_per_address = limit(
        args.max_sessions_per_address
            .or(file.max_sessions_per_address),
        1000,
    );
    info!(
        send_rate,
        subscriptions = stomp.broker.max_subscriptions,
        queue_patterns = stomp.broker.max_queue_patterns,
        held_per_queue = stomp.broker.max_held_per_queue,
        per_user = stomp.broker.max_sessions_per_user.unwrap_or(0),
        per_address = stomp.broker.max_sessions_per_address.unwrap_or(0),
        "session limits (0: no limit)"
    );
    // Room messages and cluster events are the application's words: clients publish through
    // /app/chat.*, never to these directly (other nodes store what arrives there).
    stomp.broker.app_only = vec![ROOMS_PATTERN.into(), CLUSTER_TOPIC.into()];
    stomp.slow_consumer = slow_consumer;
    stomp.origins = origins;
    if let Some(relay) = relay {
        info!(url = %relay.display_url(), pool = relay.pool, "relay mode: destinations live in the external broker");
        stomp.relay = Some(relay);
    }
    let clustered = stomp.relay.is_some();
    let hub = Hub::new(stomp, Box::new(app.clone()))
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    let cluster = if clustered {
        Some(
            Cluster::start(app.clone(), &hub)
                .map_err(|e| format!("cannot start the cluster: {e}"))?,
        )
    } else {
        None
    };

    let mut server =
        Server::bind(listen, config).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    hub.set_engine(server.shutdown_handle());
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
    if let (Some(server_tls), Some(files)) = (reload, &tls) {
        reload_tls_on_sighup(server_tls, files.cert.clone(), files.key.clone())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    }
    let (http, ws) = match tls {
        Some(_) => ("https", "wss"),
        None => ("http", "ws"),
    };
    println!("sockeye-chat: open {http}://{http_addr}/ in a browser");
    println!(
        "sockeye-chat: STOMP over WebSocket at {ws}://{http_addr}/ws (sub-protocols {})",
        SUB_PROTOCOLS.join(", ")
    );
    println!(
        "sockeye-chat: STOMP over SockJS at {http}://{http_addr}/sockjs (fallback transports)"
    );
    if let Some(addr) = tcp_addr {
        let over = match tls {
            Some(TlsFiles { stomp: true, .. }) => "TCP with TLS",
            _ => "TCP",
        };
        println!("sockeye-chat: STOMP over {over} at {addr}");
    }
    let result = running.join();
    // The sessions have left (their LEAVEs published): say bye, then stop the relay.
    if let Some(cluster) = cluster {
        cluster.stop();
    }
    hub.stop();
    let _ = beats.join();
    app.flush();
    info!("stopped");
    result.map_err(|e| format!("server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockeye_chat::auth::hash_password_with;
    use sockeye_chat::broker::{Action, Broker, BrokerConfig};
    use sockeye_chat::link::Link;
    use sockeye_chat::stomp::Limits;
    use std::collections::HashMap;

    /// Feeds a CONNECT with `extra` headers; returns the first frame sent back.
    fn connect(users: Option<&[(&str, &str)]>, extra: &str) -> (String, Option<String>) {
        let users = users.map(|u| {
            let params = argon2::Params::new(1024, 1, 1, None).unwrap();
            let hashes: HashMap<String, String> = u
                .iter()
                .map(|(a, b)| {
                    (
                        a.to_string(),
                        hash_password_with(b, params.clone()).unwrap(),
                    )
                })
                .collect();
            Users::from_hashes(hashes, "test").unwrap()
        });
        let mut broker = Broker::new(BrokerConfig {
            authenticator: Some(authenticator(users)),
            ..BrokerConfig::default()
        });
        let mut out = Vec::new();
        let frame = format!("CONNECT\naccept-version:1.2\n{extra}\n\0");
        Link::new().feed(
            1,
            frame.as_bytes(),
            &mut broker,
            &Limits::default(),
            &mut out,
        );
        let first = out
            .iter()
            .find_map(|a| match a {
                Action::Send { frame, .. } => Some(String::from_utf8_lossy(&frame.to_vec()).into()),
                _ => None,
            })
            .expect("a reply");
        (first, broker.user(1).map(str::to_owned))
    }

    const USERS: &[(&str, &str)] = &[("ann", "a-secret"), ("bob", "b-secret")];

    #[test]
    fn with_users_the_passcode_must_match() {
        let (reply, user) = connect(Some(USERS), "login:ann\npasscode:a-secret\n");
        assert!(reply.starts_with("CONNECTED\n"), "{reply}");
        assert!(reply.contains("\nuser-name:ann\n"), "{reply}");
        assert_eq!(user.as_deref(), Some("ann"));
        for extra in [
            "login:ann\npasscode:b-secret\n",
            "login:ann\npasscode:a-secre\n",
            "login:eve\npasscode:a-secret\n",
            "login:ann\n",
            "",
        ] {
            let (reply, user) = connect(Some(USERS), extra);
            assert!(reply.starts_with("ERROR\n"), "{extra:?}: {reply}");
            assert!(
                reply.contains("\nmessage:not authorized"),
                "{extra:?}: {reply}"
            );
            assert_eq!(user, None);
        }
    }

    #[test]
    fn without_users_login_names_the_user_unchecked() {
        let (reply, user) = connect(None, "login:ann\npasscode:anything\n");
        assert!(reply.contains("\nuser-name:ann\n"), "{reply}");
        assert_eq!(user.as_deref(), Some("ann"));
        let (reply, user) = connect(None, "");
        assert!(reply.starts_with("CONNECTED\n"), "{reply}");
        assert!(!reply.contains("user-name"), "{reply}");
        assert_eq!(user, None);
        let (reply, _) = connect(None, "login:a/b\n");
        assert!(reply.starts_with("ERROR\n"), "{reply}");
    }

    #[test]
    fn the_database_is_postgres_or_sqlite_not_both() {
        let url = "postgres://ann:secret@127.0.0.1:5432/chat";
        assert_eq!(
            store_config(Some(url.into()), None),
            Ok(Some(StoreConfig::Postgres(url.into())))
        );
        assert_eq!(
            store_config(None, None),
            Ok(Some(StoreConfig::Sqlite("chat-data".into())))
        );
        assert_eq!(store_config(None, Some("off".into())), Ok(None));
        let both = store_config(Some(url.into()), Some("d".into())).unwrap_err();
        assert!(both.contains("both"), "{both}");
        let bad = store_config(Some("mysql://ann:secret@h/db".into()), None).unwrap_err();
        assert!(bad.contains("postgres://"), "{bad}");
        assert!(!bad.contains("secret"), "{bad}");
        let shown = StoreConfig::Postgres(url.into()).to_string();
        assert_eq!(shown, "PostgreSQL postgres://ann:***@127.0.0.1:5432/chat");
    }

    #[test]
    fn tls_wants_both_files() {
        let (c, k) = (Some(PathBuf::from("c.pem")), Some(PathBuf::from("k.pem")));
        assert!(tls_files(None, None, false).unwrap().is_none());
        let files = tls_files(c.clone(), k.clone(), true).unwrap().unwrap();
        assert!(files.stomp);
        assert!(tls_files(c, None, false).is_err());
        assert!(tls_files(None, k, false).is_err());
        assert!(tls_files(None, None, true)
            .unwrap_err()
            .contains("--stomp-tls"));
    }
}
