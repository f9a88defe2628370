//! The PostgreSQL store against a real server. These need one, so they are `#[ignore]`d:
//! `bash chat/scaleout/pg-tests.sh` starts a private server (`scripts/postgres.sh`) and runs them
//! with `SOCKEYE_TEST_PG_URL` set. Each test works in a schema of its own (dropped and made
//! again first), so they run side by side on one database.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use sockeye_chat::rooms::{
    ChatMessage, LoadedState, MessageType, PersistOp, Store, StoreConfig, StoreOptions,
    HISTORY_LIMIT,
};

const NEEDS_PG: &str =
    "SOCKEYE_TEST_PG_URL is not set: these tests need PostgreSQL; run chat/scaleout/pg-tests.sh";
/// How long a flush, load or drain may take.
const ANSWER: Duration = Duration::from_secs(30);
const T0: u64 = 1_700_000_000_000;

fn base_url() -> String {
    // The store's logs, shown with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    std::env::var("SOCKEYE_TEST_PG_URL").expect(NEEDS_PG)
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

fn connect(url: &str) -> Client {
    let mut config: Config = url.parse().expect("a valid URL");
    config.connect_timeout(Duration::from_secs(10));
    let mut client = config
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test database: {e:?}"));
    client
        .batch_execute("SET statement_timeout = 30000; SET client_min_messages = warning")
        .expect("statement_timeout");
    client
}

/// An empty schema for one test: the URL whose connections use it.
fn fresh_schema(name: &str) -> String {
    let base = base_url();
    connect(&base)
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .expect("a fresh schema");
    with_param(&base, &format!("options=-csearch_path%3D{name}"))
}

fn open(url: &str) -> (Store, LoadedState) {
    Store::open_postgres(url).unwrap_or_else(|e| panic!("opening the PostgreSQL store: {e}"))
}

fn flush(store: &Store) -> bool {
    store
        .flush_timeout(ANSWER)
        .expect("the store's writer answered a flush within 30 s")
}

/// Waits until nothing is queued (the writer got through on its own).
fn drained(store: &Store, why: &str) {
    let deadline = Instant::now() + ANSWER;
    while store.backlog() > 0 {
        assert!(
            Instant::now() < deadline,
            "{why}: {} operations still queued after 30 s",
            store.backlog()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create(id: &str, name: &str, created: u64) -> PersistOp {
    PersistOp::CreateRoom {
        id: id.into(),
        name: name.into(),
        created,
    }
}

fn message(id: u64, room: &str, sender: &str, timestamp: u64) -> ChatMessage {
    ChatMessage {
        id,
        room_id: room.into(),
        kind: if id % 7 == 0 {
            MessageType::Join
        } else {
            MessageType::Talk
        },
        sender: sender.into(),
        message: format!("m{id} ☕ <b> 'quoted' \"too\" \\ {sender}"),
        timestamp,
    }
}

fn append(id: u64, room: &str) -> PersistOp {
    PersistOp::AppendMessage {
        message: message(id, room, "ann", T0 + id),
        keep: HISTORY_LIMIT,
    }
}

/// The same writes, for either backend: three rooms (one created twice), 250 messages across
/// two of them, ten into a room that keeps 3.
fn scenario(store: &Store) {
    store.apply(create("general-1", "General", 5));
    store.apply(create("room-2", "日本語", 5));
    store.apply(create("keep-3", "Keep", 7));
    store.apply(create("general-1", "Other", 9));
    for id in 1..=250 {
        store.apply(append(id, if id % 5 == 0 { "room-2" } else { "general-1" }));
    }
    for id in 251..=260 {
        store.apply(PersistOp::AppendMessage {
            message: message(id, "keep-3", "bob", T0 + id),
            keep: 3,
        });
    }
    assert!(flush(store), "the scenario was written");
    assert_eq!(store.backlog(), 0);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sockeye-pg-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn an_empty_database_is_migrated_and_reopens_as_sqlite_would() {
    let url = fresh_schema("t_same_as_sqlite");
    let (store, state) = open(&url);
    assert_eq!(state, LoadedState::default(), "an empty database");
    let versions: Vec<i32> = connect(&url)
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .expect("schema_migrations")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
    scenario(&store);
    let reloaded = store.load_timeout(ANSWER).expect("load");
    drop(store);
    let (_store, pg) = open(&url);

    let dir = TempDir::new("sqlite");
    let (sqlite, _) = Store::open(&dir.0).expect("SQLite store");
    scenario(&sqlite);
    drop(sqlite);
    let (_sqlite, lite) = Store::open(&dir.0).expect("SQLite store, again");

    assert_eq!(pg, lite, "PostgreSQL loads what SQLite loads");
    assert_eq!(reloaded, pg, "Store::load sees what a reopen sees");
    let names: Vec<&str> = pg.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["General", "日本語", "Keep"]);
    let general = &pg.rooms[0].history;
    assert_eq!(general.len(), 100);
    assert_eq!(general[0].id, 126);
    assert_eq!(general[99].id, 249);
    assert_eq!(pg.rooms[1].history.len(), 50);
    let kept: Vec<u64> = pg.rooms[2].history.iter().map(|m| m.id).collect();
    assert_eq!(kept, [258, 259, 260]);
    let count: i64 = connect(&url)
        .query_one("SELECT count(*) FROM messages", &[])
        .expect("count")
        .get(0);
    assert_eq!(count, 100 + 50 + 3, "trimmed in the database too");
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn two_nodes_append_to_one_room_at_once() {
    let url = fresh_schema("t_two_nodes");
    let (a, _) = open(&url);
    let (b, _) = open(&url);
    a.apply(create("shared-1", "Shared", 1));
    assert!(flush(&a));
    // The second node creates the same room: no error, the first name stays.
    b.apply(create("shared-1", "Shared by b", 2));
    const EACH: u64 = 150;
    std::thread::scope(|s| {
        for (node, store, offset) in [("a", &a, 0), ("b", &b, 1)] {
            s.spawn(move || {
                for i in 0..EACH {
                    // Both nodes number their messages 1, 2, 3…: the same ids.
                    store.apply(PersistOp::AppendMessage {
                        message: message(i + 1, "shared-1", node, T0 + 2 * i + offset),
                        keep: HISTORY_LIMIT,
                    });
                    if i % 10 == 9 {
                        assert!(flush(store), "node {node} wrote its messages");
                    }
                }
            });
        }
    });
    for store in [&a, &b] {
        assert!(flush(store));
        assert_eq!(store.dropped(), 0);
    }
    let (_c, state) = open(&url);
    assert_eq!(state.rooms.len(), 1);
    let room = &state.rooms[0];
    assert_eq!(room.name, "Shared");
    assert_eq!(room.history.len(), HISTORY_LIMIT);
    let stamps: Vec<u64> = room.history.iter().map(|m| m.timestamp - T0).collect();
    let newest: Vec<u64> = (2 * EACH - HISTORY_LIMIT as u64..2 * EACH).collect();
    assert_eq!(stamps, newest, "the newest 100 of both nodes, oldest first");
    for m in &room.history {
        let (node, i) = if (m.timestamp - T0) % 2 == 0 {
            ("a", (m.timestamp - T0) / 2)
        } else {
            ("b", (m.timestamp - T0 - 1) / 2)
        };
        assert_eq!(m.sender, node);
        assert_eq!(m.id, i + 1);
    }
    let count: i64 = connect(&url)
        .query_one("SELECT count(*) FROM messages", &[])
        .expect("count")
        .get(0);
    assert_eq!(count, HISTORY_LIMIT as i64, "trimmed to the newest 100");
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn nodes_starting_at_once_migrate_once() {
    let url = fresh_schema("t_migration_race");
    const NODES: usize = 4;
    let barrier = Arc::new(Barrier::new(NODES));
    let (tx, rx) = mpsc::channel();
    for n in 0..NODES {
        let (url, barrier, tx) = (url.clone(), Arc::clone(&barrier), tx.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let result = Store::open_postgres(&url).map(|(store, state)| {
                store.apply(create(&format!("node-{n}"), "Node", n as u64));
                (flush(&store), state.rooms.len())
            });
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
    }
    for _ in 0..NODES {
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every node opened (or failed) within 60 s");
        let (flushed, _) = result.unwrap_or_else(|e| panic!("a node failed to open: {e}"));
        assert!(flushed);
    }
    let mut db = connect(&url);
    let versions: Vec<i32> = db
        .query("SELECT version FROM schema_migrations", &[])
        .expect("schema_migrations")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1], "migrated once");
    let writers: i64 = db
        .query_one("SELECT count(*) FROM writers", &[])
        .expect("writers")
        .get(0);
    assert_eq!(writers, NODES as i64);
    let rooms: i64 = db
        .query_one("SELECT count(*) FROM rooms", &[])
        .expect("rooms")
        .get(0);
    assert_eq!(rooms, NODES as i64);
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn the_writer_reconnects_when_its_connection_is_killed() {
    let app = "sockeye_test_killed";
    let url = with_param(
        &fresh_schema("t_killed"),
        &format!("application_name={app}"),
    );
    let (store, _) = open(&url);
    store.apply(create("a-1", "A", 1));
    for id in 1..=5 {
        store.apply(append(id, "a-1"));
    }
    assert!(flush(&store));
    let mut admin = connect(&base_url());
    let kill = |admin: &mut Client| -> i64 {
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1",
                &[&app],
            )
            .expect("pg_terminate_backend")
            .get(0);
        killed
    };
    assert_eq!(kill(&mut admin), 1, "the writer's connection");
    // Written without a flush to prompt it: the writer notices, reconnects and writes.
    for id in 6..=10 {
        store.apply(append(id, "a-1"));
    }
    drained(&store, "writing after the connection was killed");
    // (The old one may still be on its way out.)
    assert!(kill(&mut admin) >= 1, "a new connection");
    for id in 11..=15 {
        store.apply(append(id, "a-1"));
    }
    assert!(flush(&store), "a flush rides out a killed connection");
    assert_eq!(store.dropped(), 0);
    drop(store);
    let (_store, state) = open(&url);
    let ids: Vec<u64> = state.rooms[0].history.iter().map(|m| m.id).collect();
    assert_eq!(ids, (1..=15).collect::<Vec<_>>(), "nothing lost");
}

/// A TCP proxy in front of the server that can be cut: its connections reset, new ones closed
/// at once, as if the server went away.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (Arc::clone(&up), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    continue;
                };
                let mut open = open2.lock().unwrap_or_else(|e| e.into_inner());
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        open.push(s);
                    }
                }
                drop(open);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    if let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) {
                        std::thread::spawn(move || {
                            let _ = pipe(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy { port, up, open }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for s in self
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

/// Percent-encodes everything but letters and digits.
fn encode(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The test server's address, and `url` pointed at `port` on 127.0.0.1 instead.
fn through(url: &str, port: u16) -> (SocketAddr, String) {
    let config: Config = url.parse().expect("a valid URL");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        other => panic!("the test server must be on TCP, not {other:?}"),
    };
    let server_port = config.get_ports().first().copied().unwrap_or(5432);
    let addr = format!("{host}:{server_port}")
        .parse()
        .expect("the test server's host is an IP address");
    let user = encode(config.get_user().unwrap_or("").as_bytes());
    let password = encode(config.get_password().unwrap_or(b""));
    let db = encode(config.get_dbname().unwrap_or("").as_bytes());
    let mut proxied =
        format!("postgres://{user}:{password}@127.0.0.1:{port}/{db}?connect_timeout=3");
    if let Some(options) = config.get_options() {
        proxied = with_param(&proxied, &format!("options={}", encode(options.as_bytes())));
    }
    (addr, proxied)
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn writes_wait_for_a_server_that_went_away_and_the_oldest_go_past_the_limit() {
    let url = fresh_schema("t_went_away");
    let (server, _) = through(&url, 0);
    let proxy = Proxy::start(server);
    let (_, proxied) = through(&url, proxy.port);
    let (store, _) = Store::open_with(
        &StoreConfig::Postgres(proxied),
        StoreOptions {
            max_queued: 20,
            ..StoreOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("opening through the proxy: {e}"));
    store.apply(create("a-1", "A", 1));
    for id in 1..=5 {
        store.apply(append(id, "a-1"));
    }
    assert!(flush(&store));

    proxy.set_up(false);
    for id in 6..=35 {
        store.apply(append(id, "a-1"));
    }
    assert!(
        !flush(&store),
        "a flush answers false while the server is away"
    );
    assert_eq!(store.backlog(), 20, "queued up to the limit");
    assert_eq!(store.dropped(), 10, "the oldest ten dropped");

    proxy.set_up(true);
    drained(&store, "writing once the server is back");
    assert!(flush(&store));
    drop(store);
    let (_store, state) = open(&url);
    let ids: Vec<u64> = state.rooms[0].history.iter().map(|m| m.id).collect();
    let expected: Vec<u64> = (1..=5).chain(16..=35).collect();
    assert_eq!(ids, expected, "all but the ten dropped, in order");
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn another_node_s_rooms_show_up_on_load() {
    let url = fresh_schema("t_load");
    let (a, _) = open(&url);
    let (b, _) = open(&url);
    b.apply(create("b-1", "From B", 10));
    for id in 1..=3 {
        b.apply(append(id, "b-1"));
    }
    assert!(flush(&b));
    a.apply(create("a-2", "From A", 20));
    let state = a.load_timeout(ANSWER).expect("load");
    let rooms: Vec<(&str, usize)> = state
        .rooms
        .iter()
        .map(|r| (r.id.as_str(), r.history.len()))
        .collect();
    assert_eq!(
        rooms,
        [("b-1", 3), ("a-2", 0)],
        "B's room, and A's queued one"
    );
}

#[test]
#[ignore = "needs PostgreSQL: run chat/scaleout/pg-tests.sh"]
fn bad_urls_and_credentials_fail_clearly_at_open() {
    let base = base_url();
    let config: Config = base.parse().expect("a valid URL");
    let (server, _) = through(&base, 0);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or("");
    let at = |user: &str, password: &str, port: u16, db: &str| {
        format!(
            "postgres://{}:{}@127.0.0.1:{port}/{}",
            encode(user.as_bytes()),
            encode(password.as_bytes()),
            encode(db.as_bytes())
        )
    };
    let unused = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("address").port()
    };
    for (url, expected) in [
        (
            at(user, "wrong-Pa55word", server.port(), db),
            "password authentication failed",
        ),
        (
            at("no_such_user_x", "wrong-Pa55word", server.port(), db),
            "no_such_user_x",
        ),
        (
            at(user, "wrong-Pa55word", unused, db),
            "error connecting to server",
        ),
        (
            format!("postgres://{user}:wrong-Pa55word@127.0.0.1:notaport/{db}"),
            "invalid connection string",
        ),
    ] {
        let started = Instant::now();
        let err = Store::open_postgres(&url).expect_err("a bad URL does not open");
        let shown = err.to_string();
        assert!(shown.contains(expected), "{url}: {shown}");
        assert!(!shown.contains("wrong-Pa55word"), "{shown}");
        let config = StoreConfig::Postgres(url).to_string();
        assert!(!config.contains("wrong-Pa55word"), "{config}");
        assert!(started.elapsed() < Duration::from_secs(15), "{shown}");
    }
}
