//! `loadgen fanout`: one publisher, N subscribers of one STOMP destination, over WebSocket
//! (the engine's client event loop) or plain TCP (a small mio loop), in one thread.
//!
//! Every connection speaks STOMP 1.2: CONNECT (heart-beats off), then each subscriber
//! SUBSCRIBEs with a receipt; once every receipt is in, the publisher SENDs messages of S bytes
//! whose body starts with the sequence number and the send time (hex, nanoseconds on this
//! process's clock), so a subscriber knows each delivery's latency and whether it came in
//! order. The publisher is paced by a window: at most `--window` messages may be outstanding at
//! the slowest subscriber (and, with `--rate`, no more than the rate allows), so the latency
//! measured is the broker's, not a queue the load generator built up.
//!
//! Stages: open (paced) → subscribe → warm up → measure (deliveries, latencies, the server's CPU
//! time) → drain (stop publishing; what has not arrived within 5 s is lost) → close → report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockeye_chat::stomp::{encode, parse, Command, EncodeOptions, Limits, Status, Version};

use crate::figures::{Figures, Measured};
use crate::histogram::Histogram;
use crate::{bounded, json_num, json_str, loopback_target, sys, Opts, MAX_CONNS, MAX_SECS};

mod tcp;
mod wire;
mod ws;

use wire::Scan;

/// How long the drain waits for outstanding deliveries before counting them lost.
const DRAIN: Duration = Duration::from_secs(5);
/// How long closing may take.
const CLOSING: Duration = Duration::from_secs(6);
/// Connecting and subscribing everyone may take this long beyond the pacing.
const OPEN_SLACK: Duration = Duration::from_secs(30);
/// Longest the loop waits for readiness between two steps.
const STEP: Duration = Duration::from_millis(1);
/// Most SENDs written in one loop turn.
const PUBLISH_BATCH: u64 = 256;
/// Errors printed in full; the rest are only counted.
const PRINTED_ERRORS: usize = 5;
/// Bytes of the body holding the sequence number and the send time (16 hex digits each).
const STAMP: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Tcp,
}

pub struct Settings {
    pub transport: Transport,
    /// The URL (WebSocket) or address (TCP), as given.
    pub target_text: String,
    pub addr: SocketAddr,
    pub url: String,
    pub subs: usize,
    pub size: usize,
    pub rate: f64,
    pub window: u64,
    pub secs: f64,
    pub warmup: f64,
    pub pid: Option<u32>,
    pub destination: String,
    pub login: String,
    pub passcode: String,
    pub vhost: String,
    pub conn_rate: f64,
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut o = Opts::parse(args, &[])?;
    let transport = match o.get("transport", "ws".to_string())?.as_str() {
        "ws" => Transport::Ws,
        "tcp" => Transport::Tcp,
        other => return Err(format!("--transport is ws or tcp, not {other:?}")),
    };
    let url: String = o.get("url", "ws://127.0.0.1:8080/ws".to_string())?;
    let addr_text: String = o.get("addr", "127.0.0.1:61613".to_string())?;
    let (target_text, addr) = match transport {
        Transport::Ws => (url.clone(), loopback_target(&url)?.addr),
        Transport::Tcp => {
            let addr: SocketAddr = addr_text
                .parse()
                .map_err(|_| format!("--addr wants IP:PORT, got {addr_text:?}"))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{addr}: only loopback targets (127.0.0.0/8, [::1]) are allowed"
                ));
            }
            (addr_text, addr)
        }
    };
    let s = Settings {
        transport,
        target_text,
        addr,
        url,
        subs: bounded("subs", o.get("subs", 100)?, 1, MAX_CONNS)?,
        size: bounded("size", o.get("size", 100)?, STAMP, 1 << 20)?,
        rate: bounded("rate", o.get("rate", 0.0)?, 0.0, 1e6)?,
        window: bounded("window", o.get("window", 4)?, 1, 1 << 16)?,
        secs: bounded("seconds", o.get("seconds", 10.0)?, 0.1, MAX_SECS)?,
        warmup: bounded("warmup", o.get("warmup", 1.0)?, 0.0, MAX_SECS)?,
        pid: o.opt("server-pid")?,
        destination: o.get("destination", "/topic/bench".to_string())?,
        login: o.get("login", "guest".to_string())?,
        passcode: o.get("passcode", "guest".to_string())?,
        vhost: o.get("vhost", "/".to_string())?,
        conn_rate: bounded("conn-rate", o.get("conn-rate", 2000.0)?, 1.0, 1e6)?,
    };
    o.finish()?;
    for (name, v) in [
        ("destination", &s.destination),
        ("login", &s.login),
        ("passcode", &s.passcode),
        ("vhost", &s.vhost),
    ] {
        if v.is_empty() || v.bytes().any(|b| b < 0x20 || b == b':') {
            return Err(format!(
                "--{name} {v:?}: empty, or holds a colon or a control character"
            ));
        }
    }
    let limit = sys::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if s.subs as u64 + 64 > limit {
        return Err(format!(
            "{} subscribers need more open files than this process may have ({limit})",
            s.subs
        ));
    }
    Ok(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting (TCP, and the WebSocket handshake): no `opened` yet.
    Connecting,
    /// CONNECT sent.
    Connected,
    /// SUBSCRIBE sent, waiting for its receipt.
    Subscribing,
    /// Subscribed (a subscriber), or CONNECTED (the publisher).
    Ready,
    /// An ERROR frame or garbage arrived: everything after it is ignored.
    Broken,
}

/// Per connection.
pub struct Peer {
    /// Subscribers are 0..subs; the publisher is `usize::MAX`.
    pub index: usize,
    pub phase: Phase,
    /// The start of a frame that has not arrived whole.
    buf: Vec<u8>,
    /// The sequence number expected next (a subscriber).
    next_seq: u64,
}

impl Peer {
    fn new(index: usize) -> Peer {
        Peer {
            index,
            phase: Phase::Connecting,
            buf: Vec::new(),
            next_seq: 0,
        }
    }

    pub fn is_publisher(&self) -> bool {
        self.index == usize::MAX
    }
}

/// What the bench needs from a transport's loop between turns.
pub trait Driver {
    /// Starts connecting; `Bench::opened` follows once the transport is up, `Bench::failed`
    /// if it never comes up.
    fn connect(&mut self, peer: Peer) -> Result<(), String>;
    /// Sends STOMP frames (whole, concatenated) to the publisher's connection.
    fn send_to_publisher(&mut self, frames: &[u8]) -> bool;
    /// Closes every open connection, showing each one's data to `each` first.
    fn close_all(&mut self, each: &mut dyn FnMut(&Peer));
    /// Connections in any phase.
    fn len(&self) -> usize;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Opening,
    Warmup,
    Measure,
    Drain,
    Closing,
    Done,
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    end: Option<Instant>,
    server_cpu: [Option<Duration>; 2],
    own_cpu: [Duration; 2],
    deliveries: u64,
    published: u64,
    latency: Histogram,
}

pub struct Bench {
    s: Settings,
    /// The zero of the timestamps carried in message bodies.
    base: Instant,
    stage: Stage,
    stage_at: Instant,
    opening_at: Instant,
    launched: usize,
    publisher_launched: bool,
    publisher_ready: bool,
    subscribed: usize,
    /// Subscribers subscribed and still connected.
    live: u32,
    failed: usize,
    /// The next sequence number to publish.
    published: u64,
    /// Every live subscriber has received (or skipped) every message before this one.
    acked: u64,
    /// Per outstanding message (index `seq % window`): subscribers that have it.
    counts: Vec<u32>,
    publish_from: Option<Instant>,
    sending: bool,
    /// A SEND frame of the right size; the stamp is written into it for each message.
    send_template: Vec<u8>,
    stamp_at: usize,
    pub_out: Vec<u8>,
    window: Window,
    lost: u64,
    out_of_order: u64,
    corrupt: u64,
    send_errors: u64,
    conn_errors: u64,
    stomp_errors: u64,
    closed_early: u64,
    aborted: Option<String>,
    printed: usize,
}

impl Bench {
    fn new(s: Settings) -> Result<Bench, String> {
        let opts = EncodeOptions::new(Some(Version::V1_2)).with_content_length(true);
        let mut send_template = Vec::new();
        let body = vec![b'.'; s.size];
        encode(
            Command::Send,
            [("destination", s.destination.as_str())],
            &body,
            opts,
            &mut send_template,
        )
        .map_err(|e| format!("SEND frame: {e}"))?;
        let stamp_at = send_template.len() - 1 - s.size;
        let now = Instant::now();
        Ok(Bench {
            counts: vec![0; s.window as usize],
            s,
            base: now,
            stage: Stage::Opening,
            stage_at: now,
            opening_at: now,
            launched: 0,
            publisher_launched: false,
            publisher_ready: false,
            subscribed: 0,
            live: 0,
            failed: 0,
            published: 0,
            acked: 0,
            publish_from: None,
            sending: false,
            send_template,
            stamp_at,
            pub_out: Vec::new(),
            window: Window::default(),
            lost: 0,
            out_of_order: 0,
            corrupt: 0,
            send_errors: 0,
            conn_errors: 0,
            stomp_errors: 0,
            closed_early: 0,
            aborted: None,
            printed: 0,
        })
    }

    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self.printed < PRINTED_ERRORS {
            self.printed += 1;
            eprintln!("error: {what}");
        }
    }

    fn abort(&mut self, why: String, now: Instant) {
        if self.aborted.is_none() {
            eprintln!("error: {why}");
            self.aborted = Some(why);
        }
        if self.stage < Stage::Drain {
            self.sending = false;
            self.enter(Stage::Drain, now);
        }
    }

    fn enter(&mut self, stage: Stage, now: Instant) {
        self.stage = stage;
        self.stage_at = now;
    }

    /// The transport is up: send CONNECT.
    pub fn opened(&mut self, peer: &mut Peer, out: &mut Vec<u8>) {
        peer.phase = Phase::Connected;
        let opts = EncodeOptions::new(None);
        let _ = encode(
            Command::Connect,
            [
                ("accept-version", "1.2"),
                ("host", self.s.vhost.as_str()),
                ("login", self.s.login.as_str()),
                ("passcode", self.s.passcode.as_str()),
                ("heart-beat", "0,0"),
            ],
            b"",
            opts,
            out,
        );
    }

    /// The transport never came up, or failed later.
    pub fn failed(&mut self, peer: &Peer, error: &str) {
        if peer.phase == Phase::Connecting {
            if !peer.is_publisher() {
                self.failed += 1;
            }
        } else {
            self.conn_errors += 1;
        }
        let who = who(peer);
        self.complain(format_args!("{who}: {error}"));
        if peer.is_publisher() {
            self.abort(format!("the publisher failed: {error}"), Instant::now());
        }
    }

    /// An open connection ended (after `failed` if it ended badly).
    pub fn closed(&mut self, peer: &Peer) {
        if self.stage >= Stage::Closing {
            return;
        }
        self.closed_early += 1;
        let who = who(peer);
        self.complain(format_args!("{who}: closed by the server"));
        if peer.is_publisher() {
            self.abort("the publisher's connection closed".into(), Instant::now());
        } else if peer.phase == Phase::Ready {
            self.live -= 1;
            self.lost += self.published.saturating_sub(peer.next_seq);
            self.advance();
            if self.live == 0 {
                self.abort("every subscriber is gone".into(), Instant::now());
            }
        }
    }

    /// Bytes from a connection: whole STOMP frames are handled, a partial one is kept.
    pub fn data(&mut self, peer: &mut Peer, bytes: &[u8], now: Instant, out: &mut Vec<u8>) {
        if peer.phase == Phase::Broken {
            return;
        }
        if peer.buf.is_empty() {
            let used = self.frames(peer, bytes, now, out);
            if used < bytes.len() && peer.phase != Phase::Broken {
                peer.buf.extend_from_slice(&bytes[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut peer.buf);
            buf.extend_from_slice(bytes);
            let used = self.frames(peer, &buf, now, out);
            buf.drain(..used);
            if peer.phase != Phase::Broken {
                peer.buf = buf;
            }
        }
    }

    /// Handles the whole frames at the start of `buf`; returns the bytes used.
    fn frames(&mut self, peer: &mut Peer, buf: &[u8], now: Instant, out: &mut Vec<u8>) -> usize {
        let mut at = 0;
        while at < buf.len() {
            match wire::scan(&buf[at..]) {
                Scan::Partial => break,
                Scan::Bad(why) => {
                    self.stomp_errors += 1;
                    let who = who(peer);
                    self.complain(format_args!("{who}: unreadable STOMP: {why}"));
                    peer.phase = Phase::Broken;
                    return buf.len();
                }
                Scan::Frame {
                    message,
                    start,
                    body,
                    used,
                } => {
                    if message {
                        self.message(peer, &buf[at + body.0..at + body.1], now);
                    } else {
                        self.control(peer, &buf[at + start..at + used], out);
                    }
                    at += used;
                }
            }
        }
        at
    }

    /// A CONNECTED, RECEIPT or ERROR frame (anything but MESSAGE).
    fn control(&mut self, peer: &mut Peer, frame: &[u8], out: &mut Vec<u8>) {
        let parsed = match parse(frame, &Limits::default(), Some(Version::V1_2)) {
            Ok(Status::Complete(f, _)) => f,
            Ok(_) | Err(_) => {
                self.stomp_errors += 1;
                let who = who(peer);
                self.complain(format_args!("{who}: unreadable STOMP frame"));
                peer.phase = Phase::Broken;
                return;
            }
        };
        match (parsed.command, peer.phase) {
            (Command::Connected, Phase::Connected) if peer.is_publisher() => {
                peer.phase = Phase::Ready;
                self.publisher_ready = true;
            }
            (Command::Connected, Phase::Connected) => {
                peer.phase = Phase::Subscribing;
                let receipt = format!("sub-{}", peer.index);
                let _ = encode(
                    Command::Subscribe,
                    [
                        ("id", "0"),
                        ("destination", self.s.destination.as_str()),
                        ("ack", "auto"),
                        ("receipt", receipt.as_str()),
                    ],
                    b"",
                    EncodeOptions::new(Some(Version::V1_2)),
                    out,
                );
            }
            (Command::Receipt, Phase::Subscribing) => {
                peer.phase = Phase::Ready;
                peer.next_seq = self.published;
                self.subscribed += 1;
                self.live += 1;
            }
            (Command::Error, _) => {
                self.stomp_errors += 1;
                let message = parsed.header("message").unwrap_or("").to_string();
                let body = String::from_utf8_lossy(parsed.body).trim().to_string();
                let who = who(peer);
                self.complain(format_args!("{who}: ERROR {message:?} {body:?}"));
                if peer.phase == Phase::Ready && !peer.is_publisher() {
                    self.live -= 1;
                    self.lost += self.published.saturating_sub(peer.next_seq);
                    self.advance();
                }
                if peer.is_publisher() {
                    self.abort(
                        format!("the publisher got ERROR {message:?}"),
                        Instant::now(),
                    );
                }
                peer.phase = Phase::Broken;
            }
            (command, phase) => {
                self.stomp_errors += 1;
                let who = who(peer);
                self.complain(format_args!("{who}: unexpected {command:?} in {phase:?}"));
            }
        }
    }

    /// A MESSAGE's body: check the sequence, time the delivery, move the window.
    fn message(&mut self, peer: &mut Peer, body: &[u8], now: Instant) {
        if peer.phase != Phase::Ready || peer.is_publisher() {
            self.corrupt += 1;
            return;
        }
        let stamp = (body.len() == self.s.size)
            .then(|| Some((wire::hex16(&body[..16])?, wire::hex16(&body[16..STAMP])?)))
            .flatten();
        let Some((seq, sent)) = stamp.filter(|&(seq, _)| seq < self.published) else {
            self.corrupt += 1;
            let who = who(peer);
            self.complain(format_args!(
                "{who}: a MESSAGE nobody published ({} bytes)",
                body.len()
            ));
            return;
        };
        let expected = peer.next_seq;
        if seq < expected {
            self.out_of_order += 1;
            return;
        }
        if seq > expected {
            self.lost += seq - expected;
        }
        for q in expected.max(self.acked)..=seq {
            self.counts[(q % self.s.window) as usize] += 1;
        }
        peer.next_seq = seq + 1;
        if expected <= self.acked {
            self.advance();
        }
        if self.stage == Stage::Measure {
            self.window.deliveries += 1;
            let now_ns = (now - self.base).as_nanos() as u64;
            self.window.latency.record(now_ns.saturating_sub(sent));
        }
    }

    /// Moves `acked` past the messages every live subscriber has.
    fn advance(&mut self) {
        while self.acked < self.published {
            let slot = (self.acked % self.s.window) as usize;
            if self.counts[slot] < self.live {
                break;
            }
            self.counts[slot] = 0;
            self.acked += 1;
        }
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

    /// Writes the SENDs the window (and the rate) allow into `pub_out`.
    fn publish(&mut self, now: Instant) {
        if !self.sending {
            return;
        }
        let mut allowed = (self.acked + self.s.window).saturating_sub(self.published);
        if self.s.rate > 0.0 {
            let from = *self.publish_from.get_or_insert(now);
            let due = ((now - from).as_secs_f64() * self.s.rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(self.published));
        }
        let stamp = (now - self.base).as_nanos() as u64;
        for _ in 0..allowed.min(PUBLISH_BATCH) {
            let seq = self.published;
            let at = self.stamp_at;
            wire::put_hex16(&mut self.send_template[at..at + 16], seq);
            wire::put_hex16(&mut self.send_template[at + 16..at + STAMP], stamp);
            self.pub_out.extend_from_slice(&self.send_template);
            self.counts[(seq % self.s.window) as usize] = 0;
            self.published += 1;
            if self.stage == Stage::Measure {
                self.window.published += 1;
            }
        }
    }

    /// Between loop turns: start connections, move through the stages, publish. Returns false
    /// once the run is over.
    pub fn step(&mut self, now: Instant, d: &mut dyn Driver) -> bool {
        let since = now - self.stage_at;
        match self.stage {
            Stage::Opening => {
                self.launch(now, d);
                let settled = self.subscribed + self.failed >= self.s.subs;
                if self.publisher_ready && settled {
                    if self.subscribed == 0 {
                        self.abort("no subscriber could subscribe".into(), now);
                    } else {
                        self.sending = true;
                        self.enter(Stage::Warmup, now);
                    }
                } else {
                    let pacing = self.s.subs as f64 / self.s.conn_rate;
                    if since > OPEN_SLACK + Duration::from_secs_f64(pacing) {
                        let why = format!(
                            "opening timed out: {} of {} subscribed, publisher {}",
                            self.subscribed,
                            self.s.subs,
                            if self.publisher_ready {
                                "ready"
                            } else {
                                "not ready"
                            }
                        );
                        self.abort(why, now);
                    }
                }
            }
            Stage::Warmup if since.as_secs_f64() >= self.s.warmup => {
                self.sample(0, now);
                self.enter(Stage::Measure, now);
            }
            Stage::Measure if since.as_secs_f64() >= self.s.secs => {
                self.sample(1, now);
                self.sending = false;
                self.enter(Stage::Drain, now);
            }
            Stage::Drain if self.acked >= self.published || since >= DRAIN => {
                self.enter(Stage::Closing, now);
                let published = self.published;
                let mut lost = 0;
                d.close_all(&mut |p: &Peer| {
                    if !p.is_publisher() && p.phase == Phase::Ready {
                        lost += published.saturating_sub(p.next_seq);
                    }
                });
                self.lost += lost;
            }
            Stage::Closing if d.len() == 0 || since >= CLOSING => {
                self.enter(Stage::Done, now);
                return false;
            }
            Stage::Done => return false,
            _ => {}
        }
        self.publish(now);
        if !self.pub_out.is_empty() {
            if !d.send_to_publisher(&self.pub_out) {
                self.send_errors += 1;
                self.complain(format_args!("publisher: send failed"));
            }
            self.pub_out.clear();
        }
        true
    }

    /// Starts the publisher, then subscribers as the connection rate allows.
    fn launch(&mut self, now: Instant, d: &mut dyn Driver) {
        if !self.publisher_launched {
            self.publisher_launched = true;
            if let Err(e) = d.connect(Peer::new(usize::MAX)) {
                self.abort(format!("publisher: cannot connect: {e}"), now);
                return;
            }
        }
        let due = (now - self.opening_at).as_secs_f64() * self.s.conn_rate;
        let due = (due.ceil() as usize).clamp(1, self.s.subs);
        while self.launched < due {
            let index = self.launched;
            self.launched += 1;
            if let Err(e) = d.connect(Peer::new(index)) {
                self.failed += 1;
                self.complain(format_args!("subscriber {index}: cannot connect: {e}"));
            }
        }
    }

    /// Everything that went wrong, counted once each (a run without a measured window is one).
    fn errors(&self) -> u64 {
        self.lost
            + self.out_of_order
            + self.corrupt
            + self.send_errors
            + self.conn_errors
            + self.stomp_errors
            + self.closed_early
            + self.failed as u64
            + u64::from(self.aborted.is_some())
            + u64::from(self.window.end.is_none())
    }

    /// The longest a run may take.
    fn bound(&self) -> Duration {
        let pacing = self.s.subs as f64 / self.s.conn_rate;
        OPEN_SLACK
            + Duration::from_secs_f64(pacing + self.s.warmup + self.s.secs)
            + DRAIN
            + CLOSING
            + Duration::from_secs(2)
    }
}

fn who(peer: &Peer) -> String {
    if peer.is_publisher() {
        "publisher".into()
    } else {
        format!("subscriber {}", peer.index)
    }
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let bench = execute(settings(args)?)?;
    Ok(report(&bench))
}

/// Runs the whole bench on its transport, within its time bound.
fn execute(s: Settings) -> Result<Bench, String> {
    let mut bench = Bench::new(s)?;
    let deadline = Instant::now() + bench.bound();
    match bench.s.transport {
        Transport::Ws => ws::run(&mut bench, deadline)?,
        Transport::Tcp => tcp::run(&mut bench, deadline)?,
    }
    if bench.stage < Stage::Closing {
        bench.abort("the run hit its time bound".into(), Instant::now());
    }
    Ok(bench)
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
        units: w.deliveries,
    });
    let deliveries = f.per_sec(w.deliveries);
    let msgs = f.per_sec(w.published);
    let Figures {
        secs,
        p50,
        p99,
        max,
        cpu_per_unit: cpu_per_delivery,
        server_pct,
        own_pct,
    } = f;
    let errors = b.errors();
    let transport = match s.transport {
        Transport::Ws => "ws",
        Transport::Tcp => "tcp",
    };
    let rate = if s.rate > 0.0 {
        format!("{} msg/s", s.rate)
    } else {
        "as fast as the window allows".into()
    };
    println!(
        "fanout {transport} {}: 1 publisher → {} subscribers ({} subscribed, {} failed) of {}, \
         {} B, {rate}, window {}, {:.2} s window",
        s.target_text,
        s.subs,
        b.subscribed,
        b.failed,
        s.destination,
        s.size,
        s.window,
        secs.unwrap_or(0.0)
    );
    println!(
        "  {:.0} deliveries/s ({:.1} msg/s published); latency p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms",
        deliveries.unwrap_or(0.0),
        msgs.unwrap_or(0.0),
        p50 / 1000.0,
        p99 / 1000.0,
        max / 1000.0
    );
    match (cpu_per_delivery, server_pct) {
        (Some(c), Some(p)) => {
            println!("  server: {c:.3} µs CPU per delivery ({p:.0}% of a core)")
        }
        _ => println!("  server: CPU not measured (give --server-pid)"),
    }
    println!("  load generator: {:.0}% of a core", own_pct.unwrap_or(0.0));
    println!(
        "  errors: {errors} (lost {}, out of order {}, corrupt {}, send {}, connection {}, \
         STOMP {}, closed early {}, failed to open {}{})",
        b.lost,
        b.out_of_order,
        b.corrupt,
        b.send_errors,
        b.conn_errors,
        b.stomp_errors,
        b.closed_early,
        b.failed,
        match &b.aborted {
            Some(why) => format!(", aborted: {why}"),
            None => String::new(),
        }
    );
    println!(
        "RESULT {{\"mode\":\"fanout\",\"transport\":\"{transport}\",\"target\":{},\
         \"destination\":{},\"subs\":{},\"subscribed\":{},\"size\":{},\"rate\":{},\"window\":{},\
         \"secs\":{},\"deliveries\":{},\"deliveries_per_sec\":{},\"published\":{},\
         \"msgs_per_sec\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\
         \"server_cpu_us_per_delivery\":{},\"server_cpu_pct\":{},\"loadgen_cpu_pct\":{},\
         \"lost\":{},\"out_of_order\":{},\"corrupt\":{},\"errors\":{errors}}}",
        json_str(&s.target_text),
        json_str(&s.destination),
        s.subs,
        b.subscribed,
        s.size,
        json_num(Some(s.rate)),
        s.window,
        json_num(secs),
        w.deliveries,
        json_num(deliveries),
        w.published,
        json_num(msgs),
        json_num(Some(p50)),
        json_num(Some(p99)),
        json_num(Some(max)),
        json_num(cpu_per_delivery),
        json_num(server_pct),
        json_num(own_pct),
        b.lost,
        b.out_of_order,
        b.corrupt,
    );
    errors == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Connects nothing: the bench's bookkeeping alone.
    #[derive(Default)]
    struct NoNet {
        sent: Vec<u8>,
    }

    impl Driver for NoNet {
        fn connect(&mut self, _peer: Peer) -> Result<(), String> {
            Ok(())
        }
        fn send_to_publisher(&mut self, frames: &[u8]) -> bool {
            self.sent.extend_from_slice(frames);
            true
        }
        fn close_all(&mut self, _each: &mut dyn FnMut(&Peer)) {}
        fn len(&self) -> usize {
            0
        }
    }

    /// The bodies of the SENDs written so far, in order.
    fn bodies(sent: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < sent.len() {
            match parse(&sent[at..], &Limits::default(), Some(Version::V1_2)) {
                Ok(Status::Complete(f, used)) => {
                    assert_eq!(f.command, Command::Send);
                    assert_eq!(f.header("destination"), Some("/topic/bench"));
                    out.push(f.body.to_vec());
                    at += used;
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "MESSAGE\nsubscription:0\nmessage-id:m\ndestination:/topic/bench\n\
             content-length:{}\n\n",
            body.len()
        )
        .into_bytes();
        m.extend_from_slice(body);
        m.push(0);
        m
    }

    #[test]
    fn the_window_loss_and_order_are_kept() {
        let s = settings(&args(&[
            "--transport",
            "tcp",
            "--subs",
            "2",
            "--size",
            "40",
            "--window",
            "2",
        ]))
        .unwrap();
        let mut b = Bench::new(s).unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut publisher = Peer::new(usize::MAX);
        b.opened(&mut publisher, &mut out);
        assert!(out.starts_with(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\n"));
        out.clear();
        b.data(
            &mut publisher,
            b"CONNECTED\nversion:1.2\n\n\0",
            now,
            &mut out,
        );
        assert!(b.publisher_ready && out.is_empty());
        let mut subs = [Peer::new(0), Peer::new(1)];
        for (i, p) in subs.iter_mut().enumerate() {
            b.opened(p, &mut out);
            out.clear();
            // Split in two reads: the partial frame is kept.
            b.data(p, b"\nCONNECTED\nvers", now, &mut out);
            b.data(p, b"ion:1.2\n\n\0", now, &mut out);
            let expected =
                format!("SUBSCRIBE\nid:0\ndestination:/topic/bench\nack:auto\nreceipt:sub-{i}\n");
            assert!(
                out.starts_with(expected.as_bytes()),
                "{}",
                String::from_utf8_lossy(&out)
            );
            out.clear();
            b.data(p, b"RECEIPT\nreceipt-id:x\n\n\0", now, &mut out);
        }
        assert_eq!((b.subscribed, b.live), (2, 2));

        let mut net = NoNet::default();
        assert!(b.step(now, &mut net));
        assert_eq!(b.stage, Stage::Warmup);
        assert_eq!(b.published, 2, "the window holds two");
        let sent = bodies(&net.sent);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|body| body.len() == 40));
        assert!(b.step(now, &mut net));
        assert_eq!(b.published, 2, "nothing delivered yet");

        // Subscriber 0 gets both, subscriber 1 only the second (one lost), then a repeat.
        let both: Vec<u8> = [message(&sent[0]), message(&sent[1])].concat();
        b.data(&mut subs[0], &both, now, &mut out);
        assert_eq!(b.acked, 0);
        b.data(&mut subs[1], &message(&sent[1]), now, &mut out);
        assert_eq!(b.acked, 2);
        b.data(&mut subs[1], &message(&sent[0]), now, &mut out);
        assert_eq!((b.lost, b.out_of_order, b.corrupt), (1, 1, 0));
        b.data(
            &mut subs[0],
            &message(b"not a stamp at all, but forty bytes long"),
            now,
            &mut out,
        );
        assert_eq!(b.corrupt, 1);

        net.sent.clear();
        assert!(b.step(now, &mut net));
        let sent = bodies(&net.sent);
        assert_eq!(sent.len(), 2);
        assert_eq!(wire::hex16(&sent[0][..16]), Some(2));
        assert_eq!(wire::hex16(&sent[1][..16]), Some(3));
        assert!(out.is_empty());
    }

    #[test]
    fn an_error_frame_counts_and_stops_the_connection() {
        let s = settings(&args(&["--transport", "tcp", "--subs", "1"])).unwrap();
        let mut b = Bench::new(s).unwrap();
        let mut out = Vec::new();
        let mut p = Peer::new(0);
        b.opened(&mut p, &mut out);
        b.data(
            &mut p,
            b"ERROR\nmessage:no\n\nbad login\0",
            Instant::now(),
            &mut out,
        );
        assert_eq!(b.stomp_errors, 1);
        assert_eq!(p.phase, Phase::Broken);
        b.data(&mut p, b"garbage", Instant::now(), &mut out);
        assert_eq!(b.stomp_errors, 1);
    }

    #[test]
    fn only_loopback_and_sane_options() {
        for bad in [
            &["--transport", "udp"][..],
            &["--transport", "tcp", "--addr", "10.0.0.1:61613"],
            &["--url", "ws://192.168.0.1/ws"],
            &["--size", "8"],
            &["--destination", "/topic/a:b"],
            &["--login", ""],
            &["--window", "0"],
        ] {
            assert!(settings(&args(bad)).is_err(), "{bad:?}");
        }
    }

    /// Both transports against Sockeye's own broker, in this process.
    #[test]
    fn end_to_end_against_the_broker() {
        use sockeye::server::ServerConfig;
        use sockeye_chat::server::{NoApplication, StompConfig, StompServer};

        let config = ServerConfig {
            workers: 1,
            shutdown_timeout: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = StompServer::start(
            any,
            Some(any),
            config,
            StompConfig::default(),
            Box::new(NoApplication),
        )
        .unwrap();
        let url = format!("ws://{}/ws", server.ws_addr());
        let addr = server.tcp_addr().unwrap().to_string();
        let pid = std::process::id().to_string();
        for (transport, flag, target) in [("ws", "--url", &url), ("tcp", "--addr", &addr)] {
            let s = settings(&args(&[
                "--transport",
                transport,
                flag,
                target,
                "--subs",
                "5",
                "--seconds",
                "0.3",
                "--warmup",
                "0.1",
                "--server-pid",
                &pid,
            ]))
            .unwrap();
            let b = execute(s).unwrap();
            assert_eq!(b.errors(), 0, "{transport}");
            assert_eq!(b.subscribed, 5, "{transport}");
            assert!(b.window.deliveries > 0, "{transport}");
            assert!(b.window.published > 0, "{transport}");
            assert!(b.published >= b.window.published);
        }
        server.shutdown().unwrap();
    }
}
