//! `loadgen echo`: N connections each keep D messages of S bytes in flight for T seconds; every
//! echo is checked byte for byte and in order, its round trip timed.
//!
//! Stages, driven by the loop's tick: open the connections (paced) → warm up → measure (the
//! window: messages, bytes, latencies, the server's CPU time) → drain (stop sending, wait for
//! what is in flight; what never comes back is lost) → close every connection → report.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sockeye::client::{
    ClientConn, ClientError, ClientHandler, ClientId, Control, EventLoop, LoopConfig, Target,
};
use sockeye::deflate::DeflateConfig;
use sockeye::server::{Message, SendStatus};

use crate::figures::{Figures, Measured};
use crate::histogram::Histogram;
use crate::{bounded, json_num, json_str, loopback_target, source, sys, Opts, MAX_CONNS, MAX_SECS};

/// How long the drain waits for messages in flight before counting them lost.
const DRAIN: Duration = Duration::from_secs(5);
/// How long closing may take.
const CLOSING: Duration = Duration::from_secs(6);
const TICK: Duration = Duration::from_millis(5);
/// Errors printed in full; the rest are only counted.
const PRINTED_ERRORS: usize = 5;

struct Settings {
    url: String,
    target: Target,
    conns: usize,
    size: usize,
    depth: usize,
    secs: f64,
    warmup: f64,
    binary: bool,
    /// Offer permessage-deflate (and count connections where it was not agreed as errors).
    deflate: bool,
    /// JSON-like payloads (chat messages: compressible) instead of random letters.
    json: bool,
    pid: Option<u32>,
    sources: usize,
    rate: f64,
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut o = Opts::parse(args, &["binary", "deflate", "json"])?;
    let url: String = o.get("url", "ws://127.0.0.1:9001/".to_string())?;
    let s = Settings {
        target: loopback_target(&url)?,
        url,
        conns: bounded("conns", o.get("conns", 100)?, 1, MAX_CONNS)?,
        size: bounded("size", o.get("size", 16)?, 1, 16 << 20)?,
        depth: bounded("depth", o.get("depth", 1)?, 1, 1024)?,
        secs: bounded("secs", o.get("secs", 5.0)?, 0.1, MAX_SECS)?,
        warmup: bounded("warmup", o.get("warmup", 1.0)?, 0.0, MAX_SECS)?,
        binary: o.flag("binary"),
        deflate: o.flag("deflate"),
        json: o.flag("json"),
        pid: o.opt("pid")?,
        sources: bounded("sources", o.get("sources", 1)?, 1, 4096)?,
        rate: bounded("rate", o.get("rate", 5000.0)?, 1.0, 1e6)?,
    };
    o.finish()?;
    let in_flight = (s.conns * s.depth) as u64 * s.size as u64;
    if in_flight > 1 << 30 {
        return Err(format!(
            "{} conns × depth {} × {} B is {in_flight} bytes in flight: more than 1 GiB",
            s.conns, s.depth, s.size
        ));
    }
    let limit = sys::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if s.conns as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more open files than this process may have ({limit}): \
             run several processes with fewer connections each",
            s.conns
        ));
    }
    Ok(s)
}

/// Per connection: how many messages went out and came back, and when each in flight left.
struct Conn {
    index: usize,
    sent: u64,
    received: u64,
    in_flight: VecDeque<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Opening,
    Warmup,
    Measure,
    Drain,
    Closing,
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
    latency: Histogram,
}

struct Echo {
    s: Settings,
    /// Random payload bytes (ASCII letters for text); message `seq` of connection `i` is
    /// `pattern[offset(i, seq)..][..size]`, so a reordered, mixed-up or lost message shows.
    pattern: String,
    stage: Stage,
    stage_at: Instant,
    launched: usize,
    opened: usize,
    failed: usize,
    in_flight: u64,
    sending: bool,
    window: Window,
    mismatches: u64,
    lost: u64,
    send_errors: u64,
    conn_errors: u64,
    closed_early: u64,
    /// Connections that opened without permessage-deflate although it was offered.
    no_deflate: u64,
    printed: usize,
    /// One clock reading per connection per loop turn (the messages of one read arrive
    /// together): the connection, the turn's start, and the reading.
    clock: Option<(ClientId, Instant, Instant)>,
}

/// `len` bytes of chat messages as JSON, one after another: words drawn from a small
/// vocabulary, about as compressible as real chat traffic (ASCII, so any slice is a `str`).
pub fn json_pattern(len: usize, next: &mut impl FnMut() -> u64) -> String {
    const WORDS: [&str; 16] = [
        "hello", "the", "meeting", "is", "at", "noon", "see", "you", "there", "thanks", "ok",
        "lunch", "today", "sounds", "good", "later",
    ];
    let mut out = String::with_capacity(len + 256);
    let mut id = 1000u64;
    while out.len() < len {
        id += 1 + next() % 7;
        let words: Vec<&str> = (0..3 + next() % 9)
            .map(|_| WORDS[(next() % 16) as usize])
            .collect();
        out.push_str(&format!(
            "{{\"id\":{id},\"roomId\":\"general-{}\",\"type\":\"TALK\",\"sender\":\"user{}\",\
             \"message\":\"{}\",\"timestamp\":\"2026-01-{:02}T12:{:02}:{:02}Z\"}},",
            next() % 4,
            next() % 50,
            words.join(" "),
            1 + next() % 28,
            next() % 60,
            next() % 60
        ));
    }
    out.truncate(len);
    out
}

fn offset(index: usize, seq: u64) -> usize {
    ((seq + index as u64 * 31) % 251) as usize
}

impl Echo {
    fn new(s: Settings) -> Echo {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pattern = if s.json {
            json_pattern(s.size + 251, &mut next)
        } else {
            (0..s.size + 251)
                .map(|_| char::from(b'a' + (next() % 26) as u8))
                .collect()
        };
        Echo {
            s,
            pattern,
            stage: Stage::Opening,
            stage_at: Instant::now(),
            launched: 0,
            opened: 0,
            failed: 0,
            in_flight: 0,
            sending: true,
            window: Window::default(),
            mismatches: 0,
            lost: 0,
            send_errors: 0,
            conn_errors: 0,
            closed_early: 0,
            no_deflate: 0,
            printed: 0,
            clock: None,
        }
    }

    /// Now, read at most once per connection and turn.
    fn now(&mut self, conn: &ClientConn<'_, Conn>) -> Instant {
        let key = (conn.id(), conn.turn_started());
        match self.clock {
            Some((id, turn, at)) if (id, turn) == key => at,
            _ => {
                let at = Instant::now();
                self.clock = Some((key.0, key.1, at));
                at
            }
        }
    }

    fn payload(&self, index: usize, seq: u64) -> &str {
        let at = offset(index, seq);
        &self.pattern[at..at + self.s.size]
    }

    fn complain(&mut self, what: std::fmt::Arguments<'_>) {
        if self.printed < PRINTED_ERRORS {
            self.printed += 1;
            eprintln!("error: {what}");
        }
    }

    fn send_next(&mut self, conn: &mut ClientConn<'_, Conn>) {
        let (index, seq) = (conn.data().index, conn.data().sent);
        let at = offset(index, seq);
        let text = &self.pattern[at..at + self.s.size];
        let message = if self.s.binary {
            Message::Binary(text.as_bytes())
        } else {
            Message::Text(text)
        };
        match conn.send(message) {
            Ok(SendStatus::Written | SendStatus::Queued) => {
                let now = self.now(conn);
                let d = conn.data_mut();
                d.sent += 1;
                d.in_flight.push_back(now);
                self.in_flight += 1;
            }
            Ok(SendStatus::Dropped) | Err(_) => {
                self.send_errors += 1;
                self.complain(format_args!("connection {index}: send failed"));
            }
        }
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

    /// Starts connections up to what the rate allows by now.
    fn launch(&mut self, lp: &mut Control<'_, Conn>, now: Instant) {
        let due = (now - self.stage_at).as_secs_f64() * self.s.rate;
        let due = (due.ceil() as usize).min(self.s.conns);
        while self.launched < due {
            let index = self.launched;
            self.launched += 1;
            let target = match source(&self.s.target, index, self.s.sources) {
                Some(local) => self.s.target.from_local(local),
                None => self.s.target.clone(),
            };
            let conn = Conn {
                index,
                sent: 0,
                received: 0,
                in_flight: VecDeque::with_capacity(self.s.depth),
            };
            if let Err(e) = lp.connect(&target, conn) {
                self.failed += 1;
                self.complain(format_args!("connect {index}: {e}"));
            }
        }
    }
}

impl ClientHandler for Echo {
    type Data = Conn;

    fn on_open(&mut self, conn: &mut ClientConn<'_, Conn>) {
        self.opened += 1;
        if self.s.deflate && !conn.deflates() {
            self.no_deflate += 1;
            self.complain(format_args!(
                "connection {} opened without deflate",
                conn.id()
            ));
        }
        for _ in 0..self.s.depth {
            self.send_next(conn);
        }
    }

    fn on_message(&mut self, conn: &mut ClientConn<'_, Conn>, message: Message<'_>) {
        let (index, seq) = (conn.data().index, conn.data().received);
        let expected = self.payload(index, seq).as_bytes();
        let got = match message {
            Message::Text(t) if !self.s.binary => t.as_bytes(),
            Message::Binary(b) if self.s.binary => b,
            _ => &[],
        };
        let bytes = got.len() as u64;
        if got != expected {
            self.mismatches += 1;
            self.complain(format_args!(
                "connection {index}: echo of message {seq} differs ({bytes} bytes)"
            ));
        }
        let d = conn.data_mut();
        d.received += 1;
        let Some(sent_at) = d.in_flight.pop_front() else {
            self.mismatches += 1;
            self.complain(format_args!("connection {index}: a message nobody sent"));
            return;
        };
        self.in_flight -= 1;
        if self.stage == Stage::Measure {
            self.window.messages += 1;
            self.window.bytes += bytes;
            self.window
                .latency
                .record(sent_at.elapsed().as_nanos() as u64);
        }
        if self.sending {
            self.send_next(conn);
        }
    }

    fn on_error(&mut self, id: ClientId, data: &mut Conn, error: &ClientError) {
        if data.sent == 0 && self.stage == Stage::Opening {
            self.failed += 1;
        } else {
            self.conn_errors += 1;
        }
        self.complain(format_args!("connection {} ({id}): {error}", data.index));
    }

    fn on_close(&mut self, _id: ClientId, data: &mut Conn, code: u16, reason: &str) {
        self.in_flight -= data.in_flight.len() as u64;
        self.lost += data.in_flight.len() as u64;
        if self.stage < Stage::Closing {
            self.closed_early += 1;
            self.complain(format_args!(
                "connection {}: closed by the server ({code} {reason})",
                data.index
            ));
        }
    }

    fn on_tick(&mut self, lp: &mut Control<'_, Conn>) {
        let now = lp.now();
        let since = now - self.stage_at;
        match self.stage {
            Stage::Opening => {
                self.launch(lp, now);
                if self.opened + self.failed >= self.s.conns {
                    self.enter(Stage::Warmup, now);
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
            Stage::Drain if self.in_flight == 0 || since >= DRAIN => {
                self.enter(Stage::Closing, now);
                lp.each_open(|c| {
                    let _ = c.close(1000, "done");
                });
            }
            Stage::Closing if lp.is_empty() || since >= CLOSING => lp.stop(),
            _ => {}
        }
    }
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let s = settings(args)?;
    let mut config = LoopConfig {
        tick: Some(TICK),
        ..LoopConfig::default()
    };
    if s.deflate {
        config.client.deflate = Some(DeflateConfig::default());
    }
    crate::client_tls(&mut config.client)?;
    let mut lp = EventLoop::new(config).map_err(|e| format!("event loop: {e}"))?;
    let open_bound = s.conns as f64 / s.rate + 15.0;
    let bound = open_bound + s.warmup + s.secs + (DRAIN + CLOSING).as_secs_f64() + 1.0;
    let mut echo = Echo::new(s);
    let deadline = Instant::now() + Duration::from_secs_f64(bound);
    lp.run_until(&mut echo, deadline)
        .map_err(|e| format!("event loop: {e}"))?;
    // Whatever never came back (or was still open at the deadline) is lost.
    echo.lost += echo.in_flight;
    Ok(report(&echo))
}

fn report(e: &Echo) -> bool {
    let s = &e.s;
    let w = &e.window;
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
    let Figures {
        secs,
        p50,
        p99,
        max,
        cpu_per_unit: cpu_per_msg,
        server_pct,
        own_pct,
    } = f;
    let errors = e.mismatches
        + e.lost
        + e.send_errors
        + e.conn_errors
        + e.closed_early
        + e.failed as u64
        + e.no_deflate
        + u64::from(secs.is_none());
    let kind = match (s.binary, s.json) {
        (true, _) => "binary",
        (false, true) => "json",
        (false, false) => "text",
    };
    let deflate = if s.deflate {
        ", permessage-deflate"
    } else {
        ""
    };
    println!(
        "echo {}: {} conns × {} B {kind}{deflate}, depth {}, {:.2} s window ({} opened, {} failed)",
        s.url,
        s.conns,
        s.size,
        s.depth,
        secs.unwrap_or(0.0),
        e.opened,
        e.failed
    );
    println!(
        "  {:.0} msg/s, {:.2} MB/s; latency p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs",
        msgs.unwrap_or(0.0),
        mbps.unwrap_or(0.0)
    );
    match (cpu_per_msg, server_pct) {
        (Some(c), Some(p)) => println!("  server: {c:.3} µs CPU per message ({p:.0}% of a core)"),
        _ => println!("  server: CPU not measured (give --pid)"),
    }
    println!("  load generator: {:.0}% of a core", own_pct.unwrap_or(0.0));
    println!(
        "  errors: {errors} (mismatched {}, lost {}, send {}, connection {}, closed early {}, \
         failed to open {}, without deflate {})",
        e.mismatches, e.lost, e.send_errors, e.conn_errors, e.closed_early, e.failed, e.no_deflate
    );
    println!(
        "RESULT {{\"mode\":\"echo\",\"url\":{},\"conns\":{},\"size\":{},\"depth\":{},\"kind\":\"{kind}\",\"deflate\":{},\
         \"secs\":{},\"opened\":{},\"messages\":{},\"msgs_per_sec\":{},\"mb_per_sec\":{},\
         \"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"server_cpu_us_per_msg\":{},\
         \"server_cpu_pct\":{},\"loadgen_cpu_pct\":{},\"mismatches\":{},\"lost\":{},\
         \"errors\":{errors}}}",
        json_str(&s.url),
        s.conns,
        s.size,
        s.depth,
        s.deflate,
        json_num(secs),
        e.opened,
        w.messages,
        json_num(msgs),
        json_num(mbps),
        json_num(Some(p50)),
        json_num(Some(p99)),
        json_num(Some(max)),
        json_num(cpu_per_msg),
        json_num(server_pct),
        json_num(own_pct),
        e.mismatches,
        e.lost,
    );
    errors == 0
}
