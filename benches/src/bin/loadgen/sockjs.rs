//! `loadgen sockjs`: N SockJS sessions echoing over `xhr_streaming`, as `sockjs-client` runs
//! that transport, in one thread on a small mio loop.
//!
//! Each session has two connections. The receiving one POSTs `/{prefix}/{server}/{id}/
//! xhr_streaming` and reads the chunked response: the prelude (2,048 `h` and a newline),
//! then one frame a line: `o` (open), `h` (heart-beat), `a[...]` (messages), `c[...]` (close).
//! When the server ends a response (its streaming limit), the session goes on with a new POST,
//! on the same connection when it was kept alive, on a new one otherwise. The sending
//! connection (keep-alive) POSTs `xhr_send` requests, one at a time as a browser does, each
//! with up to `--batch` messages (`["...","..."]`), while at most `--window` messages are
//! without their echo. Every echo is checked, in order, against what the session sent, and its
//! round trip timed from the POST to the frame.
//!
//! Stages, driven by the loop: open the sessions (paced) → warm up → measure → drain (stop
//! sending; what has not come back in 5 s is lost) → close every connection → report.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::figures::{Figures, Measured};
use crate::histogram::Histogram;
use crate::{bounded, json_num, json_str, sys, Opts, MAX_SECS};

mod frames;
mod http;

use http::Event;

/// How long the drain waits for echoes before counting them lost.
const DRAIN: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(5);
/// Errors printed in full; the rest are only counted.
const PRINTED_ERRORS: usize = 5;
/// Most sessions one run may ask for (each has two connections).
const MAX_SESSIONS: usize = 10_000;
/// The `xhr_streaming` prelude: 2,048 `h` before the first frame.
const PRELUDE: usize = 2048;
/// Bytes of a payload before the filler: `{session:06}:{seq:012}:`.
const HEADER: usize = 20;
/// Most bytes of one `xhr_send` body (Sockeye takes 64 KiB by default).
const MAX_BODY: usize = 60 << 10;

pub struct Settings {
    url: String,
    addr: SocketAddr,
    host: String,
    prefix: String,
    sessions: usize,
    size: usize,
    window: usize,
    batch: usize,
    secs: f64,
    warmup: f64,
    pid: Option<u32>,
    rate: f64,
}

/// `http://HOST:PORT/PREFIX`: the address (loopback only), the Host header, the prefix.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let prefix = path.trim_end_matches('/');
    if prefix.is_empty() || prefix.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url}: the URL needs the service's prefix, as in /echo"
        ));
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
    }) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{url} resolves to {}: only loopback targets (127.0.0.0/8, [::1]) are allowed",
            addr.ip()
        ));
    }
    Ok((addr, authority.to_string(), prefix.to_string()))
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut o = Opts::parse(args, &[])?;
    let url: String = o.get("url", "http://127.0.0.1:8081/echo".to_string())?;
    let (addr, host, prefix) = parse_url(&url)?;
    let s = Settings {
        url,
        addr,
        host,
        prefix,
        sessions: bounded("sessions", o.get("sessions", 100)?, 1, MAX_SESSIONS)?,
        size: bounded("size", o.get("size", 100)?, HEADER + 1, 16 << 10)?,
        window: bounded("window", o.get("window", 8)?, 1, 4096)?,
        batch: bounded("batch", o.get("batch", 1)?, 1, 4096)?,
        secs: bounded("secs", o.get("secs", 5.0)?, 0.1, MAX_SECS)?,
        warmup: bounded("warmup", o.get("warmup", 1.0)?, 0.0, MAX_SECS)?,
        pid: o.opt("pid")?,
        rate: bounded("rate", o.get("rate", 1000.0)?, 1.0, 1e6)?,
    };
    o.finish()?;
    let body = s.batch.min(s.window) * (s.size + 3) + 2;
    if body > MAX_BODY {
        return Err(format!(
            "--batch {} × --size {} makes xhr_send bodies of {body} bytes: more than {MAX_BODY}",
            s.batch, s.size
        ));
    }
    let limit = sys::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if 2 * s.sessions as u64 + 64 > limit {
        return Err(format!(
            "{} sessions need {} connections: more open files than this process may have ({limit})",
            s.sessions,
            2 * s.sessions
        ));
    }
    Ok(s)
}

/// One TCP connection of a session.
#[derive(Default)]
struct Conn {
    stream: Option<TcpStream>,
    connected: bool,
    /// Written, not yet taken by the socket.
    out: Vec<u8>,
    /// The peer hung up: read to the end.
    hup: bool,
    responses: http::Responses,
}

impl Conn {
    /// Opens a new connection for token `token`, dropping the old one (and what it had
    /// waiting): what goes into `out` next is written once it is connected.
    fn connect(&mut self, poll: &Poll, addr: SocketAddr, token: Token) -> io::Result<()> {
        self.drop_stream(poll);
        let mut stream = TcpStream::connect(addr)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(stream);
        Ok(())
    }

    fn drop_stream(&mut self, poll: &Poll) {
        if let Some(mut stream) = self.stream.take() {
            let _ = poll.registry().deregister(&mut stream);
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.connected = false;
        self.hup = false;
        self.out.clear();
        self.responses = http::Responses::default();
    }

    /// Writes what is waiting.
    fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut().filter(|_| self.connected) else {
            return Ok(());
        };
        let mut written = 0;
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.drain(..written);
        Ok(())
    }
}

/// A session's own state (its connections apart, so that both can be borrowed with it).
struct State {
    index: usize,
    /// The whole `xhr_streaming` request.
    streaming: Vec<u8>,
    /// The head of an `xhr_send` request up to its `Content-Length` value.
    send_head: Vec<u8>,
    lines: frames::Lines,
    /// The next line of the receiving response is its prelude.
    prelude: bool,
    /// The open frame came.
    opened: bool,
    /// Given up: an error, or a close frame.
    failed: bool,
    sent: u64,
    received: u64,
    /// When each message without its echo was posted.
    in_flight: VecDeque<Instant>,
    /// Messages in the `xhr_send` being answered (0: none outstanding).
    posting: usize,
    /// Receiving responses this session has had.
    responses: u64,
}

struct Session {
    recv: Conn,
    send: Conn,
    st: State,
}

fn recv_token(index: usize) -> Token {
    Token(index * 2)
}

fn send_token(index: usize) -> Token {
    Token(index * 2 + 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Opening,
    Warmup,
    Measure,
    Drain,
    Done,
}

/// What the measured window saw.
#[derive(Default)]
struct Window {
    start: Option<Instant>,
    end: Option<Instant>,
    server_cpu: [Option<Duration>; 2],
    own_cpu: [Duration; 2],
    messages: u64,
    bytes: u64,
    posts: u64,
    a_frames: u64,
    streams_ended: u64,
    latency: Histogram,
}

/// Everything but the sessions: the settings, the stage, the counts.
struct Bench {
    s: Settings,
    /// Random letters; the filler of message `seq` of session `i` is a slice of it at an
    /// offset depending on both, so a reordered, mixed-up or lost message shows.
    pattern: String,
    /// A run's own session ids (`{nonce}-{index}`).
    nonce: u32,
    expected: String,
    scratch: String,
    stage: Stage,
    stage_at: Instant,
    launched: usize,
    opened: usize,
    failed: usize,
    in_flight: u64,
    sending: bool,
    window: Window,
    // Totals over the whole run.
    posts: u64,
    posted: u64,
    a_frames: u64,
    heartbeats: u64,
    streams_ended: u64,
    recv_reconnects: u64,
    send_reconnects: u64,
    /// Frames whose line did not end in the read (or chunk) it began in.
    split_frames: u64,
    /// Chunks that ended in the middle of a frame (the server split it).
    split_chunks: u64,
    chunks: u64,
    // Errors.
    mismatches: u64,
    lost: u64,
    http_errors: u64,
    protocol_errors: u64,
    conn_errors: u64,
    closed_by_server: u64,
    printed: usize,
    /// Connections with something new to write this turn.
    dirty: Vec<Token>,
}

fn offset(index: usize, seq: u64) -> usize {
    ((seq + index as u64 * 31) % 251) as usize
}

/// Message `seq` of session `index`, into `out`.
fn payload(pattern: &str, size: usize, index: usize, seq: u64, out: &mut String) {
    out.clear();
    let _ = write!(out, "{:06}:{:012}:", index % 1_000_000, seq);
    let at = offset(index, seq);
    out.push_str(&pattern[at..at + (size - HEADER)]);
}

impl Bench {
    fn new(s: Settings) -> Bench {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let pattern = (0..s.size + 251)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
        Bench {
            s,
            pattern,
            nonce,
            expected: String::new(),
            scratch: String::new(),
            stage: Stage::Opening,
            stage_at: Instant::now(),
            launched: 0,
            opened: 0,
            failed: 0,
            in_flight: 0,
            sending: true,
            window: Window::default(),
            posts: 0,
            posted: 0,
            a_frames: 0,
            heartbeats: 0,
            streams_ended: 0,
            recv_reconnects: 0,
            send_reconnects: 0,
            split_frames: 0,
            split_chunks: 0,
            chunks: 0,
            mismatches: 0,
            lost: 0,
            http_errors: 0,
            protocol_errors: 0,
            conn_errors: 0,
            closed_by_server: 0,
            printed: 0,
            dirty: Vec::new(),
        }
    }

    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self.printed < PRINTED_ERRORS {
            self.printed += 1;
            eprintln!("error: {what}");
        }
    }

    fn new_session(&self, index: usize) -> Session {
        let (s, id) = (&self.s, format!("{:08x}-{index}", self.nonce));
        let server = format!("{:03}", index % 1000);
        let streaming = format!(
            "POST {}/{server}/{id}/xhr_streaming HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            s.prefix, s.host
        )
        .into_bytes();
        let send_head = format!(
            "POST {}/{server}/{id}/xhr_send HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: ",
            s.prefix, s.host
        )
        .into_bytes();
        Session {
            recv: Conn::default(),
            send: Conn::default(),
            st: State {
                index,
                streaming,
                send_head,
                lines: frames::Lines::default(),
                prelude: true,
                opened: false,
                failed: false,
                sent: 0,
                received: 0,
                in_flight: VecDeque::with_capacity(self.s.window),
                posting: 0,
                responses: 0,
            },
        }
    }

    /// Posts the next `xhr_send` if none is outstanding and the window has room.
    fn pump(&mut self, poll: &Poll, send: &mut Conn, st: &mut State, now: Instant) {
        if !self.sending || st.failed || !st.opened || st.posting > 0 {
            return;
        }
        let room = self.s.window.saturating_sub(st.in_flight.len());
        let n = room.min(self.s.batch);
        if n == 0 {
            return;
        }
        if send.stream.is_none() {
            if let Err(e) = send.connect(poll, self.s.addr, send_token(st.index)) {
                self.conn_errors += 1;
                self.complain(format_args!(
                    "session {}: connect (xhr_send): {e}",
                    st.index
                ));
                return self.fail(poll, send, st);
            }
        }
        let mut body = Vec::with_capacity(n * (self.s.size + 3) + 2);
        body.push(b'[');
        for k in 0..n {
            if k > 0 {
                body.push(b',');
            }
            payload(
                &self.pattern,
                self.s.size,
                st.index,
                st.sent,
                &mut self.expected,
            );
            body.push(b'"');
            body.extend_from_slice(self.expected.as_bytes());
            body.push(b'"');
            st.sent += 1;
            st.in_flight.push_back(now);
        }
        body.push(b']');
        self.in_flight += n as u64;
        st.posting = n;
        self.dirty.push(send_token(st.index));
        send.out.extend_from_slice(&st.send_head);
        let _ = write!(send.out, "{}\r\n\r\n", body.len());
        send.out.extend_from_slice(&body);
    }

    /// Gives a session up: its connections closed, what it had in flight lost.
    fn fail(&mut self, poll: &Poll, conn: &mut Conn, st: &mut State) {
        conn.drop_stream(poll);
        if !st.failed {
            st.failed = true;
            self.lost += st.in_flight.len() as u64;
            self.in_flight -= st.in_flight.len() as u64;
            st.in_flight.clear();
            if !st.opened && self.stage == Stage::Opening {
                self.failed += 1;
            }
        }
    }

    /// One line of the receiving response.
    fn frame(&mut self, st: &mut State, line: &[u8], now: Instant) -> Result<(), String> {
        if std::mem::take(&mut st.prelude) {
            if line.len() == PRELUDE && line.iter().all(|&b| b == b'h') {
                return Ok(());
            }
            return Err(format!(
                "response {} did not start with the prelude ({} bytes: {:?}...)",
                st.responses,
                line.len(),
                String::from_utf8_lossy(&line[..line.len().min(40)])
            ));
        }
        match line.first() {
            Some(b'o') if line.len() == 1 => {
                if st.opened {
                    return Err("a second open frame".into());
                }
                st.opened = true;
                if self.stage == Stage::Opening {
                    self.opened += 1;
                }
                Ok(())
            }
            Some(b'h') if line.len() == 1 => {
                self.heartbeats += 1;
                Ok(())
            }
            Some(b'a') => {
                if !st.opened {
                    return Err("messages before the open frame".into());
                }
                self.a_frames += 1;
                if self.stage == Stage::Measure {
                    self.window.a_frames += 1;
                }
                let mut scratch = std::mem::take(&mut self.scratch);
                let mut problem = None;
                let result = frames::strings(&line[1..], &mut scratch, &mut |text| {
                    if problem.is_none() {
                        problem = self.message(st, text, now).err();
                    }
                });
                self.scratch = scratch;
                result?;
                problem.map_or(Ok(()), Err)
            }
            Some(b'c') => {
                self.closed_by_server += 1;
                Err(format!(
                    "closed by the server: {}",
                    String::from_utf8_lossy(line)
                ))
            }
            _ => Err(format!(
                "unknown frame {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )),
        }
    }

    /// One echoed message.
    fn message(&mut self, st: &mut State, text: &str, now: Instant) -> Result<(), String> {
        payload(
            &self.pattern,
            self.s.size,
            st.index,
            st.received,
            &mut self.expected,
        );
        if text != self.expected {
            self.mismatches += 1;
            self.complain(format_args!(
                "session {}: echo {} differs: {:?}",
                st.index,
                st.received,
                &text[..text.len().min(40)]
            ));
        }
        st.received += 1;
        let Some(sent_at) = st.in_flight.pop_front() else {
            return Err("an echo of a message nobody sent".into());
        };
        self.in_flight -= 1;
        if self.stage == Stage::Measure {
            self.window.messages += 1;
            self.window.bytes += text.len() as u64;
            self.window
                .latency
                .record(now.saturating_duration_since(sent_at).as_nanos() as u64);
        }
        Ok(())
    }

    /// Bytes that arrived on a session's receiving connection (`None`: its end).
    fn on_recv(&mut self, poll: &Poll, sess: &mut Session, data: Option<&[u8]>, now: Instant) {
        let Session { recv, send, st } = sess;
        let mut head = None;
        let mut ended = false;
        let mut error = None;
        let mut fed = |ev: Event<'_>| match ev {
            Event::Head { status, keep_alive } => head = Some((status, keep_alive)),
            Event::Data(bytes) => {
                if error.is_some() || ended {
                    return;
                }
                let mut bad = None;
                let mut splitter = std::mem::take(&mut st.lines);
                let split = splitter.feed(bytes, &mut |line| {
                    if bad.is_none() {
                        bad = self.frame(st, line, now).err();
                    }
                });
                st.lines = splitter;
                if split {
                    self.split_frames += 1;
                }
                error = error.take().or(bad);
            }
            Event::ChunkEnd => {
                self.chunks += 1;
                if st.lines.pending() {
                    self.split_chunks += 1;
                }
            }
            Event::End => ended = true,
        };
        let result = match data {
            Some(bytes) => recv.responses.feed(bytes, &mut fed).map(|()| true),
            None => recv.responses.eof(&mut fed),
        };
        let gone = data.is_none();
        match (result, head) {
            (Err(e), _) => error = error.or(Some(e)),
            (Ok(_), Some((status, _))) if status != 200 => {
                self.http_errors += 1;
                error = error.or(Some(format!("xhr_streaming answered {status}")));
            }
            (Ok(false), _) if gone && self.stage < Stage::Done => {
                // Closed between responses (after a kept-alive one ended): a new connection.
                self.recv_reconnects += 1;
                return self.reopen(poll, recv, send, st, false);
            }
            _ => {}
        }
        if let Some(e) = error {
            if self.stage < Stage::Done && !st.failed {
                if !e.starts_with("closed by the server") {
                    self.protocol_errors += 1;
                }
                self.complain(format_args!("session {}: {e}", st.index));
            }
            self.fail(poll, recv, st);
            send.drop_stream(poll);
            return;
        }
        if ended {
            st.responses += 1;
            self.streams_ended += 1;
            if self.stage == Stage::Measure {
                self.window.streams_ended += 1;
            }
            if st.lines.pending() {
                self.protocol_errors += 1;
                self.complain(format_args!(
                    "session {}: a response ended in the middle of a frame",
                    st.index
                ));
                st.lines.clear();
            }
            let keep = head.is_none_or(|(_, k)| k) && !gone && !recv.hup;
            if !keep {
                self.recv_reconnects += 1;
            }
            self.reopen(poll, recv, send, st, keep);
        } else if gone && self.stage < Stage::Done && !st.failed {
            self.conn_errors += 1;
            self.complain(format_args!(
                "session {}: receiving connection closed mid-response",
                st.index
            ));
            self.fail(poll, recv, st);
            send.drop_stream(poll);
        }
        self.pump(poll, send, st, now);
    }

    /// The next `xhr_streaming` request, on the same connection or a new one.
    fn reopen(
        &mut self,
        poll: &Poll,
        recv: &mut Conn,
        send: &mut Conn,
        st: &mut State,
        keep: bool,
    ) {
        if self.stage == Stage::Done || st.failed {
            return;
        }
        st.prelude = true;
        if !keep {
            if let Err(e) = recv.connect(poll, self.s.addr, recv_token(st.index)) {
                self.conn_errors += 1;
                self.complain(format_args!("session {}: reconnect: {e}", st.index));
                self.fail(poll, recv, st);
                send.drop_stream(poll);
                return;
            }
        }
        recv.out.extend_from_slice(&st.streaming);
        self.dirty.push(recv_token(st.index));
    }

    /// Bytes that arrived on a session's sending connection (`None`: its end).
    fn on_send(&mut self, poll: &Poll, sess: &mut Session, data: Option<&[u8]>, now: Instant) {
        let Session { recv, send, st } = sess;
        let mut head = None;
        let mut ended = 0;
        let mut body = Vec::new();
        let mut fed = |ev: Event<'_>| match ev {
            Event::Head { status, keep_alive } => head = Some((status, keep_alive)),
            Event::Data(bytes) if body.len() < 200 => body.extend_from_slice(bytes),
            Event::End => ended += 1,
            _ => {}
        };
        let result = match data {
            Some(bytes) => send.responses.feed(bytes, &mut fed).map(|()| true),
            None => send.responses.eof(&mut fed),
        };
        let gone = data.is_none();
        let mut error = result.err();
        if let Some((status, _)) = head.filter(|&(s, _)| s != 204 && s != 200) {
            self.http_errors += 1;
            error = error.or(Some(format!(
                "xhr_send answered {status}: {:?}",
                String::from_utf8_lossy(&body)
            )));
        }
        if ended > 1 || (ended == 1 && st.posting == 0) {
            error = error.or(Some("an xhr_send answer nobody asked for".into()));
        }
        if error.is_none() && ended == 1 {
            self.posts += 1;
            self.posted += st.posting as u64;
            if self.stage == Stage::Measure {
                self.window.posts += 1;
            }
            st.posting = 0;
            if head.is_some_and(|(_, keep)| !keep) {
                send.drop_stream(poll);
                self.send_reconnects += 1;
            }
        }
        if gone && error.is_none() && send.stream.is_some() {
            if st.posting == 0 {
                // A kept-alive connection the server let go while idle: a new one when needed.
                send.drop_stream(poll);
                self.send_reconnects += 1;
            } else {
                error = Some("sending connection closed before its answer".into());
            }
        }
        if let Some(e) = error {
            if self.stage < Stage::Done && !st.failed {
                self.conn_errors += 1;
                self.complain(format_args!("session {}: {e}", st.index));
            }
            self.fail(poll, send, st);
            recv.drop_stream(poll);
            return;
        }
        self.pump(poll, send, st, now);
    }

    fn enter(&mut self, stage: Stage, now: Instant) {
        self.stage = stage;
        self.stage_at = now;
    }

    fn sample(&mut self, i: usize, now: Instant) {
        self.window.server_cpu[i] = self.s.pid.and_then(|pid| sys::cpu_time(pid).ok());
        self.window.own_cpu[i] = sys::own_cpu_time();
        if i == 0 {
            self.window.start = Some(now);
        } else {
            self.window.end = Some(now);
        }
    }

    fn errors(&self) -> u64 {
        self.mismatches
            + self.lost
            + self.http_errors
            + self.protocol_errors
            + self.conn_errors
            + self.closed_by_server
            + self.failed as u64
            + u64::from(self.window.start.is_none() || self.window.end.is_none())
    }
}

/// The loop: the sessions, their connections, the stages.
struct Run {
    poll: Poll,
    sessions: Vec<Session>,
    buf: Vec<u8>,
}

impl Run {
    /// Starts sessions up to what the rate allows by now.
    fn launch(&mut self, b: &mut Bench, now: Instant) {
        let due = (now - b.stage_at).as_secs_f64() * b.s.rate;
        let due = (due.ceil() as usize).min(b.s.sessions);
        while b.launched < due {
            let index = b.launched;
            b.launched += 1;
            let mut sess = b.new_session(index);
            match sess.recv.connect(&self.poll, b.s.addr, recv_token(index)) {
                Ok(()) => sess.recv.out.extend_from_slice(&sess.st.streaming),
                Err(e) => {
                    b.failed += 1;
                    sess.st.failed = true;
                    b.complain(format_args!("session {index}: connect: {e}"));
                }
            }
            self.sessions.push(sess);
        }
    }

    /// Serves one readiness event of one connection.
    fn serve(&mut self, b: &mut Bench, token: Token, hup: bool, now: Instant) {
        let (index, sending) = (token.0 / 2, token.0 % 2 == 1);
        let Some(sess) = self.sessions.get_mut(index) else {
            return;
        };
        let conn = if sending {
            &mut sess.send
        } else {
            &mut sess.recv
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        if hup {
            conn.hup = true;
        }
        if !conn.connected {
            let problem = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = problem {
                b.conn_errors += 1;
                b.complain(format_args!("session {index}: connect: {e}"));
                let Session { recv, send, st } = sess;
                b.fail(&self.poll, recv, st);
                send.drop_stream(&self.poll);
                return;
            }
            conn.connected = true;
            let _ = stream.set_nodelay(true);
        }
        if !conn.out.is_empty() {
            if let Err(e) = conn.flush() {
                return Self::broken(b, &self.poll, sess, format_args!("write: {e}"));
            }
        }
        // Reads until the socket is empty (a short read says so, unless the peer hung up).
        loop {
            let conn = if sending {
                &mut sess.send
            } else {
                &mut sess.recv
            };
            let Some(stream) = conn.stream.as_mut().filter(|_| conn.connected) else {
                return; // given up, or replaced by a new connection
            };
            let read = stream.read(&mut self.buf);
            let hup = conn.hup;
            match read {
                Ok(0) => {
                    match sending {
                        true => b.on_send(&self.poll, sess, None, now),
                        false => b.on_recv(&self.poll, sess, None, now),
                    }
                    return;
                }
                Ok(n) => {
                    let data = &self.buf[..n];
                    match sending {
                        true => b.on_send(&self.poll, sess, Some(data), now),
                        false => b.on_recv(&self.poll, sess, Some(data), now),
                    }
                    if n < self.buf.len() && !hup {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Self::broken(b, &self.poll, sess, format_args!("read: {e}")),
            }
        }
    }

    /// A connection failed: the session is given up.
    fn broken(b: &mut Bench, poll: &Poll, sess: &mut Session, what: std::fmt::Arguments<'_>) {
        if b.stage < Stage::Done && !sess.st.failed {
            b.conn_errors += 1;
            b.complain(format_args!("session {}: {what}", sess.st.index));
        }
        let Session { recv, send, st } = sess;
        b.fail(poll, recv, st);
        send.drop_stream(poll);
    }

    /// Writes what the connections written to this turn have waiting.
    fn flush(&mut self, b: &mut Bench) {
        for token in std::mem::take(&mut b.dirty) {
            let Some(sess) = self.sessions.get_mut(token.0 / 2) else {
                continue;
            };
            let conn = if token.0 % 2 == 1 {
                &mut sess.send
            } else {
                &mut sess.recv
            };
            if let Err(e) = conn.flush() {
                Self::broken(b, &self.poll, sess, format_args!("write: {e}"));
            }
        }
    }

    /// Moves the stages on; false once the run is over.
    fn step(&mut self, b: &mut Bench, now: Instant) -> bool {
        let since = now - b.stage_at;
        match b.stage {
            Stage::Opening => {
                self.launch(b, now);
                if b.opened + b.failed >= b.s.sessions {
                    b.enter(Stage::Warmup, now);
                }
            }
            Stage::Warmup if since.as_secs_f64() >= b.s.warmup => {
                b.sample(0, now);
                b.enter(Stage::Measure, now);
            }
            Stage::Measure if since.as_secs_f64() >= b.s.secs => {
                b.sample(1, now);
                b.sending = false;
                b.enter(Stage::Drain, now);
            }
            Stage::Drain if b.in_flight == 0 || since >= DRAIN => {
                b.enter(Stage::Done, now);
                for sess in &mut self.sessions {
                    sess.recv.drop_stream(&self.poll);
                    sess.send.drop_stream(&self.poll);
                }
                return false;
            }
            _ => {}
        }
        true
    }
}

fn execute(s: Settings) -> Result<Bench, String> {
    let open_bound = s.sessions as f64 / s.rate + 15.0;
    let bound = open_bound + s.warmup + s.secs + DRAIN.as_secs_f64() + 1.0;
    let deadline = Instant::now() + Duration::from_secs_f64(bound);
    let mut b = Bench::new(s);
    let mut run = Run {
        poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
        sessions: Vec::with_capacity(b.s.sessions),
        buf: vec![0u8; 64 << 10],
    };
    let mut events = Events::with_capacity(1024);
    let mut next_tick = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            if !run.step(&mut b, now) {
                break;
            }
        }
        run.flush(&mut b);
        run.poll
            .poll(&mut events, Some(next_tick.saturating_duration_since(now)))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        for event in events.iter() {
            let hup = event.is_read_closed() || event.is_error();
            run.serve(&mut b, event.token(), hup, now);
        }
    }
    // Whatever never came back (or was still out at the deadline) is lost.
    b.lost += b.in_flight;
    b.in_flight = 0;
    for sess in &mut run.sessions {
        sess.recv.drop_stream(&run.poll);
        sess.send.drop_stream(&run.poll);
    }
    Ok(b)
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let s = settings(args)?;
    let b = execute(s)?;
    Ok(report(&b))
}

fn report(b: &Bench) -> bool {
    let s = &b.s;
    let w = &b.window;
    let f = Figures::of(&Measured {
        start: w.start,
        end: w.end,
        server_cpu: w.server_cpu,
        own_cpu: w.own_cpu,
        latency: &w.latency,
        units: w.messages,
    });
    let msgs = f.per_sec(w.messages);
    let mbps = f.per_sec(w.bytes).map(|b| b / 1e6);
    let posts = f.per_sec(w.posts);
    let per_post = (w.posts > 0).then(|| b.posted as f64 / b.posts.max(1) as f64);
    let per_frame = (w.a_frames > 0).then(|| w.messages as f64 / w.a_frames as f64);
    let Figures {
        secs,
        p50,
        p99,
        max,
        cpu_per_unit: cpu_per_msg,
        server_pct,
        own_pct,
    } = f;
    let errors = b.errors();
    println!(
        "sockjs {} (xhr_streaming): {} sessions × {} B, window {}, batch {}, {:.2} s measured \
         ({} opened, {} failed)",
        s.url,
        s.sessions,
        s.size,
        s.window,
        s.batch,
        secs.unwrap_or(0.0),
        b.opened,
        b.failed
    );
    println!(
        "  {:.0} msg/s, {:.2} MB/s; latency p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs",
        msgs.unwrap_or(0.0),
        mbps.unwrap_or(0.0)
    );
    println!(
        "  xhr_send: {:.0} requests/s, {:.2} messages each; {:.2} messages per a-frame; \
         streaming responses ended by the server: {} ({} in the window), new receiving \
         connections {}, new sending connections {}; heart-beats {}; chunks {}, frames split \
         across reads or chunks {}, chunks ending mid-frame {}",
        posts.unwrap_or(0.0),
        per_post.unwrap_or(0.0),
        per_frame.unwrap_or(0.0),
        b.streams_ended,
        w.streams_ended,
        b.recv_reconnects,
        b.send_reconnects,
        b.heartbeats,
        b.chunks,
        b.split_frames,
        b.split_chunks,
    );
    match (cpu_per_msg, server_pct) {
        (Some(c), Some(p)) => println!("  server: {c:.3} µs CPU per message ({p:.0}% of a core)"),
        _ => println!("  server: CPU not measured (give --pid)"),
    }
    println!("  load generator: {:.0}% of a core", own_pct.unwrap_or(0.0));
    println!(
        "  errors: {errors} (mismatched {}, lost {}, HTTP {}, protocol {}, connection {}, \
         closed by the server {}, failed to open {})",
        b.mismatches,
        b.lost,
        b.http_errors,
        b.protocol_errors,
        b.conn_errors,
        b.closed_by_server,
        b.failed
    );
    println!(
        "RESULT {{\"mode\":\"sockjs\",\"transport\":\"xhr_streaming\",\"url\":{},\"sessions\":{},\
         \"size\":{},\"window\":{},\"batch\":{},\"secs\":{},\"opened\":{},\"messages\":{},\
         \"msgs_per_sec\":{},\"mb_per_sec\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\
         \"posts_per_sec\":{},\"msgs_per_post\":{},\"msgs_per_frame\":{},\"streams_ended\":{},\
         \"recv_reconnects\":{},\"send_reconnects\":{},\"heartbeats\":{},\"chunks\":{},\
         \"split_frames\":{},\"split_chunks\":{},\"server_cpu_us_per_msg\":{},\
         \"server_cpu_pct\":{},\"loadgen_cpu_pct\":{},\"mismatches\":{},\"lost\":{},\
         \"errors\":{errors}}}",
        json_str(&s.url),
        s.sessions,
        s.size,
        s.window,
        s.batch,
        json_num(secs),
        b.opened,
        w.messages,
        json_num(msgs),
        json_num(mbps),
        json_num(Some(p50)),
        json_num(Some(p99)),
        json_num(Some(max)),
        json_num(posts),
        json_num(per_post),
        json_num(per_frame),
        b.streams_ended,
        b.recv_reconnects,
        b.send_reconnects,
        b.heartbeats,
        b.chunks,
        b.split_frames,
        b.split_chunks,
        json_num(cpu_per_msg),
        json_num(server_pct),
        json_num(own_pct),
        b.mismatches,
        b.lost,
    );
    errors == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn urls_and_options() {
        let (addr, host, prefix) = parse_url("http://127.0.0.1:8081/echo/").unwrap();
        assert_eq!(
            (addr.to_string(), host.as_str(), prefix.as_str()),
            ("127.0.0.1:8081".into(), "127.0.0.1:8081", "/echo")
        );
        assert_eq!(parse_url("http://[::1]:9/a/b").unwrap().2, "/a/b");
        assert!(parse_url("http://10.0.0.1:8081/echo").is_err());
        assert!(parse_url("http://127.0.0.1:8081/").is_err());
        assert!(parse_url("ws://127.0.0.1:8081/echo").is_err());
        assert!(settings(&args(&["--size", "10"])).is_err());
        assert!(settings(&args(&[
            "--batch", "1000", "--window", "1000", "--size", "1000"
        ]))
        .is_err());
        assert!(settings(&args(&["--sessions", "0"])).is_err());
        assert!(settings(&args(&["--bogus", "1"])).is_err());
        let s = settings(&args(&["--sessions", "3", "--window", "2"])).unwrap();
        assert_eq!((s.sessions, s.window, s.batch, s.size), (3, 2, 1, 100));
    }

    #[test]
    fn payloads_carry_session_and_sequence() {
        let b = Bench::new(settings(&args(&[])).unwrap());
        let mut p = String::new();
        payload(&b.pattern, 100, 7, 123, &mut p);
        assert_eq!(p.len(), 100);
        assert!(p.starts_with("000007:000000000123:"));
        let mut q = String::new();
        payload(&b.pattern, 100, 7, 124, &mut q);
        assert_ne!(p, q);
    }

    /// Against Sockeye's own SockJS layer, in this process: a small streaming limit so that
    /// responses end (and are reopened) many times, with and without batching.
    #[test]
    fn end_to_end_against_sockeye() {
        use sockeye::handshake::Request;
        use sockeye::server::{
            Handler, Message, Rejection, Server, ServerConfig, Session as S, Upgrading,
        };
        use sockeye::sockjs::Service;

        struct Echo;
        impl Handler for Echo {
            type Data = ();
            fn on_upgrade(
                &mut self,
                _: &Request<'_, '_>,
                _: &mut Upgrading,
            ) -> Result<(), Rejection> {
                Ok(())
            }
            fn on_message(&mut self, session: &mut S<'_, ()>, message: Message<'_>) {
                let _ = session.send(message);
            }
        }
        let config = ServerConfig {
            workers: 1,
            shutdown_timeout: Duration::from_secs(2),
            sockjs: vec![Service {
                streaming_limit: 4096,
                ..Service::new("/echo")
            }],
            ..ServerConfig::default()
        };
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
            .unwrap()
            .spawn(|| Echo)
            .unwrap();
        let url = format!("http://{}/echo", server.local_addr());
        let pid = std::process::id().to_string();
        for batch in ["1", "4"] {
            let list = [
                "--url",
                &url,
                "--sessions",
                "5",
                "--window",
                "8",
                "--batch",
                batch,
                "--secs",
                "0.5",
                "--warmup",
                "0.1",
                "--pid",
                &pid,
            ];
            let b = execute(settings(&args(&list)).unwrap()).unwrap();
            assert_eq!(b.errors(), 0, "batch {batch}");
            assert_eq!(b.opened, 5);
            assert!(b.window.messages > 0);
            assert!(b.streams_ended > 5, "batch {batch}: {}", b.streams_ended);
        }
        server.shutdown().unwrap();
    }
}
