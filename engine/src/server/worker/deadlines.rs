//! The loop's timers coming due: handshake, close, ping, pong and idle deadlines.

use std::time::Duration;

use tracing::{debug, info};

use super::{open_parts, Loop, Next, Phase};
use crate::close::code;
use crate::driver::Tag;
use crate::server::handler::{Handler, SessionError};
use crate::server::session::{Out, Session, Wire};
use crate::server::Counters;

impl<D> Loop<D> {
    pub(super) fn expire<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let now = self.now;
        let limit = self.env.config.handshake_timeout;
        while let Some(tag) = self.timers.handshakes.pop_expired(now) {
            let Some(conn) = self.conns.get(tag.key).filter(|c| c.gen == tag.gen) else {
                continue;
            };
            let (since, head) = match &conn.phase {
                Phase::Handshake { since, head } => (since, head),
                // A TLS stream connection: on `Open` from accept, but not through TLS yet.
                Phase::Open(_) if conn.stream.is_tls_handshaking() => {
                    info!(peer = %conn.peer(), "TLS handshake timed out");
                    let error = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    );
                    if let Next::Drop = self.end(handler, tag.key, Some(SessionError::Io(error))) {
                        self.remove(tag.key);
                    }
                    continue;
                }
                _ => continue,
            };
            // A kept-alive connection started waiting later than this deadline was armed.
            let waited = self.clock.since(*since, now);
            if waited < limit {
                self.timers.handshakes.arm_at(now + (limit - waited), tag);
                continue;
            }
            if conn.stream.is_tls_handshaking() {
                info!(peer = %conn.peer(), "TLS handshake timed out");
            } else if head.is_empty() && *since != 0 {
                debug!(peer = %conn.peer(), "idle connection closed");
            } else {
                info!(peer = %conn.peer(), "handshake timed out");
            }
            self.remove(tag.key);
        }
        while let Some(tag) = self.timers.closes.pop_expired(now) {
            self.close_due(handler, tag);
        }
        // Pongs before pings: with equal periods the check of the last ping comes first.
        while let Some(tag) = self.timers.pongs.pop_expired(now) {
            self.pong_due(handler, tag);
        }
        while let Some(tag) = self.timers.pings.pop_expired(now) {
            self.ping_due(handler, tag);
        }
        while let Some(tag) = self.timers.idles.pop_expired(now) {
            self.idle_due(handler, tag);
        }
        while let Some(tag) = self.timers.sockjs_beats.pop_expired(now) {
            self.sockjs_beat_due(handler, tag);
        }
        self.sockjs_expire(handler);
    }

    /// A SockJS heart-beat frame (`h`) on the WebSocket transport, as on the HTTP ones.
    fn sockjs_beat_due<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        if !self.is_open(tag) {
            return;
        }
        let Some((open, out)) =
            open_parts(&mut self.conns[tag.key], tag.key, &mut self.cork, &self.env)
        else {
            return;
        };
        if open.state.tx.is_close_sent() {
            return;
        }
        self.timers.sockjs_beats.arm(self.now, tag);
        let (head, n, _) = open.state.tx.header(crate::frame::OpCode::Text, true, 1);
        crate::connection::Sink::frame(out.cork, &head[..n], crate::sockjs::frame::HEARTBEAT, None);
        self.settle(handler, tag.key);
    }

    /// The peer did not answer our close (or did not hang up after an HTTP response).
    fn close_due<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        let Some(conn) = self.conns.get(tag.key) else {
            return;
        };
        if conn.gen != tag.gen {
            return;
        }
        match conn.phase {
            Phase::Open(_) => {
                info!(peer = %conn.peer(), "close handshake timed out");
                if let Next::Drop = self.end(handler, tag.key, Some(SessionError::CloseTimeout)) {
                    self.remove(tag.key);
                }
            }
            Phase::Linger { .. } => self.remove(tag.key),
            Phase::Handshake { .. } | Phase::Receiving(_) => {}
        }
    }

    /// Time for an automatic ping; the next one is armed at once (pings are periodic, so a
    /// vanished peer is found within one interval plus the pong timeout).
    fn ping_due<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        if !self.is_open(tag) {
            return;
        }
        let Some((open, out)) =
            open_parts(&mut self.conns[tag.key], tag.key, &mut self.cork, &self.env)
        else {
            return;
        };
        if open.state.tx.is_close_sent() {
            return; // the close deadline watches it now
        }
        self.timers.pings.arm(self.now, tag);
        if open.awaiting_pong {
            return;
        }
        let mut session = Session {
            state: &mut open.state,
            out,
        };
        if session.ping(&[]).is_ok() {
            open.awaiting_pong = true;
            self.timers.pongs.arm(self.now, tag);
        }
        self.settle(handler, tag.key);
    }

    /// The pong timeout after a ping: if nothing arrived since, the peer is gone. Its TCP
    /// connection may be half-open, so there is no close handshake to wait for: a best-effort
    /// close 1011, then the socket is dropped and the handler sees 1006.
    fn pong_due<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        if !self.is_open(tag) {
            return;
        }
        let Some((open, out)) =
            open_parts(&mut self.conns[tag.key], tag.key, &mut self.cork, &self.env)
        else {
            return;
        };
        // A session paused on a gate is not read because of others: its pong may be waiting
        // unread. The next ping tries again.
        if !open.awaiting_pong || open.state.tx.is_close_sent() || open.paused_gate {
            return;
        }
        let Out { cork, wire, .. } = out;
        if open
            .state
            .tx
            .close(code::INTERNAL_ERROR, "no pong", cork)
            .is_ok()
        {
            if let Wire::Socket(stream) = wire {
                let _ = cork.flush_into(stream, &mut open.state.backlog);
            }
        }
        info!(peer = %self.conns[tag.key].peer(), "no pong: dropping the connection");
        Counters::bump(&self.counters().pong_timeouts);
        if let Next::Drop = self.end(handler, tag.key, Some(SessionError::PongTimeout)) {
            self.remove(tag.key);
        }
    }

    /// The idle timeout: close if nothing arrived for that long, else wait for the remainder.
    fn idle_due<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        if !self.is_open(tag) {
            return;
        }
        let Some((open, out)) =
            open_parts(&mut self.conns[tag.key], tag.key, &mut self.cork, &self.env)
        else {
            return;
        };
        let (Some(idle), false) = (self.timers.idles.after(), open.state.tx.is_close_sent()) else {
            return;
        };
        // A paused session is quiet because the loop stopped reading it, not the peer.
        let quiet = match open.paused() {
            true => Duration::ZERO,
            false => self.clock.since(open.last_rx, self.now),
        };
        if quiet < idle {
            self.timers.idles.arm_at(self.now + (idle - quiet), tag);
            return;
        }
        let mut session = Session {
            state: &mut open.state,
            out,
        };
        let _ = session.close(code::GOING_AWAY, "idle timeout");
        self.settle(handler, tag.key);
    }
}
