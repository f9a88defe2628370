//! A STOMP-over-TCP test client: frames parsed with the crate's own parser, every read
//! bounded by a deadline and failing with what it waited for.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sockeye_chat::server::StompServer;
use sockeye_chat::stomp::{parse, Limits, Status, Version};

pub mod binary;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A frame as received.
#[derive(Clone, Debug)]
pub struct Got {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Stomp {
    stream: TcpStream,
    buf: Vec<u8>,
    pub name: String,
}

impl Stomp {
    /// Opens the TCP connection only (the caller sends CONNECT).
    pub fn open(addr: SocketAddr, name: &str) -> Stomp {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: connecting to {addr}: {e}"));
        Stomp::over(stream, name)
    }

    /// A client over a connected stream (the caller sends CONNECT).
    pub fn over(stream: TcpStream, name: &str) -> Stomp {
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Stomp {
            stream,
            buf: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// A second handle on the socket (to write from another thread).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone the socket")
    }

    /// Connects and sends CONNECT (1.2, `login` if any); waits for CONNECTED.
    pub fn connect(addr: SocketAddr, name: &str, login: Option<&str>) -> Stomp {
        let mut c = Stomp::open(addr, name);
        let login = login.map(|l| format!("login:{l}\n")).unwrap_or_default();
        c.send(&format!(
            "CONNECT\naccept-version:1.2\nhost:localhost\n{login}\n"
        ));
        let f = c.frame("CONNECTED");
        assert_eq!(f.command, "CONNECTED", "{name}: {f:?}");
        c
    }

    /// Sends a frame: `text` is the command and headers and blank line; the body and NUL are
    /// added.
    pub fn send(&mut self, text: &str) {
        self.send_body(text, b"");
    }

    pub fn send_body(&mut self, head: &str, body: &[u8]) {
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes.push(0);
        self.stream
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{}: writing {head:?}: {e}", self.name));
    }

    /// The next frame (heart-beats skipped), within `TIMEOUT`; panics naming `what`.
    pub fn frame(&mut self, what: &str) -> Got {
        self.frame_within(what, TIMEOUT)
            .unwrap_or_else(|| panic!("{}: no {what} within {TIMEOUT:?}", self.name))
    }

    /// The next frame within `wait`, or `None`.
    pub fn frame_within(&mut self, what: &str, wait: Duration) -> Option<Got> {
        let until = Instant::now() + wait;
        loop {
            match parse(&self.buf, &Limits::default(), Some(Version::V1_2)) {
                Ok(Status::Complete(f, used)) => {
                    let got = Got {
                        command: f.command.to_string(),
                        headers: f
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_string()))
                            .collect(),
                        body: f.body.to_vec(),
                    };
                    self.buf.drain(..used);
                    return Some(got);
                }
                Ok(Status::HeartBeat(used)) => {
                    self.buf.drain(..used);
                    continue;
                }
                Ok(Status::Partial) => {}
                Err(e) => panic!("{}: bad frame while waiting for {what}: {e}", self.name),
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{}: connection closed while waiting for {what}", self.name),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("{}: reading, waiting for {what}: {e}", self.name),
            }
        }
    }

    /// Expects a frame of `command`.
    pub fn expect(&mut self, command: &str, what: &str) -> Got {
        let f = self.frame(what);
        assert_eq!(
            f.command, command,
            "{}: waiting for {what}: {f:?}",
            self.name
        );
        f
    }

    /// Nothing arrives within `wait`.
    pub fn quiet(&mut self, wait: Duration, why: &str) {
        if let Some(f) = self.frame_within(why, wait) {
            panic!("{}: expected nothing ({why}), got {f:?}", self.name);
        }
    }

    pub fn subscribe(&mut self, id: &str, destination: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:sub-{id}\n\n"
        ));
        let f = self.expect(
            "RECEIPT",
            &format!("the receipt of SUBSCRIBE {destination}"),
        );
        assert_eq!(f.header("receipt-id"), Some(format!("sub-{id}").as_str()));
    }

    /// Reads until the connection closes (after an ERROR, say); panics after `TIMEOUT`.
    pub fn closed(&mut self, what: &str) {
        let until = Instant::now() + TIMEOUT;
        let mut chunk = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: not closed ({what})", self.name);
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

/// Polls `cond` every 20 ms until it holds, for at most `wait`; panics naming `what`.
pub fn eventually(wait: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + wait;
    while !cond() {
        assert!(Instant::now() < until, "not within {wait:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Shuts a server down on a helper thread and waits for it at most 10 s (the test servers'
/// shutdown deadline is 2 s): a shutdown that hangs fails the test instead of hanging it.
pub fn shutdown(server: StompServer) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.shutdown());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("StompServer::shutdown returned within 10 s")
        .expect("clean shutdown");
}
