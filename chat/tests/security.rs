//! Operating `sockeye-chat` safely: the binary itself on ephemeral ports, attacked the ways
//! the deployment guide worries about. Each case's name says what is tried and its doc comment
//! the expected answer.
//!
//! Every wait is bounded and fails naming what it waited for: the server's address lines and
//! log lines are awaited with `recv_timeout`/deadlines, TCP clients carry read timeouts
//! (`common::Stomp`), WebSocket clients `ClientConfig::io_timeout`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::binary::{command, start, Chat, WAIT};
use common::{Stomp, TIMEOUT};
use sockeye::client::{Client, ClientConfig, ClientError};
use sockeye::handshake::client::ResponseError;

impl Chat {
    /// A WebSocket to `/ws` as a page on `origin` (if any) would open it.
    fn ws(&self, origin: Option<&str>) -> Result<Client, ClientError> {
        let config = ClientConfig {
            protocols: vec!["v12.stomp".into()],
            origin: origin.map(str::to_owned),
            handshake_timeout: TIMEOUT,
            io_timeout: Some(TIMEOUT),
            ..ClientConfig::default()
        };
        Client::connect_with(&format!("ws://{}/ws", self.http), &config)
    }
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sockeye-security-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn refused_status(result: Result<Client, ClientError>) -> u16 {
    match result {
        Err(ClientError::Handshake(ResponseError::Status(status))) => status,
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the WebSocket opened"),
    }
}

// --- origins ---------------------------------------------------------------------------------

/// A page on a foreign origin opening `/ws` with the default settings: refused with 403, and
/// a log line names the origin. The server's own pages (Origin = Host) and non-browser
/// clients (no Origin) get in.
#[test]
fn foreign_origin_opening_ws_is_refused_by_default() {
    let chat = start(&[]);
    let status = refused_status(chat.ws(Some("http://evil.example")));
    assert_eq!(status, 403);
    let line = chat.logged(&["origin not allowed", "http://evil.example"]);
    assert!(line.contains("WARN"), "{line}");
    let own = format!("http://{}", chat.http);
    chat.ws(Some(&own))
        .expect("a page of the server itself opens /ws");
    chat.ws(None).expect("a client without Origin opens /ws");
    let other_port = format!("http://127.0.0.1:{}", chat.http.port() + 1);
    assert_eq!(
        refused_status(chat.ws(Some(&other_port))),
        403,
        "another port is another origin"
    );
}

/// `--allowed-origins` adds origins to same-origin; `*` allows any.
#[test]
fn allowed_origins_widen_the_default() {
    let chat = start(&["--allowed-origins", "https://chat.example.com"]);
    chat.ws(Some("https://chat.example.com"))
        .expect("a listed origin opens /ws");
    chat.ws(Some(&format!("http://{}", chat.http)))
        .expect("same-origin still opens /ws");
    assert_eq!(refused_status(chat.ws(Some("http://evil.example"))), 403);
    let any = start(&["--allowed-origins", "*"]);
    any.ws(Some("http://evil.example"))
        .expect("* lets any origin in");
}

// --- credentials -----------------------------------------------------------------------------

/// An argon2id hash of `password`, made by `sockeye-chat hash-password` (stdin to stdout).
fn hashed(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-chat"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sockeye-chat hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("hash-password did not finish within {WAIT:?}"))
        .expect("hash-password ran");
    assert!(out.status.success(), "hash-password failed: {out:?}");
    let hash = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// A users file of ann/a-secret and bob/b-secret, hashed.
fn users_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("users.json");
    let users = serde_json::json!({"ann": hashed("a-secret"), "bob": hashed("b-secret")});
    std::fs::write(&path, users.to_string()).expect("write users.json");
    path
}

/// A STOMP-over-TCP connection from the loopback address `from` (127.0.0.x).
fn stomp_from(from: [u8; 4], to: SocketAddr, name: &str) -> Stomp {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local = SocketAddr::from((from, 0));
    socket
        .bind(&local.into())
        .unwrap_or_else(|e| panic!("{name}: bind {local}: {e}"));
    socket
        .connect_timeout(&to.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("{name}: connect {to}: {e}"));
    Stomp::over(socket.into(), name)
}

fn connect_frame(login: &str, passcode: &str) -> String {
    format!("CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{login}\npasscode:{passcode}\n\n")
}

/// A `--users` file with a plain-text passcode: the server does not start; it exits with 1
/// and says how to hash the passcode (`sockeye-chat hash-password`).
#[test]
fn plain_text_users_file_is_refused_at_start() {
    let dir = scratch("plain");
    let path = dir.join("users.json");
    std::fs::write(&path, r#"{"ann": "a-secret"}"#).unwrap();
    let child = command(&["--users", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockeye-chat");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| {
            panic!("sockeye-chat with a plain-text users file still running after {WAIT:?}")
        })
        .expect("wait");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"ann\" is not an argon2id hash"),
        "{stderr}"
    );
    assert!(stderr.contains("sockeye-chat hash-password"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The right passcode gets CONNECTED with `user-name`; a wrong one ERROR `not authorized`.
#[test]
fn hashed_users_file_checks_passcodes() {
    let dir = scratch("hashed");
    let path = users_file(&dir);
    let chat = start(&["--users", path.to_str().unwrap()]);
    let mut ann = Stomp::open(chat.stomp, "ann");
    ann.send(&connect_frame("ann", "a-secret"));
    let f = ann.expect("CONNECTED", "CONNECTED for ann's right passcode");
    assert_eq!(f.header("user-name"), Some("ann"));
    let mut eve = Stomp::open(chat.stomp, "eve");
    eve.send(&connect_frame("ann", "b-secret"));
    let f = eve.expect("ERROR", "ERROR for a wrong passcode");
    assert_eq!(
        f.header("message"),
        Some("not authorized: bad login or passcode")
    );
    eve.closed("after ERROR");
    chat.logged(&["CONNECT refused: bad login or passcode", "ann"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 50 wrong passcodes from one address, all at once: the ERRORs come over several seconds
/// (at least 5 s; 3 free failures, then 200 ms more for each). Meanwhile the right passcode
/// from another address (127.0.0.2) is answered CONNECTED, not held up.
#[test]
fn fifty_wrong_passcodes_from_one_address_take_several_seconds() {
    let dir = scratch("guess");
    let path = users_file(&dir);
    let chat = start(&["--users", path.to_str().unwrap()]);
    let started = Instant::now();
    let mut guesses: Vec<Stomp> = (0..50)
        .map(|i| {
            let mut c = stomp_from([127, 0, 0, 1], chat.stomp, &format!("guess {i}"));
            c.send(&connect_frame("ann", &format!("guess-{i}")));
            c
        })
        .collect();
    let mut other = stomp_from([127, 0, 0, 2], chat.stomp, "ann from 127.0.0.2");
    other.send(&connect_frame("ann", "a-secret"));
    other.expect(
        "CONNECTED",
        "CONNECTED from another address during the guessing",
    );
    let mut refusals = 0;
    for (i, g) in guesses.iter_mut().enumerate() {
        if i == 10 {
            // The right passcode from the guessing address, while it still waits for answers:
            // refused unchecked.
            let mut late = stomp_from([127, 0, 0, 1], chat.stomp, "ann from 127.0.0.1");
            late.send(&connect_frame("ann", "a-secret"));
            let f = late
                .frame_within(
                    "the answer to a CONNECT from a throttled address",
                    Duration::from_secs(40),
                )
                .expect("an answer within 40 s");
            assert_eq!(f.command, "ERROR", "{f:?}");
            chat.logged(&["too many failed logins from this address"]);
        }
        let f = g
            .frame_within("the ERROR of a wrong passcode", Duration::from_secs(40))
            .unwrap_or_else(|| panic!("{}: no ERROR within 40 s", g.name));
        assert_eq!(f.command, "ERROR", "{f:?}");
        assert!(
            f.header("message")
                .unwrap_or("")
                .starts_with("not authorized"),
            "{f:?}"
        );
        refusals += 1;
    }
    let took = started.elapsed();
    assert_eq!(refusals, 50);
    assert!(
        took >= Duration::from_secs(5),
        "50 wrong passcodes answered in {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- permissions -----------------------------------------------------------------------------

/// A CONNECTed STOMP-over-TCP client of `login`.
fn logged_in(chat: &Chat, login: &str, passcode: &str) -> Stomp {
    let mut c = Stomp::open(chat.stomp, login);
    c.send(&connect_frame(login, passcode));
    let f = c.expect("CONNECTED", &format!("CONNECTED for {login}"));
    assert_eq!(f.header("user-name"), Some(login));
    c
}

/// `POST /api/rooms {"name": name}`; returns the new room's id.
/// `POST /api/rooms {"name": name}`: the whole HTTP response.
fn post_room(chat: &Chat, name: &str) -> String {
    use std::io::{Read, Write};
    let body = serde_json::json!({ "name": name }).to_string();
    let mut s = std::net::TcpStream::connect_timeout(&chat.http, TIMEOUT).expect("connect HTTP");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "POST /api/rooms HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        chat.http,
        body.len()
    )
    .expect("write POST");
    let mut response = String::new();
    s.read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading the answer to POST /api/rooms {name:?}: {e}"));
    response
}

fn create_room(chat: &Chat, name: &str) -> String {
    let response = post_room(chat, name);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let json = response.split("\r\n\r\n").nth(1).expect("a body");
    let room: serde_json::Value = serde_json::from_str(json).expect("JSON room");
    room["id"].as_str().expect("an id").to_owned()
}

/// With `--users`, a JOIN whose JSON says `"sender":"mallory"` comes out with the
/// authenticated user (`ann`) as its sender, in the room's topic.
#[test]
fn spoofed_sender_comes_out_as_the_authenticated_user() {
    let dir = scratch("sender");
    let path = users_file(&dir);
    let chat = start(&["--users", path.to_str().unwrap()]);
    let room = create_room(&chat, "General");
    let mut ann = logged_in(&chat, "ann", "a-secret");
    ann.subscribe("room", &format!("/topic/rooms.{room}"));
    let join = serde_json::json!({"roomId": room, "type": "JOIN", "sender": "mallory"});
    ann.send_body(
        "SEND\ndestination:/app/chat.join\ncontent-type:application/json\n\n",
        join.to_string().as_bytes(),
    );
    let f = ann.expect("MESSAGE", "the JOIN in the room's topic");
    let message: serde_json::Value = serde_json::from_slice(&f.body).expect("JSON");
    assert_eq!(message["type"], "JOIN", "{message}");
    assert_eq!(message["sender"], "ann", "{message}");
    let talk =
        serde_json::json!({"roomId": room, "type": "TALK", "message": "hi", "sender": "mallory"});
    ann.send_body(
        "SEND\ndestination:/app/chat.send\n\n",
        talk.to_string().as_bytes(),
    );
    let f = ann.expect("MESSAGE", "the TALK in the room's topic");
    let message: serde_json::Value = serde_json::from_slice(&f.body).expect("JSON");
    assert_eq!(
        (message["sender"].as_str(), message["message"].as_str()),
        (Some("ann"), Some("hi"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SUBSCRIBE to `/user/bob/queue/errors` as ann: ERROR naming the destination, closed; and
/// what is sent to bob never reaches her. Her own `/user/queue/...` works.
#[test]
fn subscribe_to_another_users_queue_is_refused() {
    let dir = scratch("user-queue");
    let path = users_file(&dir);
    let chat = start(&["--users", path.to_str().unwrap()]);
    let mut ann = logged_in(&chat, "ann", "a-secret");
    ann.subscribe("mine", "/user/queue/inbox");
    ann.send("SEND\ndestination:/user/ann/queue/inbox\n\n");
    ann.expect("MESSAGE", "ann's message to herself");
    ann.send("SUBSCRIBE\nid:theirs\ndestination:/user/bob/queue/inbox\n\n");
    let f = ann.expect("ERROR", "ERROR for SUBSCRIBE to bob's queue");
    let message = f.header("message").unwrap_or("");
    assert!(
        message.contains("/user/bob/queue/inbox") && message.contains("another user"),
        "{f:?}"
    );
    ann.closed("after the ERROR");
    chat.logged(&["STOMP ERROR sent", "user=\"ann\"", "/user/bob/queue/inbox"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config file whose rules deny SEND to `/topic/announce.**` except for `admin`: ann's SEND
/// there gets ERROR `permission denied: SEND to /topic/announce.all`, and subscribers see
/// nothing of it; admin's SEND goes through. A SUBSCRIBE rule likewise.
#[test]
fn send_to_a_denied_destination_is_refused() {
    let dir = scratch("rules");
    let users = dir.join("users.json");
    let hashes = serde_json::json!({"ann": hashed("a-secret"), "admin": hashed("root")});
    std::fs::write(&users, hashes.to_string()).unwrap();
    let config = dir.join("config.json");
    let rules = serde_json::json!({
        "users": users,
        "permissions": [
            {"user": "admin", "command": "SEND", "destination": "/topic/announce.**", "access": "allow"},
            {"user": "*", "command": "SEND", "destination": "/topic/announce.**", "access": "deny"},
            {"user": "*", "command": "SUBSCRIBE", "destination": "/topic/admin.**", "access": "deny"}
        ]
    });
    std::fs::write(&config, rules.to_string()).unwrap();
    let chat = start(&["--config", config.to_str().unwrap()]);
    let mut listener = logged_in(&chat, "ann", "a-secret");
    listener.subscribe("news", "/topic/announce.*");
    let mut ann = logged_in(&chat, "ann", "a-secret");
    ann.send("SEND\ndestination:/topic/announce.all\n\nfrom ann");
    let f = ann.expect("ERROR", "ERROR for a denied SEND");
    assert_eq!(
        f.header("message"),
        Some("permission denied: SEND to /topic/announce.all")
    );
    ann.closed("after the ERROR");
    let mut admin = logged_in(&chat, "admin", "root");
    admin.send("SEND\ndestination:/topic/announce.all\n\nfrom admin");
    let f = listener.expect("MESSAGE", "admin's announcement");
    assert_eq!(
        f.text(),
        "from admin",
        "ann's denied SEND must not have been delivered"
    );
    let mut nosy = logged_in(&chat, "ann", "a-secret");
    nosy.send("SUBSCRIBE\nid:all\ndestination:/topic/**\n\n");
    let f = nosy.expect(
        "ERROR",
        "ERROR for a SUBSCRIBE that could read /topic/admin.**",
    );
    assert_eq!(
        f.header("message"),
        Some("permission denied: SUBSCRIBE to /topic/**")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- limits ----------------------------------------------------------------------------------

/// Median round trip (SEND with a receipt → RECEIPT) of `n` tries.
fn median_round_trip(c: &mut Stomp, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            c.send(&format!(
                "SEND\ndestination:/topic/ping\nreceipt:p{i}\n\nping"
            ));
            c.expect("RECEIPT", "the receipt of a ping");
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// One session sending 1,000 SENDs a second (default limit 200 a second, bursts of 1,000):
/// ERROR `SEND rate over 200 a second ...` within a few seconds, and closed. Meanwhile another
/// session's round trips stay flat: the median under the flood is within 10 times (plus 20 ms)
/// the median measured before it in the same test. (Not a speed test: a guard against the
/// flood starving others, with a generous factor.)
#[test]
fn a_thousand_sends_a_second_end_in_error_while_others_stay_flat() {
    use std::io::Write;
    let chat = start(&[]);
    let mut other = Stomp::connect(chat.stomp, "other", Some("bob"));
    let baseline = median_round_trip(&mut other, 21);
    let mut flooder = Stomp::connect(chat.stomp, "flooder", Some("eve"));
    let mut writer = flooder.try_clone_stream();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let (done, flood) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let frame = b"SEND\ndestination:/topic/flood\n\nx\0";
        let started = Instant::now();
        let mut sent = 0u64;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
            // 10 frames every 10 ms: 1,000 a second.
            let due = started + Duration::from_millis(sent);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if writer.write_all(&frame.repeat(10)).is_err() {
                break; // closed by the server
            }
            sent += 10;
        }
        let _ = done.send(sent);
    });
    std::thread::sleep(Duration::from_millis(200));
    let under_flood = median_round_trip(&mut other, 21);
    let f = flooder
        .frame_within("the ERROR of a flooding session", Duration::from_secs(15))
        .expect("an ERROR within 15 s of flooding");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The flood thread stops at the flag, at a refused write (each bounded by the socket's
    // write timeout), or after 20,000 SENDs.
    let sent = flood
        .recv_timeout(Duration::from_secs(30))
        .expect("the flood thread did not end within 30 s of being told to stop");
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert_eq!(
        f.header("message"),
        Some("SEND rate over 200 a second (bursts of 1000)")
    );
    flooder.closed("after the rate ERROR");
    assert!(sent >= 1000, "only {sent} SENDs went out before the ERROR");
    assert!(
        under_flood <= baseline * 10 + Duration::from_millis(20),
        "round trips grew from {baseline:?} to {under_flood:?} under the flood"
    );
    other.send("SEND\ndestination:/topic/ping\nreceipt:after\n\n");
    other.expect(
        "RECEIPT",
        "the other session still served after the flooder's ERROR",
    );
}

/// `--max-subscriptions 2`: the third SUBSCRIBE gets ERROR. `--max-sessions-per-user 1`: a
/// second session of ann gets ERROR at CONNECT, bob is not affected.
#[test]
fn subscription_and_session_limits_answer_error() {
    let chat = start(&["--max-subscriptions", "2", "--max-sessions-per-user", "1"]);
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    ann.subscribe("1", "/topic/a");
    ann.subscribe("2", "/topic/b");
    let mut second = Stomp::open(chat.stomp, "ann again");
    second.send("CONNECT\naccept-version:1.2\nhost:localhost\nlogin:ann\n\n");
    let f = second.expect("ERROR", "ERROR for ann's second session");
    assert_eq!(
        f.header("message"),
        Some("too many sessions of user ann (at most 1)")
    );
    Stomp::connect(chat.stomp, "bob", Some("bob"));
    ann.send("SUBSCRIBE\nid:3\ndestination:/topic/c\n\n");
    let f = ann.expect("ERROR", "ERROR for a third subscription");
    assert_eq!(f.header("message"), Some("more than 2 subscriptions"));
}

/// `--max-room-name 8`: a longer name gets 400 from `POST /api/rooms`. `--max-chat-message 5`:
/// a longer TALK gets a `/user/queue/errors` reply and nothing in the room.
#[test]
fn room_name_and_message_lengths_are_limited() {
    let chat = start(&["--max-room-name", "8", "--max-chat-message", "5"]);
    let response = post_room(&chat, "A long room name");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let room = create_room(&chat, "Short");
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    ann.subscribe("room", &format!("/topic/rooms.{room}"));
    ann.subscribe("errors", "/user/queue/errors");
    let join = serde_json::json!({"roomId": room, "type": "JOIN", "sender": "ann"});
    ann.send_body(
        "SEND\ndestination:/app/chat.join\n\n",
        join.to_string().as_bytes(),
    );
    ann.expect("MESSAGE", "ann's JOIN");
    let talk = serde_json::json!({"roomId": room, "type": "TALK", "message": "too long"});
    ann.send_body(
        "SEND\ndestination:/app/chat.send\n\n",
        talk.to_string().as_bytes(),
    );
    let f = ann.expect("MESSAGE", "the error reply to a long message");
    assert_eq!(f.header("subscription"), Some("errors"), "{f:?}");
    assert!(f.text().contains("5"), "{}", f.text());
}

// --- logs ------------------------------------------------------------------------------------

/// `--log-format json`: every log line is a JSON object; a session's CONNECT and close are
/// one line each with its session, user and peer, and its messages log nothing at INFO.
#[test]
fn json_logs_name_session_peer_and_user() {
    let chat = start(&["--log-format", "json"]);
    let mut ann = Stomp::connect(chat.stomp, "ann", Some("ann"));
    for i in 0..5 {
        ann.send(&format!(
            "SEND\ndestination:/topic/t\nreceipt:r{i}\n\nhello"
        ));
        ann.expect("RECEIPT", "a receipt");
    }
    ann.send("DISCONNECT\nreceipt:bye\n\n");
    ann.expect("RECEIPT", "the DISCONNECT's receipt");
    let connected = chat.logged(&["STOMP session connected"]);
    let closed = chat.logged(&["STOMP session closed"]);
    for line in [&connected, &closed] {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "INFO", "{line}");
        assert_eq!(v["user"], "ann", "{line}");
        assert_eq!(v["peer"], "127.0.0.1", "{line}");
        assert!(v["session"].is_u64(), "{line}");
    }
    let log = chat.log.lock().unwrap().clone();
    for line in log.iter().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["message"].is_string(), "{line}");
    }
    let info_lines = log.iter().filter(|l| l.contains("\"INFO\"")).count();
    assert!(
        info_lines < 20,
        "too many INFO lines for one session:\n{}",
        log.join("\n")
    );
}

/// `--max-rooms-per-hour 2`: a third `POST /api/rooms` from the same address within the hour
/// gets 429 with `Retry-After`.
#[test]
fn rooms_per_hour_are_limited_per_address() {
    let chat = start(&["--max-rooms-per-hour", "2"]);
    create_room(&chat, "One");
    create_room(&chat, "Two");
    let response = post_room(&chat, "Three");
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 36"),
        "{response}"
    );
    chat.logged(&["rooms per hour used up"]);
}
