//! Cluster mode on real sockets: two chat nodes (hub, chat application, engine server, as
//! `sockeye-chat --relay` runs them) relaying to a third Sockeye broker, with STOMP-over-TCP
//! clients and HTTP requests, every wait bounded.
//!
//! What is shown: a room created on one node is listed on the other; members on both nodes
//! talk both ways with ids unique across nodes and growing; a JOIN on one node gets the other
//! node's messages in its history; a nickname held on the other node is refused; a node that
//! stops says so (its members leave every node's lists, "ann left" reaches the other node once);
//! a node that dies without a word is dropped after the node timeout, and the lowest live node
//! says "ann left"; a node started later learns the rooms and members; the external broker
//! going away for longer than the node timeout drops nobody.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{eventually, Got, Stomp, TIMEOUT};
use serde_json::{json, Value};
use sockeye::server::{RunningServer, Server, ServerConfig};
use sockeye_chat::app::ChatApp;
use sockeye_chat::cluster::Cluster;
use sockeye_chat::relay::{Dialect, RelayConfig};
use sockeye_chat::rooms::{node_of, Chat, ChatConfig, ChatMessage, ClusterConfig, NodeId, Store};
use sockeye_chat::server::{heartbeat, Hub, NoApplication, StompConfig, StompHandler, StompServer};

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server_config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// The external broker: a plain Sockeye STOMP server (on `tcp`, or any port).
fn upstream_at(tcp: SocketAddr) -> StompServer {
    StompServer::start(
        any(),
        Some(tcp),
        server_config(),
        StompConfig::default(),
        Box::new(NoApplication),
    )
    .expect("upstream starts")
}

/// Runs `f` on a helper thread, waiting at most 10 s for it.
fn bounded(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} within 10 s"));
}

fn stop_upstream(upstream: StompServer) {
    bounded("the upstream broker stopped", move || {
        upstream.shutdown().expect("clean shutdown");
    });
}

/// Presence interval and node timeout, in ms.
type Timing = (u64, u64);
/// The defaults (2 s, 8 s): for tests that never wait for a node to time out.
const DEFAULT_TIMING: Timing = (2_000, 8_000);
/// Quick, for tests that do.
const FAST_TIMING: Timing = (250, 1_000);

/// A chat node as `sockeye-chat --relay ... --node-id N` runs it (memory only).
struct Node {
    app: Arc<ChatApp>,
    hub: Arc<Hub>,
    cluster: Option<Cluster>,
    running: Option<RunningServer>,
    beats: Option<JoinHandle<()>>,
    http: SocketAddr,
    tcp: SocketAddr,
    name: &'static str,
}

impl Node {
    fn start(name: &'static str, upstream: SocketAddr, node: NodeId, timing: Timing) -> Node {
        Node::start_with(name, upstream, node, timing, None)
    }

    /// With the SQLite store in `data` (loaded first, as at startup).
    fn start_with(
        name: &'static str,
        upstream: SocketAddr,
        node: NodeId,
        timing: Timing,
        data: Option<&Path>,
    ) -> Node {
        let (mut chat, store) = match data {
            None => (Chat::new(ChatConfig::default()), None),
            Some(dir) => {
                let (store, loaded) = Store::open(dir).expect("the store opens");
                (Chat::restore(ChatConfig::default(), loaded), Some(store))
            }
        };
        chat.enable_cluster(ClusterConfig {
            presence_interval_ms: timing.0,
            node_timeout_ms: timing.1,
            persist_remote: store.is_some(),
            ..ClusterConfig::new(node)
        });
        let app = Arc::new(ChatApp::new(chat, store));
        let relay = RelayConfig {
            pool: 2,
            dialect: Dialect::Sockeye,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(400),
            ..RelayConfig::new(upstream.ip().to_string(), upstream.port())
        };
        let stomp = StompConfig {
            relay: Some(relay),
            ..StompConfig::default()
        };
        let hub = Hub::new(stomp, Box::new(app.clone())).expect("the hub starts");
        let cluster = Cluster::start(app.clone(), &hub).expect("the cluster starts");
        let mut server = Server::bind(any(), server_config()).expect("bind");
        let http = server.local_addr();
        let tcp = server.bind_stream(any()).expect("bind STOMP over TCP");
        let beats = heartbeat::spawn(&hub).expect("the heart-beat thread starts");
        let handler_hub = hub.clone();
        let running = server
            .spawn(move || StompHandler::new(handler_hub.clone()))
            .expect("the server starts");
        let node = Node {
            app,
            hub,
            cluster: Some(cluster),
            running: Some(running),
            beats: Some(beats),
            http,
            tcp,
            name,
        };
        eventually(TIMEOUT, &format!("{name}'s relay connected"), || {
            node.hub.relay().is_some_and(|r| r.is_available())
        });
        node
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        self.app.with_chat(Chat::live_nodes)
    }

    /// Stops as `sockeye-chat` does on a signal: the server (sessions leave), bye, the relay.
    fn shutdown(mut self) {
        let what = format!("{} shut down", self.name);
        bounded(&what, move || {
            if let Some(running) = self.running.take() {
                running.shutdown_handle().shutdown();
                running.join().expect("clean shutdown");
            }
            if let Some(cluster) = self.cluster.take() {
                cluster.stop();
            }
            self.hub.stop();
            if let Some(beats) = self.beats.take() {
                let _ = beats.join();
            }
            assert!(self.app.flush(), "the store wrote everything");
        });
    }

    /// Dies without a word: presence and relay stop at once (no bye); the server goes on.
    fn kill(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.halt();
        }
        self.hub.stop();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sockeye-cluster-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- HTTP ---

/// `method path` with `body` (JSON): the status and the JSON answer.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let what = format!("{method} {path} on {addr}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: connecting: {e}"));
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: writing: {e}"));
    let until = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    loop {
        if let Some(answer) = parse_response(&got) {
            return answer;
        }
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: no whole answer within {TIMEOUT:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("{what}: closed before a whole answer: {got:?}"),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{what}: reading: {e}"),
        }
    }
}

/// A whole HTTP answer (status, JSON body) once `bytes` hold it.
fn parse_response(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    Some((
        status,
        serde_json::from_str(&body[..length]).unwrap_or(Value::Null),
    ))
}

fn create_room(node: &Node, name: &str) -> String {
    let (status, room) = http(
        node.http,
        "POST",
        "/api/rooms",
        Some(&json!({ "name": name }).to_string()),
    );
    assert_eq!(status, 201, "{room}");
    room["id"].as_str().unwrap().to_owned()
}

fn room_ids(node: &Node) -> Vec<String> {
    let (status, rooms) = http(node.http, "GET", "/api/rooms", None);
    assert_eq!(status, 200);
    rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The members `GET /api/rooms/{id}` lists, and the count `GET /api/rooms` gives.
fn members(node: &Node, room: &str) -> (Vec<String>, u64) {
    let (status, detail) = http(node.http, "GET", &format!("/api/rooms/{room}"), None);
    assert_eq!(status, 200, "{detail}");
    let names = detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    let (_, rooms) = http(node.http, "GET", "/api/rooms", None);
    let count = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == room)
        .map_or(0, |r| r["members"].as_u64().unwrap());
    (names, count)
}

fn wait_members(node: &Node, room: &str, want: &[&str]) {
    eventually(
        TIMEOUT,
        &format!("{}'s members of {room} to be {want:?}", node.name),
        || {
            let (names, count) = members(node, room);
            names == want && count == want.len() as u64
        },
    );
}

// --- STOMP chat clients ---

/// A client on `node` subscribed to `room`, its history and its errors.
fn client(node: &Node, name: &str, room: &str) -> Stomp {
    let mut c = Stomp::connect(node.tcp, name, None);
    c.subscribe("room", &format!("/topic/rooms.{room}"));
    c.subscribe("history", "/user/queue/history");
    c.subscribe("errors", "/user/queue/errors");
    c
}

fn send_app(c: &mut Stomp, action: &str, body: Value) {
    c.send_body(
        &format!("SEND\ndestination:/app/chat.{action}\ncontent-type:application/json\n\n"),
        body.to_string().as_bytes(),
    );
}

/// The next MESSAGE of subscription `sub`, skipping others'; bounded by `TIMEOUT`.
fn next_on(c: &mut Stomp, sub: &str, what: &str) -> Got {
    let until = Instant::now() + TIMEOUT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let f = c
            .frame_within(what, left)
            .unwrap_or_else(|| panic!("{}: no {what} within {TIMEOUT:?}", c.name));
        assert_eq!(
            f.command, "MESSAGE",
            "{}: waiting for {what}: {f:?}",
            c.name
        );
        if f.header("subscription") == Some(sub) {
            return f;
        }
    }
}

fn room_message(c: &mut Stomp, what: &str) -> ChatMessage {
    serde_json::from_slice(&next_on(c, "room", what).body)
        .unwrap_or_else(|e| panic!("{}: {what}: not a chat message: {e}", c.name))
}

/// JOINs `room` as `nickname`: the history it gets, then its own JOIN message.
fn join(c: &mut Stomp, room: &str, nickname: &str) -> (Vec<ChatMessage>, ChatMessage) {
    send_app(c, "join", json!({"roomId": room, "sender": nickname}));
    let history = next_on(c, "history", "the history");
    let history: Vec<ChatMessage> = serde_json::from_slice(&history.body).unwrap();
    let joined = room_message(c, "its own JOIN");
    assert_eq!(joined.message, format!("{nickname} joined"));
    (history, joined)
}

fn talk(c: &mut Stomp, room: &str, text: &str) {
    send_app(c, "send", json!({"roomId": room, "message": text}));
}

// --- the tests ---

#[test]
fn rooms_members_and_history_agree_across_nodes() {
    let upstream = upstream_at(any());
    let up = upstream.tcp_addr().unwrap();
    let a = Node::start("node A", up, 2, DEFAULT_TIMING);
    let b = Node::start("node B", up, 1, DEFAULT_TIMING);

    // A room created on A is listed on B.
    let room = create_room(&a, "General");
    assert_eq!(
        node_of(room.rsplit('-').next().unwrap().parse().unwrap()),
        2
    );
    eventually(TIMEOUT, "B lists the room A created", || {
        room_ids(&b) == [room.clone()]
    });

    // ann on A, bob on B: each sees the other, in both nodes' member lists.
    let mut ann = client(&a, "ann on A", &room);
    let (history, ann_join) = join(&mut ann, &room, "ann");
    assert!(history.is_empty());
    wait_members(&b, &room, &["ann"]);
    let mut bob = client(&b, "bob on B", &room);
    let (history, bob_join) = join(&mut bob, &room, "bob");
    assert_eq!(
        history,
        std::slice::from_ref(&ann_join),
        "B's history has A's JOIN"
    );
    assert_eq!(room_message(&mut ann, "bob's JOIN on A"), bob_join);
    wait_members(&a, &room, &["ann", "bob"]);
    wait_members(&b, &room, &["ann", "bob"]);

    // They talk both ways; ids are distinct, grow along the conversation and name the node.
    talk(&mut ann, &room, "hello from A");
    let ann_talk = room_message(&mut ann, "ann's own TALK");
    assert_eq!(room_message(&mut bob, "ann's TALK on B"), ann_talk);
    talk(&mut bob, &room, "hello from B");
    let bob_talk = room_message(&mut bob, "bob's own TALK");
    assert_eq!(room_message(&mut ann, "bob's TALK on A"), bob_talk);
    let ids = [ann_join.id, bob_join.id, ann_talk.id, bob_talk.id];
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.map(node_of), [2, 1, 2, 1]);
    assert_eq!(
        (ann_talk.sender.as_str(), bob_talk.message.as_str()),
        ("ann", "hello from B")
    );

    // A newcomer on B gets A's messages in its history.
    let mut carol = client(&b, "carol on B", &room);
    let (history, _) = join(&mut carol, &room, "carol");
    assert_eq!(history, [ann_join, bob_join, ann_talk, bob_talk]);
    wait_members(&a, &room, &["ann", "bob", "carol"]);

    // ann's nickname is taken on B too, whatever its case.
    let mut mallory = client(&b, "mallory on B", &room);
    send_app(
        &mut mallory,
        "join",
        json!({"roomId": room, "sender": "ANN"}),
    );
    let error: Value =
        serde_json::from_slice(&next_on(&mut mallory, "errors", "the refusal").body).unwrap();
    assert_eq!(error["code"], "nickname_taken", "{error}");

    // A stops: its member leaves B's lists, and bob hears "ann left" once.
    let _ = room_message(&mut bob, "carol's JOIN");
    a.shutdown();
    let left = room_message(&mut bob, "ann's LEAVE");
    assert_eq!(
        (left.message.as_str(), node_of(left.id)),
        ("ann left", 2),
        "A's own LEAVE"
    );
    wait_members(&b, &room, &["bob", "carol"]);
    eventually(TIMEOUT, "B drops A at its bye", || b.live_nodes() == [1]);
    bob.quiet(Duration::from_millis(500), "no second \"ann left\"");
    b.shutdown();
    stop_upstream(upstream);
}

#[test]
fn a_node_that_dies_without_a_word_is_dropped_after_the_timeout() {
    let upstream = upstream_at(any());
    let up = upstream.tcp_addr().unwrap();
    let mut a = Node::start("node A", up, 1, FAST_TIMING);
    let b = Node::start("node B", up, 2, FAST_TIMING);
    let room = create_room(&b, "Lobby");
    eventually(TIMEOUT, "A lists the room B created", || {
        room_ids(&a) == [room.clone()]
    });
    let mut ann = client(&a, "ann on A", &room);
    join(&mut ann, &room, "ann");
    let mut bob = client(&b, "bob on B", &room);
    join(&mut bob, &room, "bob");
    wait_members(&b, &room, &["ann", "bob"]);
    eventually(TIMEOUT, "each node hears the other", || {
        a.live_nodes() == [1, 2] && b.live_nodes() == [1, 2]
    });

    // A (the lowest node) dies: B, the only live node left, says ann left.
    let killed = Instant::now();
    a.kill();
    let left = room_message(&mut bob, "\"ann left\" after A's timeout");
    let after = killed.elapsed();
    assert_eq!(
        (left.message.as_str(), node_of(left.id)),
        ("ann left", 2),
        "posted by B"
    );
    let (interval, timeout) = FAST_TIMING;
    assert!(
        after >= Duration::from_millis(timeout - interval),
        "dropped after {after:?}, before the node timeout"
    );
    assert_eq!(b.live_nodes(), [2]);
    wait_members(&b, &room, &["bob"]);
    bob.quiet(Duration::from_millis(500), "no second \"ann left\"");
    a.shutdown();
    b.shutdown();
    stop_upstream(upstream);
}

#[test]
fn a_node_started_later_learns_the_rooms_and_members() {
    let upstream = upstream_at(any());
    let up = upstream.tcp_addr().unwrap();
    let a = Node::start("node A", up, 3, FAST_TIMING);
    let lobby = create_room(&a, "Lobby");
    let mut ann = client(&a, "ann on A", &lobby);
    join(&mut ann, &lobby, "ann");
    let b = Node::start("node B", up, 4, FAST_TIMING);
    eventually(TIMEOUT, "B learns the room A made before B started", || {
        room_ids(&b) == [lobby.clone()]
    });
    wait_members(&b, &lobby, &["ann"]);
    // Rooms made on B afterwards carry B's number and reach A.
    let kitchen = create_room(&b, "Kitchen");
    assert_eq!(
        node_of(kitchen.rsplit('-').next().unwrap().parse().unwrap()),
        4
    );
    eventually(TIMEOUT, "A lists B's room", || {
        room_ids(&a) == [lobby.clone(), kitchen.clone()]
    });
    a.shutdown();
    b.shutdown();
    stop_upstream(upstream);
}

#[test]
fn the_broker_going_away_for_longer_than_the_timeout_drops_nobody() {
    let upstream = upstream_at(any());
    let up = upstream.tcp_addr().unwrap();
    let a = Node::start("node A", up, 5, FAST_TIMING);
    let b = Node::start("node B", up, 6, FAST_TIMING);
    let room = create_room(&a, "General");
    eventually(TIMEOUT, "B lists the room", || {
        room_ids(&b) == [room.clone()]
    });
    let mut ann = client(&a, "ann on A", &room);
    join(&mut ann, &room, "ann");
    let mut bob = client(&b, "bob on B", &room);
    join(&mut bob, &room, "bob");
    wait_members(&a, &room, &["ann", "bob"]);
    wait_members(&b, &room, &["ann", "bob"]);
    let _ = room_message(&mut ann, "bob's JOIN");

    stop_upstream(upstream);
    let (_, timeout) = FAST_TIMING;
    let outage = Duration::from_millis(3 * timeout);
    for c in [&mut ann, &mut bob] {
        c.quiet(outage / 2, "nobody leaves while the broker is away");
    }
    let upstream = upstream_at(up);
    for node in [&a, &b] {
        eventually(TIMEOUT, &format!("{} reconnected", node.name), || {
            node.hub.relay().is_some_and(|r| r.is_available())
        });
    }
    for c in [&mut ann, &mut bob] {
        c.quiet(outage / 2, "nobody leaves after the broker is back");
    }
    wait_members(&a, &room, &["ann", "bob"]);
    wait_members(&b, &room, &["ann", "bob"]);
    assert_eq!(a.live_nodes(), [5, 6]);
    // And the conversation goes on across nodes.
    talk(&mut bob, &room, "still here");
    let got = room_message(&mut ann, "bob's TALK after the outage");
    assert_eq!(
        (got.sender.as_str(), got.message.as_str()),
        ("bob", "still here")
    );
    a.shutdown();
    b.shutdown();
    stop_upstream(upstream);
}

#[test]
fn after_an_outage_a_node_reloads_what_the_store_got_meanwhile() {
    // One SQLite file for both nodes: what A writes while the broker is away, B can read.
    let data = TempDir::new("reload");
    let upstream = upstream_at(any());
    let up = upstream.tcp_addr().unwrap();
    let a = Node::start_with("node A", up, 7, FAST_TIMING, Some(&data.0));
    let b = Node::start_with("node B", up, 8, FAST_TIMING, Some(&data.0));
    let room = create_room(&a, "General");
    eventually(TIMEOUT, "B lists the room", || {
        room_ids(&b) == [room.clone()]
    });
    let mut ann = client(&a, "ann on A", &room);
    join(&mut ann, &room, "ann");

    stop_upstream(upstream);
    eventually(TIMEOUT, "A sees the broker gone", || {
        !a.hub.relay().is_some_and(|r| r.is_available())
    });
    // What ann says now could reach nobody: she is told at once, and nothing is kept.
    talk(&mut ann, &room, "said while the broker was away");
    let error: Value = serde_json::from_slice(&next_on(&mut ann, "errors", "the refusal").body)
        .expect("an error body");
    assert_eq!(error["code"], "unavailable", "{error}");
    // A room created on A meanwhile reaches A's store, not B.
    let later = create_room(&a, "Created during the outage");
    assert!(a.app.flush(), "A wrote it");
    assert_eq!(room_ids(&b), std::slice::from_ref(&room));

    let upstream = upstream_at(up);
    eventually(
        TIMEOUT,
        "B has the room created during the outage once the broker is back",
        || room_ids(&b).contains(&later),
    );
    let (_, detail) = http(b.http, "GET", &format!("/api/rooms/{room}"), None);
    let history: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["ann joined"], "nothing said during the outage");
    a.shutdown();
    b.shutdown();
    stop_upstream(upstream);
}

/// A TCP proxy to the broker that can be cut (every connection dropped, new ones refused)
/// and restored: one node losing the broker while the others keep it.
/// A TCP proxy between a node and the broker that can be cut (connections closed, new ones
/// refused) and that can hold back the node's STOMP frames containing a pattern (the other
/// frames pass, so a subscription can be kept from the broker while its connection is up).
struct Proxy {
    addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    hold: Arc<std::sync::Mutex<Hold>>,
}

/// Frames held back by a [`Proxy`]: what they contain, and each with where it goes.
#[derive(Default)]
struct Hold {
    pattern: Option<Vec<u8>>,
    held: Vec<(TcpStream, Vec<u8>)>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(any()).expect("the proxy binds");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = Arc::new(std::sync::Mutex::new(Hold::default()));
        let (cut2, conns2, hold2) = (cut.clone(), conns.clone(), hold.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut held = conns2.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                let (from, to, hold) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    hold2.clone(),
                );
                std::thread::spawn(move || Proxy::forward_frames(from, to, &hold));
                let (mut from, mut to) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            addr,
            cut,
            conns,
            hold,
        }
    }

    /// Node to broker: frame by frame (heart-beat end-of-lines at once), keeping back the
    /// frames that contain the hold's pattern.
    fn forward_frames(mut from: TcpStream, mut to: TcpStream, hold: &std::sync::Mutex<Hold>) {
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16384];
        'read: loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            loop {
                let eols = pending
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if eols > 0 {
                    let beats: Vec<u8> = pending.drain(..eols).collect();
                    if to.write_all(&beats).is_err() {
                        break 'read;
                    }
                }
                let Some(end) = pending.iter().position(|&b| b == 0) else {
                    break;
                };
                let frame: Vec<u8> = pending.drain(..=end).collect();
                let mut h = hold.lock().unwrap();
                let holds = h
                    .pattern
                    .as_deref()
                    .is_some_and(|p| frame.windows(p.len()).any(|w| w == p));
                if holds {
                    h.held.push((to.try_clone().unwrap(), frame));
                    continue;
                }
                drop(h);
                if to.write_all(&frame).is_err() {
                    break 'read;
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, frames from the node containing `pattern` are kept back.
    fn hold_frames(&self, pattern: &str) {
        self.hold.lock().unwrap().pattern = Some(pattern.as_bytes().to_vec());
    }

    /// Sends the frames kept back, and keeps none from now on; how many there were.
    fn release(&self) -> usize {
        let mut h = self.hold.lock().unwrap();
        h.pattern = None;
        let held = std::mem::take(&mut h.held);
        let n = held.len();
        for (mut to, frame) in held {
            let _ = to.write_all(&frame);
        }
        n
    }
}

/// Two nodes sharing one SQLite file (as PostgreSQL would be shared), B reaching the broker
/// through a [`Proxy`]; a room made on A, ann in it on A and bob on B.
struct Pair {
    _data: TempDir,
    upstream: StompServer,
    proxy: Proxy,
    a: Node,
    b: Node,
    room: String,
    ann: Stomp,
    bob: Stomp,
}

impl Pair {
    fn start(name: &str) -> Pair {
        let data = TempDir::new(name);
        let upstream = upstream_at(any());
        let up = upstream.tcp_addr().unwrap();
        let proxy = Proxy::start(up);
        let a = Node::start_with("node A", up, 11, DEFAULT_TIMING, Some(&data.0));
        let b = Node::start_with("node B", proxy.addr, 12, DEFAULT_TIMING, Some(&data.0));
        let room = create_room(&a, "General");
        eventually(TIMEOUT, "B lists the room", || {
            room_ids(&b) == [room.clone()]
        });
        let mut ann = client(&a, "ann on A", &room);
        join(&mut ann, &room, "ann");
        let mut bob = client(&b, "bob on B", &room);
        join(&mut bob, &room, "bob");
        let _ = room_message(&mut ann, "bob's JOIN");
        Pair {
            _data: data,
            upstream,
            proxy,
            a,
            b,
            room,
            ann,
            bob,
        }
    }

    /// Cuts B off the broker, until B has noticed.
    fn cut_b(&self) {
        self.proxy.cut();
        eventually(TIMEOUT, "B sees the broker gone", || {
            !self.b.hub.relay().is_some_and(|r| r.is_available())
        });
    }

    /// bob talks and ann hears it (the conversation goes on); then everything stops.
    fn goes_on_then_stops(mut self) {
        talk(&mut self.bob, &self.room, "back");
        assert_eq!(room_message(&mut self.ann, "bob's TALK").message, "back");
        self.a.shutdown();
        self.b.shutdown();
        stop_upstream(self.upstream);
    }
}

#[test]
fn a_node_back_from_losing_the_broker_gives_its_pages_what_they_missed() {
    // B's proxy is cut for a moment while A goes on.
    let mut p = Pair::start("missed");
    p.cut_b();
    talk(&mut p.ann, &p.room, "while B could not hear");
    let said = room_message(&mut p.ann, "ann's own TALK");
    assert!(p.a.app.flush(), "A wrote it");
    p.proxy.restore();
    // Bob's page is still open: it gets what it missed, without reloading.
    let got = room_message(&mut p.bob, "the TALK B missed, once B is back");
    assert_eq!(
        (got.id, got.message.as_str()),
        (said.id, "while B could not hear")
    );
    p.goes_on_then_stops();
}

#[test]
fn a_message_filed_before_a_pages_subscription_is_back_still_reaches_the_page() {
    // Coming back from an outage, B's relay connections are up and the chat's own
    // subscription to the rooms is made again while bob's page's subscription is still on
    // its way (the proxy holds it back): ann's TALK reaches B's history but not bob's
    // subscription, and the reload of the store finds nothing new. B must still give it to
    // bob's page.
    let mut p = Pair::start("refiled");
    p.proxy
        .hold_frames(&format!("destination:/topic/rooms.{}\n", p.room));
    p.cut_b();
    p.proxy.restore();
    eventually(TIMEOUT, "B's relay connections up again", || {
        p.b.hub.relay().is_some_and(|r| r.is_available())
    });
    talk(
        &mut p.ann,
        &p.room,
        "while bob's subscription is on its way",
    );
    let said = room_message(&mut p.ann, "ann's own TALK");
    eventually(TIMEOUT, "the TALK in B's history", || {
        let (_, detail) = http(p.b.http, "GET", &format!("/api/rooms/{}", p.room), None);
        detail["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|m| m["id"] == said.id))
    });
    assert!(
        p.proxy.release() >= 1,
        "the proxy held bob's SUBSCRIBE back"
    );
    let got = room_message(
        &mut p.bob,
        "the TALK filed before its subscription was back",
    );
    assert_eq!(
        (got.id, got.message.as_str()),
        (said.id, "while bob's subscription is on its way")
    );
    p.goes_on_then_stops();
}
