//! TLS (feature `tls`) over real loopback sockets: wss and https through the mio server, SNI,
//! ALPN, `close_notify`, backpressure, reload, the stream listener, and the bad-input cases
//! (plain HTTP to the TLS port, garbage, a trickled ClientHello, certificates the client must
//! refuse). Certificates are made per test run with rcgen (a throwaway CA).
//!
//! Log lines are part of the contract ("each ends promptly with a clear log line"): the tests
//! capture the server's tracing output and look for the line naming the peer's port.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent, WsUrl};
use sockeye::handshake::Request;
use sockeye::server::{
    Handler, HttpResponse, Message, Rejection, Server, ServerConfig, Session, Upgrading,
};
use sockeye::tls::{rustls, ClientTls, ServerTls};

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A throwaway CA that signs leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate (PEM) and its key (PEM).
struct Leaf {
    chain: String,
    key: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Sockeye test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn roots(&self) -> ClientTls {
        ClientTls::with_roots_pem(self.pem().as_bytes()).expect("roots")
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, |_| {})
    }

    fn leaf_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        edit(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            chain: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn server_tls(leaf: &Leaf) -> ServerTls {
    ServerTls::from_pem(leaf.chain.as_bytes(), leaf.key.as_bytes()).expect("server TLS")
}

/// One CA for the whole binary (key generation is the slow part).
fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(Ca::new)
}

// ---------------------------------------------------------------------------------------------
// Captured logs
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf(Arc::default());
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sockeye=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

/// Waits (bounded) for a log line that names `peer` and contains `text`.
fn expect_log(peer: SocketAddr, text: &str) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    let needle = format!("peer={peer}");
    loop {
        let all = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
        if let Some(line) = all
            .lines()
            .find(|l| l.contains(&needle) && l.contains(text))
        {
            return line.to_string();
        }
        if Instant::now() > deadline {
            let mine: Vec<&str> = all.lines().filter(|l| l.contains(&needle)).collect();
            panic!(
                "no log line with {text:?} for {peer} within {IO_TIMEOUT:?}; its lines: {mine:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------------------------

/// Echoes messages (and stream bytes), answers HTTP with "hello over https".
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_http(&mut self, req: &Request<'_, '_>, _body: &[u8]) -> HttpResponse {
        HttpResponse::text(200, &format!("hello over https: {}\n", req.path()))
    }

    fn on_stream_open(&mut self, _peer: SocketAddr) -> Option<()> {
        Some(())
    }

    fn on_stream_data(&mut self, session: &mut Session<'_, ()>, bytes: &[u8]) -> usize {
        let _ = session.send_binary(bytes);
        bytes.len()
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = match message {
            Message::Text(text) => session.send_text(text),
            Message::Binary(bytes) => session.send_binary(bytes),
        };
    }
}

fn tls_config(tls: ServerTls) -> ServerConfig {
    logs();
    ServerConfig {
        tls: Some(tls),
        ..test_config()
    }
}

fn start(tls: ServerTls) -> TestServer {
    TestServer::start(tls_config(tls), || Echo)
}

fn wss_config(roots: ClientTls) -> ClientConfig {
    ClientConfig {
        tls: Some(roots),
        ..client_config()
    }
}

/// A `wss://` client that connects to `addr` but names `host` (for SNI and the name check).
fn wss_as(addr: SocketAddr, host: &str, roots: ClientTls) -> Result<Client, ClientError> {
    wss_from(addr, host, roots).1
}

/// [`wss_as`], also saying which local address (the server's `peer=` in its logs) it used.
fn wss_from(
    addr: SocketAddr,
    host: &str,
    roots: ClientTls,
) -> (SocketAddr, Result<Client, ClientError>) {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    let local = tcp.local_addr().expect("local addr");
    let url = WsUrl::parse(&format!("wss://{host}:{}/", addr.port())).expect("url");
    (local, Client::handshake(tcp, &url, &wss_config(roots)))
}

/// A raw rustls client over a bounded socket (for what the blocking client does not do).
type Raw = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn raw_tls(addr: SocketAddr, host: &str, alpn: &[&[u8]]) -> Raw {
    let mut config = (*ca().roots().config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client session");
    let mut raw = rustls::StreamOwned::new(conn, connect(addr));
    while raw.conn.is_handshaking() {
        raw.conn
            .complete_io(&mut raw.sock)
            .expect("TLS handshake with the server");
    }
    raw
}

/// Reads a raw stream to its end; `Ok(true)` if it ended with `close_notify`.
fn read_to_end_tls(raw: &mut Raw) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match raw.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (got, false),
            Err(e) => panic!(
                "reading to the end of the TLS stream: {e} ({} bytes before)",
                got.len()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The good path
// ---------------------------------------------------------------------------------------------

#[test]
fn wss_echoes_small_and_large_messages_and_closes_cleanly() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let url = format!("wss://localhost:{}/", server.addr().port());
    let mut client = client_with(&url, &wss_config(ca().roots()));
    echo_text(&mut client, "hello over wss");
    // Larger than the read buffer, a TLS record and the socket buffers: the write path's
    // pending ciphertext and the backlog both take part.
    let big = pattern(3 << 20);
    client.send_binary(&big).expect("send 3 MiB");
    match read_event(&mut client, "the 3 MiB echo") {
        OwnedEvent::Binary(got) => assert!(got == big, "3 MiB echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    close_client(&mut client);
    server.finish();
}

#[test]
fn https_answers_with_alpn_http_1_1_and_ends_with_close_notify() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let mut raw = raw_tls(server.addr(), "localhost", &[b"h2", b"http/1.1"]);
    assert_eq!(raw.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
    raw.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let (got, clean) = read_to_end_tls(&mut raw);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello over https: /api\n"), "{text}");
    assert!(clean, "the server ended TLS without close_notify");
    server.finish();
}

#[test]
fn websocket_close_ends_with_close_notify() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let mut raw = raw_tls(server.addr(), "localhost", &[]);
    raw.write_all(upgrade_request("/", &[]).as_bytes())
        .expect("send the upgrade");
    raw.write_all(&client_close(1000, "bye"))
        .expect("send close");
    let (got, clean) = read_to_end_tls(&mut raw);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // The close echo: FIN + close opcode, unmasked, code 1000.
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert_eq!(
        &got[head_end..head_end + 4],
        &[0x88, 2, 0x03, 0xe8],
        "close echo"
    );
    assert!(clean, "the server ended TLS without close_notify");
    server.finish();
}

#[test]
fn sni_picks_the_certificate_for_the_name() {
    let tls = server_tls(&ca().leaf(&["localhost"]));
    let other = ca().leaf(&["other.test"]);
    tls.add_sni("other.test", other.chain.as_bytes(), other.key.as_bytes())
        .expect("add SNI cert");
    let server = start(tls);
    // Each name is accepted only if its own certificate was presented.
    let mut a = wss_as(server.addr(), "other.test", ca().roots()).expect("other.test");
    echo_text(&mut a, "via other.test");
    let mut b = wss_as(server.addr(), "localhost", ca().roots()).expect("localhost");
    echo_text(&mut b, "via localhost");
    // A name with no certificate of its own gets the default one, which the client refuses.
    match wss_as(server.addr(), "third.test", ca().roots()) {
        Err(ClientError::Tls(_)) => {}
        other => panic!("expected a TLS failure for third.test, got {other:?}"),
    }
    close_client(&mut a);
    close_client(&mut b);
    server.finish();
}

#[test]
fn reload_serves_new_handshakes_and_keeps_open_sessions() {
    let first = ca().leaf(&["localhost"]);
    let tls = server_tls(&first);
    let server = start(tls.clone());
    let mut old = wss_as(server.addr(), "localhost", ca().roots()).expect("before reload");
    // A new CA: clients that trust only the old one must now fail, the open session not.
    let ca2 = Ca::new();
    let second = ca2.leaf(&["localhost"]);
    tls.reload(second.chain.as_bytes(), second.key.as_bytes())
        .expect("reload");
    assert!(
        matches!(
            wss_as(server.addr(), "localhost", ca().roots()),
            Err(ClientError::Tls(_))
        ),
        "a client trusting only the old CA was accepted after the reload"
    );
    let mut new = wss_as(server.addr(), "localhost", ca2.roots()).expect("after reload");
    echo_text(&mut old, "still here");
    echo_text(&mut new, "new cert");
    // A bad reload changes nothing.
    assert!(tls.reload(b"not a pem", second.key.as_bytes()).is_err());
    echo_text(
        &mut wss_as(server.addr(), "localhost", ca2.roots()).expect("after bad reload"),
        "x",
    );
    close_client(&mut old);
    close_client(&mut new);
    server.finish();
}

#[test]
fn stream_listener_speaks_tls_without_alpn() {
    let leaf = ca().leaf(&["localhost"]);
    let config = ServerConfig {
        stream_tls: Some(server_tls(&leaf).with_alpn(Vec::new())),
        ..tls_config(server_tls(&leaf))
    };
    let mut server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
    let stream_addr = server
        .bind_stream("127.0.0.1:0".parse().expect("addr"))
        .expect("bind stream");
    let running = server.spawn(|| Echo).expect("spawn");
    let mut raw = raw_tls(stream_addr, "localhost", &[]);
    raw.write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .expect("send a STOMP frame");
    let mut got = [0u8; 29];
    let mut n = 0;
    while n < got.len() {
        match raw.read(&mut got[n..]) {
            Ok(0) => panic!("the stream listener hung up before echoing"),
            Ok(k) => n += k,
            Err(e) => panic!(
                "waiting for the stream echo: {e}; logs: {}",
                String::from_utf8_lossy(&logs().0.lock().unwrap())
            ),
        }
    }
    assert_eq!(&got[..], b"CONNECT\naccept-version:1.2\n\n\0");
    drop(raw);
    bounded_shutdown(running, Duration::from_secs(10)).expect("shutdown");
}

#[test]
fn reading_pauses_under_backpressure_and_resumes() {
    let config = ServerConfig {
        max_backpressure: 256 << 10,
        ..tls_config(server_tls(&ca().leaf(&["localhost"])))
    };
    let server = TestServer::start(config, || Echo);
    let url = format!("wss://localhost:{}/", server.addr().port());
    let mut client = client_with(&url, &wss_config(ca().roots()));
    // Send without reading until the server stops reading us (rather than queue the echoes
    // without bound); the socket buffers on both sides take megabytes first.
    let message = pattern(32 << 10);
    let mut sent = 0;
    while server.stats().read_pauses == 0 {
        assert!(
            sent < 2000,
            "the server never paused reading after {sent} messages"
        );
        client
            .send_binary(&message)
            .expect("send (the server stopped reading for good?)");
        sent += 1;
    }
    for i in 0..sent {
        match read_event(&mut client, &format!("echo {i} of {sent}")) {
            OwnedEvent::Binary(got) => assert!(got == message, "echo {i} differs"),
            other => panic!("expected echo {i}, got {other:?}"),
        }
    }
    close_client(&mut client);
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// After a bad connection, a good one on the same (single-worker) server still works.
fn still_serves(server: &TestServer) {
    let mut c = wss_as(server.addr(), "localhost", ca().roots()).expect("a good client after");
    echo_text(&mut c, "undisturbed");
    close_client(&mut c);
}

#[test]
fn plain_http_to_the_tls_port_is_dropped_with_a_log_line() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let mut tcp = connect(server.addr());
    let peer = tcp.local_addr().expect("local addr");
    let started = Instant::now();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send plain HTTP");
    let got = expect_eof(&mut tcp);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not prompt: {:?}",
        started.elapsed()
    );
    // A TLS alert record (content type 21), not an HTTP answer.
    assert!(got.is_empty() || got[0] == 21, "unexpected answer {got:?}");
    let line = expect_log(peer, "TLS handshake failed");
    assert!(line.contains("plain HTTP"), "{line}");
    still_serves(&server);
    server.finish();
}

#[test]
fn tls_garbage_is_dropped_with_a_log_line() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let mut tcp = connect(server.addr());
    let peer = tcp.local_addr().expect("local addr");
    // A handshake record header, then a ClientHello that is nothing of the sort.
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend(pattern(64));
    tcp.write_all(&junk).expect("send garbage");
    expect_eof(&mut tcp);
    expect_log(peer, "TLS handshake failed");
    still_serves(&server);
    server.finish();
}

#[test]
fn a_trickled_client_hello_hits_the_handshake_deadline() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_secs(1),
        ..tls_config(server_tls(&ca().leaf(&["localhost"])))
    };
    let server = TestServer::start(config, || Echo);
    // A real ClientHello, sent a byte every 100 ms (it would take ~20 s).
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut hello = rustls::ClientConnection::new(ca().roots().config(), name).expect("client");
    let mut bytes = Vec::new();
    hello.write_tls(&mut bytes).expect("ClientHello");
    let mut tcp = connect(server.addr());
    let peer = tcp.local_addr().expect("local addr");
    let started = Instant::now();
    tcp.set_nonblocking(true).expect("nonblocking");
    let mut cut = None;
    for byte in bytes.iter().chain(std::iter::repeat(&0u8)) {
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => {
                cut = Some(started.elapsed());
                break;
            }
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                cut = Some(started.elapsed());
                break;
            }
            _ => {}
        }
        if tcp.write_all(&[*byte]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no cut within 5 s"
        );
        // Pacing, not synchronisation: the trickle itself.
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut = cut.expect("the server never hung up on the trickled ClientHello");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(4),
        "cut after {cut:?}, the deadline is 1 s"
    );
    expect_log(peer, "TLS handshake timed out");
    still_serves(&server);
    server.finish();
}

#[test]
fn a_tls_stream_connection_must_finish_its_handshake_in_time() {
    let leaf = ca().leaf(&["localhost"]);
    let config = ServerConfig {
        handshake_timeout: Duration::from_secs(1),
        stream_tls: Some(server_tls(&leaf).with_alpn(Vec::new())),
        ..tls_config(server_tls(&leaf))
    };
    let mut server = Server::bind("127.0.0.1:0".parse().expect("addr"), config).expect("bind");
    let stream_addr = server
        .bind_stream("127.0.0.1:0".parse().expect("addr"))
        .expect("bind stream");
    let running = server.spawn(|| Echo).expect("spawn");
    let mut tcp = connect(stream_addr);
    let peer = tcp.local_addr().expect("local addr");
    let started = Instant::now();
    expect_eof(&mut tcp);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    expect_log(peer, "TLS handshake timed out");
    bounded_shutdown(running, Duration::from_secs(10)).expect("shutdown");
}

#[test]
fn the_client_refuses_a_certificate_for_another_name() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let (tx, rx) = mpsc::channel();
    let addr = server.addr();
    std::thread::spawn(move || {
        let (local, result) = wss_from(addr, "127.0.0.1", ca().roots());
        let _ = tx.send((local, result.map(|_| ())));
    });
    let (local, result) = recv(&rx, "the wrong-name connect's result");
    match result {
        Err(ClientError::Tls(rustls::Error::InvalidCertificate(e))) => {
            assert!(
                matches!(
                    e,
                    rustls::CertificateError::NotValidForNameContext { .. }
                        | rustls::CertificateError::NotValidForName
                ),
                "{e:?}"
            );
        }
        other => panic!("expected a wrong-name refusal, got {other:?}"),
    }
    // The server hears why from the client's alert.
    expect_log(local, "TLS handshake failed: the client sent an alert");
    still_serves(&server);
    server.finish();
}

#[test]
fn the_client_refuses_an_expired_certificate() {
    let expired = ca().leaf_with(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = start(server_tls(&expired));
    let (local, result) = wss_from(server.addr(), "localhost", ca().roots());
    match result {
        Err(ClientError::Tls(rustls::Error::InvalidCertificate(e))) => {
            assert!(
                matches!(
                    e,
                    rustls::CertificateError::ExpiredContext { .. }
                        | rustls::CertificateError::Expired
                ),
                "{e:?}"
            );
        }
        other => panic!("expected an expired-certificate refusal, got {other:?}"),
    }
    expect_log(local, "TLS handshake failed: the client sent an alert");
    server.finish();
}

#[test]
fn the_client_refuses_an_unknown_ca_and_the_server_logs_the_alert() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let stranger = Ca::new();
    let tcp = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).expect("connect");
    let peer = tcp.local_addr().expect("local addr");
    let url = WsUrl::parse(&format!("wss://localhost:{}/", server.addr().port())).expect("url");
    match Client::handshake(tcp, &url, &wss_config(stranger.roots())) {
        Err(ClientError::Tls(rustls::Error::InvalidCertificate(_))) => {}
        other => panic!("expected an unknown-issuer refusal, got {other:?}"),
    }
    expect_log(peer, "TLS handshake failed");
    still_serves(&server);
    server.finish();
}

#[test]
fn ws_urls_without_tls_settings_use_the_platform_roots() {
    // No roots given: the platform's store, which does not know the test CA.
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let url = format!("wss://localhost:{}/", server.addr().port());
    match Client::connect_with(&url, &client_config()) {
        Err(ClientError::Tls(_)) | Err(ClientError::TlsConfig(_)) => {}
        other => panic!("expected the platform roots to refuse the test CA, got {other:?}"),
    }
    server.finish();
}

#[test]
fn bad_pem_is_an_error_not_a_panic() {
    let leaf = ca().leaf(&["localhost"]);
    assert!(ServerTls::from_pem(b"", leaf.key.as_bytes()).is_err());
    assert!(ServerTls::from_pem(leaf.chain.as_bytes(), b"junk").is_err());
    // A key that belongs to another certificate.
    let other = ca().leaf(&["localhost"]);
    assert!(ServerTls::from_pem(leaf.chain.as_bytes(), other.key.as_bytes()).is_err());
    assert!(ClientTls::with_roots_pem(b"nothing").is_err());
}

// ---------------------------------------------------------------------------------------------
// The event-loop client
// ---------------------------------------------------------------------------------------------

/// Each connection sends `count` messages of `size` bytes one at a time, each echo checked,
/// then closes; reports (echoes, closes with 1000) at the end.
struct Pinger {
    count: usize,
    size: usize,
    report: mpsc::Sender<Result<usize, String>>,
}

impl sockeye::client::ClientHandler for Pinger {
    type Data = usize;

    fn on_open(&mut self, conn: &mut sockeye::client::ClientConn<'_, usize>) {
        let _ = conn.send_binary(&pattern(self.size));
    }

    fn on_message(&mut self, conn: &mut sockeye::client::ClientConn<'_, usize>, m: Message<'_>) {
        assert!(m == Message::Binary(&pattern(self.size)), "echo differs");
        *conn.data_mut() += 1;
        if *conn.data() == self.count {
            let _ = conn.close(1000, "done");
        } else {
            let _ = conn.send_binary(&pattern(self.size));
        }
    }

    fn on_error(&mut self, _id: sockeye::client::ClientId, _d: &mut usize, e: &ClientError) {
        let _ = self.report.send(Err(e.to_string()));
    }

    fn on_close(
        &mut self,
        _id: sockeye::client::ClientId,
        echoes: &mut usize,
        code: u16,
        _r: &str,
    ) {
        let _ = self.report.send(if code == 1000 {
            Ok(*echoes)
        } else {
            Err(format!("close {code}"))
        });
    }
}

#[test]
fn the_event_loop_client_speaks_wss() {
    let server = start(server_tls(&ca().leaf(&["localhost"])));
    let (tx, rx) = mpsc::channel();
    let url = format!("wss://localhost:{}/", server.addr().port());
    let worker = spawn_bounded(move || {
        let target = sockeye::client::Target::from_url(&url).expect("target");
        assert!(target.secure);
        assert_eq!(target.server_name(), "localhost");
        let config = sockeye::client::LoopConfig {
            client: wss_config(ca().roots()),
            ..sockeye::client::LoopConfig::default()
        };
        let mut lp = sockeye::client::EventLoop::new(config).expect("loop");
        for _ in 0..20 {
            lp.connect(&target, 0).expect("connect");
        }
        let mut pinger = Pinger {
            count: 10,
            size: 100_000,
            report: tx,
        };
        lp.run_until(&mut pinger, Instant::now() + IO_TIMEOUT * 2)
            .expect("run");
    });
    for i in 0..20 {
        let got = recv(&rx, &format!("the end of connection {i} of 20"));
        assert_eq!(got, Ok(10), "connection {i}");
    }
    worker.join(IO_TIMEOUT * 3, "the client loop");
    server.finish();
}
