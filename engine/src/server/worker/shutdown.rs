//! Graceful shutdown: close every session with 1001, then drop what is left at the deadline.

use std::time::Instant;

use super::{open_parts, Loop, Next, Phase};
use crate::close::code;
use crate::driver::Tag;
use crate::server::handler::{Handler, SessionError};
use crate::server::session::Session;

impl<D> Loop<D> {
    /// Stops new work: refuse handshakes in progress, send 1001 to every session.
    pub(super) fn begin_shutdown<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        deadline: Instant,
    ) {
        // SockJS sessions first: their close frames end the receiving requests.
        self.sockjs_shutdown(handler);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            let gen = conn.gen;
            let handshake = matches!(conn.phase, Phase::Handshake { .. } | Phase::Receiving(_));
            match open_parts(&mut self.conns[key], key, &mut self.cork, &self.env) {
                Some((open, out)) => {
                    let mut session = Session {
                        state: &mut open.state,
                        out,
                    };
                    let _ = session.close(code::GOING_AWAY, "server shutting down");
                    if let Next::Drop = self.after_open_io(handler, key, None, false) {
                        self.remove(key);
                    } else {
                        self.timers.closes.arm_at(deadline, Tag { key, gen });
                    }
                }
                None if handshake => self.remove(key),
                None => {}
            }
        }
    }

    /// At the end of a shutdown: whatever is left is dropped.
    pub(super) fn abort_all<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        self.sockjs_shutdown(handler);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Phase::Open(_) = self.conns[key].phase {
                let _ = self.end(handler, key, Some(SessionError::CloseTimeout));
            }
            self.remove(key);
        }
    }
}
