//! The chat rooms as the STOMP server's application: `/app/chat.*` messages, LEAVE on
//! disconnect, the HTTP pages and API, persistence off the event loop.

use std::sync::{Mutex, MutexGuard};

use sockeye::handshake::Request;
use sockeye::server::HttpResponse;

use crate::broker::{AppMessage, BrokerEvent};
use crate::http;
use crate::rooms::{json_headers, Chat, Effect, Store};
use crate::server::{Application, Messaging};

/// The chat application.
pub struct ChatApp {
    chat: Mutex<Chat>,
    store: Option<Store>,
}

impl std::fmt::Debug for ChatApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatApp")
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl ChatApp {
    /// `store`: where rooms and history are written (`None`: memory only).
    pub fn new(chat: Chat, store: Option<Store>) -> Self {
        ChatApp {
            chat: Mutex::new(chat),
            store,
        }
    }

    fn chat(&self) -> MutexGuard<'_, Chat> {
        self.chat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out the domain's effects. Called with the chat locked, so that messages are
    /// published in the order the domain numbered them.
    fn apply(&self, effects: Vec<Effect>, messaging: &Messaging) {
        for effect in effects {
            match effect {
                Effect::Publish { destination, body } => {
                    messaging.publish(&destination, json_headers(), body)
                }
                Effect::ToSession {
                    session,
                    destination,
                    body,
                } => messaging.publish_to_session(session, &destination, json_headers(), body),
                Effect::Persist(op) => {
                    if let Some(store) = &self.store {
                        store.apply(op);
                    }
                }
            }
        }
    }

    /// Writes what is queued for the database (at shutdown).
    pub fn flush(&self) -> bool {
        self.store.as_ref().is_none_or(Store::flush)
    }
}

impl Application for ChatApp {
    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging) {
        let mut chat = self.chat();
        let effects = chat.handle_app(message, messaging.now_ms());
        self.apply(effects, messaging);
    }

    fn on_event(&self, event: &BrokerEvent, messaging: &Messaging) {
        let mut chat = self.chat();
        let effects = chat.handle_event(event, messaging.now_ms());
        self.apply(effects, messaging);
    }

    fn on_http(&self, req: &Request<'_, '_>, body: &[u8], messaging: &Messaging) -> HttpResponse {
        let mut chat = self.chat();
        let reply = http::handle_request(&mut chat, req, body, messaging.now_ms());
        self.apply(reply.effects, messaging);
        reply.response
    }
}
