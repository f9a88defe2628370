//! The hub's table of live sessions: their cross-thread handles, last input and negotiated
//! heart-beats, and posting a frame to any of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use sockeye::server::{PostError, SessionHandle};
use sockeye::DataKind;
use tracing::debug;

use super::{Hub, SlowConsumer};
use crate::broker::{OutFrame, SessionId};

/// A live session as the hub knows it.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) handle: SessionHandle,
    /// Milliseconds since the hub started, of the last bytes received (stamped at most four
    /// times a second: see [`Hub::touch`]).
    pub(super) last_in: AtomicU64,
    /// Negotiated heart-beats in ms (0: none).
    pub(super) send_every: AtomicU64,
    pub(super) expect_every: AtomicU64,
    /// Messages dropped since it fell behind (drop policy).
    pub(super) dropping: AtomicU64,
    /// Already let go as a slow consumer (from afar: the close takes a moment to apply).
    pub(super) let_go: AtomicBool,
}

/// How often a session's liveness stamp may move (ms).
const TOUCH_MS: u64 = 250;

impl Hub {
    pub(super) fn register(&self, id: SessionId, handle: SessionHandle) {
        let peer = Peer {
            handle,
            last_in: AtomicU64::new(self.elapsed_ms()),
            send_every: AtomicU64::new(0),
            expect_every: AtomicU64::new(0),
            dropping: AtomicU64::new(0),
            let_go: AtomicBool::new(false),
        };
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(id, peer);
        }
    }

    /// Input from `id`: its liveness stamp moves, at most once per [`TOUCH_MS`] per session
    /// (`touched`, that period's number, is kept by its link), so that this table's lock is
    /// not taken per message. The stamp is then at most that late: well within the second of
    /// tolerance every heart-beat deadline has ([`super::heartbeat::tolerance`]).
    pub(super) fn touch(&self, id: SessionId, touched: &mut u32) {
        let now = self.elapsed_ms();
        let period = (now / TOUCH_MS) as u32 + 1;
        if *touched == period {
            return;
        }
        *touched = period;
        if let Some(peer) = self.peers.read().ok().as_ref().and_then(|p| p.get(&id)) {
            peer.last_in.store(now, Ordering::Relaxed);
        }
    }

    /// Live sessions (WebSocket and TCP).
    pub fn session_count(&self) -> usize {
        self.peers.read().map_or(0, |p| p.len())
    }

    /// Sends a frame to a session through its handle (any worker). Under the throttle policy
    /// the session being served (a publisher) then passes the recipient's gate: if the
    /// recipient is behind, the publisher stops being read after this message.
    pub(super) fn post(&self, to: SessionId, frame: &OutFrame) {
        let Ok(peers) = self.peers.read() else { return };
        let Some(peer) = peers.get(&to) else { return };
        match post_frame(&peer.handle, frame) {
            Ok(()) => {}
            Err(PostError::Full) => self.lost(to, peer),
            Err(PostError::Stopped) => debug!(session = to, "not posted: the worker stopped"),
        }
        if let SlowConsumer::Throttle { .. } = self.slow {
            peer.handle.gate().pass();
        }
    }
}

/// Posts `frame` through `handle` (its head and shared tail as two parts, not copied), under
/// the session's cap unless the frame must not be lost ([`OutFrame::bounded`]).
pub(super) fn post_frame(handle: &SessionHandle, frame: &OutFrame) -> Result<(), PostError> {
    let kind = if frame.utf8 {
        DataKind::Text
    } else {
        DataKind::Binary
    };
    let (prefix, body) = match &frame.tail {
        Some(tail) => (frame.head.clone(), tail.clone()),
        None => (Bytes::new(), frame.head.clone()),
    };
    match frame.bounded {
        true => handle.send_parts(kind, prefix, body),
        false => handle.send_parts_unbounded(kind, prefix, body),
    }
}
