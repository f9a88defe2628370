//! permessage-deflate over real sockets: negotiation with the blocking client and raw
//! requests, echo both ways with and without context takeover, compress-once fan-out, and a
//! deflate bomb.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use sockeye::client::OwnedEvent;
use sockeye::deflate::{Compressor, DeflateConfig};
use sockeye::handshake::Request;
use sockeye::server::{
    broadcast, Handler, Message, Rejection, ServerConfig, Session, SessionHandle, Upgrading,
};
use sockeye::DataKind;

/// The tests of this file run one at a time: the bomb test reads the process's memory, which
/// another test's server running meanwhile would add to.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, _: &Request<'_, '_>, _: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }
}

fn deflate_server(deflate: DeflateConfig) -> TestServer {
    TestServer::start(
        ServerConfig {
            deflate: Some(deflate),
            ..test_config()
        },
        || Echo,
    )
}

fn json(i: usize, len: usize) -> String {
    let mut s = format!("{{\"id\":{i},\"room\":\"general\",\"text\":\"");
    while s.len() + 2 < len {
        s.push_str(["hello ", "world ", "sockeye ", "ünïcödé "][s.len() % 4]);
    }
    s.push_str("\"}");
    s
}

fn echo_many(url: &str, client_deflate: DeflateConfig) {
    let config = sockeye::client::ClientConfig {
        deflate: Some(client_deflate),
        ..client_config()
    };
    let mut client = client_with(url, &config);
    assert!(client.deflate().is_some(), "deflate was negotiated");
    for i in 0..50 {
        echo_text(&mut client, &json(i, 20 + i * 97));
    }
    let big = pattern(300_000);
    client.send_binary(&big).expect("send");
    match read_event(&mut client, "the echo of 300 KB") {
        OwnedEvent::Binary(b) => assert!(b == big, "echoed binary"),
        other => panic!("expected binary, got {other:?}"),
    }
    close_client(&mut client);
}

#[test]
fn echo_with_deflate_every_way() {
    let _alone = alone();
    for server in [
        DeflateConfig::default(),
        DeflateConfig::with_context_takeover(),
    ] {
        let s = deflate_server(server.clone());
        for client in [
            DeflateConfig::default(),
            DeflateConfig::with_context_takeover(),
            DeflateConfig {
                server_max_window_bits: 10,
                client_max_window_bits: 9,
                ..DeflateConfig::with_context_takeover()
            },
        ] {
            echo_many(&s.url("/"), client);
        }
        assert!(
            s.stats().deflate_compressed > 0 || !server.server_no_context_takeover,
            "the shared compressor was used"
        );
        s.finish();
    }
}

#[test]
fn negotiation_on_the_wire() {
    let _alone = alone();
    let s = deflate_server(DeflateConfig::default());
    let cases: &[(&str, Option<&str>)] = &[
        (
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"),
        ),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("x-webkit-deflate-frame", None),
    ];
    for (offer, want) in cases {
        let header = format!("Sec-WebSocket-Extensions: {offer}");
        let mut stream = connect(s.addr());
        std::io::Write::write_all(&mut stream, upgrade_request("/", &[&header]).as_bytes())
            .expect("write request");
        let response = read_head(&mut stream);
        assert_eq!(response.status, 101, "{offer}");
        assert_eq!(
            response.header("sec-websocket-extensions"),
            *want,
            "answer to {offer}"
        );
    }
    // Without the extension the client is told nothing, and RSV1 stays a violation.
    let mut stream = connect(s.addr());
    std::io::Write::write_all(&mut stream, upgrade_request("/", &[]).as_bytes()).unwrap();
    let response = read_head(&mut stream);
    assert_eq!(response.header("sec-websocket-extensions"), None);
    let frame = encode_frame(
        true,
        4,
        TEXT,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        Some(MASK),
    );
    std::io::Write::write_all(&mut stream, &frame).unwrap();
    assert_eq!(expect_close_code(&mut stream), 1002);
    s.finish();
}

/// The server's side of the fan-out test: every session's handle goes to the test; a message
/// "prefixed" has the worker send a body to every session behind a prefix of each one's own,
/// all in the turn that read it.
struct Fanout {
    handles: mpsc::Sender<SessionHandle>,
    mine: Vec<SessionHandle>,
    tail: Bytes,
}

impl Handler for Fanout {
    type Data = ();

    fn on_upgrade(&mut self, _: &Request<'_, '_>, _: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        self.mine.push(session.handle());
        let _ = self.handles.send(session.handle());
    }

    fn on_message(&mut self, _: &mut Session<'_, ()>, message: Message<'_>) {
        if !matches!(message, Message::Text("prefixed")) {
            return;
        }
        for (i, h) in self.mine.iter().enumerate() {
            let prefix = Bytes::from(format!("MESSAGE\nsubscription:{i}\n\n"));
            h.send_parts(DataKind::Text, prefix, self.tail.clone())
                .unwrap();
        }
    }
}

/// A payload shared by many sessions without context takeover is compressed once per worker:
/// a broadcast, and per-recipient sends of one body behind a prefix of each one's own.
#[test]
fn a_shared_payload_is_compressed_once_for_all_its_recipients() {
    let _alone = alone();
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let body = json(1, 4000);
    let tail = Bytes::from(body.clone());
    let s = TestServer::start(
        ServerConfig {
            deflate: Some(DeflateConfig::default()),
            ..test_config()
        },
        move || Fanout {
            handles: tx.lock().unwrap().clone(),
            mine: Vec::new(),
            tail: tail.clone(),
        },
    );
    let config = sockeye::client::ClientConfig {
        deflate: Some(DeflateConfig::default()),
        ..client_config()
    };
    const N: usize = 20;
    let mut clients: Vec<_> = (0..N).map(|_| client_with(&s.url("/"), &config)).collect();
    let handles: Vec<SessionHandle> = (0..N).map(|_| recv(&rx, "a session's handle")).collect();
    // A broadcast is one command: compressed once, N - 1 reuses.
    let before = s.stats();
    assert_eq!(
        broadcast(&handles, DataKind::Text, Bytes::from(body.clone())),
        N
    );
    for c in &mut clients {
        match read_event(c, "the broadcast") {
            OwnedEvent::Text(t) => assert_eq!(t, body),
            other => panic!("expected the broadcast, got {other:?}"),
        }
    }
    let after = compressed_once(&s, before, N, "a broadcast");
    // A body shared behind each recipient's own prefix (a STOMP MESSAGE's head), sent by the
    // worker to all in one turn: compressed once as well.
    let before = after;
    clients[0].send_text("prefixed").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        match read_event(c, "the message with its prefix") {
            OwnedEvent::Text(t) => assert_eq!(t, format!("MESSAGE\nsubscription:{i}\n\n{body}")),
            other => panic!("expected the message, got {other:?}"),
        }
    }
    compressed_once(&s, before, N, "one body behind a prefix each");
    for mut c in clients {
        close_client(&mut c);
    }
    s.finish();
}

/// Polls the server's counters until `done` (bounded).
/// Waits for `sends` more compressed or reused sends than `before` and checks that exactly one
/// was compressed; the stats after.
fn compressed_once(
    s: &TestServer,
    before: sockeye::server::ServerStats,
    sends: usize,
    what: &str,
) -> sockeye::server::ServerStats {
    let after = wait_for_stats(s, |st| {
        st.deflate_compressed + st.deflate_reused
            >= before.deflate_compressed + before.deflate_reused + sends as u64
    });
    assert_eq!(
        (
            after.deflate_compressed - before.deflate_compressed,
            after.deflate_reused - before.deflate_reused
        ),
        (1, sends as u64 - 1),
        "compressions and reuses for {what} to {sends} sessions"
    );
    after
}

fn wait_for_stats(
    s: &TestServer,
    done: impl Fn(&sockeye::server::ServerStats) -> bool,
) -> sockeye::server::ServerStats {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let stats = s.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the counters did not get there within {IO_TIMEOUT:?}: {stats:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// 1 KiB frames of a message that would inflate to 1 GiB: 1009 once the inflated size passes
/// the message limit, and the server's memory grows by no more than the limit.
#[test]
fn a_deflate_bomb_over_the_wire_is_closed_with_1009() {
    let _alone = alone();
    let limit = 4 << 20;
    let mut config = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        ..test_config()
    };
    config.limits.max_message_size = limit;
    let s = TestServer::start(config, || Echo);
    // 1 MiB of zeros compresses to about 1 KiB; its sync-flushed form repeats into a valid
    // stream (each copy starts with a literal and refers back at distance 1).
    let mut block = Vec::new();
    Compressor::new(9, 15, 8).compress(&[&vec![0u8; 1 << 20]], &mut block);
    block.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let copies = 1024; // 1 GiB inflated
    let mut stream = connect(s.addr());
    let header = "Sec-WebSocket-Extensions: permessage-deflate";
    std::io::Write::write_all(&mut stream, upgrade_request("/", &[header]).as_bytes()).unwrap();
    assert_eq!(read_head(&mut stream).status, 101);
    let rss_before = rss_kib("VmRSS:");
    let mut sent = 0;
    let mut written_all = true;
    'send: for copy in 0..copies {
        for (j, piece) in block.chunks(1024).enumerate() {
            let first = copy == 0 && j == 0;
            let last = copy == copies - 1 && (j + 1) * 1024 >= block.len();
            let opcode = if first { BINARY } else { CONT };
            let rsv = if first { 4 } else { 0 };
            let frame = encode_frame(last, rsv, opcode, piece, Some(MASK));
            if std::io::Write::write_all(&mut stream, &frame).is_err() {
                written_all = false;
                break 'send;
            }
            sent += piece.len();
            if sent > 64 << 10 {
                // Far past what inflates to the limit: the answer is in.
                break 'send;
            }
        }
    }
    let code = expect_close_code(&mut stream);
    assert_eq!(
        code, 1009,
        "after {sent} compressed bytes (all written: {written_all})"
    );
    let grown = rss_kib("VmRSS:").saturating_sub(rss_before) * 1024;
    assert!(
        grown < limit as u64,
        "the server's process grew by {grown} bytes for a {limit}-byte limit"
    );
    s.finish();
}
