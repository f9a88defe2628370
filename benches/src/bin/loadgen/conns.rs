//! `loadgen conns`: open and hold N connections spread over source addresses of 127.0.0.0/8,
//! paced, and measure the server's resident memory before, while holding and after closing.
//!
//! One process may hold only as many sockets as its open-files limit allows, so the
//! coordinator (`loadgen conns`) runs `--procs` worker processes (`loadgen conns-worker`, this
//! same binary), each opening its share on its own client event loop. A worker reports on
//! its standard output (`OPENED ok=.. failed=.. ms=..`, later `CLOSED ok=.. ms=..`) and closes
//! its connections when the coordinator writes `close` to its standard input (or closes it).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sockeye::client::{
    ClientConn, ClientError, ClientHandler, ClientId, Control, EventLoop, LoopConfig, Target,
};
use sockeye::deflate::DeflateConfig;
use sockeye::server::Message;

use crate::{bounded, json_num, json_str, loopback_target, source, sys, Opts, MAX_CONNS, MAX_SECS};

/// The hidden mode of the worker processes.
pub const WORKER: &str = "conns-worker";
/// Open files a process needs besides its sockets (stdio, the poll, the binary, slack).
const FD_MARGIN: u64 = 64;
const TICK: Duration = Duration::from_millis(5);
/// How long closing may take.
const CLOSING: Duration = Duration::from_secs(10);

struct Settings {
    url: String,
    conns: usize,
    procs: usize,
    sources: usize,
    rate: f64,
    hold: f64,
    settle: f64,
    pid: Option<u32>,
    /// permessage-deflate to offer: "on" (no context takeover) or "takeover".
    deflate: Option<String>,
    /// Bytes of one JSON-like message each connection sends (and waits to have echoed) once
    /// open, so that compression contexts exist while the connections are held; 0 for none.
    message: usize,
    /// A STOMP destination each connection subscribes to once open (CONNECT and SUBSCRIBE
    /// in one text message): the cost of an idle subscriber, not just a connection.
    subscribe: Option<String>,
}

fn settings(args: &[String]) -> Result<Settings, String> {
    let mut o = Opts::parse(args, &[])?;
    let url: String = o.get("url", "ws://127.0.0.1:9001/".to_string())?;
    loopback_target(&url)?;
    let s = Settings {
        url,
        conns: bounded("conns", o.get("conns", 1000)?, 1, MAX_CONNS)?,
        procs: bounded("procs", o.get("procs", 1)?, 1, 64)?,
        sources: bounded("sources", o.get("sources", 16)?, 1, 4096)?,
        rate: bounded("rate", o.get("rate", 5000.0)?, 1.0, 1e6)?,
        hold: bounded("hold", o.get("hold", 3.0)?, 0.0, MAX_SECS)?,
        settle: bounded("settle", o.get("settle", 1.0)?, 0.0, 60.0)?,
        pid: o.opt("pid")?,
        deflate: deflate_mode(o.opt("deflate")?)?,
        message: bounded("message", o.get("message", 0)?, 0, 1 << 20)?,
        subscribe: o.opt("subscribe")?,
    };
    o.finish()?;
    if s.subscribe.is_some() && s.message > 0 {
        return Err("--subscribe and --message do not go together".into());
    }
    Ok(s)
}

/// CONNECT (STOMP 1.2, no heart-beats) and SUBSCRIBE to `destination`, as one message.
fn stomp_subscribe(destination: &str) -> String {
    format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\n\n\0\
         SUBSCRIBE\nid:0\ndestination:{destination}\n\n\0"
    )
}

/// A JSON-like chat message of `len` bytes (empty for 0).
fn json_message(len: usize) -> String {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    crate::echo::json_pattern(len, &mut move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    })
}

/// `--deflate`'s value, checked.
fn deflate_mode(mode: Option<String>) -> Result<Option<String>, String> {
    match mode.as_deref() {
        None | Some("on") | Some("takeover") => Ok(mode),
        Some(other) => Err(format!("--deflate must be on or takeover, not {other:?}")),
    }
}

/// The client's deflate settings for a `--deflate` mode.
fn deflate_config(mode: Option<&str>) -> Option<DeflateConfig> {
    match mode {
        Some("takeover") => Some(DeflateConfig::with_context_takeover()),
        Some(_) => Some(DeflateConfig::default()),
        None => None,
    }
}

/// Refuses a share of connections this process's open-files limit cannot hold.
fn check_limit(per_process: usize, procs: usize, total: usize) -> Result<(), String> {
    let limit = sys::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    if per_process as u64 + FD_MARGIN <= limit {
        return Ok(());
    }
    let room = limit.saturating_sub(FD_MARGIN).max(1) as usize;
    Err(format!(
        "{per_process} connections per process need about {} open files, but a process may \
         have at most {limit} here (RLIMIT_NOFILE, soft raised to hard): run several \
         processes, e.g. --procs {} for {total} connections ({procs} now)",
        per_process as u64 + FD_MARGIN,
        total.div_ceil(room)
    ))
}

struct Worker {
    procs: Vec<(Child, ChildStdin)>,
    lines: mpsc::Receiver<(usize, String)>,
}

impl Worker {
    fn spawn(s: &Settings) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let (tx, lines) = mpsc::channel();
        let mut procs = Vec::new();
        let per = s.conns.div_ceil(s.procs);
        let bound = s.conns as f64 / s.rate + s.hold + 60.0;
        for i in 0..s.procs {
            let first = i * per;
            let count = per.min(s.conns - first.min(s.conns));
            let mut child = Command::new(&exe)
                .arg(WORKER)
                .args(["--url", &s.url])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--sources", &s.sources.to_string()])
                .args(["--rate", &(s.rate / s.procs as f64).to_string()])
                .args(["--max-secs", &bound.to_string()])
                .args(["--message", &s.message.to_string()])
                .args(s.subscribe.iter().flat_map(|d| ["--subscribe", d.as_str()]))
                .args(s.deflate.iter().flat_map(|m| ["--deflate", m.as_str()]))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting worker: {e}"))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((i, line)).is_err() {
                        return;
                    }
                }
            });
            procs.push((child, stdin));
        }
        Ok(Worker { procs, lines })
    }

    /// Waits for a line starting with `word` from every worker; sums `ok=`/`failed=`, and
    /// returns the largest `ms=`.
    fn gather(&self, word: &str, until: Instant) -> Result<(u64, u64, u64), String> {
        let mut seen = vec![false; self.procs.len()];
        let (mut ok, mut failed, mut ms) = (0, 0, 0);
        while seen.iter().any(|s| !s) {
            let left = until.saturating_duration_since(Instant::now());
            let (i, line) = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("workers did not all report {word} in time"))?;
            let Some(rest) = line.strip_prefix(word) else {
                continue;
            };
            seen[i] = true;
            ok += field(rest, "ok");
            failed += field(rest, "failed");
            ms = ms.max(field(rest, "ms"));
        }
        Ok((ok, failed, ms))
    }

    fn close(&mut self) {
        for (_, stdin) in &mut self.procs {
            let _ = stdin.write_all(b"close\n");
            let _ = stdin.flush();
        }
    }

    fn wait(self) {
        for (mut child, stdin) in self.procs {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let s = settings(args)?;
    let per = s.conns.div_ceil(s.procs);
    check_limit(per, s.procs, s.conns)?;
    let rss = |pid: Option<u32>| pid.and_then(|p| sys::rss(p).ok());
    let before = rss(s.pid);
    let started = Instant::now();
    let mut workers = Worker::spawn(&s)?;
    let open_bound = Duration::from_secs_f64(s.conns as f64 / s.rate + 30.0);
    let opened = workers.gather("OPENED", started + open_bound);
    let (ok, failed, open_ms) = match opened {
        Ok(v) => v,
        Err(e) => {
            workers.close();
            workers.wait();
            return Err(e);
        }
    };
    std::thread::sleep(Duration::from_secs_f64(s.hold));
    let holding = rss(s.pid);
    workers.close();
    let closed = workers.gather("CLOSED", Instant::now() + CLOSING + Duration::from_secs(5));
    workers.wait();
    let (closed_ok, _, close_ms) = closed.unwrap_or((0, 0, 0));
    std::thread::sleep(Duration::from_secs_f64(s.settle));
    let after = rss(s.pid);
    let per_conn = match (before, holding) {
        (Some(b), Some(h)) if ok > 0 => Some((h as f64 - b as f64) / ok as f64),
        _ => None,
    };
    let kb = |v: Option<u64>| json_num(v.map(|b| b as f64 / 1024.0));
    let errors = failed + ok.saturating_sub(closed_ok);
    println!(
        "conns {}: {ok} of {} opened ({failed} failed) over {} processes and {} source \
         addresses in {:.2} s; closed {closed_ok} in {:.2} s",
        s.url,
        s.conns,
        s.procs,
        s.sources,
        open_ms as f64 / 1000.0,
        close_ms as f64 / 1000.0
    );
    match (before, holding, after, per_conn) {
        (Some(b), Some(h), Some(a), Some(p)) => println!(
            "  server RSS: {} KiB before, {} KiB holding, {} KiB after close: {p:.0} bytes per \
             connection",
            b / 1024,
            h / 1024,
            a / 1024
        ),
        _ => println!("  server memory not measured (give --pid)"),
    }
    println!(
        "RESULT {{\"mode\":\"conns\",\"url\":{},\"conns\":{},\"procs\":{},\"sources\":{},\
         \"opened\":{ok},\"failed\":{failed},\"closed\":{closed_ok},\"open_secs\":{},\
         \"rss_before_kib\":{},\"rss_holding_kib\":{},\"rss_after_kib\":{},\
         \"bytes_per_conn\":{},\"errors\":{errors}}}",
        json_str(&s.url),
        s.conns,
        s.procs,
        s.sources,
        json_num(Some(open_ms as f64 / 1000.0)),
        kb(before),
        kb(holding),
        kb(after),
        json_num(per_conn),
    );
    Ok(errors == 0)
}

/// A worker process: opens `count` connections (global indices from `first`), reports, holds
/// them until told to close, closes them, reports, exits.
pub fn worker(args: &[String]) -> Result<bool, String> {
    let mut o = Opts::parse(args, &[])?;
    let url: String = o.get("url", String::new())?;
    let target = loopback_target(&url)?;
    let first: usize = o.get("first", 0)?;
    let count = bounded("count", o.get("count", 0)?, 0, MAX_CONNS)?;
    let sources = bounded("sources", o.get("sources", 1)?, 1, 4096)?;
    let rate = bounded("rate", o.get("rate", 5000.0)?, 1.0, 1e6)?;
    let max_secs = bounded("max-secs", o.get("max-secs", 60.0)?, 1.0, 2.0 * MAX_SECS)?;
    let deflate = deflate_mode(o.opt("deflate")?)?;
    let message = bounded("message", o.get("message", 0)?, 0, 1 << 20)?;
    let subscribe: Option<String> = o.opt("subscribe")?;
    o.finish()?;
    check_limit(count, 1, count)?;
    let close = Arc::new(AtomicBool::new(false));
    let flag = close.clone();
    std::thread::spawn(move || {
        // Any line, or the end of input (the coordinator went away), means close.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        flag.store(true, Ordering::SeqCst);
    });
    let mut config = LoopConfig {
        tick: Some(TICK),
        ..LoopConfig::default()
    };
    config.client.deflate = deflate_config(deflate.as_deref());
    crate::client_tls(&mut config.client)?;
    let mut lp = EventLoop::new(config).map_err(|e| format!("event loop: {e}"))?;
    let mut h = Holder {
        deflate: deflate.is_some(),
        stomp: subscribe.is_some(),
        message: match &subscribe {
            Some(destination) => stomp_subscribe(destination),
            None => json_message(message),
        },
        echoed: 0,
        target,
        first,
        count,
        sources,
        rate,
        started: Instant::now(),
        launched: 0,
        opened: 0,
        failed: 0,
        dropped: 0,
        closed: 0,
        reported_open: false,
        close,
        closing_at: None,
    };
    let deadline = h.started + Duration::from_secs_f64(max_secs);
    lp.run_until(&mut h, deadline)
        .map_err(|e| format!("event loop: {e}"))?;
    if !h.reported_open {
        h.report_open();
    }
    let ms = h.closing_at.map_or(0, |t| t.elapsed().as_millis());
    println!("CLOSED ok={} dropped={} ms={ms}", h.closed, h.dropped);
    Ok(h.dropped == 0 && h.failed == 0)
}

struct Holder {
    /// Count a connection opened without permessage-deflate as failed.
    deflate: bool,
    /// Sent by each connection once open (empty: nothing).
    message: String,
    /// `message` is a STOMP CONNECT and SUBSCRIBE (answered by CONNECTED, not an echo).
    stomp: bool,
    /// Connections whose message came back.
    echoed: u64,
    target: Target,
    first: usize,
    count: usize,
    sources: usize,
    rate: f64,
    started: Instant,
    launched: usize,
    opened: u64,
    failed: u64,
    /// Closed by the server (or dropped) while being held.
    dropped: u64,
    closed: u64,
    reported_open: bool,
    close: Arc<AtomicBool>,
    closing_at: Option<Instant>,
}

impl Holder {
    fn report_open(&mut self) {
        self.reported_open = true;
        println!(
            "OPENED ok={} failed={} ms={}",
            self.opened,
            self.failed,
            self.started.elapsed().as_millis()
        );
        let _ = std::io::stdout().flush();
    }
}

impl ClientHandler for Holder {
    /// Whether the connection opened.
    type Data = bool;

    fn on_open(&mut self, conn: &mut ClientConn<'_, bool>) {
        *conn.data_mut() = true;
        if self.deflate && !conn.deflates() {
            self.failed += 1;
            if self.failed <= 5 {
                eprintln!("connection {} opened without permessage-deflate", conn.id());
            }
            let _ = conn.close(1000, "no deflate");
            return;
        }
        self.opened += 1;
        if !self.message.is_empty() {
            let _ = conn.send_text(&self.message);
        }
    }

    fn on_message(&mut self, _conn: &mut ClientConn<'_, bool>, message: Message<'_>) {
        match message {
            // --subscribe: the answer is CONNECTED (an ERROR counts as a failure).
            Message::Text(t) if self.stomp && t.starts_with("CONNECTED\n") => self.echoed += 1,
            Message::Text(t) if self.stomp && t.starts_with("ERROR\n") => {
                self.failed += 1;
                if self.failed <= 5 {
                    eprintln!("the server refused a subscriber: {t:.200}");
                }
            }
            m if m == Message::Text(&self.message) => self.echoed += 1,
            _ => {}
        }
    }

    fn on_error(&mut self, _id: ClientId, opened: &mut bool, error: &ClientError) {
        if !*opened {
            self.failed += 1;
            if self.failed <= 5 {
                eprintln!("connect failed: {error}");
            }
        }
    }

    fn on_close(&mut self, _id: ClientId, _opened: &mut bool, _code: u16, _reason: &str) {
        if self.closing_at.is_some() {
            self.closed += 1;
        } else {
            self.dropped += 1;
        }
    }

    fn on_tick(&mut self, lp: &mut Control<'_, bool>) {
        let now = lp.now();
        if let Some(at) = self.closing_at {
            if lp.is_empty() || now - at >= CLOSING {
                lp.stop();
            }
            return;
        }
        let due = ((now - self.started).as_secs_f64() * self.rate).ceil() as usize;
        while self.launched < due.min(self.count) {
            let index = self.first + self.launched;
            self.launched += 1;
            let target = match source(&self.target, index, self.sources) {
                Some(local) => self.target.from_local(local),
                None => self.target.clone(),
            };
            if let Err(e) = lp.connect(&target, false) {
                self.failed += 1;
                if self.failed <= 5 {
                    eprintln!("connect failed: {e}");
                }
            }
        }
        let echoed = self.message.is_empty() || self.echoed >= self.opened;
        if !self.reported_open && self.opened + self.failed >= self.count as u64 && echoed {
            self.report_open();
        }
        if self.close.load(Ordering::SeqCst) {
            if !self.reported_open {
                self.report_open();
            }
            self.closing_at = Some(now);
            lp.each_open(|c| {
                let _ = c.close(1000, "done");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_are_summed() {
        assert_eq!(field("ok=7500 failed=3 ms=1502", "failed"), 3);
        assert_eq!(field("ok=7500 failed=3 ms=1502", "ok"), 7500);
        assert_eq!(field("ok=7500", "ms"), 0);
    }

    #[test]
    fn too_many_connections_for_one_process_are_refused_with_advice() {
        let e = check_limit(usize::MAX / 4, 1, usize::MAX / 4).unwrap_err();
        assert!(e.contains("run several processes"), "{e}");
    }
}
