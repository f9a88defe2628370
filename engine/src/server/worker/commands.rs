//! Applying what other threads posted to the loop's inbox.

use tracing::warn;

use super::sockjs::SOCKJS_KEY;
use super::{open_parts, Loop};
use crate::driver::out::Payload;
use crate::driver::Tag;
use crate::error::SendError;
use crate::server::handler::Handler;
use crate::server::inbox::Command;
use crate::server::session::Session;
use crate::server::task::TaskOut;

impl<D> Loop<D> {
    /// Applies what other threads posted. Commands are grouped by session — a stable sort, so
    /// each session still sees them in posting order — and each session is written once for
    /// the whole turn: a publisher whose messages reach a thousand subscribers costs one
    /// `writev` per subscriber per turn, not one per message.
    pub(super) fn run_commands<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let mut commands = std::mem::take(&mut self.commands);
        self.env.inbox.take(&mut commands);
        if commands.is_empty() {
            self.commands = commands;
            return;
        }
        if commands.iter().any(|c| matches!(c, Command::Adopt { .. })) {
            // Connections handed over by other workers are taken in first (rare).
            let (adopted, rest) = std::mem::take(&mut commands)
                .into_iter()
                .partition::<Vec<_>, _>(|c| matches!(c, Command::Adopt { .. }));
            commands = rest;
            for command in adopted {
                if let Command::Adopt { stream, head } = command {
                    self.adopt(stream, head);
                }
            }
        }
        if commands.iter().any(|c| matches!(c, Command::Task(_))) {
            commands = self.run_tasks(handler, commands);
        }
        let mut order = std::mem::take(&mut self.command_order);
        for (index, command) in commands.iter().enumerate() {
            match command {
                Command::Send { to, .. }
                | Command::Close { to, .. }
                | Command::Resume { to }
                | Command::End { to, .. }
                | Command::Hold { to, .. } => order.push((*to, index)),
                Command::Broadcast { to, .. } => order.extend(to.iter().map(|t| (*t, index))),
                Command::Adopt { .. } | Command::Task(_) => {}
            }
        }
        order.sort_by_key(|(tag, _)| tag.key);
        let mut current = None;
        for &(to, index) in &order {
            match &commands[index] {
                Command::Send {
                    head,
                    prefix,
                    payload,
                    bounded,
                    counted,
                    ..
                } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let len = prefix.len() + payload.len();
                        let payload = if prefix.is_empty() {
                            Payload::Shared(payload.clone())
                        } else {
                            Payload::Parts(prefix, payload.clone())
                        };
                        if let Err(SendError::NotText) =
                            s.send_prepared(head.as_slice(), payload, *bounded)
                        {
                            warn!(
                                session = s.id(),
                                "a binary message to a SockJS session (text only) is not sent"
                            );
                        }
                        if let (true, Some(flow)) = (*counted, s.state.flow.get()) {
                            flow.taken(len);
                        }
                    });
                }
                Command::Broadcast { head, payload, .. } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let _ = s.send_prepared(
                            head.as_slice(),
                            Payload::Shared(payload.clone()),
                            true,
                        );
                    });
                }
                Command::Close { code, reason, .. } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let _ = s.close(*code, reason);
                    });
                }
                Command::Resume { .. } => self.resume_gate(to),
                Command::Hold { gate, .. } => self.hold_gate(to, gate),
                Command::Adopt { .. } | Command::Task(_) => {}
                Command::End {
                    head,
                    payload,
                    code,
                    reason,
                    ..
                } => {
                    self.deliver(handler, &mut current, to, |s| {
                        let payload = Payload::Shared(payload.clone());
                        let _ = s.end_prepared(head.as_slice(), payload, *code, reason);
                    });
                }
            }
        }
        if let Some(tag) = current {
            self.settle_tag(handler, tag);
        }
        order.clear();
        self.command_order = order;
        commands.clear();
        self.commands = commands;
    }

    /// Hands the tasks among `commands` to the handler; what they send to this worker's
    /// sessions takes their place, so it is applied in order with the rest.
    fn run_tasks<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        commands: Vec<Command>,
    ) -> Vec<Command> {
        let mut expanded = Vec::with_capacity(commands.len());
        for command in commands {
            match command {
                Command::Task(task) => {
                    handler.on_task(task, &mut TaskOut::new(&self.env.inbox, &mut expanded))
                }
                other => expanded.push(other),
            }
        }
        expanded
    }

    /// Runs `act` on the session `to` names, if it is still there. The cork holds one
    /// session's bytes at a time: moving to another session flushes the previous one.
    fn deliver<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        current: &mut Option<Tag>,
        to: Tag,
        act: impl FnOnce(&mut Session<'_, D>),
    ) {
        let sockjs = to.key & SOCKJS_KEY != 0;
        if !sockjs && !self.is_open(to) {
            return;
        }
        if *current != Some(to) {
            if let Some(previous) = current.replace(to) {
                self.settle_tag(handler, previous);
            }
        }
        if sockjs {
            if let Some(mut session) = self.sock_session(to) {
                act(&mut session);
            }
            return;
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

    /// Flushes a connection's or a SockJS session's output after commands.
    fn settle_tag<H: Handler<Data = D>>(&mut self, handler: &mut H, tag: Tag) {
        if tag.key & SOCKJS_KEY != 0 {
            self.sock_settle(handler, tag);
        } else if self.conns.get(tag.key).is_some_and(|c| c.gen == tag.gen) {
            self.settle(handler, tag.key);
        }
    }
}
