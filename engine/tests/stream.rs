//! Stream listeners: plain byte streams served by the same workers as WebSocket sessions.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{expect_eof, IO_TIMEOUT};
use sockeye::client::{Client, OwnedEvent};
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

    fn on_stream_data(&mut self, session: &mut Session<'_, ()>, bytes: &[u8]) {
        if bytes.starts_with(b"bye") {
            let _ = session.send_text("bye\n");
            let _ = session.close(1000, "bye");
            return;
        }
        let _ = session.send_binary(&bytes.to_ascii_uppercase());
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }

    fn on_close(&mut self, session: &mut Session<'_, ()>, _code: u16, _reason: &str) {
        let _ = self.closed.send(session.id());
    }
}

fn read_exact_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read");
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

    let mut raw = TcpStream::connect(stream_addr).unwrap();
    raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(
        read_exact_n(&mut raw, 6),
        b"hello\n",
        "on_open's send is written unframed"
    );
    let (is_stream, raw_handle) = open_rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(is_stream);

    raw.write_all(b"abc").unwrap();
    assert_eq!(read_exact_n(&mut raw, 3), b"ABC");

    let mut ws = Client::connect(&format!("ws://{ws_addr}/")).unwrap();
    let (is_stream, ws_handle) = open_rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(!is_stream);

    // One prepared message in two parts reaches both kinds: framed for WebSocket, raw for the
    // stream.
    let body = Bytes::from_static(b"shared body");
    for h in [&raw_handle, &ws_handle] {
        h.send_parts(DataKind::Text, Bytes::from_static(b"head|"), body.clone())
            .unwrap();
    }
    assert_eq!(read_exact_n(&mut raw, 16), b"head|shared body");
    assert_eq!(
        ws.read().unwrap(),
        OwnedEvent::Text("head|shared body".into())
    );

    raw.write_all(b"bye").unwrap();
    assert_eq!(read_exact_n(&mut raw, 4), b"bye\n");
    expect_eof(&mut raw);
    closed_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("on_close for the stream session");

    // A vanished stream peer ends its session too.
    let raw2 = TcpStream::connect(stream_addr).unwrap();
    let _ = open_rx.recv_timeout(IO_TIMEOUT).unwrap();
    drop(raw2);
    closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("on_close after EOF");

    ws.close(1000, "").unwrap();
    running.shutdown().unwrap();
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
