//! The relay's thread: a mio loop over the upstream connections and a waker for operations
//! from the node's workers. Connects (and reconnects), reads and parses frames, hands them to
//! the [`Router`], writes what it queued, keeps heart-beats and the relay's gate.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sockeye::server::Gate;
use tracing::{debug, info, warn};

use super::route::Router;
use super::upstream::{backoff, silence_limit, Phase};
use super::{Downstream, RelayConfig, Shared};
use crate::broker::RelayOp;
use crate::stomp::{parse, Command, Limits, Status, Version};

pub(super) const WAKER: Token = Token(usize::MAX);

/// Bytes read from one connection per turn, at most, so that one busy connection does not
/// starve the others or the operations queue.
const READ_PER_TURN: usize = 1 << 20;

pub(super) fn spawn(
    poll: Poll,
    ops: mpsc::Receiver<Vec<RelayOp>>,
    config: RelayConfig,
    downstream: Arc<dyn Downstream>,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stomp-relay".into())
        .spawn(move || {
            let router = Router::new(config, shared.clone(), downstream, Instant::now());
            let mut relay = Loop {
                poll,
                ops,
                router,
                gate,
                shared,
                busy: Vec::new(),
                more_ops: false,
                seed: seed(),
            };
            relay.run();
        })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    sockeye::client::os_random(&mut b);
    u64::from_le_bytes(b) | 1
}

struct Loop {
    poll: Poll,
    ops: mpsc::Receiver<Vec<RelayOp>>,
    router: Router,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    /// Connections with input left to read (more than a turn's worth came).
    busy: Vec<usize>,
    /// Operations were left in the queue last turn.
    more_ops: bool,
    seed: u64,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        info!(url = %self.router.config.display_url(), pool = self.router.conns.len(), "relay: starting");
        loop {
            let now = Instant::now();
            self.timers(now);
            let timeout = if self.busy.is_empty() && !self.more_ops {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(error = %e, "relay: poll failed");
                    return;
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                self.goodbye();
                return;
            }
            let mut readable = std::mem::take(&mut self.busy);
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                let conn = token.0;
                if conn >= self.router.conns.len() {
                    continue;
                }
                if matches!(self.router.conns[conn].phase, Phase::Connecting { .. })
                    && (event.is_writable() || event.is_error() || event.is_read_closed())
                {
                    self.established(conn);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    readable.push(conn);
                }
            }
            // Operations first: a subscription made before a message arrives gets it.
            self.take_ops();
            readable.sort_unstable();
            readable.dedup();
            for conn in readable {
                self.read(conn);
            }
            self.router.deliver();
            self.router.part(Instant::now());
            self.flush_all();
            self.close_retired();
        }
    }

    /// Closes consumer connections no session needs any more (DISCONNECT if it is up).
    fn close_retired(&mut self) {
        for conn in self.router.pool..self.router.conns.len() {
            if !self.router.conns[conn].retire {
                continue;
            }
            if self.router.conns[conn].is_up() {
                self.router.conns[conn].frame(Command::Disconnect, [] as [(&str, &str); 0], b"");
                let _ = self.router.conns[conn].flush(Instant::now());
            }
            if let Some(mut stream) = self.router.conns[conn].stream.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            debug!(conn, "relay: consumer connection closed");
            self.router.retired(conn);
        }
    }

    fn take_ops(&mut self) {
        // Bounded per turn, so reading goes on under a flood of operations.
        let mut taken = 0;
        while taken < 65_536 {
            match self.ops.try_recv() {
                Ok(batch) => {
                    taken += batch.len();
                    for op in batch {
                        self.router.op(op);
                    }
                }
                Err(_) => {
                    self.more_ops = false;
                    return;
                }
            }
        }
        self.more_ops = true;
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*: good enough to keep nodes out of step.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn retry_at(&mut self, conn: usize, now: Instant) -> Instant {
        let failures = self.router.conns[conn].failures;
        self.router.conns[conn].failures = failures.saturating_add(1);
        let jitter = self.jitter();
        now + backoff(
            self.router.config.reconnect_min,
            self.router.config.reconnect_max,
            failures,
            jitter,
        )
    }

    fn lose(&mut self, conn: usize, reason: &str) {
        let now = Instant::now();
        if let Some(mut stream) = self.router.conns[conn].stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        let retry_at = self.retry_at(conn, now);
        self.router.lost(conn, reason, retry_at);
    }

    fn timers(&mut self, now: Instant) {
        let timeout = self.router.config.connect_timeout;
        for conn in 0..self.router.conns.len() {
            match self.router.conns[conn].phase {
                Phase::Down { retry_at } if now >= retry_at => self.connect(conn, now),
                Phase::Connecting { since } | Phase::Handshaking { since }
                    if now >= since + timeout =>
                {
                    self.lose(conn, "timed out connecting")
                }
                Phase::Up => {
                    let c = &mut self.router.conns[conn];
                    if c.expect_every
                        .is_some_and(|d| now >= c.last_read + silence_limit(d))
                    {
                        self.lose(conn, "no heart-beat from the broker");
                    } else if c.send_every.is_some_and(|d| now >= c.last_write + d) {
                        if c.buffered() == 0 {
                            c.eol();
                        }
                        c.last_write = now;
                    }
                }
                _ => {}
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.router.config.connect_timeout;
        self.router
            .conns
            .iter()
            .filter_map(|c| c.deadline(timeout))
            .chain(self.router.parting_deadline())
            .min()
    }

    fn connect(&mut self, conn: usize, now: Instant) {
        let config = &self.router.config;
        let addr = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        let Some(addr) = addr else {
            let retry_at = self.retry_at(conn, now);
            self.router
                .lost(conn, "cannot resolve the broker's host", retry_at);
            return;
        };
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    Token(conn),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    let retry_at = self.retry_at(conn, now);
                    self.router.lost(conn, &e.to_string(), retry_at);
                    return;
                }
                let _ = stream.set_nodelay(true);
                let c = &mut self.router.conns[conn];
                c.stream = Some(stream);
                c.phase = Phase::Connecting { since: now };
                debug!(conn, %addr, "relay: connecting");
            }
            Err(e) => {
                let retry_at = self.retry_at(conn, now);
                self.router.lost(conn, &e.to_string(), retry_at);
            }
        }
    }

    /// The TCP connection is made (or failed): send CONNECT.
    fn established(&mut self, conn: usize) {
        let c = &mut self.router.conns[conn];
        let Some(stream) = c.stream.as_ref() else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.to_string()),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(reason) = failed {
            self.lose(conn, &reason);
            return;
        }
        let since = match c.phase {
            Phase::Connecting { since } => since,
            _ => Instant::now(),
        };
        let config = &self.router.config;
        let (login, passcode, vhost, beats) = (
            config.login.clone(),
            config.passcode.clone(),
            config.vhost.clone(),
            config.heart_beat,
        );
        let c = &mut self.router.conns[conn];
        c.connect_frame(&login, &passcode, &vhost, beats);
        c.phase = Phase::Handshaking { since };
    }

    fn read(&mut self, conn: usize) {
        let now = Instant::now();
        if self.router.conns[conn].stream.is_none()
            || matches!(self.router.conns[conn].phase, Phase::Connecting { .. })
        {
            return;
        }
        let mut total = 0;
        let open = loop {
            let before = self.router.conns[conn].inbuf.len();
            match self.router.conns[conn].fill(now) {
                Ok(open) => {
                    let got = self.router.conns[conn].inbuf.len() - before;
                    total += got;
                    if let Err(reason) = self.parse(conn) {
                        self.lose(conn, &reason);
                        return;
                    }
                    if !open || got == 0 {
                        break open;
                    }
                    if total >= READ_PER_TURN {
                        self.busy.push(conn);
                        break true;
                    }
                }
                Err(e) => {
                    self.lose(conn, &e.to_string());
                    return;
                }
            }
        };
        if !open {
            self.lose(conn, "the broker closed the connection");
        }
    }

    /// Frames in the connection's input, one by one.
    fn parse(&mut self, conn: usize) -> Result<(), String> {
        let limits = Limits {
            max_body: self.router.config.max_body,
            max_headers: 256,
            ..Limits::default()
        };
        let mut buf = std::mem::take(&mut self.router.conns[conn].inbuf);
        let mut pos = 0;
        let result = loop {
            if pos >= buf.len() {
                break Ok(());
            }
            match parse(&buf[pos..], &limits, Some(Version::V1_2)) {
                Ok(Status::Complete(frame, used)) => {
                    pos += used;
                    let handshaking =
                        matches!(self.router.conns[conn].phase, Phase::Handshaking { .. });
                    if handshaking {
                        if frame.command != Command::Connected {
                            let message = frame.header("message").unwrap_or("").to_owned();
                            break Err(format!(
                                "{} instead of CONNECTED: {message}",
                                frame.command
                            ));
                        }
                        let ours = self.router.config.heart_beat;
                        let c = &mut self.router.conns[conn];
                        c.negotiate(ours, frame.header("heart-beat"));
                        c.phase = Phase::Up;
                        c.last_read = Instant::now();
                        self.router.connected(conn);
                    } else if let Err(reason) = self.router.frame(conn, &frame) {
                        break Err(reason);
                    }
                }
                Ok(Status::HeartBeat(used)) => pos += used,
                Ok(Status::Partial) => break Ok(()),
                Err(e) => break Err(format!("bad frame from the broker: {e}")),
            }
        };
        if result.is_ok() {
            buf.drain(..pos);
            // Bytes read while parsing (none: parsing does not read) are kept in order.
            let newer = std::mem::take(&mut self.router.conns[conn].inbuf);
            buf.extend_from_slice(&newer);
            self.router.conns[conn].inbuf = buf;
        }
        result
    }

    fn flush_all(&mut self) {
        let now = Instant::now();
        for conn in 0..self.router.conns.len() {
            if self.router.conns[conn].stream.is_none()
                || matches!(self.router.conns[conn].phase, Phase::Connecting { .. })
            {
                continue;
            }
            if let Err(e) = self.router.conns[conn].flush(now) {
                self.lose(conn, &e.to_string());
            }
        }
        let buffered = self.router.buffered();
        self.shared.buffered.store(buffered, Ordering::Relaxed);
        let high = self.router.config.high_water;
        if buffered > high {
            self.gate.close();
        } else if buffered <= high / 4 {
            self.gate.open();
        }
    }

    /// Stopping: what the node handed over before the stop goes out first (the operations
    /// queued, then what is buffered, until the broker has confirmed the SENDs or 2 s have
    /// passed), then DISCONNECT on every connection that is up.
    fn goodbye(&mut self) {
        while let Ok(batch) = self.ops.try_recv() {
            for op in batch {
                self.router.op(op);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut events = Events::with_capacity(64);
        loop {
            self.flush_all();
            let settled = self.router.conns.iter().all(|c| {
                !c.is_up()
                    || (c.buffered() == 0
                        && !c
                            .waiters
                            .values()
                            .any(|w| matches!(w, super::upstream::Waiter::Send { .. })))
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if settled || left.is_zero() {
                break;
            }
            let _ = self
                .poll
                .poll(&mut events, Some(left.min(Duration::from_millis(20))));
            let mut readable: Vec<usize> = events
                .iter()
                .map(|e| e.token().0)
                .filter(|&c| c < self.router.conns.len())
                .collect();
            readable.sort_unstable();
            readable.dedup();
            for conn in readable {
                self.read(conn);
            }
            self.router.deliver();
        }
        for conn in 0..self.router.conns.len() {
            if self.router.conns[conn].is_up() {
                self.router.conns[conn].frame(Command::Disconnect, [] as [(&str, &str); 0], b"");
                let _ = self.router.conns[conn].flush(Instant::now());
            }
        }
        self.gate.open();
        info!("relay: stopped");
    }
}
