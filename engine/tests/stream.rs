//! Stream listeners: plain byte streams served by the same workers as WebSocket sessions.
//!
//! Every wait is bounded (socket read timeouts, the client's `io_timeout`, `recv_timeout`, a
//! bounded shutdown; see `common`) and fails naming what it waited for.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{
    bounded_shutdown, client, connect, expect_eof, read_event, read_exact_or_fail, recv, IO_TIMEOUT,
};
use sockeye::client::OwnedEvent;
use sockeye::handshake::Request;
use sockeye::server::{
    Handler, Message, Rejection, Server, ServerConfig, Session, SessionHandle, Upgrading,
};
use sockeye::DataKind;

/// Echoes stream bytes upper-cased, closes the stream on "bye", and reports every session's
/// handle (so the test can post to it from outside) and every close.
struct Upper {
    opened: mpsc::Sender<(bool, SessionHandle)>,
    closed: mpsc::Sender<u64>,
}

impl Handler for Upper {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_stream_open(&mut self, _peer: std::net::SocketAddr) -> Option<()> {
        Some(())
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        let _ = self.opened.send((session.is_stream(), session.handle()));
        if session.is_stream() {
            let _ = session.send_text("hello\n");
        }
    }

    fn on_stream_data(&mut self, session: &mut Session<'_, ()>, bytes: &[u8]) -> usize {
        if bytes.starts_with(b"bye") {
            let _ = session.send_text("bye\n");
            let _ = session.close(1000, "bye");
            return bytes.len();
        }
        let _ = session.send_binary(&bytes.to_ascii_uppercase());
        bytes.len()
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }

    fn on_close(&mut self, session: &mut Session<'_, ()>, _code: u16, _reason: &str) {
        let _ = self.closed.send(session.id());
    }
}

/// The next `n` bytes (bounded by the socket's read timeout); `what` names them for the failure.
fn read_exact_n(stream: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    read_exact_or_fail(stream, &mut buf, what);
    buf
}

#[test]
fn stream_and_websocket_sessions_share_the_loop() {
    let (open_tx, open_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let config = ServerConfig {
        workers: 1,
        ..ServerConfig::default()
    };
    let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let stream_addr = server.bind_stream("127.0.0.1:0".parse().unwrap()).unwrap();
    let ws_addr = server.local_addr();
    let running = server
        .spawn(move || Upper {
            opened: open_tx.clone(),
            closed: closed_tx.clone(),
        })
        .unwrap();

    let mut raw = connect(stream_addr);
    assert_eq!(
        read_exact_n(&mut raw, 6, "the stream's hello from on_open"),
        b"hello\n",
        "on_open's send is written unframed"
    );
    let (is_stream, raw_handle) = recv(&open_rx, "on_open of the stream session");
    assert!(is_stream);

    raw.write_all(b"abc").unwrap();
    assert_eq!(read_exact_n(&mut raw, 3, "the upper-cased echo"), b"ABC");

    let mut ws = client(&format!("ws://{ws_addr}/"));
    let (is_stream, ws_handle) = recv(&open_rx, "on_open of the WebSocket session");
    assert!(!is_stream);

    // One prepared message in two parts reaches both kinds: framed for WebSocket, raw for the
    // stream.
    let body = Bytes::from_static(b"shared body");
    for h in [&raw_handle, &ws_handle] {
        h.send_parts(DataKind::Text, Bytes::from_static(b"head|"), body.clone())
            .unwrap();
    }
    assert_eq!(
        read_exact_n(&mut raw, 16, "the posted message on the stream"),
        b"head|shared body"
    );
    assert_eq!(
        read_event(&mut ws, "the posted message on the WebSocket"),
        OwnedEvent::Text("head|shared body".into())
    );

    raw.write_all(b"bye").unwrap();
    assert_eq!(read_exact_n(&mut raw, 4, "the stream's bye"), b"bye\n");
    expect_eof(&mut raw);
    closed_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("on_close for the stream session");

    // A vanished stream peer ends its session too.
    let raw2 = connect(stream_addr);
    let _ = recv(&open_rx, "on_open of the second stream session");
    drop(raw2);
    closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("on_close after EOF");

    ws.close(1000, "").unwrap();
    bounded_shutdown(running, Duration::from_secs(10)).expect("workers ended cleanly");
}

/// The workers share their port through SO_REUSEPORT; a second server on the same address must
/// still be refused, not silently given half the connections.
#[test]
fn a_second_server_on_a_taken_port_is_refused() {
    let first = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let addr = first.local_addr();
    let err = Server::bind(addr, ServerConfig::default()).expect_err("port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let mut other = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let err = other.bind_stream(addr).expect_err("port is taken");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
