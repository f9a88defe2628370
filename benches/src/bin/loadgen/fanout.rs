//! `loadgen fanout`: one publisher, N subscribers of one STOMP destination, over WebSocket
//! (the engine's client event loop) or plain TCP (a small mio loop), in one thread.
//!
//! Every connection speaks STOMP 1.2: CONNECT (heart-beats off), then each subscriber
//! SUBSCRIBEs with a receipt; once every receipt is in, the publisher SENDs messages of S bytes
//! whose body starts with the sequence number and the send time (hex, nanoseconds on this
//! process's clock), so a subscriber knows each delivery's latency and whether it came in
//! order. The publisher is paced in one of two ways (and, with `--rate`, no faster than the
//! rate allows):
//!
//! * **window** (the default): at most `--window` messages (default 4) may be outstanding at
//!   the slowest subscriber, so the latency measured is the broker's, not a queue the load
//!   generator built up.
//! * **flood** (`--flood R`): as a real publisher, which knows nothing of its subscribers, the
//!   publisher SENDs every message with a `receipt` header and keeps at most R SENDs (1 to
//!   65,536) without their RECEIPT; deliveries play no part in its pacing. Subscribers that do
//!   not keep up meet the server's slow-consumer policy.
//!
//! Slow consumers, in either mode: a subscriber that gets an ERROR whose `message` header is
//! `slow consumer` and is then closed counts as *disconnected as slow* (not an error); what it
//! missed after its last delivery is excused (reported as missed by slow subscribers). Every
//! subscriber still connected at the end must have received every message published after its
//! subscription's receipt, in order: a gap, or a tail missing at the end, is lost, an earlier
//! or repeated message out of order, and either fails the run. With `--slow-consumer drop`
//! (the server runs that policy, which drops what a subscriber has no room for and leaves it
//! connected) those gaps and tails are counted as dropped by the server instead, not as errors.
//!
//! Stages: open (paced) → subscribe → warm up → measure (deliveries, latencies, the server's CPU
//! time) → drain (stop publishing; wait for every outstanding delivery, and in flood mode every
//! RECEIPT, for at most 5 s) → close → report.
//!
//! **Threads** (`--threads T`, default 1): one thread reading every subscriber's deliveries
//! is what limits a single-topic fan-out once the server has several cores (it takes most of
//! a core at 600,000 deliveries/s). With T threads, each runs its own loop over every T-th
//! subscriber; thread 0, the *leader*, also holds the publisher and moves the stages. They
//! share a [`Team`]: the published count, each thread's subscribers' progress (the leader's
//! window is at the slowest subscriber of all) and the stage; a thread whose subscribers
//! catch up wakes the leader's loop. The figures are summed at the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
/// Most bytes of SENDs a flood keeps without their RECEIPT (within the WebSocket client's
/// default send queue, 16 MiB).
const FLOOD_BYTES: u64 = 8 << 20;
/// Bytes of the body holding the sequence number and the send time (16 hex digits each).
const STAMP: usize = 32;

/// Most threads a run may have (`--threads`).
const MAX_THREADS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Tcp,
}

/// What the server does with a subscriber that falls behind (its `--slow-consumer`): only
/// `drop` changes the accounting, by leaving connected subscribers with gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Disconnect,
    Throttle,
    Drop,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Disconnect => "disconnect",
            Policy::Throttle => "throttle",
            Policy::Drop => "drop",
        }
    }
}

#[derive(Clone)]
pub struct Settings {
    pub transport: Transport,
    /// The publisher's URL (WebSocket) or address (TCP), as given.
    pub target_text: String,
    pub addr: SocketAddr,
    pub url: String,
    /// Where the subscribers go (`--subscribe-urls` / `--subscribe-addrs`; by default the
    /// publisher's server): subscriber `i` to the `i % n`th, as given (a URL or an address).
    pub sub_targets: Vec<(String, SocketAddr)>,
    pub subs: usize,
    pub size: usize,
    pub rate: f64,
    pub window: u64,
    /// Flood mode: at most this many SENDs without their RECEIPT (window mode when `None`).
    pub flood: Option<u64>,
    /// The server's slow-consumer policy, as far as the accounting of gaps goes.
    pub policy: Policy,
    /// Subscribers 0..stall read nothing during the warm-up and the measured window (a flood
    /// over TCP only): slow consumers on purpose, to see the server's policy at work.
    pub stall: usize,
    pub secs: f64,
    pub warmup: f64,
    /// The server's processes (`--server-pid A,B,...`): their CPU time is summed.
    pub pids: Vec<u32>,
    pub destination: String,
    pub login: String,
    pub passcode: String,
    pub vhost: String,
    pub conn_rate: f64,
    /// Offer permessage-deflate (`--deflate`, WebSocket only): a subscriber it was not agreed
    /// with counts as a connection error.
    pub deflate: bool,
    /// Threads sharing the subscribers (`--threads`; see the module docs).
    pub threads: usize,
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut o = Opts::parse(args, &["deflate"])?;
    let transport = match o.get("transport", "ws".to_string())?.as_str() {
        "ws" => Transport::Ws,
        "tcp" => Transport::Tcp,
        other => return Err(format!("--transport is ws or tcp, not {other:?}")),
    };
    let url: String = o.get("url", "ws://127.0.0.1:8080/ws".to_string())?;
    let addr_text: String = o.get("addr", "127.0.0.1:61613".to_string())?;
    let (target_text, addr) = match transport {
        Transport::Ws => (url.clone(), loopback_target(&url)?.addr),
        Transport::Tcp => (addr_text.clone(), loopback_addr(&addr_text)?),
    };
    let sub_urls: Option<String> = o.opt("subscribe-urls")?;
    let sub_addrs: Option<String> = o.opt("subscribe-addrs")?;
    let sub_targets = match (&transport, sub_urls, sub_addrs) {
        (_, None, None) => vec![(target_text.clone(), addr)],
        (Transport::Ws, Some(list), None) => split_list("subscribe-urls", &list)?
            .into_iter()
            .map(|u| Ok((u.to_string(), loopback_target(u)?.addr)))
            .collect::<Result<_, String>>()?,
        (Transport::Tcp, None, Some(list)) => split_list("subscribe-addrs", &list)?
            .into_iter()
            .map(|a| Ok((a.to_string(), loopback_addr(a)?)))
            .collect::<Result<_, String>>()?,
        _ => {
            return Err(
                "--subscribe-urls is for --transport ws, --subscribe-addrs for --transport tcp"
                    .into(),
            )
        }
    };
    let pids = match o.opt::<String>("server-pid")? {
        None => Vec::new(),
        Some(list) => split_list("server-pid", &list)?
            .into_iter()
            .map(|p| {
                p.parse::<u32>()
                    .map_err(|_| format!("--server-pid wants PID[,PID...], got {list:?}"))
            })
            .collect::<Result<_, String>>()?,
    };
    let window: Option<u64> = o.opt("window")?;
    let s = Settings {
        transport,
        target_text,
        addr,
        url,
        sub_targets,
        subs: bounded("subs", o.get("subs", 100)?, 1, MAX_CONNS)?,
        size: bounded("size", o.get("size", 100)?, STAMP, 1 << 20)?,
        rate: bounded("rate", o.get("rate", 0.0)?, 0.0, 1e6)?,
        window: bounded("window", window.unwrap_or(4), 1, 1 << 16)?,
        flood: o
            .opt("flood")?
            .map(|r| bounded("flood", r, 1, 1 << 16))
            .transpose()?,
        stall: o.get("stall", 0)?,
        policy: match o.get("slow-consumer", "disconnect".to_string())?.as_str() {
            "disconnect" => Policy::Disconnect,
            "throttle" => Policy::Throttle,
            "drop" => Policy::Drop,
            other => {
                return Err(format!(
                    "--slow-consumer is disconnect, throttle or drop, not {other:?}"
                ))
            }
        },
        secs: bounded("seconds", o.get("seconds", 10.0)?, 0.1, MAX_SECS)?,
        warmup: bounded("warmup", o.get("warmup", 1.0)?, 0.0, MAX_SECS)?,
        pids,
        destination: o.get("destination", "/topic/bench".to_string())?,
        login: o.get("login", "guest".to_string())?,
        passcode: o.get("passcode", "guest".to_string())?,
        vhost: o.get("vhost", "/".to_string())?,
        conn_rate: bounded("conn-rate", o.get("conn-rate", 2000.0)?, 1.0, 1e6)?,
        deflate: o.flag("deflate"),
        threads: bounded("threads", o.get("threads", 1)?, 1, MAX_THREADS)?,
    };
    o.finish()?;
    if s.stall > 0 && (s.flood.is_none() || s.transport != Transport::Tcp) {
        return Err("--stall is for a flood (--flood R) over TCP (--transport tcp)".into());
    }
    if s.sub_targets.len() > s.subs {
        return Err(format!(
            "{} servers to subscribe at, for {} subscribers",
            s.sub_targets.len(),
            s.subs
        ));
    }
    if s.threads > s.subs {
        return Err(format!(
            "--threads {} for {} subscribers",
            s.threads, s.subs
        ));
    }
    if s.stall > s.subs {
        return Err(format!("--stall {} of {} subscribers", s.stall, s.subs));
    }
    if let Some(r) = s.flood {
        if window.is_some() {
            return Err(
                "--window and --flood exclude each other: a flood is paced by receipts".into(),
            );
        }
        // What may be in flight must fit the client's send queue (16 MiB by default).
        if r.saturating_mul(s.size as u64 + 256) > FLOOD_BYTES {
            return Err(format!(
                "--flood {r} × --size {}: more than {} MiB of SENDs in flight",
                s.size,
                FLOOD_BYTES >> 20
            ));
        }
    }
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

/// A TCP address, loopback only.
fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("wanted IP:PORT, got {text:?}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr}: only loopback targets (127.0.0.0/8, [::1]) are allowed"
        ));
    }
    Ok(addr)
}

/// A comma-separated list, without empty items (at most 64).
fn split_list<'a>(name: &str, list: &'a str) -> Result<Vec<&'a str>, String> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) || items.len() > 64 {
        return Err(format!(
            "--{name} wants a comma-separated list (1 to 64 items), got {list:?}"
        ));
    }
    Ok(items)
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
    /// A subscriber got ERROR `slow consumer`: everything after it is ignored, and the server
    /// should close the connection.
    Slow,
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

    /// After an ERROR or garbage: what arrives is ignored.
    fn ignored(&self) -> bool {
        matches!(self.phase, Phase::Broken | Phase::Slow)
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

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Opening,
        Stage::Warmup,
        Stage::Measure,
        Stage::Drain,
        Stage::Closing,
        Stage::Done,
    ];

    fn from_u8(n: u8) -> Stage {
        Stage::ALL[usize::from(n).min(Stage::ALL.len() - 1)]
    }
}

/// What the threads of one run share (see the module docs). Thread 0 (the leader) writes the
/// stage and the published count; each other thread writes its own [`Part`].
pub struct Team {
    /// The zero of the timestamps in message bodies, the same for every thread.
    base: Instant,
    stage: AtomicU8,
    /// The leader's `published`, stored before the SENDs go out (so a thread that reads a
    /// delivery of message n finds n below it).
    published: AtomicU64,
    /// Per thread (the leader's entry unused).
    parts: Box<[Part]>,
    /// Wakes the leader's loop.
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// One thread's progress, as the leader needs it.
#[derive(Default)]
struct Part {
    /// Every live subscriber of the thread has every message before this one.
    acked: AtomicU64,
    live: AtomicU32,
    subscribed: AtomicUsize,
    /// Subscribers subscribed or failed to.
    settled: AtomicUsize,
    /// In the drain: every live subscriber has everything published.
    drained: AtomicBool,
}

impl Team {
    fn new(threads: usize) -> Team {
        Team {
            base: Instant::now(),
            stage: AtomicU8::new(Stage::Opening as u8),
            published: AtomicU64::new(0),
            parts: (0..threads).map(|_| Part::default()).collect(),
            waker: OnceLock::new(),
        }
    }

    fn followers(&self) -> &[Part] {
        &self.parts[1..]
    }

    fn wake_leader(&self) {
        if let Some(wake) = self.waker.get() {
            wake();
        }
    }

    /// Sets how the leader's loop is woken (its transport does, once its loop exists).
    pub fn set_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(wake);
    }
}

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    end: Option<Instant>,
    /// The sum over the server's processes (`None` unless every one could be read).
    server_cpu: [Option<Duration>; 2],
    /// Each of the server's processes.
    server_cpu_each: Vec<[Option<Duration>; 2]>,
    own_cpu: [Duration; 2],
    deliveries: u64,
    published: u64,
    latency: Histogram,
}

/// Figures of the subscribers of one server (`--subscribe-urls`, `--subscribe-addrs`).
#[derive(Default)]
struct PerTarget {
    subscribed: u64,
    /// Deliveries and their latencies over the measured window.
    deliveries: u64,
    latency: Histogram,
    /// Lost over the whole run (gaps, tails, subscribers gone).
    lost: u64,
}

pub struct Bench {
    s: Settings,
    /// The threads of the run, when there are several; this one's number (0 leads) and how
    /// many subscribers it serves.
    team: Option<Arc<Team>>,
    part: usize,
    share: usize,
    by_target: Vec<PerTarget>,
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
    /// Per outstanding message (index `seq % window`): subscribers that have it (window mode).
    counts: Vec<u32>,
    /// RECEIPTs for SENDs, in order: every SEND before this one has its receipt (flood mode).
    receipted: u64,
    /// The sum of `next_seq` over the live subscribers: all have every message published when
    /// it is `live × published`.
    sum_next: u64,
    publish_from: Option<Instant>,
    sending: bool,
    /// A SEND frame of the right size; the stamp is written into it for each message.
    send_template: Vec<u8>,
    stamp_at: usize,
    /// Where the template's receipt id goes (flood mode): the sequence number, 16 hex digits.
    receipt_at: Option<usize>,
    pub_out: Vec<u8>,
    window: Window,
    lost: u64,
    out_of_order: u64,
    corrupt: u64,
    /// Subscribers that got ERROR `slow consumer`, and those of them the server then closed.
    slow_told: u64,
    slow_closed: u64,
    /// Told they were slow, still open when the bench closed everything (an error).
    slow_unclosed: u64,
    /// The first line of the first ERROR `slow consumer` body.
    slow_note: Option<String>,
    /// Messages subscribers disconnected as slow missed after their last delivery (excused).
    missed_by_slow: u64,
    /// Gaps and missing tails of connected subscribers under `--slow-consumer drop` (the
    /// server's policy dropped them).
    dropped: u64,
    /// Subscribers still subscribed and connected when the bench closed everything.
    connected_at_end: u64,
    /// SENDs still without their RECEIPT at the end (flood mode; an error).
    unreceipted: u64,
    send_errors: u64,
    conn_errors: u64,
    stomp_errors: u64,
    closed_early: u64,
    aborted: Option<String>,
    printed: usize,
}

impl Bench {
    #[cfg(test)]
    fn new(s: Settings) -> Result<Bench, String> {
        Bench::in_team(s, 0, None)
    }

    /// Thread `part`'s bench of a run of several threads (`team`), or the only one.
    fn in_team(s: Settings, part: usize, team: Option<Arc<Team>>) -> Result<Bench, String> {
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
        let mut receipt_at = None;
        if s.flood.is_some() {
            // The same frame with a receipt header, its id filled in per message.
            send_template.clear();
            encode(
                Command::Send,
                [
                    ("destination", s.destination.as_str()),
                    ("receipt", "0000000000000000"),
                ],
                &body,
                opts,
                &mut send_template,
            )
            .map_err(|e| format!("SEND frame: {e}"))?;
            let key = b"\nreceipt:";
            receipt_at = send_template
                .windows(key.len())
                .position(|w| w == key)
                .map(|at| at + key.len());
        }
        let stamp_at = send_template.len() - 1 - s.size;
        let now = Instant::now();
        let parts = team.as_ref().map_or(1, |t| t.parts.len());
        let base = team.as_ref().map_or(now, |t| t.base);
        Ok(Bench {
            team,
            part,
            share: (s.subs + parts - 1 - part) / parts,
            counts: vec![0; s.window as usize],
            by_target: (0..s.sub_targets.len())
                .map(|_| PerTarget::default())
                .collect(),
            s,
            base,
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
            receipted: 0,
            sum_next: 0,
            publish_from: None,
            sending: false,
            send_template,
            stamp_at,
            receipt_at,
            pub_out: Vec::new(),
            window: Window::default(),
            lost: 0,
            out_of_order: 0,
            corrupt: 0,
            slow_told: 0,
            slow_closed: 0,
            slow_unclosed: 0,
            slow_note: None,
            missed_by_slow: 0,
            dropped: 0,
            connected_at_end: 0,
            unreceipted: 0,
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
        if let (Some(team), 0) = (&self.team, self.part) {
            team.stage.store(stage as u8, Ordering::Release);
        }
    }

    /// This thread's entry in the team (a follower's).
    fn own_part(&self) -> Option<&Part> {
        self.team
            .as_deref()
            .filter(|_| self.part > 0)
            .map(|t| &t.parts[self.part])
    }

    /// A follower takes in what the leader has published so far.
    fn sync_published(&mut self) {
        if let Some(team) = self.team.as_deref().filter(|_| self.part > 0) {
            self.published = team.published.load(Ordering::Acquire);
        }
    }

    /// A follower tells the leader how its subscribers stand.
    fn report_progress(&self) {
        if let Some(p) = self.own_part() {
            p.live.store(self.live, Ordering::Relaxed);
            p.subscribed.store(self.subscribed, Ordering::Relaxed);
            p.settled
                .store(self.subscribed + self.failed, Ordering::Relaxed);
        }
    }

    /// Whether no subscriber is left to publish to. In a team the leader decides (its
    /// `step` looks at every thread's count); a follower never does.
    fn none_live(&self) -> bool {
        match &self.team {
            None => self.live == 0,
            Some(team) if self.part == 0 => {
                let others: u32 = team
                    .followers()
                    .iter()
                    .map(|p| p.live.load(Ordering::Relaxed))
                    .sum();
                self.live + others == 0
            }
            Some(_) => false,
        }
    }

    /// Every thread's subscribers have every message before this one (the leader's window).
    fn team_acked(&self) -> u64 {
        match &self.team {
            // A thread with no subscriber left moves no more: it holds nothing back.
            Some(team) => team
                .followers()
                .iter()
                .filter(|p| p.live.load(Ordering::Relaxed) > 0)
                .map(|p| p.acked.load(Ordering::Acquire))
                .fold(self.acked, u64::min),
            None => self.acked,
        }
    }

    /// Subscribers subscribed, and those settled (subscribed or failed), over every thread.
    fn team_subscribed(&self) -> (usize, usize) {
        let (mut subscribed, mut settled) = (self.subscribed, self.subscribed + self.failed);
        if let Some(team) = &self.team {
            for p in team.followers() {
                subscribed += p.subscribed.load(Ordering::Relaxed);
                settled += p.settled.load(Ordering::Relaxed);
            }
        }
        (subscribed, settled)
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
        if peer.phase == Phase::Slow {
            // The server cut a subscriber it had told it was slow: the end may be abrupt.
            return;
        }
        if peer.phase == Phase::Connecting {
            if !peer.is_publisher() {
                self.failed += 1;
                self.report_progress();
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
        if peer.phase == Phase::Slow {
            self.slow_closed += 1;
            return;
        }
        self.closed_early += 1;
        let who = who(peer);
        self.complain(format_args!("{who}: closed by the server"));
        if peer.is_publisher() {
            self.abort("the publisher's connection closed".into(), Instant::now());
        } else if peer.phase == Phase::Ready {
            self.leave(peer);
            self.lose(peer, self.published.saturating_sub(peer.next_seq));
            self.advance();
            if self.none_live() {
                self.abort("every subscriber is gone".into(), Instant::now());
            }
        }
    }

    /// Bytes from a connection: whole STOMP frames are handled, a partial one is kept.
    pub fn data(&mut self, peer: &mut Peer, bytes: &[u8], now: Instant, out: &mut Vec<u8>) {
        if peer.ignored() {
            return;
        }
        self.sync_published();
        if peer.buf.is_empty() {
            let used = self.frames(peer, bytes, now, out);
            if used < bytes.len() && !peer.ignored() {
                peer.buf.extend_from_slice(&bytes[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut peer.buf);
            buf.extend_from_slice(bytes);
            let used = self.frames(peer, &buf, now, out);
            buf.drain(..used);
            if !peer.ignored() {
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
                        if peer.ignored() {
                            return buf.len();
                        }
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
                self.by_target[peer.index % self.s.sub_targets.len()].subscribed += 1;
                self.live += 1;
                self.sum_next += peer.next_seq;
                self.report_progress();
                if let Some(team) = self.team.as_deref().filter(|_| self.part > 0) {
                    team.wake_leader();
                }
            }
            (Command::Receipt, Phase::Ready) if peer.is_publisher() && self.s.flood.is_some() => {
                let id = parsed.header("receipt-id").unwrap_or("");
                match wire::hex16(id.as_bytes()) {
                    Some(seq) if seq == self.receipted && seq < self.published => {
                        self.receipted += 1;
                    }
                    seq => {
                        self.stomp_errors += 1;
                        let expected = self.receipted;
                        self.complain(format_args!(
                            "publisher: RECEIPT {id:?} while {expected:x} was due"
                        ));
                        if let Some(seq) = seq.filter(|&q| q > expected && q < self.published) {
                            self.receipted = seq + 1;
                        }
                    }
                }
            }
            (Command::Error, _)
                if !peer.is_publisher() && parsed.header("message") == Some("slow consumer") =>
            {
                self.slow_told += 1;
                if self.slow_note.is_none() {
                    let body = String::from_utf8_lossy(parsed.body);
                    let line = body.trim().lines().next().unwrap_or("").trim();
                    self.slow_note = Some(line.to_string());
                }
                if peer.phase == Phase::Ready {
                    // Excused: what it missed after its last delivery.
                    self.missed_by_slow += self.published.saturating_sub(peer.next_seq);
                    self.leave(peer);
                    self.advance();
                    if self.none_live() {
                        self.stop("every subscriber was disconnected as slow", Instant::now());
                    }
                }
                peer.phase = Phase::Slow;
            }
            (Command::Error, _) => {
                self.stomp_errors += 1;
                let message = parsed.header("message").unwrap_or("").to_string();
                let body = String::from_utf8_lossy(parsed.body).trim().to_string();
                let who = who(peer);
                self.complain(format_args!("{who}: ERROR {message:?} {body:?}"));
                if peer.phase == Phase::Ready && !peer.is_publisher() {
                    self.leave(peer);
                    self.lose(peer, self.published.saturating_sub(peer.next_seq));
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
            if self.s.policy == Policy::Drop {
                self.dropped += seq - expected;
            } else {
                self.lose(peer, seq - expected);
            }
        }
        self.sum_next += seq + 1 - expected;
        peer.next_seq = seq + 1;
        if self.s.flood.is_none() {
            for q in expected.max(self.acked)..=seq {
                self.counts[(q % self.s.window) as usize] += 1;
            }
            if expected <= self.acked {
                self.advance();
            }
        }
        if self.stage == Stage::Measure {
            self.window.deliveries += 1;
            let now_ns = (now - self.base).as_nanos() as u64;
            let latency = now_ns.saturating_sub(sent);
            self.window.latency.record(latency);
            let t = &mut self.by_target[peer.index % self.s.sub_targets.len()];
            t.deliveries += 1;
            t.latency.record(latency);
        }
    }

    /// Messages subscriber `peer` will never have, counted lost (for it and its server).
    fn lose(&mut self, peer: &Peer, n: u64) {
        self.lost += n;
        self.by_target[peer.index % self.s.sub_targets.len()].lost += n;
    }

    /// Whether subscribers told to stall (`--stall`) read nothing now.
    pub fn stalling(&self) -> bool {
        self.s.stall > 0 && matches!(self.stage, Stage::Warmup | Stage::Measure)
    }

    /// Whether this connection is to read nothing now.
    pub fn stalls(&self, peer: &Peer) -> bool {
        peer.index < self.s.stall && peer.phase == Phase::Ready && self.stalling()
    }

    /// A live subscriber leaves.
    fn leave(&mut self, peer: &Peer) {
        self.live -= 1;
        self.sum_next -= peer.next_seq;
        self.report_progress();
    }

    /// Stops publishing early, not as an error: the measured window (if it started) ends here.
    fn stop(&mut self, why: &str, now: Instant) {
        if self.stage >= Stage::Drain {
            return;
        }
        eprintln!("note: {why}: publishing stops");
        if self.stage == Stage::Measure {
            self.sample(1, now);
        }
        self.sending = false;
        self.enter(Stage::Drain, now);
    }

    /// Whether the drain is over: every live subscriber has every message published (and in
    /// flood mode every SEND has its receipt), and every subscriber told it was slow is closed.
    fn drained(&self) -> bool {
        let delivered = match self.s.flood {
            // (A thread whose subscribers are all gone has nothing to wait for.)
            None => self.live == 0 || self.acked >= self.published,
            Some(_) => {
                // Receipts come to the publisher, that is, to the leader.
                (self.part > 0 || self.receipted >= self.published)
                    && self.sum_next == u64::from(self.live) * self.published
            }
        };
        delivered && self.slow_closed >= self.slow_told
    }

    /// Moves `acked` past the messages every live subscriber has (window mode).
    fn advance(&mut self) {
        if self.s.flood.is_some() {
            return;
        }
        let before = self.acked;
        while self.acked < self.published {
            let slot = (self.acked % self.s.window) as usize;
            if self.counts[slot] < self.live {
                break;
            }
            self.counts[slot] = 0;
            self.acked += 1;
        }
        if self.acked != before {
            if let (Some(team), Some(p)) = (self.team.as_deref(), self.own_part()) {
                p.acked.store(self.acked, Ordering::Release);
                team.wake_leader();
            }
        }
    }

    fn sample(&mut self, i: usize, now: Instant) {
        let each: Vec<Option<Duration>> = self
            .s
            .pids
            .iter()
            .map(|&pid| sys::cpu_time(pid).ok())
            .collect();
        self.window.server_cpu[i] = if each.is_empty() {
            None
        } else {
            each.iter().copied().sum()
        };
        self.window.server_cpu_each.resize(each.len(), [None; 2]);
        for (slot, cpu) in self.window.server_cpu_each.iter_mut().zip(each) {
            slot[i] = cpu;
        }
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
        let mut allowed = match self.s.flood {
            None => (self.team_acked() + self.s.window).saturating_sub(self.published),
            Some(r) => (self.receipted + r).saturating_sub(self.published),
        };
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
            if let Some(r) = self.receipt_at {
                wire::put_hex16(&mut self.send_template[r..r + 16], seq);
            }
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
        if self.part > 0 {
            return self.follow(now, d);
        }
        let since = now - self.stage_at;
        if self.team.is_some()
            && matches!(self.stage, Stage::Warmup | Stage::Measure)
            && self.none_live()
        {
            self.abort("every subscriber is gone".into(), now);
        }
        match self.stage {
            Stage::Opening => {
                self.launch(now, d);
                let (subscribed, settled) = self.team_subscribed();
                if self.publisher_ready && settled >= self.s.subs {
                    if subscribed == 0 {
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
                            self.team_subscribed().0,
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
            Stage::Drain if (self.drained() && self.team_drained()) || since >= DRAIN => {
                self.enter(Stage::Closing, now);
                self.close_everything(d);
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
            if let Some(team) = &self.team {
                team.published.store(self.published, Ordering::Release);
            }
            if !d.send_to_publisher(&self.pub_out) {
                self.send_errors += 1;
                self.complain(format_args!("publisher: send failed"));
            }
            self.pub_out.clear();
        }
        true
    }

    /// Whether every follower's subscribers have everything published (in the drain).
    fn team_drained(&self) -> bool {
        self.team.as_ref().is_none_or(|team| {
            team.followers()
                .iter()
                .all(|p| p.drained.load(Ordering::Acquire))
        })
    }

    /// The drain is over: close every connection, counting what each subscriber still
    /// misses.
    fn close_everything(&mut self, d: &mut dyn Driver) {
        let published = self.published;
        let (mut missing, mut connected, mut unclosed) = (0, 0, 0);
        let targets = self.s.sub_targets.len();
        let mut missing_at = vec![0; targets];
        d.close_all(&mut |p: &Peer| {
            if p.is_publisher() {
                return;
            }
            match p.phase {
                Phase::Ready => {
                    connected += 1;
                    let n = published.saturating_sub(p.next_seq);
                    missing += n;
                    missing_at[p.index % targets] += n;
                }
                Phase::Slow => unclosed += 1,
                _ => {}
            }
        });
        if self.s.policy == Policy::Drop {
            self.dropped += missing;
        } else {
            self.lost += missing;
            for (t, n) in self.by_target.iter_mut().zip(missing_at) {
                t.lost += n;
            }
        }
        self.connected_at_end = connected;
        self.slow_unclosed = unclosed;
        if self.s.flood.is_some() && self.part == 0 {
            self.unreceipted = published - self.receipted;
        }
    }

    /// A follower's turn: its subscribers, and the stages as the leader moves them.
    fn follow(&mut self, now: Instant, d: &mut dyn Driver) -> bool {
        let Some(team) = self.team.clone() else {
            return false;
        };
        self.sync_published();
        if self.stage == Stage::Opening {
            self.launch(now, d);
        }
        let lead = Stage::from_u8(team.stage.load(Ordering::Acquire));
        while self.stage < lead && self.stage < Stage::Closing {
            let next = Stage::from_u8(self.stage as u8 + 1);
            self.enter(next, now);
            if next == Stage::Closing {
                // The leader has stopped publishing: `published` is final.
                self.sync_published();
                self.close_everything(d);
            }
        }
        match self.stage {
            Stage::Drain => {
                let drained = self.drained();
                let part = &team.parts[self.part];
                if drained && !part.drained.swap(true, Ordering::AcqRel) {
                    team.wake_leader();
                }
            }
            Stage::Closing if d.len() == 0 || now - self.stage_at >= CLOSING => {
                self.enter(Stage::Done, now);
                return false;
            }
            Stage::Done => return false,
            _ => {}
        }
        true
    }

    /// Starts the publisher (the leader does), then this thread's subscribers (every
    /// `threads`-th from its number) as the connection rate allows.
    fn launch(&mut self, now: Instant, d: &mut dyn Driver) {
        if self.part > 0 {
            self.publisher_launched = true;
        }
        if !self.publisher_launched {
            self.publisher_launched = true;
            if let Err(e) = d.connect(Peer::new(usize::MAX)) {
                self.abort(format!("publisher: cannot connect: {e}"), now);
                return;
            }
        }
        let parts = self.team.as_ref().map_or(1, |t| t.parts.len());
        let due = (now - self.opening_at).as_secs_f64() * self.s.conn_rate / parts as f64;
        let due = (due.ceil() as usize).clamp(1, self.share);
        while self.launched < due {
            let index = self.part + self.launched * parts;
            self.launched += 1;
            if let Err(e) = d.connect(Peer::new(index)) {
                self.failed += 1;
                self.complain(format_args!("subscriber {index}: cannot connect: {e}"));
            }
        }
        self.report_progress();
    }

    /// The leader of a team of threads (whose loop its followers must be able to wake).
    pub fn leads_team(&self) -> Option<&Team> {
        self.team.as_deref().filter(|_| self.part == 0)
    }

    /// Adds a follower's figures to the leader's, once both are done.
    fn absorb(&mut self, f: Bench) {
        self.subscribed += f.subscribed;
        self.failed += f.failed;
        self.window.deliveries += f.window.deliveries;
        self.window.latency.merge(&f.window.latency);
        for (t, o) in self.by_target.iter_mut().zip(&f.by_target) {
            t.subscribed += o.subscribed;
            t.deliveries += o.deliveries;
            t.latency.merge(&o.latency);
            t.lost += o.lost;
        }
        self.lost += f.lost;
        self.out_of_order += f.out_of_order;
        self.corrupt += f.corrupt;
        self.slow_told += f.slow_told;
        self.slow_closed += f.slow_closed;
        self.slow_unclosed += f.slow_unclosed;
        if self.slow_note.is_none() {
            self.slow_note = f.slow_note;
        }
        self.missed_by_slow += f.missed_by_slow;
        self.dropped += f.dropped;
        self.connected_at_end += f.connected_at_end;
        self.send_errors += f.send_errors;
        self.conn_errors += f.conn_errors;
        self.stomp_errors += f.stomp_errors;
        self.closed_early += f.closed_early;
        if self.aborted.is_none() {
            self.aborted = f.aborted;
        }
        if f.stage != Stage::Done && self.aborted.is_none() {
            let why = format!(
                "thread {} did not finish (stopped at {:?})",
                f.part, f.stage
            );
            eprintln!("error: {why}");
            self.aborted = Some(why);
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
            + self.slow_unclosed
            + self.unreceipted
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

/// Runs the whole bench on its transport, within its time bound: in this thread, and with
/// `--threads T` in T - 1 more (each ends by the same deadline, so joining them is bounded).
fn execute(s: Settings) -> Result<Bench, String> {
    let team = (s.threads > 1).then(|| Arc::new(Team::new(s.threads)));
    let mut bench = Bench::in_team(s.clone(), 0, team.clone())?;
    let deadline = Instant::now() + bench.bound();
    let mut followers = Vec::new();
    for part in 1..s.threads {
        let follower = Bench::in_team(s.clone(), part, team.clone())?;
        let thread = std::thread::Builder::new()
            .name(format!("fanout-{part}"))
            .spawn(move || run_one(follower, deadline))
            .map_err(|e| format!("thread {part}: {e}"))?;
        followers.push(thread);
    }
    bench = run_one(bench, deadline)?;
    for (part, thread) in (1..).zip(followers) {
        match thread.join() {
            Ok(Ok(follower)) => bench.absorb(follower),
            Ok(Err(e)) => bench.abort(format!("thread {part}: {e}"), Instant::now()),
            Err(_) => bench.abort(format!("thread {part} panicked"), Instant::now()),
        }
    }
    Ok(bench)
}

/// One thread's loop on the run's transport.
fn run_one(mut bench: Bench, deadline: Instant) -> Result<Bench, String> {
    let run = match bench.s.transport {
        Transport::Ws => ws::run(&mut bench, deadline),
        Transport::Tcp => tcp::run(&mut bench, deadline),
    };
    if let Err(e) = run {
        // The others must not wait for this thread's subscribers.
        if let Some(p) = bench.own_part() {
            p.live.store(0, Ordering::Relaxed);
            p.settled.store(bench.share, Ordering::Relaxed);
            p.drained.store(true, Ordering::Release);
        }
        return Err(e);
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
    let transport = match (&s.transport, s.deflate) {
        (Transport::Ws, false) => "ws",
        (Transport::Ws, true) => "ws+deflate",
        (Transport::Tcp, _) => "tcp",
    };
    let rate = if s.rate > 0.0 {
        format!("{} msg/s", s.rate)
    } else if s.flood.is_some() {
        "as fast as receipts allow".into()
    } else {
        "as fast as the window allows".into()
    };
    let pacing = match s.flood {
        None => format!("window {}", s.window),
        Some(r) => format!("flood (at most {r} SENDs without their RECEIPT)"),
    } + &match s.stall {
        0 => String::new(),
        n => format!(", {n} subscribers stalled until the drain"),
    };
    let threads = match s.threads {
        1 => String::new(),
        n => format!(", {n} threads"),
    };
    println!(
        "fanout {transport} {}: 1 publisher → {} subscribers ({} subscribed, {} failed) of {}, \
         {} B, {rate}, {pacing}{threads}, {:.2} s window",
        s.target_text,
        s.subs,
        b.subscribed,
        b.failed,
        s.destination,
        s.size,
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
    let receipts = match s.flood {
        Some(_) => format!("{} receipts", b.receipted),
        None => "no receipts asked".into(),
    };
    println!(
        "  {} messages published ({receipts}); subscribers at the end: {} connected, {} \
         disconnected as slow (missed {} messages after their last delivery){}",
        b.published,
        b.connected_at_end,
        b.slow_closed,
        b.missed_by_slow,
        match &b.slow_note {
            Some(note) => format!(": {note:?}"),
            None => String::new(),
        }
    );
    if s.policy == Policy::Drop {
        println!(
            "  dropped by the server's drop policy (gaps on connected subscribers): {}",
            b.dropped
        );
    }
    // Each server process's share of a core over the window.
    let each_pct: Vec<Option<f64>> = w
        .server_cpu_each
        .iter()
        .map(|cpu| match (cpu, secs) {
            ([Some(a), Some(b)], Some(t)) if t > 0.0 => {
                Some(b.saturating_sub(*a).as_secs_f64() / t * 100.0)
            }
            _ => None,
        })
        .collect();
    match (cpu_per_delivery, server_pct) {
        (Some(c), Some(p)) => {
            let each = if s.pids.len() > 1 {
                let parts: Vec<String> = s
                    .pids
                    .iter()
                    .zip(&each_pct)
                    .map(|(pid, pct)| format!("pid {pid} {:.0}%", pct.unwrap_or(f64::NAN)))
                    .collect();
                format!(": {}", parts.join(", "))
            } else {
                String::new()
            };
            println!("  server: {c:.3} µs CPU per delivery ({p:.0}% of a core{each})")
        }
        _ => println!("  server: CPU not measured (give --server-pid)"),
    }
    // Per server subscribed at, when there are several.
    let mut targets_json = Vec::new();
    for ((text, _), t) in s.sub_targets.iter().zip(&b.by_target) {
        let dps = secs.filter(|&t| t > 0.0).map(|x| t.deliveries as f64 / x);
        let (t50, t99) = (
            t.latency.quantile(0.5) as f64 / 1000.0,
            t.latency.quantile(0.99) as f64 / 1000.0,
        );
        if s.sub_targets.len() > 1 {
            println!(
                "  subscribers at {text}: {} subscribed, {:.0} deliveries/s, latency p50 {:.2} \
                 ms, p99 {:.2} ms, lost {}",
                t.subscribed,
                dps.unwrap_or(0.0),
                t50 / 1000.0,
                t99 / 1000.0,
                t.lost
            );
        }
        targets_json.push(format!(
            "{{\"target\":{},\"subscribed\":{},\"deliveries\":{},\"deliveries_per_sec\":{},\
             \"p50_us\":{},\"p99_us\":{},\"lost\":{}}}",
            json_str(text),
            t.subscribed,
            t.deliveries,
            json_num(dps),
            json_num(Some(t50)),
            json_num(Some(t99)),
            t.lost
        ));
    }
    println!("  load generator: {:.0}% of a core", own_pct.unwrap_or(0.0));
    println!(
        "  errors: {errors} (lost {}, out of order {}, corrupt {}, send {}, connection {}, \
         STOMP {}, closed early {}, failed to open {}{}{}{})",
        b.lost,
        b.out_of_order,
        b.corrupt,
        b.send_errors,
        b.conn_errors,
        b.stomp_errors,
        b.closed_early,
        b.failed,
        match b.slow_unclosed {
            0 => String::new(),
            n => format!(", told slow but never closed {n}"),
        },
        match b.unreceipted {
            0 => String::new(),
            n => format!(", SENDs without RECEIPT {n}"),
        },
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
         \"lost\":{},\"out_of_order\":{},\"corrupt\":{},\"errors\":{errors},\
         \"pace\":\"{}\",\"receipt_window\":{},\"policy\":\"{}\",\"published_total\":{},\
         \"receipts\":{},\"unreceipted\":{},\"connected\":{},\"slow_disconnected\":{},\
         \"slow_unclosed\":{},\"missed_by_slow\":{},\"dropped\":{},\"slow_error\":{},\
         \"closed_early\":{},\"stalled\":{},\"subscribed_at\":[{}],\"server_pids\":[{}],\
         \"server_cpu_pct_each\":[{}],\"threads\":{}}}",
        json_str(&s.target_text),
        json_str(&s.destination),
        s.subs,
        b.subscribed,
        s.size,
        json_num(Some(s.rate)),
        match s.flood {
            None => s.window.to_string(),
            Some(_) => "null".into(),
        },
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
        if s.flood.is_some() { "flood" } else { "window" },
        s.flood.map_or("null".into(), |r| r.to_string()),
        s.policy.name(),
        b.published,
        b.receipted,
        b.unreceipted,
        b.connected_at_end,
        b.slow_closed,
        b.slow_unclosed,
        b.missed_by_slow,
        b.dropped,
        b.slow_note.as_deref().map_or("null".into(), json_str),
        b.closed_early,
        s.stall,
        targets_json.join(","),
        s.pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        each_pct
            .iter()
            .map(|&p| json_num(p))
            .collect::<Vec<_>>()
            .join(","),
        s.threads,
    );
    errors == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Connects nothing: the bench's bookkeeping alone (`peers` are the connections still
    /// open that `close_all` shows).
    #[derive(Default)]
    struct NoNet {
        sent: Vec<u8>,
        peers: Vec<Peer>,
    }

    impl Driver for NoNet {
        fn connect(&mut self, _peer: Peer) -> Result<(), String> {
            Ok(())
        }
        fn send_to_publisher(&mut self, frames: &[u8]) -> bool {
            self.sent.extend_from_slice(frames);
            true
        }
        fn close_all(&mut self, each: &mut dyn FnMut(&Peer)) {
            for p in self.peers.drain(..) {
                each(&p);
            }
        }
        fn len(&self) -> usize {
            0
        }
    }

    /// The bodies of the SENDs written so far, in order.
    fn bodies(sent: &[u8]) -> Vec<Vec<u8>> {
        sends(sent).into_iter().map(|(_, body)| body).collect()
    }

    /// The SENDs written so far, in order: their receipt header, their body.
    fn sends(sent: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < sent.len() {
            match parse(&sent[at..], &Limits::default(), Some(Version::V1_2)) {
                Ok(Status::Complete(f, used)) => {
                    assert_eq!(f.command, Command::Send);
                    assert_eq!(f.header("destination"), Some("/topic/bench"));
                    out.push((f.header("receipt").map(String::from), f.body.to_vec()));
                    at += used;
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    /// A bench with its publisher connected and `n` subscribers subscribed.
    fn ready(list: &[&str], n: usize, now: Instant) -> (Bench, Vec<Peer>) {
        let subs = n.to_string();
        let list = [list, &["--subs", &subs]].concat();
        let mut b = Bench::new(settings(&args(&list)).unwrap()).unwrap();
        // The tests' clock starts at `now`: stamps are taken from it (Bench::new read the
        // clock later, and a stamp before its base would read as 0).
        b.base = now;
        let mut out = Vec::new();
        let mut publisher = Peer::new(usize::MAX);
        b.opened(&mut publisher, &mut out);
        b.data(
            &mut publisher,
            b"CONNECTED\nversion:1.2\n\n\0",
            now,
            &mut out,
        );
        let mut subs: Vec<Peer> = (0..n).map(Peer::new).collect();
        for p in &mut subs {
            b.opened(p, &mut out);
            b.data(p, b"CONNECTED\nversion:1.2\n\n\0", now, &mut out);
            b.data(p, b"RECEIPT\nreceipt-id:x\n\n\0", now, &mut out);
        }
        out.clear();
        assert_eq!((b.subscribed, b.live as usize), (n, n));
        subs.push(publisher);
        (b, subs)
    }

    /// The RECEIPT of the SEND numbered `seq`.
    fn receipt(seq: u64) -> Vec<u8> {
        format!("RECEIPT\nreceipt-id:{seq:016x}\n\n\0").into_bytes()
    }

    const FLOOD: &[&str] = &[
        "--transport",
        "tcp",
        "--size",
        "40",
        "--warmup",
        "0",
        "--seconds",
        "1",
        "--flood",
        "3",
    ];

    #[test]
    fn receipts_alone_pace_the_flood() {
        let now = Instant::now();
        let (mut b, mut peers) = ready(FLOOD, 2, now);
        let mut publisher = peers.pop().unwrap();
        let mut out = Vec::new();
        let mut net = NoNet::default();
        assert!(b.step(now, &mut net));
        assert_eq!(b.published, 3, "three SENDs may wait for their receipt");
        let sent = sends(&net.sent);
        for (seq, (receipt, body)) in sent.iter().enumerate() {
            assert_eq!(receipt.as_deref(), Some(format!("{seq:016x}").as_str()));
            assert_eq!(wire::hex16(&body[..16]), Some(seq as u64));
            assert_eq!(body.len(), 40);
        }
        // Deliveries to everyone do not let the publisher go on.
        for p in &mut peers {
            for (_, body) in &sent {
                b.data(p, &message(body), now, &mut out);
            }
        }
        assert_eq!((b.lost, b.out_of_order, b.corrupt), (0, 0, 0));
        assert!(b.step(now, &mut net));
        assert_eq!(b.published, 3, "no receipt yet");
        // Each receipt lets exactly one more SEND go, deliveries or not.
        for seq in 0..20 {
            b.data(&mut publisher, &receipt(seq), now, &mut out);
            assert_eq!(b.receipted, seq + 1);
            assert!(b.step(now, &mut net));
            assert_eq!(b.published, seq + 4);
            assert!(b.published - b.receipted <= 3);
        }
        // Two receipts at once: two more SENDs, still never more than three unreceipted.
        b.data(
            &mut publisher,
            &[receipt(20), receipt(21)].concat(),
            now,
            &mut out,
        );
        assert!(b.step(now, &mut net));
        assert_eq!((b.receipted, b.published), (22, 25));
        let sent = sends(&net.sent);
        assert_eq!(sent.len(), 25);
        assert_eq!(sent[24].0.as_deref(), Some("0000000000000018"));
        // A receipt out of turn is a STOMP error.
        b.data(&mut publisher, &receipt(30), now, &mut out);
        assert_eq!((b.stomp_errors, b.receipted), (1, 22));
        assert!(out.is_empty());
    }

    #[test]
    fn a_slow_consumer_told_and_closed_is_excused_its_tail() {
        let t0 = Instant::now();
        let (mut b, mut peers) = ready(FLOOD, 2, t0);
        let mut publisher = peers.pop().unwrap();
        let mut out = Vec::new();
        let mut net = NoNet::default();
        assert!(b.step(t0, &mut net));
        assert!(b.step(t0, &mut net));
        assert_eq!((b.stage, b.published), (Stage::Measure, 3));
        let sent = bodies(&net.sent);
        for body in &sent {
            b.data(&mut peers[0], &message(body), t0, &mut out);
        }
        // Subscriber 1 has the first only, then is told it is slow, then closed.
        b.data(&mut peers[1], &message(&sent[0]), t0, &mut out);
        b.data(
            &mut peers[1],
            b"ERROR\nmessage:slow consumer\ncontent-type:text/plain\n\n2 messages to this \
              session could not be queued: 1048500 bytes were waiting for it to read.\nmore\0",
            t0,
            &mut out,
        );
        assert_eq!(peers[1].phase, Phase::Slow);
        assert_eq!((b.slow_told, b.slow_closed, b.live), (1, 0, 1));
        // The close may be abrupt (a reset): neither is an error.
        b.failed(&peers[1], "read: connection reset by peer");
        b.closed(&peers[1]);
        assert_eq!((b.slow_told, b.slow_closed, b.missed_by_slow), (1, 1, 2));
        assert_eq!(
            b.slow_note.as_deref(),
            Some(
                "2 messages to this session could not be queued: 1048500 bytes were waiting \
                 for it to read."
            )
        );
        assert_eq!(
            (b.lost, b.stomp_errors, b.conn_errors, b.closed_early),
            (0, 0, 0, 0)
        );

        // The flood goes on for the one left.
        for seq in 0..3 {
            b.data(&mut publisher, &receipt(seq), t0, &mut out);
        }
        net.sent.clear();
        assert!(b.step(t0, &mut net));
        assert_eq!(b.published, 6);
        for body in bodies(&net.sent) {
            b.data(&mut peers[0], &message(&body), t0, &mut out);
        }
        // The window ends; the drain waits for the last receipts, then closes.
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.step(t1, &mut net));
        assert_eq!(b.stage, Stage::Drain);
        assert!(b.step(t1, &mut net));
        assert_eq!(b.stage, Stage::Drain, "three SENDs still without receipt");
        for seq in 3..6 {
            b.data(&mut publisher, &receipt(seq), t1, &mut out);
        }
        net.peers = vec![peers.remove(0)];
        assert!(b.step(t1, &mut net));
        assert_eq!(b.stage, Stage::Closing);
        assert_eq!((b.connected_at_end, b.lost, b.unreceipted), (1, 0, 0));
        assert_eq!(b.errors(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_gap_or_a_missing_tail_on_a_connected_subscriber_is_lost() {
        for policy in ["disconnect", "throttle", "drop"] {
            let t0 = Instant::now();
            let list = [FLOOD, &["--slow-consumer", policy]].concat();
            let (mut b, mut peers) = ready(&list, 2, t0);
            let mut publisher = peers.pop().unwrap();
            let mut out = Vec::new();
            let mut net = NoNet::default();
            assert!(b.step(t0, &mut net));
            let sent = bodies(&net.sent);
            assert_eq!(sent.len(), 3);
            // Subscriber 0 misses the second; subscriber 1 has only the first.
            for i in [0, 2] {
                b.data(&mut peers[0], &message(&sent[i]), t0, &mut out);
            }
            b.data(&mut peers[1], &message(&sent[0]), t0, &mut out);
            for seq in 0..3 {
                b.data(&mut publisher, &receipt(seq), t0, &mut out);
            }
            assert!(b.step(t0, &mut net));
            assert_eq!(b.stage, Stage::Measure);
            let t1 = t0 + Duration::from_secs(1);
            assert!(b.step(t1, &mut net));
            assert_eq!(b.stage, Stage::Drain);
            let published = b.published;
            for seq in 3..published {
                b.data(&mut publisher, &receipt(seq), t1, &mut out);
            }
            for body in &bodies(&net.sent)[3..] {
                b.data(&mut peers[0], &message(body), t1, &mut out);
            }
            assert!(b.step(t1, &mut net));
            assert_eq!(
                b.stage,
                Stage::Drain,
                "subscriber 1 is behind: the drain waits"
            );
            net.peers = std::mem::take(&mut peers);
            assert!(b.step(t1 + DRAIN, &mut net));
            assert_eq!(b.stage, Stage::Closing);
            assert_eq!(b.connected_at_end, 2);
            // One gap at subscriber 0, the tail after the first at subscriber 1.
            let missing = 1 + (published - 1);
            if policy == "drop" {
                assert_eq!((b.lost, b.dropped), (0, missing), "{policy}");
                assert_eq!(b.errors(), 0, "{policy}");
            } else {
                assert_eq!((b.lost, b.dropped), (missing, 0), "{policy}");
                assert_eq!(b.errors(), missing, "{policy}");
            }
            assert_eq!((b.slow_closed, b.missed_by_slow), (0, 0));
        }
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
    fn a_slow_consumer_counts_in_window_mode_too() {
        let now = Instant::now();
        let (mut b, mut peers) = ready(&["--transport", "tcp", "--size", "40"], 2, now);
        let mut out = Vec::new();
        let mut net = NoNet::default();
        assert!(b.step(now, &mut net));
        assert_eq!(b.published, 4);
        let sent = bodies(&net.sent);
        assert!(sent.iter().all(|s| !s.is_empty()));
        assert!(sends(&net.sent).iter().all(|(r, _)| r.is_none()));
        for body in &sent {
            b.data(&mut peers[0], &message(body), now, &mut out);
        }
        // Subscriber 1 is let go: the window moves on without it.
        b.data(
            &mut peers[1],
            b"ERROR\nmessage:slow consumer\n\nheld up\0MESSAGE\n\n\0",
            now,
            &mut out,
        );
        b.closed(&peers[1]);
        assert_eq!((b.slow_closed, b.missed_by_slow, b.acked), (1, 4, 4));
        assert_eq!(
            (b.lost, b.corrupt, b.stomp_errors, b.closed_early),
            (0, 0, 0, 0)
        );
        assert_eq!(b.slow_note.as_deref(), Some("held up"));
        // Closed without being told: an error, as before.
        b.closed(&peers[0]);
        assert_eq!(b.closed_early, 1);
        assert!(b.aborted.is_some());
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
            &["--flood", "0"],
            &["--flood", "10", "--window", "4"],
            &["--flood", "65536", "--size", "1000"],
            &["--slow-consumer", "kick"],
            &["--stall", "1"],
            &["--stall", "1", "--flood", "10"],
            &[
                "--stall",
                "3",
                "--flood",
                "10",
                "--transport",
                "tcp",
                "--subs",
                "2",
            ],
            &["--subscribe-urls", "ws://10.0.0.1:80/ws"],
            &[
                "--subscribe-urls",
                "ws://127.0.0.1:1/ws,,ws://127.0.0.1:2/ws",
            ],
            &["--subscribe-addrs", "127.0.0.1:1"],
            &[
                "--transport",
                "tcp",
                "--subscribe-urls",
                "ws://127.0.0.1:1/ws",
            ],
            &["--transport", "tcp", "--subscribe-addrs", "10.0.0.1:61613"],
            &[
                "--subs",
                "1",
                "--subscribe-urls",
                "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
            ],
            &["--server-pid", "1,x"],
            &["--server-pid", ""],
        ] {
            assert!(settings(&args(bad)).is_err(), "{bad:?}");
        }
        let s = settings(&args(&[
            "--transport",
            "tcp",
            "--addr",
            "127.0.0.1:7",
            "--subscribe-addrs",
            "127.0.0.1:8, 127.0.0.2:9",
            "--server-pid",
            "10,11,12",
        ]))
        .unwrap();
        assert_eq!(s.addr, "127.0.0.1:7".parse().unwrap());
        let subs: Vec<&str> = s.sub_targets.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(subs, ["127.0.0.1:8", "127.0.0.2:9"]);
        assert_eq!(s.pids, [10, 11, 12]);
        let s = settings(&args(&["--url", "ws://127.0.0.1:5/ws"])).unwrap();
        assert_eq!(s.sub_targets.len(), 1);
        assert_eq!(s.sub_targets[0].0, "ws://127.0.0.1:5/ws");
    }

    #[test]
    fn subscribers_spread_over_servers_are_counted_per_server() {
        let t0 = Instant::now();
        let list = [FLOOD, &["--subscribe-addrs", "127.0.0.1:8,127.0.0.1:9"]].concat();
        let (mut b, mut peers) = ready(&list, 5, t0);
        let mut publisher = peers.pop().unwrap();
        let subscribed: Vec<u64> = b.by_target.iter().map(|t| t.subscribed).collect();
        assert_eq!(
            subscribed,
            [3, 2],
            "subscribers 0, 2, 4 at the first, 1, 3 at the other"
        );
        let mut out = Vec::new();
        let mut net = NoNet::default();
        assert!(b.step(t0, &mut net));
        assert!(b.step(t0, &mut net));
        assert_eq!((b.stage, b.published), (Stage::Measure, 3));
        let sent = bodies(&net.sent);
        // Everyone has every message but subscriber 3 (at the second server), which misses
        // the middle one; the second server's deliveries come 2 ms later.
        let t1 = t0 + Duration::from_millis(1);
        let t2 = t0 + Duration::from_millis(3);
        for (i, p) in peers.iter_mut().enumerate() {
            for (n, body) in sent.iter().enumerate() {
                if i == 3 && n == 1 {
                    continue;
                }
                b.data(
                    p,
                    &message(body),
                    if i % 2 == 0 { t1 } else { t2 },
                    &mut out,
                );
            }
        }
        for seq in 0..3 {
            b.data(&mut publisher, &receipt(seq), t1, &mut out);
        }
        assert_eq!(b.lost, 1);
        let lost: Vec<u64> = b.by_target.iter().map(|t| t.lost).collect();
        assert_eq!(lost, [0, 1]);
        let deliveries: Vec<u64> = b.by_target.iter().map(|t| t.deliveries).collect();
        assert_eq!(deliveries, [9, 5]);
        assert_eq!(b.window.deliveries, 14);
        // The second server's latencies are in the whole run's too: its p99 is the run's.
        let p99 = |h: &Histogram| h.quantile(0.99) as f64 / 1e6;
        assert!((p99(&b.by_target[0].latency) - 1.0).abs() < 0.1);
        assert!((p99(&b.by_target[1].latency) - 3.0).abs() < 0.1);
        assert!((p99(&b.window.latency) - 3.0).abs() < 0.1);
        // A tail missing at the end is lost at its own server.
        net.sent.clear();
        assert!(b.step(t1, &mut net));
        let more = bodies(&net.sent);
        assert_eq!(more.len(), 3);
        for (i, p) in peers.iter_mut().enumerate() {
            if i != 0 {
                for body in &more {
                    b.data(p, &message(body), t1, &mut out);
                }
            }
        }
        for seq in 3..6 {
            b.data(&mut publisher, &receipt(seq), t1, &mut out);
        }
        let t3 = t0 + Duration::from_secs(1);
        assert!(b.step(t3, &mut net));
        assert_eq!(b.stage, Stage::Drain);
        net.peers = std::mem::take(&mut peers);
        assert!(b.step(t3 + DRAIN, &mut net));
        assert_eq!(b.stage, Stage::Closing);
        let lost: Vec<u64> = b.by_target.iter().map(|t| t.lost).collect();
        assert_eq!(lost, [3, 1]);
        assert_eq!(b.lost, 4);
    }

    /// Subscribers `indices` of `b` (a thread's share) connect and subscribe.
    fn subscribe(b: &mut Bench, indices: &[usize], now: Instant) -> Vec<Peer> {
        let mut out = Vec::new();
        let mut subs: Vec<Peer> = indices.iter().map(|&i| Peer::new(i)).collect();
        for p in &mut subs {
            b.opened(p, &mut out);
            b.data(p, b"CONNECTED\nversion:1.2\n\n\0", now, &mut out);
            b.data(p, b"RECEIPT\nreceipt-id:x\n\n\0", now, &mut out);
        }
        subs
    }

    #[test]
    fn a_team_publishes_at_the_pace_of_its_slowest_thread() {
        let list = [
            "--transport",
            "tcp",
            "--size",
            "40",
            "--warmup",
            "0",
            "--seconds",
            "0.1",
            "--subs",
            "4",
            "--window",
            "2",
            "--threads",
            "2",
        ];
        let s = settings(&args(&list)).unwrap();
        let team = Arc::new(Team::new(2));
        let woken = Arc::new(AtomicUsize::new(0));
        let count = woken.clone();
        team.set_waker(Box::new(move || {
            count.fetch_add(1, Ordering::Relaxed);
        }));
        let mut lead = Bench::in_team(s.clone(), 0, Some(team.clone())).unwrap();
        let mut follow = Bench::in_team(s, 1, Some(team.clone())).unwrap();
        assert_eq!((lead.share, follow.share), (2, 2));
        let now = Instant::now();
        let (mut net, mut fnet) = (NoNet::default(), NoNet::default());
        let mut out = Vec::new();
        let mut publisher = Peer::new(usize::MAX);
        lead.opened(&mut publisher, &mut out);
        lead.data(
            &mut publisher,
            b"CONNECTED\nversion:1.2\n\n\0",
            now,
            &mut out,
        );
        let mut mine = subscribe(&mut lead, &[0, 2], now);
        // The leader waits for the follower's subscribers before it publishes.
        assert!(lead.step(now, &mut net));
        assert_eq!((lead.stage, lead.published), (Stage::Opening, 0));
        let mut theirs = subscribe(&mut follow, &[1, 3], now);
        assert!(follow.step(now, &mut fnet));
        assert!(lead.step(now, &mut net));
        assert_eq!((lead.stage, lead.published), (Stage::Warmup, 2));
        assert!(follow.step(now, &mut fnet));
        assert_eq!(
            follow.stage,
            Stage::Warmup,
            "the follower follows the stage"
        );
        let sent = bodies(&net.sent);
        // The leader's own subscribers have both: not enough while the follower's lag.
        for p in &mut mine {
            for body in &sent {
                lead.data(p, &message(body), now, &mut out);
            }
        }
        assert!(lead.step(now, &mut net));
        assert_eq!(
            lead.published, 2,
            "the follower's subscribers have nothing yet"
        );
        // One of the follower's subscribers has them: still not.
        for body in &sent {
            follow.data(&mut theirs[0], &message(body), now, &mut out);
        }
        assert!(lead.step(now, &mut net));
        assert_eq!(lead.published, 2);
        // The other gets the first: one more may go, and the leader was woken for it.
        let before = woken.load(Ordering::Relaxed);
        follow.data(&mut theirs[1], &message(&sent[0]), now, &mut out);
        assert!(woken.load(Ordering::Relaxed) > before);
        assert!(lead.step(now, &mut net));
        assert_eq!(lead.published, 3);
        assert_eq!(
            (follow.corrupt, follow.lost, lead.corrupt, lead.lost),
            (0, 0, 0, 0)
        );
        // A thread whose subscribers are all gone holds nothing back.
        follow.leave(&theirs[0]);
        theirs[0].phase = Phase::Broken;
        follow.leave(&theirs[1]);
        theirs[1].phase = Phase::Broken;
        let sent = bodies(&net.sent);
        for p in &mut mine {
            lead.data(p, &message(&sent[2]), now, &mut out);
        }
        assert!(lead.step(now, &mut net));
        assert_eq!(lead.published, 5);
        // The measured window ends: the leader drains, and waits for its follower.
        let later = now + Duration::from_millis(200);
        assert!(lead.step(later, &mut net));
        assert_eq!(lead.stage, Stage::Drain);
        let sent = bodies(&net.sent);
        for p in &mut mine {
            for body in &sent[3..] {
                lead.data(p, &message(body), later, &mut out);
            }
        }
        assert!(lead.step(later, &mut net));
        assert_eq!(
            lead.stage,
            Stage::Drain,
            "the follower has not said it is drained"
        );
        assert!(follow.step(later, &mut fnet));
        assert_eq!(follow.stage, Stage::Drain);
        assert!(lead.step(later, &mut net));
        assert_eq!(lead.stage, Stage::Closing);
        assert!(
            !follow.step(later, &mut fnet),
            "nothing left open: the follower is done"
        );
        assert!(!lead.step(later, &mut net));
        lead.absorb(follow);
        assert_eq!((lead.subscribed, lead.lost, lead.aborted), (4, 0, None));
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
        let runs = [("ws", "--url", &url), ("tcp", "--addr", &addr)]
            .into_iter()
            .flat_map(|run| [(run, None), (run, Some("64"))])
            .flat_map(|run| [(run, "1"), (run, "3")]);
        for (((transport, flag, target), flood), threads) in runs {
            let mut list = vec![
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
                "--threads",
                threads,
            ];
            list.extend(flood.iter().flat_map(|r| ["--flood", r]));
            let b = execute(settings(&args(&list)).unwrap()).unwrap();
            let run = format!("{transport} flood {flood:?} threads {threads}");
            assert_eq!(b.errors(), 0, "{run}");
            assert_eq!(b.subscribed, 5, "{run}");
            assert!(b.window.deliveries > 0, "{run}");
            assert!(b.window.published > 0, "{run}");
            assert!(b.published >= b.window.published);
            // Everyone is either still connected at the end or was let go as slow.
            assert_eq!(b.connected_at_end + b.slow_closed, 5, "{run}");
            match flood {
                Some(_) => assert_eq!(b.receipted, b.published, "{run}"),
                None => assert_eq!((b.receipted, b.connected_at_end), (0, 5), "{run}"),
            }
        }
        // Subscribers spread over two servers (here the same one, twice), the CPU of two
        // processes (this one, twice).
        let pids = format!("{pid},{pid}");
        let two_urls = format!("{url},{url}");
        let two_addrs = format!("{addr},{addr}");
        for (transport, flag, target, list_flag, list) in [
            ("ws", "--url", &url, "--subscribe-urls", &two_urls),
            ("tcp", "--addr", &addr, "--subscribe-addrs", &two_addrs),
        ] {
            let list = [
                "--transport",
                transport,
                flag,
                target,
                list_flag,
                list,
                "--subs",
                "5",
                "--seconds",
                "0.3",
                "--warmup",
                "0.1",
                "--server-pid",
                &pids,
            ];
            let b = execute(settings(&args(&list)).unwrap()).unwrap();
            assert_eq!(b.errors(), 0, "{transport}");
            let subscribed: Vec<u64> = b.by_target.iter().map(|t| t.subscribed).collect();
            assert_eq!(subscribed, [3, 2], "{transport}");
            let at: u64 = b.by_target.iter().map(|t| t.deliveries).sum();
            assert_eq!(at, b.window.deliveries, "{transport}");
            assert!(b.by_target.iter().all(|t| t.deliveries > 0), "{transport}");
            assert_eq!(b.window.server_cpu_each.len(), 2);
            let [a, z] = b.window.server_cpu;
            assert!(a.is_some() && z >= a, "{transport}");
        }
        server.shutdown().unwrap();
    }
}
