//! The application's own subscriptions: a handler called with every message delivered to a
//! destination (pattern allowed), as if the application were a STOMP session of the broker.
//!
//! Each is a session of its own inside the broker, numbered from the top of the id space so
//! that it never meets a transport's. With the embedded broker it sees what local sessions
//! see; in relay mode its subscription is relayed like any other, so the application hears
//! what every node publishes (the chat's cluster state travels so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{Hub, Messaging};
use crate::broker::{Ending, OutFrame, SessionId};
use crate::stomp::{parse, Command, Frame, Header, Limits, Status, Version};

/// Where the application's sessions are numbered from (down).
const FIRST: SessionId = u64::MAX - 1;

static NEXT: AtomicU64 = AtomicU64::new(FIRST);

/// A message delivered to one of the application's subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub destination: String,
    /// The message's headers (without `destination`, `subscription`, `message-id`,
    /// `content-length`).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Delivered {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The handler of an application subscription.
pub type Listener = Arc<dyn Fn(&Delivered, &Messaging) + Send + Sync>;

/// An application subscription failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeError(pub String);

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot subscribe: {}", self.0)
    }
}

impl std::error::Error for SubscribeError {}

/// Session ids at or above this one are the application's.
pub(super) fn is_internal(session: SessionId) -> bool {
    session > FIRST - (1 << 32)
}

impl Messaging {
    /// Subscribes the application to `destination` (a topic, queue or pattern): `listener`
    /// is called, on the thread that delivers (a worker, or the relay's), with every message
    /// delivered to it, outside the broker's lock. Returns the subscription's session, for
    /// [`Messaging::unsubscribe`].
    pub fn subscribe(
        &self,
        destination: &str,
        listener: impl Fn(&Delivered, &Messaging) + Send + Sync + 'static,
    ) -> Result<SessionId, SubscribeError> {
        let session = NEXT.fetch_sub(1, Ordering::Relaxed);
        let hub = &self.hub;
        // From now on topic SENDs go through the broker, where this subscription lives.
        hub.internal_topic_subs.fetch_add(1, Ordering::SeqCst);
        hub.internal
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session, Arc::new(listener));
        let mut actions = Vec::new();
        let mut frame = Frame::new(Command::Connect);
        frame.headers.push(Header::new("accept-version", "1.2"));
        // The application's own session: not a client's, so no passcode, rules or limits.
        hub.broker().connect_trusted(session, &frame, &mut actions);
        let mut frame = Frame::new(Command::Subscribe);
        frame.headers.push(Header::new("id", "app"));
        frame.headers.push(Header::new("destination", destination));
        hub.broker().handle(session, &frame, &mut actions);
        // Replies (CONNECTED) are not for anyone; an ERROR says the subscription failed.
        let mut refused = None;
        actions.retain(|a| match a {
            crate::broker::Action::Close {
                to,
                ending: Ending::Error(error),
            } if *to == session => {
                refused = Some(error.clone());
                false
            }
            crate::broker::Action::Send { to, .. }
            | crate::broker::Action::Close { to, .. }
            | crate::broker::Action::HeartBeat { to, .. }
                if *to == session =>
            {
                false
            }
            _ => true,
        });
        if let Some(why) = refused {
            self.unsubscribe(session);
            return Err(SubscribeError(why));
        }
        hub.execute(actions, None);
        Ok(session)
    }

    /// Ends an application subscription.
    pub fn unsubscribe(&self, session: SessionId) {
        let hub = &self.hub;
        let removed = hub
            .internal
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
        if removed.is_some() {
            hub.internal_topic_subs.fetch_sub(1, Ordering::SeqCst);
        }
        let mut actions = Vec::new();
        hub.broker().closed(session, &mut actions);
        actions.retain(|a| !matches!(a, crate::broker::Action::Send { to, .. } if *to == session));
        hub.execute(actions, None);
    }
}

impl Hub {
    /// Delivers a frame to an application subscription; `false` when `to` is not one.
    pub(super) fn deliver_internal(self: &Arc<Self>, to: SessionId, frame: &OutFrame) -> bool {
        if !is_internal(to) {
            return false;
        }
        let listener = self
            .internal
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        let Some(listener) = listener else {
            return true;
        };
        let bytes = frame.to_vec();
        let limits = Limits {
            max_body: usize::MAX,
            max_head: usize::MAX,
            max_headers: usize::MAX,
            max_header_line: usize::MAX,
        };
        let Ok(Status::Complete(f, _)) = parse(&bytes, &limits, Some(Version::V1_2)) else {
            return true;
        };
        if f.command != Command::Message {
            return true;
        }
        let delivered = Delivered {
            destination: f.header("destination").unwrap_or("").to_owned(),
            headers: f
                .headers
                .iter()
                .filter(|h| {
                    !matches!(
                        &*h.name,
                        "destination" | "subscription" | "message-id" | "content-length" | "ack"
                    )
                })
                .map(|h| (h.name.to_string(), h.value.to_string()))
                .collect(),
            body: Bytes::copy_from_slice(f.body),
        };
        listener(&delivered, &self.messaging());
        true
    }
}
