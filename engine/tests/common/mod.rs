//! Helpers shared by the socket-level integration tests (`tests/server.rs`, `tests/client.rs`).
//!
//! Everything here talks to real sockets on loopback with ephemeral ports. Every blocking
//! operation is bounded: sockets get read and write timeouts of [`IO_TIMEOUT`] (blocking
//! clients through `ClientConfig::io_timeout`, see [`client_config`]), channel waits use
//! `recv_timeout`, and a server shutdown runs on its own thread with a bounded wait, so a bug
//! makes a test fail instead of hanging the suite. Each failure names what was awaited.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sockeye::server::{Handler, RunningServer, Server, ServerConfig};

/// Bound on every single socket read or write, and on waiting for a handler's report.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The example key of RFC 6455 §1.3 and its accept value.
pub const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key of RFC 6455 §5.7, used by the raw frames the tests send.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A server configuration for tests: one worker (so "other connections" share its event loop)
/// and short close and shutdown deadlines (so a missed handshake costs seconds, not minutes).
pub fn test_config() -> ServerConfig {
    ServerConfig {
        workers: 1,
        close_timeout: Duration::from_secs(3),
        shutdown_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    }
}

/// A running server on an ephemeral loopback port. Dropping it without [`TestServer::finish`]
/// (a failed test) still asks the workers to stop.
pub struct TestServer {
    running: Option<RunningServer>,
    addr: SocketAddr,
}

impl TestServer {
    pub fn start<H, F>(config: ServerConfig, factory: F) -> TestServer
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let server = Server::bind("127.0.0.1:0".parse().expect("address"), config).expect("bind");
        let running = server.spawn(factory).expect("spawn");
        let addr = running.local_addr();
        TestServer {
            running: Some(running),
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:port` followed by `target` (which starts with `/`).
    pub fn url(&self, target: &str) -> String {
        format!("ws://{}{target}", self.addr)
    }

    /// The server's counters now.
    pub fn stats(&self) -> sockeye::server::ServerStats {
        self.running.as_ref().expect("server running").stats()
    }

    /// Takes the running server (for tests of shutdown itself).
    pub fn take(mut self) -> RunningServer {
        self.running.take().expect("server running")
    }

    /// Shuts down gracefully and checks that every worker ended cleanly (a handler or loop
    /// panic shows up here as "worker thread panicked").
    pub fn finish(self) {
        let running = self.take();
        let result = bounded_shutdown(running, Duration::from_secs(10));
        result.expect("server workers ended cleanly");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.shutdown_handle().shutdown();
        }
    }
}

/// Runs `RunningServer::shutdown` on a helper thread and waits at most `limit` for it.
pub fn bounded_shutdown(running: RunningServer, limit: Duration) -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(running.shutdown());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("RunningServer::shutdown did not return within {limit:?}"))
}

/// Waits (bounded) for the next report from a handler; `what` names it for the failure.
pub fn recv<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(item) => item,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no {what} from the handler within {IO_TIMEOUT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the handler's channel closed while waiting for {what}")
        }
    }
}

/// Waits (bounded) for the first report matching `pick`, skipping others; `what` names the
/// report for the failure.
pub fn recv_matching<T: std::fmt::Debug, U>(
    rx: &mpsc::Receiver<T>,
    what: &str,
    mut pick: impl FnMut(&T) -> Option<U>,
) -> U {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = match rx.recv_timeout(left) {
            Ok(item) => item,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no {what} from the handler within {IO_TIMEOUT:?} (skipped {skipped:?})")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "the handler's channel closed while waiting for {what} (skipped {skipped:?})"
            ),
        };
        match pick(&item) {
            Some(found) => return found,
            None => skipped.push(item),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------

/// A TCP connection with read and write timeouts and Nagle off (each write is its own segment).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A valid upgrade request for `target` with the RFC key, plus `extra` header lines (each
/// without its CRLF).
pub fn upgrade_request(target: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A parsed HTTP response head (and body, when read to the end).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name`, ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_head(head: &[u8]) -> Response {
    let text = std::str::from_utf8(head).expect("response head is UTF-8");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line: {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status code in {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {l:?}"));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: Vec::new(),
    }
}

/// Reads a response head one byte at a time (so nothing after it is consumed: frames that
/// follow a 101 stay in the socket).
pub fn read_head(stream: &mut TcpStream) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed inside the response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading the response head: {e} (got {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 << 10, "response head too long");
    }
    parse_head(&head)
}

/// Reads a whole response up to the server closing the connection, and checks that the body
/// is what `Content-Length` announced. (A server that forgot to close would trip the timeout.)
pub fn read_response_to_eof(stream: &mut TcpStream) -> Response {
    let mut all = Vec::new();
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            // The response is complete when the server resets after it; what matters is that
            // it was all there.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !all.is_empty() => break,
            Err(e) => panic!(
                "reading the response to EOF after {:?}: {e} (got {:?})",
                started.elapsed(),
                String::from_utf8_lossy(&all)
            ),
        }
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(&all)))
        + 4;
    let mut response = parse_head(&all[..end]);
    response.body = all[end..].to_vec();
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().expect("numeric Content-Length");
        assert_eq!(response.body.len(), len, "body length vs Content-Length");
    }
    response
}

/// Sends `request` (with `Connection: close` added when it names no `Connection`: HTTP/1.1
/// keeps connections alive otherwise) and reads the whole response up to EOF.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = connect(addr);
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let line_end = request.windows(2).position(|w| w == b"\r\n");
    let request = match line_end {
        Some(at) if !head.contains("\r\nconnection:") => {
            let mut with = request[..at].to_vec();
            with.extend_from_slice(b"\r\nConnection: close");
            with.extend_from_slice(&request[at..]);
            with
        }
        _ => request.to_vec(),
    };
    stream.write_all(&request).expect("send request");
    read_response_to_eof(&mut stream)
}

/// Opens a WebSocket over a raw socket with the RFC key; returns the stream positioned just
/// after the 101 head.
pub fn open_raw(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    stream
        .write_all(upgrade_request("/", &[]).as_bytes())
        .expect("send upgrade");
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    stream
}

/// Reads until the peer closes TCP: `Ok(0)`, or a reset (also a way of hanging up). Returns
/// whatever arrived before, and fails if the socket is still open at the read timeout.
pub fn expect_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut extra = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return extra,
            Ok(n) => extra.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return extra
            }
            Err(e) => panic!(
                "expected the peer to close the connection, got {e} ({} bytes before)",
                extra.len()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// Encodes a frame: `rsv` as bits 2..0 (RSV1 = 4), masked with `mask` when given.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xf)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A final, masked frame as a well-behaved client sends it.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(true, 0, opcode, payload, Some(MASK))
}

/// A masked close frame with `code` and `reason`.
pub fn client_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    client_frame(CLOSE, &payload)
}

/// A frame as read from the wire, unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl WireFrame {
    /// The code of a close frame (`None` for an empty one).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        match self.payload[..] {
            [] => None,
            [hi, lo, ..] => Some(u16::from_be_bytes([hi, lo])),
            [_] => panic!("close frame with a 1-byte payload"),
        }
    }
}

/// Fills `buf` from the socket (bounded by its read timeout); a timeout or error fails with a
/// message naming `what` was awaited.
pub fn read_exact_or_fail(stream: &mut TcpStream, buf: &mut [u8], what: &str) {
    if let Err(e) = stream.read_exact(buf) {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => panic!(
                "no {what} within the read timeout ({:?})",
                stream.read_timeout().ok().flatten()
            ),
            io::ErrorKind::UnexpectedEof => panic!("the peer closed the connection before {what}"),
            _ => panic!("reading {what}: {e}"),
        }
    }
}

/// Reads one frame (bounded by the socket's read timeout).
pub fn read_frame(stream: &mut TcpStream) -> WireFrame {
    let mut h = [0u8; 2];
    read_exact_or_fail(stream, &mut h, "a frame header");
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            read_exact_or_fail(stream, &mut b, "a frame's 16-bit length");
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            read_exact_or_fail(stream, &mut b, "a frame's 64-bit length");
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        read_exact_or_fail(stream, &mut key, "a frame's mask key");
    }
    assert!(len <= 64 << 20, "implausible frame length {len}");
    let mut payload = vec![0u8; len as usize];
    read_exact_or_fail(stream, &mut payload, "a frame's payload");
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    WireFrame {
        fin: h[0] & 0x80 != 0,
        rsv: (h[0] >> 4) & 7,
        opcode: h[0] & 0xf,
        masked,
        payload,
    }
}

/// Reads frames until a close frame and returns it (data frames before it are skipped).
pub fn read_close(stream: &mut TcpStream) -> WireFrame {
    for _ in 0..1000 {
        let frame = read_frame(stream);
        if frame.opcode == CLOSE {
            return frame;
        }
    }
    panic!("no close frame within 1000 frames");
}

/// The close code the server answers a violation with: read its close frame, check that it is
/// unmasked, answer it with our own close as a client must, and check that the server then drops
/// TCP.
pub fn expect_close_code(stream: &mut TcpStream) -> u16 {
    let frame = read_close(stream);
    assert!(!frame.masked, "server frames must not be masked");
    let code = frame.close_code().expect("close frame carries a code");
    // The server may already have hung up (a bad close frame from us ends our side too).
    let _ = stream.write_all(&client_close(code, ""));
    let extra = expect_eof(stream);
    assert!(
        extra.is_empty(),
        "bytes after the close frame: {extra:02x?}"
    );
    code
}

/// A thread whose end is awaited with a bound: its outcome comes back over a channel.
pub struct Bounded<T> {
    outcome: mpsc::Receiver<std::thread::Result<T>>,
}

pub fn spawn_bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let (tx, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    Bounded { outcome }
}

impl<T> Bounded<T> {
    /// The thread's result; its panic is resumed here; fails if it runs longer than `limit`.
    pub fn join(self, limit: Duration, what: &str) -> T {
        match self.outcome.recv_timeout(limit) {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what} did not finish within {limit:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: its thread vanished"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fake servers (for the client's tests)
// ---------------------------------------------------------------------------------------------

/// The outcome of a fake server's thread, delivered over a channel so waiting for it is bounded.
pub struct Fake<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Fake<T> {
    /// The fake server's result; fails if it panicked (its message is printed above) or did not
    /// finish in time.
    pub fn join(self) -> T {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake server finished without panicking")
    }
}

/// A one-connection fake server on an ephemeral port: accepts once, reads the request head,
/// and hands the stream and the client's `Sec-WebSocket-Key` to `serve`.
pub fn fake_server<T, F>(serve: F) -> (SocketAddr, Fake<T>)
where
    T: Send + 'static,
    F: FnOnce(TcpStream, String) -> T + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
    let addr = listener.local_addr().expect("address");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Blocks until the test's client connects; if it never does, `Fake::join` times out.
        let (mut stream, _) = listener.accept().expect("fake server accept");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).expect("fake server: read request");
            assert!(n == 1, "fake server: client hung up inside the request");
            head.push(byte[0]);
        }
        let text = String::from_utf8(head).expect("request is UTF-8");
        let key = text
            .split("\r\n")
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_string())
            })
            .expect("request has a Sec-WebSocket-Key");
        let _ = tx.send(serve(stream, key));
    });
    (addr, Fake { rx })
}

/// The `Sec-WebSocket-Accept` value for a key (the crate's function, checked against the RFC
/// example in `tests/server.rs`).
pub fn accept_for(key: &str) -> String {
    String::from_utf8(sockeye::handshake::accept_key(key.as_bytes()).to_vec()).expect("base64")
}

/// A correct 101 for `key` plus `extra` header lines.
pub fn switching_protocols(key: &str, extra: &[&str]) -> String {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_for(key)
    );
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// Reads and discards until the peer hangs up (bounded by the read timeout); a fake server's
/// way of staying polite after its answer.
pub fn drain_until_eof(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Payloads: a byte pattern that does not repeat with a short period.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes, mixing 1-, 2-, 3- and 4-byte characters (so that
/// fragment boundaries fall inside characters).
pub fn text_of(len: usize) -> String {
    const UNIT: &str = "aé€𝄞z ж"; // 1 + 2 + 3 + 4 + 1 + 1 + 2 bytes
    let mut s = UNIT.repeat(len / UNIT.len());
    for c in UNIT.chars() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push('.');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The blocking client
// ---------------------------------------------------------------------------------------------

/// A client configuration whose every wait is bounded: the handshake and, once open, each read
/// and write by [`IO_TIMEOUT`] (a read that waits longer fails with `ClientError::Timeout`).
pub fn client_config() -> sockeye::client::ClientConfig {
    sockeye::client::ClientConfig {
        handshake_timeout: IO_TIMEOUT,
        io_timeout: Some(IO_TIMEOUT),
        ..sockeye::client::ClientConfig::default()
    }
}

/// Connects a [`Client`](sockeye::client::Client) with `config`, its reads and writes bounded
/// by [`IO_TIMEOUT`] unless `config` sets its own `io_timeout`.
pub fn client_with(url: &str, config: &sockeye::client::ClientConfig) -> sockeye::client::Client {
    let config = sockeye::client::ClientConfig {
        io_timeout: config.io_timeout.or(Some(IO_TIMEOUT)),
        ..config.clone()
    };
    sockeye::client::Client::connect_with(url, &config)
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

pub fn client(url: &str) -> sockeye::client::Client {
    client_with(url, &client_config())
}

/// The next event (bounded by the client's `io_timeout`); a timeout or error fails with a
/// message naming `what` was awaited.
pub fn read_event(client: &mut sockeye::client::Client, what: &str) -> sockeye::client::OwnedEvent {
    match client.read() {
        Ok(event) => event,
        Err(sockeye::client::ClientError::Timeout) => {
            panic!("no {what} within the client's I/O timeout ({IO_TIMEOUT:?} unless the test set another)")
        }
        Err(e) => panic!("reading {what}: {e}"),
    }
}

/// Expects the peer to drop TCP: the next read fails with `ClientError::Dropped`. `what` names
/// the moment for the failure message.
pub fn expect_dropped(client: &mut sockeye::client::Client, what: &str) {
    match client.read() {
        Err(sockeye::client::ClientError::Dropped) => {}
        Err(sockeye::client::ClientError::Timeout) => {
            panic!("the peer did not drop TCP {what} within {IO_TIMEOUT:?}")
        }
        other => panic!("expected the peer to drop TCP {what}, got {other:?}"),
    }
}

/// The next event that is not a ping or a pong (the client answers pings itself; a server's
/// keep-alive ping may come while a slow test waits for data). Bounded like [`read_event`].
pub fn read_data(client: &mut sockeye::client::Client, what: &str) -> sockeye::client::OwnedEvent {
    loop {
        match read_event(client, what) {
            sockeye::client::OwnedEvent::Ping(_) | sockeye::client::OwnedEvent::Pong(_) => {}
            other => return other,
        }
    }
}

/// Sends a text message and expects it back unchanged (pings and pongs on the way skipped).
pub fn echo_text(client: &mut sockeye::client::Client, text: &str) {
    client.send_text(text).expect("send text");
    match read_data(client, &format!("the echo of {text:?}")) {
        sockeye::client::OwnedEvent::Text(got) => assert_eq!(got, text, "echoed text"),
        other => panic!("expected the text echoed, got {other:?}"),
    }
}

/// Runs the close handshake from the client's side: our close, the server's echo, then the
/// server drops TCP.
pub fn close_client(client: &mut sockeye::client::Client) {
    client.close(1000, "done").expect("send close");
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no close echo within {IO_TIMEOUT:?} (other frames kept coming)"
        );
        let event = read_event(client, "the close echo");
        if let sockeye::client::OwnedEvent::Close(frame) = event {
            assert_eq!(frame.map(|(c, _)| c), Some(1000), "close echo");
            break;
        }
    }
    expect_dropped(client, "after the close handshake");
}
