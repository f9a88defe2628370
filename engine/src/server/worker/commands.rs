//! Applying what other threads posted to the loop's inbox.

use super::{open_parts, Loop};
use crate::server::handler::Handler;
use crate::server::inbox::Command;
use crate::server::session::{Payload, Session};
use crate::server::timers::Tag;

impl<D> Loop<D> {
    /// Applies what other threads posted, in order. Consecutive commands for one session are
    /// written together.
    pub(super) fn run_commands<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let mut commands = std::mem::take(&mut self.commands);
        self.env.inbox.take(&mut commands);
        let mut current = None;
        for command in commands.drain(..) {
            match command {
                Command::Send {
                    to,
                    head,
                    prefix,
                    payload,
                } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let payload = if prefix.is_empty() {
                            Payload::Shared(payload)
                        } else {
                            Payload::Parts(&prefix, payload)
                        };
                        let _ = s.send_prepared(head.as_slice(), payload);
                    });
                }
                Command::Broadcast { to, head, payload } => {
                    for tag in to {
                        self.deliver(handler, &mut current, tag, |s| {
                            let _ =
                                s.send_prepared(head.as_slice(), Payload::Shared(payload.clone()));
                        });
                    }
                }
                Command::Close { to, code, reason } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let _ = s.close(code, &reason);
                    });
                }
            }
        }
        if let Some(key) = current {
            self.settle(handler, key);
        }
        self.commands = commands;
    }

    /// Runs `act` on the session `to` names, if it is still there. The cork holds one
    /// session's bytes at a time: moving to another session flushes the previous one.
    fn deliver<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        current: &mut Option<usize>,
        to: Tag,
        act: impl FnOnce(&mut Session<'_, D>),
    ) {
        if !self.is_open(to) {
            return;
        }
        if *current != Some(to.key) {
            if let Some(previous) = current.replace(to.key) {
                self.settle(handler, previous);
            }
        }
        if let Some((open, out)) =
            open_parts(&mut self.conns[to.key], to.key, &mut self.cork, &self.env)
        {
            act(&mut Session {
                state: &mut open.state,
                out,
            });
        }
    }
}
