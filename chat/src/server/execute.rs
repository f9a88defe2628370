//! Carrying out the broker's actions: frames to the session being served or posted to others,
//! closes, deferred actions, relay operations, and the application's messages and events.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sockeye::server::{Outgoing, Session};
use sockeye::DataKind;
use tracing::{debug, info};

use super::metrics::{self, Counter};
use super::Hub;
use crate::broker::{Action, BrokerEvent, Ending, OutFrame, SessionId};

impl Hub {
    /// Carries out the broker's actions, then runs the application for what it must see.
    pub(super) fn execute(
        self: &Arc<Self>,
        actions: Vec<Action>,
        mut current: Option<&mut dyn CurrentSession>,
    ) {
        let mut app_messages = Vec::new();
        let mut events = Vec::new();
        let mut relayed = Vec::new();
        // After a publish, the session being served gets its frames through its worker's
        // inbox, behind the publish's own task (its copies of the message come first).
        let mut behind_publish = false;
        for action in actions {
            match action {
                Action::Relay(op) => relayed.push(op),
                Action::Send { to, frame } => {
                    count_out(&frame);
                    match current.as_deref_mut() {
                        Some(s) if s.session_id() == to && behind_publish => s.queue_frame(&frame),
                        Some(s) if s.session_id() == to => s.send_frame(&frame),
                        _ => {
                            if !self.deliver_internal(to, &frame) {
                                self.post(to, &frame)
                            }
                        }
                    }
                }
                Action::Close { to, ending } => {
                    let (code, reason) = match &ending {
                        Ending::Error(error) => {
                            self.log_error(to, error);
                            (1002, "STOMP error")
                        }
                        Ending::Disconnect => (1000, "disconnected"),
                    };
                    match current.as_deref_mut() {
                        Some(s) if s.session_id() == to && behind_publish => {
                            let _ = s.queue_close(code, reason);
                        }
                        Some(s) if s.session_id() == to => s.close_with(code, reason),
                        _ => {
                            if let Some(peer) =
                                self.peers.read().ok().as_ref().and_then(|p| p.get(&to))
                            {
                                let _ = peer.handle.close(code, reason);
                            }
                        }
                    }
                }
                Action::HeartBeat {
                    to,
                    send_every,
                    expect_every,
                } => {
                    if let Some(peer) = self.peers.read().ok().as_ref().and_then(|p| p.get(&to)) {
                        peer.send_every.store(send_every, Ordering::Relaxed);
                        peer.expect_every.store(expect_every, Ordering::Relaxed);
                    }
                }
                Action::Later {
                    to,
                    delay_ms,
                    actions,
                } => {
                    debug!(session = to, delay_ms, "answer deferred");
                    let due = self.elapsed_ms() + delay_ms;
                    if let Ok(mut later) = self.later.lock() {
                        later.push((due, actions));
                    }
                }
                Action::Publish(message) => {
                    self.publish_topic(message);
                    behind_publish = current.is_some();
                }
                // The router applies these as the broker answers (the session's link keeps
                // the key); one that reaches here had no session to keep it.
                Action::TopicSubscribe { to, id, .. } => {
                    debug!(
                        session = to,
                        id, "topic subscription without a link: ignored"
                    )
                }
                Action::App(message) => app_messages.push(message),
                Action::Event(event) => {
                    if let BrokerEvent::Connected { session, user } = &event {
                        let peer = self.broker().address(*session);
                        info!(
                            session,
                            user = user.as_deref().unwrap_or(""),
                            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                            "STOMP session connected"
                        );
                    }
                    events.push(event)
                }
            }
        }
        if !relayed.is_empty() {
            self.relay_ops(relayed, current.is_some());
        }
        if app_messages.is_empty() && events.is_empty() {
            return;
        }
        let messaging = self.messaging();
        for message in &app_messages {
            self.app.on_app_message(message, &messaging);
        }
        for event in &events {
            self.app.on_event(event, &messaging);
        }
    }

    /// One line per session closed after an ERROR: why, to whom (session, user, address).
    pub(super) fn log_error(&self, to: SessionId, error: &str) {
        let kind = metrics::error_kind(error);
        metrics::bump(kind);
        if kind == Counter::ErrorAuth {
            metrics::bump(Counter::RefusedAuth);
        } else if error.starts_with("too many sessions") {
            metrics::bump(Counter::RefusedSessionLimit);
        }
        let (user, peer) = {
            let broker = self.broker();
            (broker.user(to).map(str::to_owned), broker.address(to))
        };
        info!(
            session = to,
            user = user.as_deref().unwrap_or(""),
            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
            %error,
            "STOMP ERROR sent; closing"
        );
    }

    /// Carries out the deferred actions that are due (called on the heart-beat tick).
    pub(super) fn run_due(self: &Arc<Self>) {
        let now = self.elapsed_ms();
        let due: Vec<Vec<Action>> = match self.later.lock() {
            Ok(mut later) if !later.is_empty() => {
                let (due, keep) = std::mem::take(&mut *later)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                *later = keep;
                due.into_iter().map(|(_, actions)| actions).collect()
            }
            _ => return,
        };
        for actions in due {
            self.execute(actions, None);
        }
    }
}

/// Counts a frame sent (by its command).
pub(super) fn count_out(frame: &OutFrame) {
    metrics::bump(Counter::FramesOut);
    metrics::add(Counter::BytesOut, frame.len() as u64);
    if frame.head.starts_with(b"MESSAGE\n") {
        metrics::bump(Counter::Deliveries);
        if memchr::memmem::find(&frame.head, b"\nredelivered:true\n").is_some() {
            metrics::bump(Counter::Redeliveries);
        }
    } else if frame.head.starts_with(b"RECEIPT\n") {
        metrics::bump(Counter::Receipts);
    }
}

/// The session being served, when the hub acts inside its callback (object-safe over the
/// handler's data type).
pub(super) trait CurrentSession {
    fn session_id(&self) -> SessionId;
    fn send_frame(&mut self, frame: &OutFrame);
    fn close_with(&mut self, code: u16, reason: &str);
    /// [`CurrentSession::send_frame`] through the session's worker's inbox: after what is
    /// queued there already.
    fn queue_frame(&mut self, frame: &OutFrame);
    /// [`CurrentSession::close_with`] through the inbox, likewise.
    fn queue_close(&mut self, code: u16, reason: &str) -> Result<(), sockeye::server::PostError>;
}

impl<D> CurrentSession for Session<'_, D> {
    fn session_id(&self) -> SessionId {
        self.id()
    }

    fn queue_frame(&mut self, frame: &OutFrame) {
        let posted = super::peers::post_frame(&self.handle(), frame);
        if let Err(e) = posted {
            tracing::debug!(session = self.id(), error = %e, "reply not queued");
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str) -> Result<(), sockeye::server::PostError> {
        self.handle().close(code, reason)
    }

    fn send_frame(&mut self, frame: &OutFrame) {
        let kind = if frame.utf8 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let outgoing = match &frame.tail {
            Some(tail) => Outgoing::Parts(kind, &frame.head, tail.clone()),
            None => Outgoing::Shared(kind, frame.head.clone()),
        };
        let sent = match frame.bounded {
            true => self.send(outgoing),
            false => self.send_unbounded(outgoing),
        };
        if let Err(sockeye::SendError::NotText) = sent {
            tracing::warn!(
                session = self.id(),
                "a frame with a binary body to a SockJS session (text only) is not sent"
            );
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) {
        let _ = self.close(code, reason);
    }
}
