//! SockJS on real sockets, case by case as the protocol's own test suite (sockjs-protocol 0.3.3)
//! states them: the greeting, `/info`, the iframe page, sessions over every transport, framing,
//! close handling, `JSESSIONID`, HTTP/1.0 and 1.1, the JSON the protocol asks for; and the bad
//! input around it (broken payloads, unknown sessions, oversized bodies), requests handed
//! between workers, and what idle sessions cost.
//!
//! The server runs the same services as `examples/sockjs_test_server` on two workers, so that
//! requests of one session land on both. Every read has a timeout and names what it awaited.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use sockeye::client::OwnedEvent;
use sockeye::handshake::Request;
use sockeye::server::{Handler, Message, Rejection, ServerConfig, Session, Upgrading};
use sockeye::sockjs::Service;

/// Echo on every service; `/close` closes each session as it opens.
struct TestServices;

impl Handler for TestServices {
    type Data = String;

    fn on_upgrade(
        &mut self,
        _req: &Request<'_, '_>,
        up: &mut Upgrading,
    ) -> Result<String, Rejection> {
        Ok(up
            .sockjs
            .as_ref()
            .map(|(p, _)| p.clone())
            .unwrap_or_default())
    }

    fn on_open(&mut self, session: &mut Session<'_, String>) {
        if session.data() == "/close" {
            let _ = session.close(3000, "Go away!");
        }
    }

    fn on_overflow(&mut self, session: &mut Session<'_, String>, dropped: u32) {
        // Told, as a slow consumer is: nothing is lost in silence.
        let _ = session.close(1008, &format!("{dropped} dropped"));
    }

    fn on_message(&mut self, session: &mut Session<'_, String>, message: Message<'_>) {
        let last = matches!(message, Message::Text("close-after"));
        let _ = session.send(message);
        if last {
            // The echo, then the close: the client gets both, in that order.
            let _ = session.close(3001, "after");
        }
    }
}

fn services(disconnect_delay: Duration) -> Vec<Service> {
    let echo = Service {
        streaming_limit: 4096,
        disconnect_delay,
        ..Service::new("/echo")
    };
    let named = |prefix: &str| Service {
        prefix: prefix.into(),
        ..echo.clone()
    };
    vec![
        echo.clone(),
        Service {
            websocket: false,
            ..named("/disabled_websocket_echo")
        },
        Service {
            cookie_needed: true,
            ..named("/cookie_needed_echo")
        },
        named("/close"),
    ]
}

fn start_with(disconnect_delay: Duration, config: ServerConfig) -> TestServer {
    TestServer::start(
        ServerConfig {
            workers: 2,
            sockjs: services(disconnect_delay),
            ..config
        },
        || TestServices,
    )
}

fn start() -> TestServer {
    start_with(Duration::from_secs(5), test_config())
}

/// A fresh session path under `prefix`.
fn session(prefix: &str) -> String {
    let mut id = [0u8; 8];
    sockeye::client::os_random(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}/000/{id}")
}

/// An HTTP response read off a connection: head, then the body by whatever its head says.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn open(addr: SocketAddr) -> Http {
        Http {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send_version(method, path, headers, body, "1.1");
    }

    fn send_version(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        version: &str,
    ) {
        let mut req = format!("{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if method == "POST" || !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).expect("send a request");
    }

    fn fill(&mut self, what: &str) -> bool {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("no {what}: {e}"),
        }
    }

    fn line(&mut self, what: &str) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill(what), "the connection closed before {what}");
        }
    }

    fn exact(&mut self, n: usize, what: &str) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(what), "the connection closed before {what}");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response's head.
    fn head(&mut self) -> Reply {
        let status_line = self.line("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status in {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line("a header line");
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("a header");
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Reply {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// The next whole response.
    fn reply(&mut self) -> Reply {
        let mut reply = self.head();
        if reply.header("transfer-encoding") == Some("chunked") {
            while let Some(chunk) = self.chunk() {
                reply.body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = reply.header("content-length") {
            let len = len.parse().expect("a length");
            reply.body = self.exact(len, "a body");
        } else if !matches!(reply.status, 204 | 304) {
            while self.fill("a body up to EOF") {}
            reply.body = std::mem::take(&mut self.buf);
        }
        reply
    }

    /// The next chunk of a chunked body (`None` at its end).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let size = self.line("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        let data = self.exact(size + 2, "a chunk");
        (size > 0).then(|| data[..size].to_vec())
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut http = Http::open(addr);
    http.send(method, path, headers, body);
    http.reply()
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    request(addr, "POST", path, &[], body)
}

fn assert_not_cached(r: &Reply) {
    assert_eq!(
        r.header("cache-control"),
        Some("no-store, no-cache, must-revalidate, max-age=0")
    );
    assert!(r.header("expires").is_none() && r.header("last-modified").is_none());
}

fn assert_cors(r: &Reply, origin: Option<&str>) {
    let want = match origin {
        Some(o) if o != "null" => o,
        _ => "*",
    };
    assert_eq!(r.header("access-control-allow-origin"), Some(want));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[test]
fn greeting_iframe_and_info() {
    let server = start();
    let addr = server.addr();
    for url in ["/echo", "/echo/"] {
        let r = get(addr, url);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
        assert_eq!(r.text(), "Welcome to SockJS!\n");
        assert!(r.header("set-cookie").is_none());
    }
    for suffix in ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"] {
        assert_eq!(get(addr, &format!("/echo{suffix}")).status, 404, "{suffix}");
    }
    // The iframe page: cacheable, with an ETag that If-None-Match matches.
    let r = get(addr, "/echo/iframe.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert!(r.header("cache-control").unwrap().contains("public"));
    assert!(r
        .header("cache-control")
        .unwrap()
        .contains("max-age=31536000"));
    assert!(r.header("expires").is_some() && r.header("last-modified").is_none());
    let etag = r.header("etag").expect("an ETag").to_owned();
    assert!(r.text().contains("SockJS.bootstrap_iframe()"));
    assert!(r.text().contains("<script src=\"https://"));
    for suffix in ["/iframe-a.html", "/iframe-0.1.2abc-dirty.2144.html?t=123"] {
        let r2 = get(addr, &format!("/echo{suffix}"));
        assert_eq!((r2.status, r2.header("etag")), (200, Some(etag.as_str())));
    }
    for suffix in [
        "/iframe.htm",
        "/IFRAME.HTML",
        "/iframe.xml",
        "/iframe-/.html",
    ] {
        assert_eq!(get(addr, &format!("/echo{suffix}")).status, 404, "{suffix}");
    }
    let r = request(
        addr,
        "GET",
        "/echo/iframe.html",
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty() && r.header("content-type").is_none());
    // /info: not cached, CORS, fresh entropy each time.
    let info = |path: &str| {
        let r = get(addr, path);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=UTF-8")
        );
        assert_not_cached(&r);
        assert_cors(&r, None);
        assert!(r.header("set-cookie").is_none());
        r.text()
    };
    let a = info("/echo/info");
    assert!(a.contains("\"websocket\":true") && a.contains("\"cookie_needed\":false"));
    assert!(a.contains("\"origins\":[\"*:*\"]") && a.contains("\"entropy\":"));
    assert_ne!(a, info("/echo/info"), "the entropy changes");
    assert!(info("/disabled_websocket_echo/info").contains("\"websocket\":false"));
    assert!(info("/cookie_needed_echo/info").contains("\"cookie_needed\":true"));
    for origin in [None, Some("test"), Some("null")] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
        let r = request(addr, "OPTIONS", "/echo/info", &headers, b"");
        assert_eq!(r.status, 204);
        assert!(r
            .header("cache-control")
            .unwrap()
            .contains("max-age=31536000"));
        assert!(r.header("expires").is_some());
        let max_age: u64 = r.header("access-control-max-age").unwrap().parse().unwrap();
        assert!(max_age > 1_000_000);
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("OPTIONS, GET")
        );
        assert!(r.body.is_empty());
        assert_cors(&r, origin);
    }
    server.finish();
}

#[test]
fn a_polling_session_its_framing_and_its_bad_input() {
    let server = start();
    let addr = server.addr();
    let url = session("/echo");
    let r = post(addr, &format!("{url}/xhr"), b"");
    assert_eq!((r.status, r.text().as_str()), (200, "o\n"));
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_cors(&r, None);
    assert_not_cached(&r);
    // Messages in, the same back as one array; any content type.
    for ct in [
        "text/plain",
        "T",
        "application/json",
        "",
        "text/xml; charset=utf-8",
    ] {
        let r = request(
            addr,
            "POST",
            &format!("{url}/xhr_send"),
            &[("Content-Type", ct)],
            b"[\"a\"]",
        );
        assert_eq!(r.status, 204, "content type {ct:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
        assert_not_cached(&r);
    }
    let r = post(addr, &format!("{url}/xhr"), b"");
    assert_eq!(r.text(), "a[\"a\",\"a\",\"a\",\"a\",\"a\"]\n");
    // Bad payloads: the protocol's 500s, and the session goes on.
    let r = post(addr, &format!("{url}/xhr_send"), b"[\"x");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Broken JSON encoding."));
    for bad in [&b"{\"a\":1}"[..], b"\"x\"", b"[1,2]", b"nul"] {
        assert_eq!(post(addr, &format!("{url}/xhr_send"), bad).status, 500);
    }
    let r = post(addr, &format!("{url}/xhr_send"), b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Payload expected."));
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), b"[\"b\"]").status,
        204
    );
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "a[\"b\"]\n");
    // Sending to a session nobody opened: 404, with the CORS headers a cross-origin page
    // needs to see it.
    let r = request(
        addr,
        "POST",
        "/echo/000/nobody/xhr_send",
        &[("Origin", "http://a.example")],
        b"[\"x\"]",
    );
    assert_eq!(r.status, 404);
    assert_cors(&r, Some("http://a.example"));
    // A second receiving request while one waits: refused, the first stays.
    let mut first = Http::open(addr);
    first.send("POST", &format!("{url}/xhr"), &[], b"");
    std::thread::sleep(Duration::from_millis(100));
    let r = post(addr, &format!("{url}/xhr"), b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "c[2010,\"Another connection still open\"]\n")
    );
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), b"[\"c\"]").status,
        204
    );
    assert_eq!(first.reply().text(), "a[\"c\"]\n", "the waiting one got it");
    // CORS preflights and requested headers.
    for t in ["xhr", "xhr_send", "xhr_streaming"] {
        let r = request(
            addr,
            "OPTIONS",
            &format!("/echo/abc/abc/{t}"),
            &[("Origin", "http://a.b")],
            b"",
        );
        assert_eq!(r.status, 204, "{t}");
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("OPTIONS, POST")
        );
        assert_cors(&r, Some("http://a.b"));
    }
    let r = request(
        addr,
        "POST",
        &format!("{}/xhr", session("/echo")),
        &[("Access-Control-Request-Headers", "a, b, c")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("a, b, c"));
    // Bad URLs.
    for bad in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
        assert_eq!(
            post(addr, &format!("/echo{bad}/xhr"), b"").status,
            404,
            "{bad}"
        );
    }
    assert_eq!(get(addr, &format!("{url}/xhr")).status, 404, "wrong method");
    server.finish();
}

#[test]
fn the_close_service_and_cookies() {
    let server = start();
    let addr = server.addr();
    let url = session("/close");
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "o\n");
    for _ in 0..2 {
        let r = post(addr, &format!("{url}/xhr"), b"");
        assert_eq!(
            r.text(),
            "c[3000,\"Go away!\"]\n",
            "served again until forgotten"
        );
    }
    // JSESSIONID: set on session requests, echoed when the client has one, never on /info.
    let r = post(
        addr,
        &format!("{}/xhr", session("/cookie_needed_echo")),
        b"",
    );
    assert_eq!(r.header("set-cookie"), Some("JSESSIONID=dummy; path=/"));
    let r = request(
        addr,
        "POST",
        &format!("{}/xhr", session("/cookie_needed_echo")),
        &[("Cookie", "JSESSIONID=abcdef")],
        b"",
    );
    assert_eq!(r.header("set-cookie"), Some("JSESSIONID=abcdef; path=/"));
    assert!(post(addr, &format!("{}/xhr", session("/echo")), b"")
        .header("set-cookie")
        .is_none());
    // What a session sent before it closed reaches the client before the close frame: on a
    // polling transport the messages come with one request, the close frame with the next.
    let url = session("/echo");
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "o\n");
    let r = post(
        addr,
        &format!("{url}/xhr_send"),
        b"[\"one\",\"close-after\"]",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").text(),
        "a[\"one\",\"close-after\"]\n"
    );
    assert_eq!(
        post(addr, &format!("{url}/xhr"), b"").text(),
        "c[3001,\"after\"]\n"
    );
    // On a streaming one, both in the same response.
    let url = session("/echo");
    let mut s = Http::open(addr);
    s.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    s.head();
    s.chunk();
    assert_eq!(s.chunk(), Some(b"o\n".to_vec()));
    let r = post(addr, &format!("{url}/xhr_send"), b"[\"close-after\"]");
    assert_eq!(r.status, 204);
    assert_eq!(s.chunk(), Some(b"a[\"close-after\"]\n".to_vec()));
    assert_eq!(s.chunk(), Some(b"c[3001,\"after\"]\n".to_vec()));
    server.finish();
}

#[test]
fn streaming_transports_prelude_framing_and_limit() {
    let server = start();
    let addr = server.addr();
    // xhr_streaming: the 2 KiB prelude, the open frame, messages, and the end after 4,096 bytes.
    let url = session("/echo");
    let mut s = Http::open(addr);
    s.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    let head = s.head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_not_cached(&head);
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    assert_eq!(s.chunk(), Some(prelude));
    assert_eq!(s.chunk(), Some(b"o\n".to_vec()));
    let msg = format!("\"{}\"", "x".repeat(128));
    for i in 0..31 {
        assert_eq!(
            post(
                addr,
                &format!("{url}/xhr_send"),
                format!("[{msg}]").as_bytes()
            )
            .status,
            204
        );
        assert_eq!(
            s.chunk(),
            Some(format!("a[{msg}]\n").into_bytes()),
            "message {i}"
        );
    }
    assert_eq!(s.chunk(), None, "ended after 4,096 bytes of frames");
    // eventsource.
    let url = session("/echo");
    let mut s = Http::open(addr);
    s.send("GET", &format!("{url}/eventsource"), &[], b"");
    let head = s.head();
    assert_eq!(
        head.header("content-type"),
        Some("text/event-stream; charset=UTF-8")
    );
    assert_eq!(s.chunk(), Some(b"\r\n".to_vec()));
    assert_eq!(s.chunk(), Some(b"data: o\r\n\r\n".to_vec()));
    post(addr, &format!("{url}/xhr_send"), br#"["  \u0000\n\r "]"#);
    assert_eq!(
        s.chunk(),
        Some(br#"data: a["  \u0000\n\r "]"#.iter().chain(b"\r\n\r\n").copied().collect())
    );
    // htmlfile: a callback, a page over 1 KiB, script-wrapped frames.
    assert_eq!(get(addr, "/echo/a/a/htmlfile").status, 500);
    assert!(get(addr, "/echo/a/a/htmlfile")
        .text()
        .contains("\"callback\" parameter required"));
    assert_eq!(get(addr, "/echo/a/a/htmlfile?c=alert(1)").status, 500);
    let url = session("/echo");
    let mut s = Http::open(addr);
    s.send("GET", &format!("{url}/htmlfile?c=%63allback"), &[], b"");
    assert_eq!(
        s.head().header("content-type"),
        Some("text/html; charset=UTF-8")
    );
    let page = String::from_utf8(s.chunk().unwrap()).unwrap();
    assert!(page.len() > 1024 && page.contains("var c = parent.callback;"));
    assert_eq!(
        s.chunk(),
        Some(b"<script>\np(\"o\");\n</script>\r\n".to_vec())
    );
    post(addr, &format!("{url}/xhr_send"), b"[\"x\"]");
    assert_eq!(
        s.chunk(),
        Some(b"<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n".to_vec())
    );
    server.finish();
}

#[test]
fn heart_beats_reach_waiting_and_streaming_receivers() {
    let server = TestServer::start(
        ServerConfig {
            workers: 1,
            sockjs: vec![Service {
                heartbeat: Duration::from_millis(200),
                ..Service::new("/echo")
            }],
            ..test_config()
        },
        || TestServices,
    );
    let addr = server.addr();
    let url = session("/echo");
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "o\n");
    // A poll with nothing to say gets a heart-beat, and ends.
    let started = Instant::now();
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "h\n");
    assert!(started.elapsed() >= Duration::from_millis(150));
    // A streaming response gets them as chunks, while it stays open.
    let url = session("/echo");
    let mut s = Http::open(addr);
    s.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    s.head();
    s.chunk();
    assert_eq!(s.chunk(), Some(b"o\n".to_vec()));
    for _ in 0..2 {
        assert_eq!(s.chunk(), Some(b"h\n".to_vec()));
    }
    // And so does the WebSocket transport.
    let mut ws = client(&format!("ws://{addr}{}/websocket", session("/echo")));
    for what in ["the open frame", "a heart-beat", "another heart-beat"] {
        match read_event(&mut ws, what) {
            OwnedEvent::Text(t) => assert_eq!(t, if what == "the open frame" { "o" } else { "h" }),
            other => panic!("expected {what}, got {other:?}"),
        }
    }
    close_client(&mut ws);
    server.finish();
}

#[test]
fn jsonp_polling() {
    let server = start();
    let addr = server.addr();
    let url = session("/echo");
    let r = get(addr, &format!("{url}/jsonp?c=%63allback"));
    assert_eq!(r.text(), "callback(\"o\");\r\n");
    assert_eq!(
        r.header("content-type"),
        Some("application/javascript; charset=UTF-8")
    );
    assert_not_cached(&r);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &form,
        b"d=%5B%22x%22%5D",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &[("Content-Type", "text/plain")],
        b"[\"%61bc\"]",
    );
    assert_eq!(r.text(), "ok");
    assert_eq!(
        get(addr, &format!("{url}/jsonp?c=x")).text(),
        "x(\"a[\\\"x\\\",\\\"%61bc\\\"]\");\r\n"
    );
    let r = request(
        addr,
        "POST",
        &format!("{url}/jsonp_send"),
        &form,
        b"d=%5B%22x",
    );
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Broken JSON encoding."));
    for body in [&b""[..], b"d=", b"p=p"] {
        let r = request(addr, "POST", &format!("{url}/jsonp_send"), &form, body);
        assert_eq!(r.status, 500);
        assert!(r.text().contains("Payload expected."));
    }
    assert_eq!(get(addr, "/echo/a/a/jsonp").status, 500);
    server.finish();
}

#[test]
fn closing_and_interrupted_receivers() {
    let server = start();
    let addr = server.addr();
    // The close service over streaming: the close frame, then every later request gets it.
    let url = session("/close");
    let mut r1 = Http::open(addr);
    r1.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    r1.head();
    r1.chunk();
    assert_eq!(r1.chunk(), Some(b"o\n".to_vec()));
    assert_eq!(r1.chunk(), Some(b"c[3000,\"Go away!\"]\n".to_vec()));
    assert_eq!(r1.chunk(), None);
    let mut r2 = Http::open(addr);
    r2.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    r2.head();
    r2.chunk();
    assert_eq!(r2.chunk(), Some(b"c[3000,\"Go away!\"]\n".to_vec()));
    assert_eq!(r2.chunk(), None);
    // A second streaming request is refused; the first one's client goes away: the session is
    // interrupted, and says so.
    let url = session("/echo");
    let mut r1 = Http::open(addr);
    r1.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    r1.head();
    r1.chunk();
    assert_eq!(r1.chunk(), Some(b"o\n".to_vec()));
    let mut r2 = Http::open(addr);
    r2.send("POST", &format!("{url}/xhr_streaming"), &[], b"");
    r2.head();
    r2.chunk();
    assert_eq!(
        r2.chunk(),
        Some(b"c[2010,\"Another connection still open\"]\n".to_vec())
    );
    assert_eq!(r2.chunk(), None);
    drop(r1);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let r = post(addr, &format!("{url}/xhr"), b"");
        if r.text() == "c[1002,\"Connection interrupted\"]\n" {
            break;
        }
        assert_eq!(r.text(), "c[2010,\"Another connection still open\"]\n");
        assert!(
            Instant::now() < deadline,
            "the interruption was never noticed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.finish();
}

#[test]
fn http_1_0_and_keep_alive() {
    let server = start();
    let addr = server.addr();
    // HTTP/1.1 keeps the connection; both requests answered on it.
    let mut c = Http::open(addr);
    for _ in 0..2 {
        c.send("GET", "/echo", &[("Connection", "Keep-Alive")], b"");
        let r = c.reply();
        assert_eq!(r.text(), "Welcome to SockJS!\n");
    }
    // HTTP/1.0 with keep-alive: a length, the connection kept.
    let mut c = Http::open(addr);
    c.send_version("GET", "/echo", &[("Connection", "Keep-Alive")], b"", "1.0");
    let r = c.reply();
    assert_eq!(r.header("content-length"), Some("19"));
    assert!(r.header("transfer-encoding").is_none());
    // A streaming response to HTTP/1.0: no chunking, no length, closed at the end.
    let url = session("/close");
    let mut c = Http::open(addr);
    c.send_version(
        "POST",
        &format!("{url}/xhr_streaming"),
        &[("Connection", "Keep-Alive")],
        b"",
        "1.0",
    );
    let head = c.head();
    assert!(head.header("transfer-encoding").is_none() && head.header("content-length").is_none());
    let mut body = Vec::new();
    while c.fill("the streaming body up to EOF") {}
    body.append(&mut c.buf);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with(&"h".repeat(2048)));
    assert!(text.ends_with("\no\nc[3000,\"Go away!\"]\n"), "{text:?}");
    server.finish();
}

#[test]
fn the_websocket_transports() {
    let server = start();
    let url = |path: &str| format!("ws://{}{path}", server.addr());
    let text = |c: &mut sockeye::client::Client, what: &str| match read_event(c, what) {
        OwnedEvent::Text(t) => t,
        other => panic!("expected {what} as text, got {other:?}"),
    };
    let mut ws = client(&url(&format!("{}/websocket", session("/echo"))));
    assert_eq!(text(&mut ws, "the open frame"), "o");
    ws.send_text("").unwrap(); // ignored
    ws.send_text("[\"a\"]").unwrap();
    assert_eq!(text(&mut ws, "the echo"), "a[\"a\"]");
    ws.send_text("\"b\"").unwrap();
    assert_eq!(text(&mut ws, "the echo of a bare string"), "a[\"b\"]");
    close_client(&mut ws);
    // The close service: the close frame, then the WebSocket closes.
    let mut ws = client(&url(&format!("{}/websocket", session("/close"))));
    assert_eq!(text(&mut ws, "the open frame"), "o");
    assert_eq!(text(&mut ws, "the close frame"), "c[3000,\"Go away!\"]");
    match read_event(&mut ws, "the WebSocket close") {
        OwnedEvent::Close(Some((code, _))) => assert_eq!(code, 3000),
        other => panic!("expected a close, got {other:?}"),
    }
    // Broken JSON ends the session.
    let mut ws = client(&url(&format!("{}/websocket", session("/echo"))));
    assert_eq!(text(&mut ws, "the open frame"), "o");
    ws.send_text("[\"a").unwrap();
    let mut closed = false;
    for _ in 0..3 {
        match ws.read() {
            Ok(OwnedEvent::Close(_)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "a broken payload closes the session");
    // The raw WebSocket: no SockJS framing at all.
    let mut ws = client(&url("/echo/websocket"));
    ws.send_text("Hello world!\u{ffff}").unwrap();
    assert_eq!(text(&mut ws, "the raw echo"), "Hello world!\u{ffff}");
    close_client(&mut ws);
    // A plain GET is not an upgrade; POST is not allowed; the disabled service has none.
    let r = get(server.addr(), "/echo/0/0/websocket");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Can \"Upgrade\" only to \"WebSocket\"."));
    let r = post(server.addr(), "/echo/0/0/websocket", b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(
        get(server.addr(), "/disabled_websocket_echo/0/0/websocket").status,
        404
    );
    server.finish();
}

#[test]
fn the_server_escapes_what_the_protocol_names() {
    let server = start();
    let addr = server.addr();
    let url = session("/echo");
    post(addr, &format!("{url}/xhr"), b"");
    // Every character the server must escape, from U+00FF up, sent raw (as the suite does).
    let mut raw = String::new();
    let mut escaped = String::new();
    for unit in 0xffu32..=0xffff {
        let Some(c) = char::from_u32(unit) else {
            continue;
        };
        if matches!(unit, 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff) {
            raw.push(c);
            escaped.push_str(&format!("\\u{unit:04x}"));
        }
    }
    let r = post(
        addr,
        &format!("{url}/xhr_send"),
        format!("[\"{raw}\"]").as_bytes(),
    );
    assert_eq!(r.status, 204);
    let r = post(addr, &format!("{url}/xhr"), b"");
    assert_eq!(r.text(), format!("a[\"{escaped}\"]\n"));
    server.finish();
}

#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let server = start_with(
        Duration::from_secs(5),
        ServerConfig {
            max_http_body: 4096,
            ..test_config()
        },
    );
    let addr = server.addr();
    let url = session("/echo");
    post(addr, &format!("{url}/xhr"), b"");
    // Sends have the service's own limit (8 MiB by default), not the plain-HTTP one: a batch
    // of 100 KiB goes through (sockjs-client batches what is sent while a send is out).
    let big = "x".repeat(100 << 10);
    let batch = format!("[\"{big}\",\"second\"]");
    assert_eq!(
        post(addr, &format!("{url}/xhr_send"), batch.as_bytes()).status,
        204
    );
    let echoed = post(addr, &format!("{url}/xhr"), b"").text();
    assert_eq!(echoed, format!("a[\"{big}\",\"second\"]\n"));
    let mut c = Http::open(addr);
    // Only the head: the answer comes before any of the 16 MiB announced.
    c.stream
        .write_all(
            format!("POST {url}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(c.reply().status, 413);
    // A plain HTTP request keeps the plain limit.
    let r = request(addr, "POST", "/plain", &[], &[b'y'; 8192]);
    assert_eq!(r.status, 413);
    server.finish();
}

#[test]
fn a_session_that_does_not_poll_overflows_and_is_told() {
    let server = start_with(
        Duration::from_secs(5),
        ServerConfig {
            max_backpressure: 16 << 10,
            ..test_config()
        },
    );
    let addr = server.addr();
    let url = session("/echo");
    assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "o\n");
    // Echoes of 1 KB while nobody polls: the queue passes its cap of 16 KiB, a message is
    // dropped, the handler closes the session, and later sends find it gone (404).
    let kb = "k".repeat(1000);
    let mut accepted = 0;
    loop {
        let r = post(
            addr,
            &format!("{url}/xhr_send"),
            format!("[\"{kb}\"]").as_bytes(),
        );
        if r.status == 404 {
            break;
        }
        assert_eq!(r.status, 204);
        accepted += 1;
        assert!(accepted < 40, "the session was never let go");
    }
    // What fitted, then the close the handler chose in on_overflow.
    let first = post(addr, &format!("{url}/xhr"), b"").text();
    assert!(
        first.starts_with("a[") && first.len() <= 17 << 10,
        "{} bytes",
        first.len()
    );
    let kept = first.matches(&kb).count();
    assert_eq!(kept, accepted - 1, "all but the one dropped");
    let close = post(addr, &format!("{url}/xhr"), b"").text();
    assert_eq!(close, "c[1008,\"1 dropped\"]\n");
    server.finish();
}

#[test]
fn sessions_span_workers_and_idle_ones_cost_little_and_are_reaped() {
    // A disconnect delay long enough to open every session before the first is reaped.
    let server = start_with(Duration::from_secs(8), test_config());
    let addr = server.addr();
    // Requests of one session on fresh connections land on either worker: the owner gets them.
    for i in 0..40 {
        let url = session("/echo");
        assert_eq!(post(addr, &format!("{url}/xhr"), b"").text(), "o\n");
        let msg = format!("[\"m{i}\"]");
        assert_eq!(
            post(addr, &format!("{url}/xhr_send"), msg.as_bytes()).status,
            204
        );
        assert_eq!(
            post(addr, &format!("{url}/xhr"), b"").text(),
            format!("a{msg}\n")
        );
    }
    let handed = server.stats().handed_over;
    assert!(handed > 0, "no request was handed between the two workers");
    // 10,000 idle sessions, opened over one kept-alive connection.
    let rss = || -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        Some(statm.split_whitespace().nth(1)?.parse::<usize>().ok()? * 4096)
    };
    const SESSIONS: usize = 10_000;
    let before_sessions = server.stats().sockjs_sessions;
    let before = rss();
    let mut c = Http::open(addr);
    for _ in 0..SESSIONS {
        c.send("POST", &format!("{}/xhr", session("/echo")), &[], b"");
        assert_eq!(c.reply().text(), "o\n");
    }
    let after = rss();
    let open = server.stats().sockjs_sessions - before_sessions;
    assert_eq!(open, SESSIONS);
    if let (Some(a), Some(b)) = (after, before) {
        let per = a.saturating_sub(b) / SESSIONS;
        println!("{SESSIONS} idle SockJS sessions: {per} bytes each (RSS)");
        assert!(per <= 2048, "an idle session costs {per} bytes");
    }
    // The disconnect delay (8 s here) reaps them.
    let deadline = Instant::now() + Duration::from_secs(25);
    while server.stats().sockjs_sessions > 0 {
        assert!(
            Instant::now() < deadline,
            "{} sessions never reaped",
            server.stats().sockjs_sessions
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("requests handed between workers: {handed}");
    server.finish();
}
