//! One upstream connection: its phase (down, connecting, waiting for CONNECTED, up), its
//! socket and buffers, the receipts it waits for, heart-beat bookkeeping and the backoff
//! before the next attempt.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::broker::SessionId;
use crate::stomp::{encode, Command, EncodeOptions, Version};

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not connected; the next attempt is due at `retry_at`.
    Down {
        retry_at: Instant,
    },
    /// TCP connect in progress, then CONNECT sent and CONNECTED awaited.
    Connecting {
        since: Instant,
    },
    Handshaking {
        since: Instant,
    },
    Up,
    /// A session's consumer connection that is no longer needed: closed, its slot free.
    Retired,
}

/// What a RECEIPT from upstream settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Waiter {
    /// A forwarded SEND (of a session, or of the application), with the client's receipt.
    Send {
        session: Option<SessionId>,
        receipt: Option<String>,
    },
    /// An upstream SUBSCRIBE.
    Subscribe { upstream_id: String },
    /// The UNSUBSCRIBE of one of a session's queue subscriptions on the pool (see
    /// `Router::retire`).
    Withdraw { session: SessionId },
    /// BEGIN, COMMIT or ABORT of a session, with the client's receipt.
    Transaction {
        session: SessionId,
        receipt: Option<String>,
    },
}

pub(super) struct Upstream {
    pub phase: Phase,
    pub stream: Option<TcpStream>,
    /// Increases with every CONNECTED: ack ids carry it.
    pub generation: u64,
    /// Failed attempts in a row (backoff).
    pub failures: u32,
    out: Vec<u8>,
    out_pos: usize,
    pub inbuf: Vec<u8>,
    pub last_read: Instant,
    pub last_write: Instant,
    /// Negotiated heart-beats (`None`: none that way).
    pub send_every: Option<Duration>,
    pub expect_every: Option<Duration>,
    next_receipt: u64,
    pub waiters: HashMap<u64, Waiter>,
    /// To be closed (a consumer connection whose session needs it no more): closing it is
    /// what gives its unacknowledged messages back to their queues.
    pub retire: bool,
}

/// The receipt ids the relay asks for: `r{n}`.
pub(super) fn receipt_number(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

impl Upstream {
    pub fn new(now: Instant) -> Self {
        Upstream {
            phase: Phase::Down { retry_at: now },
            stream: None,
            generation: 0,
            failures: 0,
            out: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            last_read: now,
            last_write: now,
            send_every: None,
            expect_every: None,
            next_receipt: 0,
            waiters: HashMap::new(),
            retire: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Appends a frame (STOMP 1.2, with content-length). Returns its size, 0 if it could not
    /// be encoded (a header the version cannot carry).
    pub fn frame<'a>(
        &mut self,
        command: Command,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: &[u8],
    ) -> usize {
        let before = self.out.len();
        let opts =
            EncodeOptions::new(Some(Version::V1_2)).with_content_length(command == Command::Send);
        match encode(command, headers, body, opts, &mut self.out) {
            Ok(()) => self.out.len() - before,
            Err(e) => {
                tracing::warn!(error = %e, command = %command, "frame for the external broker not encodable");
                0
            }
        }
    }

    /// The CONNECT frame (not escaped, as the spec wants).
    pub fn connect_frame(&mut self, login: &str, passcode: &str, vhost: &str, beats: (u64, u64)) {
        let beats = format!("{},{}", beats.0, beats.1);
        let mut out = Vec::new();
        let _ = encode(
            Command::Connect,
            [
                ("accept-version", "1.2"),
                ("host", vhost),
                ("login", login),
                ("passcode", passcode),
                ("heart-beat", beats.as_str()),
            ],
            b"",
            EncodeOptions::new(None),
            &mut out,
        );
        self.out.extend_from_slice(&out);
    }

    /// A fresh receipt id, remembered with what it settles.
    pub fn receipt(&mut self, waiter: Waiter) -> String {
        self.next_receipt += 1;
        self.waiters.insert(self.next_receipt, waiter);
        format!("r{}", self.next_receipt)
    }

    /// A heart-beat EOL.
    pub fn eol(&mut self) {
        self.out.push(b'\n');
    }

    /// Writes what it can. `Err` when the connection failed.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_write = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 1 << 20 {
                self.out.shrink_to(64 << 10);
            }
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads what is there into `inbuf`. `Ok(false)` at end of stream.
    pub fn fill(&mut self, now: Instant) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(true);
        };
        let mut chunk = [0u8; 64 << 10];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.last_read = now;
                    if n < chunk.len() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection is gone: buffers, receipts and the socket are dropped (the waiters are
    /// returned for the caller to settle), the next attempt is scheduled.
    pub fn reset(&mut self, retry_at: Instant) -> HashMap<u64, Waiter> {
        self.stream = None;
        self.out.clear();
        self.out_pos = 0;
        self.inbuf.clear();
        self.send_every = None;
        self.expect_every = None;
        self.phase = Phase::Down { retry_at };
        std::mem::take(&mut self.waiters)
    }

    /// Heart-beats from CONNECTED's `heart-beat: sx,sy` against ours (cx, cy).
    pub fn negotiate(&mut self, ours: (u64, u64), theirs: Option<&str>) {
        let (sx, sy) = theirs
            .and_then(|v| v.split_once(','))
            .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
            .unwrap_or((0, 0));
        let (cx, cy) = ours;
        self.send_every = (cx != 0 && sy != 0).then(|| Duration::from_millis(cx.max(sy)));
        self.expect_every = (sx != 0 && cy != 0).then(|| Duration::from_millis(sx.max(cy)));
    }

    /// When the connection needs attention next (heart-beat to send, silence to judge,
    /// attempt or timeout due).
    pub fn deadline(&self, connect_timeout: Duration) -> Option<Instant> {
        match self.phase {
            Phase::Retired => None,
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Connecting { since } | Phase::Handshaking { since } => {
                Some(since + connect_timeout)
            }
            Phase::Up => {
                let send = self.send_every.map(|d| self.last_write + d);
                let expect = self.expect_every.map(|d| self.last_read + silence_limit(d));
                match (send, expect) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
}

/// How long a peer that promised heart-beats every `every` may stay silent: half as long
/// again, plus a second for scheduling.
pub(super) fn silence_limit(every: Duration) -> Duration {
    every + every / 2 + Duration::from_secs(1)
}

/// The wait before attempt `failures + 1`: `min` doubled per failure up to `max`, then
/// reduced by up to half at random (`jitter` in 0..1), so that nodes do not come back in step.
pub(super) fn backoff(min: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let full = min
        .checked_mul(1u32 << failures.min(16))
        .unwrap_or(max)
        .min(max);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(min, max, 0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(min, max, 3, 0.0), Duration::from_millis(800));
        assert_eq!(backoff(min, max, 10, 0.0), max);
        assert_eq!(backoff(min, max, 40, 0.0), max);
        assert_eq!(backoff(min, max, 10, 1.0), max / 2);
        assert_eq!(backoff(min, max, 1, 0.5), Duration::from_millis(150));
    }

    #[test]
    fn heart_beats_negotiate_as_the_spec_says() {
        let mut u = Upstream::new(Instant::now());
        u.negotiate((10_000, 10_000), Some("5000,20000"));
        assert_eq!(u.send_every, Some(Duration::from_secs(20)));
        assert_eq!(u.expect_every, Some(Duration::from_secs(10)));
        u.negotiate((10_000, 10_000), Some("0,0"));
        assert_eq!((u.send_every, u.expect_every), (None, None));
        u.negotiate((0, 10_000), None);
        assert_eq!((u.send_every, u.expect_every), (None, None));
        assert_eq!(
            silence_limit(Duration::from_secs(10)),
            Duration::from_secs(16)
        );
    }

    #[test]
    fn receipts_are_numbered_and_remembered() {
        let mut u = Upstream::new(Instant::now());
        let id = u.receipt(Waiter::Subscribe {
            upstream_id: "t1".into(),
        });
        assert_eq!(receipt_number(&id), Some(1));
        assert!(u.waiters.contains_key(&1));
        assert_eq!(receipt_number("x1"), None);
        let waiters = u.reset(Instant::now());
        assert_eq!(waiters.len(), 1);
        assert!(u.waiters.is_empty() && !u.is_up());
    }
}
