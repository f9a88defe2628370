//! The chat application on the real server, its rooms spread over the application's shards
//! (`ChatApp`, one lock per shard): from the outside it must behave as one chat. HTTP over raw
//! TCP, STOMP over TCP, several workers; every wait is bounded and names what it waited for.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{shutdown, Stomp};
use sockeye::server::ServerConfig;
use sockeye_chat::app::{ChatApp, ROOM_SHARDS};
use sockeye_chat::rooms::{
    shard_of, Chat, ChatConfig, ChatMessage, LoadedRoom, LoadedState, MessageType, RoomSummary,
};
use sockeye_chat::server::{StompConfig, StompServer};

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(app: Arc<ChatApp>) -> StompServer {
    let config = ServerConfig {
        workers: 3,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    StompServer::start(
        any,
        Some(any),
        config,
        StompConfig::default(),
        Box::new(app),
    )
    .expect("server starts")
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect for HTTP");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("write the request");
    let mut response = Vec::new();
    let until = Instant::now() + TIMEOUT;
    let mut chunk = [0u8; 8192];
    loop {
        assert!(
            Instant::now() < until,
            "no whole answer to {method} {path} within {TIMEOUT:?}"
        );
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no whole answer to {method} {path} within {TIMEOUT:?}")
            }
            Err(e) => panic!("reading the answer to {method} {path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn create(addr: SocketAddr, name: &str) -> RoomSummary {
    let (status, body) = http(
        addr,
        "POST",
        "/api/rooms",
        &format!("{{\"name\":\"{name}\"}}"),
    );
    assert_eq!(status, 201, "creating {name:?}: {body}");
    serde_json::from_str(&body).expect("a room summary")
}

fn list(addr: SocketAddr) -> Vec<RoomSummary> {
    let (status, body) = http(addr, "GET", "/api/rooms", "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a room list")
}

fn chat(c: &mut Stomp, what: &str, room: &str, text: &str) {
    let body = match what {
        "join" => format!("{{\"roomId\":\"{room}\",\"type\":\"JOIN\",\"sender\":\"{text}\"}}"),
        "send" => format!("{{\"roomId\":\"{room}\",\"type\":\"TALK\",\"message\":\"{text}\"}}"),
        _ => format!("{{\"roomId\":\"{room}\",\"type\":\"LEAVE\"}}"),
    };
    c.send_body(
        &format!("SEND\ndestination:/app/chat.{what}\ncontent-type:application/json\n\n"),
        body.as_bytes(),
    );
}

/// The next room message `c` gets (skipping nothing else: the test knows what comes).
fn room_message(c: &mut Stomp, what: &str) -> ChatMessage {
    let f = c.expect("MESSAGE", what);
    serde_json::from_slice(&f.body).unwrap_or_else(|e| panic!("{what}: {e}: {f:?}"))
}

#[test]
fn rooms_spread_over_shards_behave_as_one_chat() {
    let app = Arc::new(ChatApp::new(Chat::new(ChatConfig::default()), None));
    assert_eq!(app.shard_count(), ROOM_SHARDS);
    let server = start(app.clone());
    let web = server.ws_addr();

    // Rooms land in many shards; the list keeps the order they were made in.
    let names: Vec<String> = (0..12).map(|i| format!("Room {i}")).collect();
    let made: Vec<RoomSummary> = names.iter().map(|n| create(web, n)).collect();
    let shards: BTreeSet<usize> = made.iter().map(|r| shard_of(&r.id, ROOM_SHARDS)).collect();
    assert!(
        shards.len() >= 6,
        "12 rooms in only {} shards",
        shards.len()
    );
    let listed: Vec<String> = list(web).into_iter().map(|r| r.name).collect();
    assert_eq!(listed, names, "the room list, oldest first");
    // A name is unique over every shard, whatever its case.
    let (status, body) = http(web, "POST", "/api/rooms", "{\"name\":\"ROOM 7\"}");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("duplicate_room_name"), "{body}");
    for r in &made {
        let (status, body) = http(web, "GET", &format!("/api/rooms/{}", r.id), "");
        assert_eq!(status, 200, "{}: {body}", r.id);
        assert_eq!(http(web, "GET", &format!("/rooms/{}", r.id), "").0, 200);
    }
    assert_eq!(http(web, "GET", "/api/rooms/nope-1", "").0, 404);

    // ann is in every room; bob joins six and talks in each.
    let tcp = server.tcp_addr().expect("STOMP over TCP");
    let mut ann = Stomp::connect(tcp, "ann", None);
    for (i, r) in made.iter().enumerate() {
        ann.subscribe(&i.to_string(), &format!("/topic/rooms.{}", r.id));
    }
    ann.subscribe("h", "/user/queue/history");
    for r in &made {
        chat(&mut ann, "join", &r.id, "ann");
        ann.expect("MESSAGE", "ann's history");
        let m = room_message(&mut ann, "ann joined");
        assert_eq!(
            (m.kind, m.room_id.as_str()),
            (MessageType::Join, r.id.as_str())
        );
    }
    let mut bob = Stomp::connect(tcp, "bob", None);
    let bobs = &made[..6];
    for r in bobs {
        chat(&mut bob, "join", &r.id, "bob");
        let m = room_message(&mut ann, "bob joined");
        assert_eq!((m.kind, m.sender.as_str()), (MessageType::Join, "bob"));
    }
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for round in 0..3 {
        for r in bobs {
            chat(&mut bob, "send", &r.id, &format!("hello {round}"));
            let m = room_message(&mut ann, "bob's message");
            assert_eq!(m.room_id, r.id);
            assert_eq!(m.message, format!("hello {round}"));
            let before = last.insert(m.room_id.clone(), m.id).unwrap_or(0);
            assert!(
                m.id > before,
                "ids grow within a room: {before} then {}",
                m.id
            );
            assert!(ids.insert(m.id), "id {} given twice", m.id);
        }
    }
    // The history of a room is its own.
    let (_, body) = http(web, "GET", &format!("/api/rooms/{}", bobs[2].id), "");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history = detail["history"].as_array().expect("a history");
    assert!(history.iter().all(|m| m["roomId"] == bobs[2].id.as_str()));
    assert_eq!(history.len(), 2 + 3, "two JOINs and three messages: {body}");
    assert_eq!(detail["members"], serde_json::json!(["ann", "bob"]));

    // bob goes: he leaves every room he was in, whatever their shard.
    drop(bob);
    let mut left = BTreeSet::new();
    for _ in bobs {
        let m = room_message(&mut ann, "bob left");
        assert_eq!((m.kind, m.sender.as_str()), (MessageType::Leave, "bob"));
        left.insert(m.room_id);
    }
    let expected: BTreeSet<String> = bobs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(left, expected);
    ann.quiet(Duration::from_millis(200), "bob left six rooms, no more");
    let members: Vec<usize> = list(web).into_iter().map(|r| r.members).collect();
    assert_eq!(members, vec![1; 12]);
    shutdown(server);
}

#[test]
fn the_room_limit_counts_every_shard() {
    let config = ChatConfig {
        max_rooms: 5,
        ..ChatConfig::default()
    };
    let app = Arc::new(ChatApp::new(Chat::new(config), None));
    let server = start(app);
    let web = server.ws_addr();
    for i in 0..5 {
        create(web, &format!("r{i}"));
    }
    let (status, body) = http(web, "POST", "/api/rooms", "{\"name\":\"one more\"}");
    assert!(body.contains("too_many_rooms"), "{status} {body}");
    assert_eq!(list(web).len(), 5);
    shutdown(server);
}

#[test]
fn restored_rooms_keep_their_order_and_new_ids_pass_the_old() {
    let message = |id: u64, room: &str| ChatMessage {
        id,
        room_id: room.into(),
        kind: MessageType::Talk,
        sender: "old".into(),
        message: format!("m{id}"),
        timestamp: 1,
    };
    let rooms: Vec<LoadedRoom> = (1..=8)
        .map(|n| {
            let id = format!("old-{n}");
            LoadedRoom {
                history: vec![message(n * 100, &id)],
                id,
                name: format!("Old {n}"),
                created: 1_000 + n,
            }
        })
        .collect();
    let restored = Chat::restore(ChatConfig::default(), LoadedState { rooms });
    let app = Arc::new(ChatApp::new(restored, None));
    let server = start(app);
    let web = server.ws_addr();
    let listed: Vec<String> = list(web).into_iter().map(|r| r.id).collect();
    let expected: Vec<String> = (1..=8).map(|n| format!("old-{n}")).collect();
    assert_eq!(listed, expected);
    // A new room's number follows the restored ones.
    assert_eq!(create(web, "New").id, "new-9");
    let tcp = server.tcp_addr().expect("STOMP over TCP");
    let mut ann = Stomp::connect(tcp, "ann", None);
    for n in 1..=8 {
        let room = format!("old-{n}");
        ann.subscribe(&n.to_string(), &format!("/topic/rooms.{room}"));
        chat(&mut ann, "join", &room, "ann");
        let m = room_message(&mut ann, "ann joined");
        assert!(m.id > 800, "{room}: id {} not above the restored 800", m.id);
    }
    shutdown(server);
}
