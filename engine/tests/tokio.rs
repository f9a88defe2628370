//! The tokio adapter on real loopback sockets (ephemeral ports): echo, fragments, the close
//! handshake, and the core's answers to bad input as they come through the adapter. Every wait
//! is bounded by a timeout that names what it waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use sockeye::close::code;
use sockeye::connection::{DataKind, MaskKeys, Role, Sender};
use sockeye::error::ProtocolError;
use sockeye::tokio::{CloseReason, Config, Error, Message, WebSocketStream};
use sockeye::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(f)
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A server on an ephemeral port that accepts one connection with `config` and runs `serve`.
async fn server<F, Fut, T>(config: Config, serve: F) -> (SocketAddr, JoinHandle<T>)
where
    F: FnOnce(WebSocketStream<TcpStream>) -> Fut + 'static,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::task::spawn_local(async move {
        let (tcp, _) = within("a connection", listener.accept())
            .await
            .expect("accept");
        let ws = within("the handshake", WebSocketStream::accept(tcp, config))
            .await
            .expect("handshake");
        serve(ws).await
    });
    (addr, task)
}

/// Echoes data messages until the connection is over; returns the errors it saw.
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Vec<String> {
    let mut errors = Vec::new();
    while let Some(item) = within("the next message", ws.next()).await {
        match item {
            // Fed, not sent: `next` writes it before it waits for more.
            Ok(m) if m.is_data() => within("an echo", ws.feed(m)).await.expect("echo"),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

async fn client(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let connect = WebSocketStream::connect_tcp(addr.to_string(), "/", Config::default());
    within("the client handshake", connect)
        .await
        .expect("connect")
}

async fn recv(ws: &mut WebSocketStream<TcpStream>) -> Message {
    match within("a message", ws.next()).await {
        Some(Ok(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A client that speaks raw bytes: the handshake, then whatever frames a test writes.
async fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        within("the 101", tcp.read_exact(&mut byte))
            .await
            .expect("101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

fn masked() -> Sender {
    Sender::client(MaskKeys::new(|b| b.fill(0x5a)))
}

/// Writes raw frames, then reads the server's answer through a client adapter: the close code.
async fn close_code_after(addr: SocketAddr, frames: &[u8]) -> Option<CloseReason> {
    let mut tcp = raw_client(addr).await;
    within("writing frames", tcp.write_all(frames))
        .await
        .expect("write");
    let mut ws = WebSocketStream::from_upgraded(tcp, Role::Client, Config::default());
    loop {
        match recv(&mut ws).await {
            Message::Close(reason) => return reason,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

fn limited(max: usize) -> Config {
    Config {
        limits: Limits {
            max_frame_size: max,
            max_message_size: max,
            ..Limits::default()
        },
        ..Config::default()
    }
}

#[test]
fn echoes_text_and_binary_then_closes() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, task) = server(Config::default(), echo).await;
        let mut ws = client(addr).await;
        ws.send_text("hello").await.expect("send");
        assert_eq!(recv(&mut ws).await.as_text(), Some("hello"));
        let big: Vec<u8> = (0..1 << 20).map(|i| i as u8).collect();
        ws.send(Message::binary(big.clone())).await.expect("send");
        assert_eq!(recv(&mut ws).await, Message::binary(big));
        ws.close(code::NORMAL, "done").await.expect("close");
        let reason = CloseReason {
            code: code::NORMAL,
            reason: String::new(),
        };
        assert_eq!(recv(&mut ws).await, Message::Close(Some(reason)));
        assert!(within("the end", ws.next()).await.is_none());
        assert!(ws.is_closed());
        let errors = within("the server", task).await.expect("server task");
        assert!(errors.is_empty(), "{errors:?}");
    }));
}

#[test]
fn reassembles_fragments_and_answers_a_ping_between_them() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, _task) = server(Config::default(), echo).await;
        let mut tcp = raw_client(addr).await;
        let mut tx = masked();
        let mut frames = Vec::new();
        tx.send_fragment(DataKind::Text, "frag".as_bytes(), false, &mut frames)
            .expect("fragment");
        tx.ping(b"mid", &mut frames).expect("ping");
        tx.send_fragment(DataKind::Text, "ment".as_bytes(), false, &mut frames)
            .expect("fragment");
        tx.send_fragment(DataKind::Text, "ed é".as_bytes(), true, &mut frames)
            .expect("fragment");
        // One byte at a time, so every boundary falls inside some frame.
        for byte in &frames {
            within("a byte", tcp.write_all(std::slice::from_ref(byte)))
                .await
                .expect("write");
        }
        let mut ws = WebSocketStream::from_upgraded(tcp, Role::Client, Config::default());
        assert_eq!(recv(&mut ws).await, Message::Pong("mid".into()));
        assert_eq!(recv(&mut ws).await.as_text(), Some("fragmented é"));
    }));
}

#[test]
fn the_peer_close_code_is_echoed_and_seen() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, task) = server(Config::default(), |mut ws| async move {
            let first = recv(&mut ws).await;
            let end = within("the end", ws.next()).await;
            (first, end.is_none())
        })
        .await;
        let mut ws = client(addr).await;
        ws.close(4000, "bye").await.expect("close");
        let echoed = CloseReason {
            code: 4000,
            reason: String::new(),
        };
        assert_eq!(recv(&mut ws).await, Message::Close(Some(echoed)));
        let (first, ended) = within("the server", task).await.expect("server task");
        let sent = CloseReason {
            code: 4000,
            reason: "bye".into(),
        };
        assert_eq!(first, Message::Close(Some(sent)));
        assert!(ended);
    }));
}

#[test]
fn sends_after_close_fail() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, _task) = server(Config::default(), echo).await;
        let mut ws = client(addr).await;
        ws.close(code::GOING_AWAY, "").await.expect("close");
        match ws.send_text("late").await {
            Err(Error::Send(_)) => {}
            other => panic!("expected a send error, got {other:?}"),
        }
    }));
}

#[test]
fn an_oversized_frame_is_closed_with_1009() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, task) = server(limited(1024), echo).await;
        let mut frames = Vec::new();
        masked()
            .send(DataKind::Binary, &[0u8; 2048], &mut frames)
            .expect("frame");
        let reason = close_code_after(addr, &frames).await;
        assert_eq!(reason.map(|r| r.code), Some(code::MESSAGE_TOO_BIG));
        drop(task);
    }));
}

/// Sends `frames` raw to a server that reads once: the close code the peer gets, and what the
/// server's `next()` said.
fn violation(frames: &[u8]) -> (Option<u16>, Option<Result<Message, Error>>) {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, task) = server(Config::default(), |mut ws| async move {
            within("the error", ws.next()).await
        })
        .await;
        let reason = close_code_after(addr, frames).await;
        let seen = within("the server", task).await.expect("server task");
        (reason.map(|r| r.code), seen)
    }))
}

#[test]
fn bad_utf8_is_closed_with_1007() {
    let mut frames = Vec::new();
    masked()
        .send(DataKind::Text, &[b'a', 0xff, 0xfe], &mut frames)
        .expect("frame");
    let (code, seen) = violation(&frames);
    assert_eq!(code, Some(code::INVALID_PAYLOAD));
    match seen {
        Some(Err(Error::Protocol(ProtocolError::InvalidUtf8))) => {}
        other => panic!("expected invalid UTF-8, got {other:?}"),
    }
}

#[test]
fn an_unmasked_client_frame_is_closed_with_1002() {
    let mut frames = Vec::new();
    Sender::server()
        .send(DataKind::Text, b"no mask", &mut frames)
        .expect("frame");
    let (code, seen) = violation(&frames);
    assert_eq!(code, Some(code::PROTOCOL_ERROR));
    match seen {
        Some(Err(Error::Protocol(ProtocolError::UnmaskedFrame))) => {}
        other => panic!("expected an unmasked frame error, got {other:?}"),
    }
}

#[test]
fn a_request_that_is_not_an_upgrade_is_refused() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::task::spawn_local(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            WebSocketStream::accept(tcp, Config::default()).await.err()
        });
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut answer = Vec::new();
        within("the refusal", tcp.read_to_end(&mut answer))
            .await
            .expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");
        let error = within("the server", task).await.expect("server task");
        assert!(matches!(error, Some(Error::Handshake(_))), "{error:?}");
    }));
}

/// A peer floods pings and never reads: the pongs pile up until the output cap, then the
/// adapter stops reading, so its memory stays bounded while the peer's writes stall.
#[test]
fn a_ping_flood_from_a_peer_that_never_reads_stays_bounded() {
    const CAP: usize = 16 << 10;
    let config = Config {
        write_buffer_cap: CAP,
        ..Config::default()
    };
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, task) = server(config, |mut ws| async move {
            let (mut pings, mut most_out, mut most_in) = (0usize, 0, 0);
            // The adapter stalls once the peer's receive window and the cap are full; a second
            // with nothing to hand out is the sign of it.
            while let Ok(item) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                match item {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("expected pings, got {other:?}"),
                }
                most_out = most_out.max(ws.write_buffered());
                most_in = most_in.max(ws.read_buffered());
            }
            (pings, most_out, most_in, ws.write_buffered())
        })
        .await;
        let mut tcp = raw_client(addr).await;
        let mut tx = masked();
        let mut batch = Vec::new();
        for _ in 0..100 {
            tx.ping(&[7u8; 125], &mut batch).expect("ping");
        }
        let mut sent = 0usize;
        // Until the server stops reading and the socket buffers between us fill up.
        while let Ok(written) =
            tokio::time::timeout(Duration::from_millis(500), tcp.write_all(&batch)).await
        {
            written.expect("write");
            sent += 100;
            assert!(sent < 10_000_000, "the writes never stalled");
        }
        let (pings, most_out, most_in, out_at_end) =
            within("the server", task).await.expect("server task");
        assert!(
            pings < sent,
            "{pings} of {sent} pings read: reading never paused"
        );
        assert!(out_at_end > CAP, "stalled with {out_at_end} bytes queued");
        assert!(most_out <= CAP + 131, "{most_out} bytes queued (cap {CAP})");
        assert!(
            most_in <= 2 * (64 << 10) + 256,
            "{most_in} bytes held for reading"
        );
    }));
}

/// Autobahn 6.4.3: invalid UTF-8 in a frame whose payload is still arriving fails at once,
/// without waiting for the rest of the frame.
#[test]
fn invalid_utf8_in_a_frame_still_arriving_fails_fast() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, _task) = server(Config::default(), echo).await;
        let mut frames = Vec::new();
        let payload = [b'a', b'b', 0xf4, 0x90, 0x80, 0x80, b'c', b'd'];
        masked()
            .send(DataKind::Text, &payload, &mut frames)
            .expect("frame");
        // The header, the mask and the bad bytes, but not the last two payload bytes.
        frames.truncate(frames.len() - 2);
        let reason = close_code_after(addr, &frames).await;
        assert_eq!(reason.map(|r| r.code), Some(code::INVALID_PAYLOAD));
    }));
}

/// A batch fed at once comes back whole: the server feeds each echo and its `next` writes them
/// before it waits for more.
#[test]
fn a_pipelined_batch_is_echoed_in_order() {
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, _task) = server(Config::default(), echo).await;
        let mut ws = client(addr).await;
        for i in 0..1000 {
            within("feeding", ws.feed(Message::text(format!("message {i}"))))
                .await
                .expect("feed");
        }
        within("the flush", ws.flush()).await.expect("flush");
        for i in 0..1000 {
            assert_eq!(
                recv(&mut ws).await.as_text(),
                Some(&*format!("message {i}"))
            );
        }
    }));
}

/// permessage-deflate through the adapter on both ends: agreed in the handshake, and messages
/// (compressible, with context takeover, and short ones sent plain) come back whole.
#[test]
fn permessage_deflate_round_trips_when_both_ends_enable_it() {
    let deflating = || Config {
        deflate: Some(sockeye::deflate::DeflateConfig::with_context_takeover()),
        ..Config::default()
    };
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let (addr, _task) = server(deflating(), echo).await;
        let connect = WebSocketStream::connect_tcp(addr.to_string(), "/", deflating());
        let mut ws = within("the client handshake", connect)
            .await
            .expect("connect");
        assert!(ws.deflates(), "permessage-deflate was not agreed");
        let long = "compress me ".repeat(1000);
        for text in [long.as_str(), "short", long.as_str()] {
            ws.send_text(text).await.expect("send");
            assert_eq!(recv(&mut ws).await.as_text(), Some(text));
        }
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.expect("send");
        assert_eq!(recv(&mut ws).await, Message::binary(big));
    }));
}

#[test]
fn a_compressed_message_inflating_past_the_limit_is_closed_with_1009() {
    // 4 MiB of zeros compress to a few KiB; the server's limit is 64 KiB of inflated message.
    let limit = 64 << 10;
    let deflating = |limits: Limits| Config {
        limits,
        deflate: Some(sockeye::deflate::DeflateConfig::with_context_takeover()),
        ..Config::default()
    };
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let server_limits = limited(limit).limits;
        let (addr, task) = server(deflating(server_limits), |mut ws| async move {
            within("the error", ws.next()).await
        })
        .await;
        let connect =
            WebSocketStream::connect_tcp(addr.to_string(), "/", deflating(Limits::default()));
        let mut ws = within("the client handshake", connect)
            .await
            .expect("connect");
        assert!(ws.deflates(), "permessage-deflate was not agreed");
        ws.send(Message::binary(vec![0u8; 4 << 20]))
            .await
            .expect("send");
        match recv(&mut ws).await {
            Message::Close(Some(reason)) => assert_eq!(reason.code, code::MESSAGE_TOO_BIG),
            other => panic!("expected a 1009 close, got {other:?}"),
        }
        match within("the server", task).await.expect("server task") {
            Some(Err(Error::Protocol(ProtocolError::MessageTooLarge { max, .. }))) => {
                assert_eq!(max, limit)
            }
            other => panic!("expected a message too large, got {other:?}"),
        }
    }));
}
