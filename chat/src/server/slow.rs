//! Slow consumers: what the STOMP server does with a session that does not read as fast as it
//! is sent to, so that no subscriber ever misses a message without being told.
//!
//! The engine keeps each session's queue under `max_backpressure`, reports the messages it
//! refuses (`on_overflow`), a queue grown over half the cap (`on_backpressure`) and a queue
//! emptied again (`on_drain`). The policy decides:
//!
//! * [`SlowConsumer::Disconnect`] (default): at the first refused message the session gets an
//!   ERROR (`message:slow consumer`, with how much was dropped) and is closed, as Spring closes a
//!   session over its send-buffer limit and NATS cuts a slow consumer. The client reconnects
//!   and reads what it missed from history.
//! * [`SlowConsumer::Drop`]: refused messages are dropped, counted per session and logged
//!   (once when the session falls behind, once when it catches up). uWebSockets' default, for
//!   feeds where the latest value is all that matters.
//! * [`SlowConsumer::Throttle`]: while a subscriber has more than half its cap queued or on
//!   its way (its handle's gate is closed), the sessions that publish to it stop being read
//!   (their TCP windows push back on the publishers, as RabbitMQ's credit flow does); they
//!   resume when it is down to a quarter. A subscriber stuck for longer than the limit is disconnected as above, so
//!   one stuck reader cannot freeze a room; so is one whose queue reaches the cap anyway
//!   (publishers that are not sessions: the application, HTTP).
//!
//! Whatever the policy, what must not be lost is never dropped: replies to a session's own
//! frames, and queue messages awaiting an ACK (see [`OutFrame::bounded`]).
//!
//! [`OutFrame::bounded`]: crate::broker::OutFrame::bounded

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sockeye::server::{Outgoing, Session};
use sockeye::DataKind;
use tracing::{debug, warn};

use super::{Hub, Peer};
use crate::broker::{OutFrame, SessionId};

/// What happens to a session whose queue outgrows the engine's `max_backpressure`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowConsumer {
    #[default]
    Disconnect,
    Drop,
    /// Publishers wait; a subscriber that holds them up for longer than `limit` is
    /// disconnected.
    Throttle {
        limit: Duration,
    },
}

impl SlowConsumer {
    /// The default time a throttled subscriber may hold its publishers up: under the default
    /// STOMP heart-beat tolerance (10 s + 5 s), so a paused publisher is not taken for dead.
    pub const THROTTLE_LIMIT: Duration = Duration::from_secs(10);
}

impl FromStr for SlowConsumer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disconnect" => Ok(SlowConsumer::Disconnect),
            "drop" => Ok(SlowConsumer::Drop),
            "throttle" => Ok(SlowConsumer::Throttle {
                limit: SlowConsumer::THROTTLE_LIMIT,
            }),
            other => Err(format!(
                "slow-consumer policy must be disconnect, drop or throttle, not {other:?}"
            )),
        }
    }
}

impl fmt::Display for SlowConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlowConsumer::Disconnect => f.write_str("disconnect"),
            SlowConsumer::Drop => f.write_str("drop"),
            SlowConsumer::Throttle { limit } => write!(f, "throttle ({limit:?})"),
        }
    }
}

/// The hub's slow-consumer counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    disconnects: AtomicU64,
    dropped: AtomicU64,
    stuck: AtomicU64,
    congested: AtomicU64,
}

/// What the slow-consumer policy did since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowStats {
    /// Sessions sent ERROR `slow consumer` and closed.
    pub disconnects: u64,
    /// Of those, subscribers that held their publishers up past the throttle limit.
    pub stuck: u64,
    /// Messages dropped under [`SlowConsumer::Drop`].
    pub dropped: u64,
    /// Times a session's queue went over half its cap.
    pub congested: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> SlowStats {
        SlowStats {
            disconnects: self.disconnects.load(Ordering::Relaxed),
            stuck: self.stuck.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            congested: self.congested.load(Ordering::Relaxed),
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl Hub {
    /// The engine refused `dropped` messages to this session.
    pub(super) fn overflowed<D>(&self, session: &mut Session<'_, D>, dropped: u32) {
        let id = session.id();
        let dropped = u64::from(dropped);
        let queued = session.buffered_amount();
        if self.slow == SlowConsumer::Drop {
            self.slow_counters
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
            let before = self
                .with_peer(id, |p| p.dropping.fetch_add(dropped, Ordering::Relaxed))
                .unwrap_or(0);
            if before == 0 {
                warn!(
                    session = id,
                    user = self.user_of(id).as_deref().unwrap_or("-"),
                    queued,
                    "slow consumer: dropping messages it has no room for"
                );
            }
            return;
        }
        let detail = format!(
            "{dropped} message{} to this session could not be queued: {queued} bytes were \
             waiting for it to read. Reconnect, and read what was missed from history.",
            plural(dropped)
        );
        if let Some(frame) = self.slow_error(id, &detail) {
            let _ = session.end_with(outgoing(&frame), 1008, "slow consumer");
        }
        self.slow_counters
            .disconnects
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            session = id,
            user = self.user_of(id).as_deref().unwrap_or("-"),
            dropped,
            queued,
            "slow consumer: disconnected"
        );
    }

    /// The session's queue went over half the cap.
    pub(super) fn congested<D>(&self, session: &mut Session<'_, D>) {
        let id = session.id();
        self.slow_counters.congested.fetch_add(1, Ordering::Relaxed);
        debug!(
            session = id,
            queued = session.buffered_amount(),
            "session falling behind"
        );
    }

    /// The session's queue is empty again.
    pub(super) fn drained<D>(&self, session: &mut Session<'_, D>) {
        let id = session.id();
        let dropped = self.with_peer(id, |p| p.dropping.swap(0, Ordering::Relaxed));
        if let Some(dropped) = dropped.filter(|n| *n > 0) {
            warn!(
                session = id,
                user = self.user_of(id).as_deref().unwrap_or("-"),
                dropped,
                "slow consumer caught up after {dropped} message{} were dropped",
                plural(dropped)
            );
        }
    }

    /// A post to the session was refused (its worker's inbox at its hard limit): the session
    /// lost a message like an overflow, and is treated the same way, from afar.
    pub(super) fn lost(&self, id: SessionId, peer: &Peer) {
        if self.slow == SlowConsumer::Drop {
            self.slow_counters.dropped.fetch_add(1, Ordering::Relaxed);
            if peer.dropping.fetch_add(1, Ordering::Relaxed) == 0 {
                warn!(
                    session = id,
                    "slow consumer: dropping messages (its worker's inbox is full)"
                );
            }
            return;
        }
        if peer.let_go.swap(true, Ordering::Relaxed) {
            return;
        }
        self.let_go_from_afar(
            id,
            peer,
            "a message to this session could not be queued: the server is overloaded. \
             Reconnect, and read what was missed from history.",
        );
        warn!(
            session = id,
            "slow consumer: disconnected (its worker's inbox is full)"
        );
    }

    /// Throttle: subscribers whose gate has been closed for longer than the limit (they held
    /// their publishers up that long) are let go (called by the heart-beat thread every tick).
    pub(super) fn let_go_stuck(&self, peers: &std::collections::HashMap<SessionId, Peer>) {
        let SlowConsumer::Throttle { limit } = self.slow else {
            return;
        };
        for (id, peer) in peers {
            let Some(held) = peer.handle.gate().closed_for().filter(|held| *held > limit) else {
                continue;
            };
            // Once: the session's gate opens as soon as its worker starts the close.
            if peer.let_go.swap(true, Ordering::Relaxed) {
                continue;
            }
            let detail = format!(
                "this session has not read what was sent to it for {} ms: its publishers were \
                 held up. Reconnect, and read what was missed from history.",
                held.as_millis()
            );
            self.let_go_from_afar(*id, peer, &detail);
            self.slow_counters.stuck.fetch_add(1, Ordering::Relaxed);
            warn!(
                session = id,
                held_ms = held.as_millis() as u64,
                "slow consumer: held its publishers up too long; disconnected"
            );
        }
    }

    fn let_go_from_afar(&self, id: SessionId, peer: &Peer, detail: &str) {
        if let Some(frame) = self.slow_error(id, detail) {
            let kind = if frame.utf8 {
                DataKind::Text
            } else {
                DataKind::Binary
            };
            let _ = peer
                .handle
                .end_with(kind, frame.head, 1008, "slow consumer");
        }
        self.slow_counters
            .disconnects
            .fetch_add(1, Ordering::Relaxed);
    }

    fn slow_error(&self, id: SessionId, detail: &str) -> Option<OutFrame> {
        self.broker().error_frame(id, "slow consumer", detail, None)
    }

    fn user_of(&self, id: SessionId) -> Option<String> {
        self.broker().user(id).map(str::to_owned)
    }

    fn with_peer<R>(&self, id: SessionId, f: impl FnOnce(&Peer) -> R) -> Option<R> {
        let peers = self.peers.read().ok()?;
        peers.get(&id).map(f)
    }

    /// What the slow-consumer policy did since the server started.
    pub fn slow_stats(&self) -> SlowStats {
        self.slow_counters.snapshot()
    }
}

/// A frame as the engine sends it.
fn outgoing(frame: &OutFrame) -> Outgoing<'static> {
    let kind = if frame.utf8 {
        DataKind::Text
    } else {
        DataKind::Binary
    };
    match &frame.tail {
        Some(tail) => {
            let mut whole = frame.head.to_vec();
            whole.extend_from_slice(tail);
            Outgoing::Shared(kind, Bytes::from(whole))
        }
        None => Outgoing::Shared(kind, frame.head.clone()),
    }
}
