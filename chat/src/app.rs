//! The chat rooms as the STOMP server's application: `/app/chat.*` messages, LEAVE on
//! disconnect, the HTTP pages and API, persistence off the event loop. In cluster mode (see
//! [`crate::cluster`]) also what other nodes say, and a reload of the store when the external
//! broker comes back after an outage.
//!
//! Locks: without a cluster the rooms are spread over [`ROOM_SHARDS`] shards by room id
//! ([`Chat::split`]), each behind its own mutex, and a chat message (JOIN, SEND, LEAVE) locks
//! its room's shard only, from reading the room through publishing what it caused (so a
//! room's messages go out in the order they were numbered): messages to different rooms
//! never wait for each other. What spans rooms takes the shards one after the other, never
//! two at once: a session's close (it leaves every room), the room list, creating a room
//! (under one more mutex, held while the name is checked against every shard: rare, and off
//! the message path). Other broker events (SUBSCRIBE and the like) lock nothing. In cluster
//! mode the chat's state spans rooms (node counters, members per node), so it stays whole:
//! one shard, one lock, as before.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use sockeye::handshake::Request;
use sockeye::server::HttpResponse;
use tracing::{info, warn};

use crate::broker::{AppMessage, BrokerEvent};
use crate::http;
use crate::rooms::quota::RoomQuota;
use crate::rooms::{
    json_headers, parse_app_body, room_id, room_topic, shard_of, validate_name, Chat, ChatConfig,
    ChatError, Effect, ErrorBody, RoomDetail, RoomSummary, Store, ERRORS_DESTINATION,
};
use crate::server::{Application, Messaging};

/// How long a reload of the store may wait for the database.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the broker came back a reload waits: for the other nodes' writes of what
/// they published while this node could not hear them to land, and for this node's
/// subscriptions to be in place again.
const RELOAD_DELAY: Duration = Duration::from_secs(1);

/// The external broker's availability, as last reported (relay mode): kept in an atomic,
/// read on every chat message without a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Relay {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Relay {
    fn from_u8(v: u8) -> Relay {
        match v {
            1 => Relay::Up,
            2 => Relay::Down,
            _ => Relay::Unknown,
        }
    }
}

/// Shards of the rooms without a cluster (see the module docs).
pub const ROOM_SHARDS: usize = 64;

/// The chat application.
pub struct ChatApp {
    /// The rooms, by [`shard_of`] their id; one shard in cluster mode.
    shards: Arc<[Mutex<Chat>]>,
    /// The chat's limits (the same in every shard).
    config: ChatConfig,
    /// Creating a room (several shards): held while its name is checked against every shard
    /// and it is added; the next room number.
    creating: Mutex<u64>,
    store: Option<Arc<Store>>,
    relay: AtomicU8,
    /// Reloads of the store in progress (cluster mode), each on a thread of its own.
    reloads: Mutex<Vec<JoinHandle<()>>>,
    /// Reloads started and not finished, and whether the broker is away (cluster mode):
    /// noting the other nodes' messages for the pages ends when neither holds.
    recovery: Arc<Mutex<Recovery>>,
    /// Rooms created per address per hour (`None`: no limit).
    room_quota: Option<Mutex<RoomQuota>>,
}

/// See [`ChatApp::recovery`].
#[derive(Debug, Default)]
struct Recovery {
    pending: usize,
    down: bool,
}

impl std::fmt::Debug for ChatApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatApp")
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChatApp {
    /// `store`: where rooms and history are written (`None`: memory only).
    pub fn new(chat: Chat, store: Option<Store>) -> Self {
        let config = chat.config().clone();
        let next_room = chat.next_room();
        ChatApp {
            shards: chat
                .split(ROOM_SHARDS)
                .into_iter()
                .map(Mutex::new)
                .collect(),
            config,
            creating: Mutex::new(next_room),
            store: store.map(Arc::new),
            relay: AtomicU8::new(Relay::Unknown as u8),
            reloads: Mutex::new(Vec::new()),
            recovery: Arc::default(),
            room_quota: None,
        }
    }

    /// Limits `POST /api/rooms` to `per_hour` rooms per client address in any hour (0: no
    /// limit); over it, 429 with `Retry-After`.
    pub fn with_room_quota(mut self, per_hour: usize) -> Self {
        self.room_quota = (per_hour > 0).then(|| Mutex::new(RoomQuota::new(per_hour)));
        self
    }

    /// The chat of cluster mode, whole (without a cluster: the first of the shards).
    fn chat(&self) -> MutexGuard<'_, Chat> {
        lock(&self.shards[0])
    }

    /// The shard holding room `id`.
    fn shard(&self, id: &str) -> &Mutex<Chat> {
        &self.shards[shard_of(id, self.shards.len())]
    }

    /// How many shards the rooms are spread over (one in cluster mode).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Reads the chat of cluster mode, whole (locked while `f` runs). Without a cluster it
    /// reads the first of the shards only.
    pub fn with_chat<R>(&self, f: impl FnOnce(&Chat) -> R) -> R {
        f(&self.chat())
    }

    /// Runs `f` on the chat of cluster mode (with the time) and carries out the effects it
    /// returns, all with the chat locked. Without a cluster it runs on the first shard only:
    /// the application's own paths pick a room's shard.
    pub fn run(&self, messaging: &Messaging, f: impl FnOnce(&mut Chat, u64) -> Vec<Effect>) {
        self.run_on(&self.shards[0], messaging, f);
    }

    /// [`ChatApp::run`] on one shard.
    fn run_on(
        &self,
        shard: &Mutex<Chat>,
        messaging: &Messaging,
        f: impl FnOnce(&mut Chat, u64) -> Vec<Effect>,
    ) {
        let mut chat = lock(shard);
        let effects = f(&mut chat, messaging.now_ms());
        self.apply(effects, messaging);
    }

    /// An application message: in its room's shard (a body that names no room, or cannot
    /// be read, is answered from the first; destinations outside `/chat.` are not the
    /// chat's).
    fn handle_app(&self, message: &AppMessage, messaging: &Messaging) {
        if !message.destination.starts_with("/chat.") {
            return;
        }
        let body = parse_app_body(&self.config, &message.body);
        let shard = match &body {
            Ok(b) => b
                .room_id
                .as_deref()
                .map_or(&self.shards[0], |id| self.shard(id)),
            Err(_) => &self.shards[0],
        };
        self.run_on(shard, messaging, |chat, now| {
            chat.handle_app_body(message, body, now)
        });
    }

    /// A broker event. Only a session's end concerns the chat (it leaves every room it was
    /// in): every shard in turn; anything else locks nothing.
    fn handle_event(&self, event: &BrokerEvent, messaging: &Messaging) {
        if !matches!(event, BrokerEvent::Disconnected { .. }) {
            return;
        }
        for shard in self.shards.iter() {
            self.run_on(shard, messaging, |chat, now| chat.handle_event(event, now));
        }
    }

    /// Carries out the domain's effects. Called with the room's shard locked, so that
    /// messages are published in the order the domain numbered them.
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
        self.store.as_deref().is_none_or(Store::flush)
    }

    /// Waits for the reloads of the store in progress (at shutdown).
    pub fn join_reloads(&self) {
        let reloads = std::mem::take(&mut *lock(&self.reloads));
        for reload in reloads {
            let _ = reload.join();
        }
    }

    /// Relay mode: the external broker came or went. Going, a node in cluster mode starts
    /// noting the other nodes' messages it files (see [`Chat::cluster_suspended`]). Coming
    /// back after an outage, it gives the others a fresh node timeout (nobody could be heard)
    /// and reads the store again for what it missed (a shared store has the other nodes'
    /// writes).
    fn relay_changed(&self, available: bool, messaging: &Messaging) {
        let now_ms = messaging.now_ms();
        let now = if available { Relay::Up } else { Relay::Down };
        let before = Relay::from_u8(self.relay.swap(now as u8, Ordering::SeqCst));
        let mut chat = self.chat();
        if chat.node().is_none() {
            return;
        }
        if !available {
            if self.store.is_some() {
                lock(&self.recovery).down = true;
                chat.cluster_suspended();
            }
            return;
        }
        if before != Relay::Down {
            return;
        }
        chat.cluster_resumed(now_ms);
        drop(chat);
        self.reload(messaging.clone());
    }

    /// Reads the store again on a thread of its own (never an event loop's), merges what the
    /// chat did not have, and hands this node's pages the messages they may have missed: the
    /// ones merged (published while this node could not hear the others) and the other
    /// nodes' messages it filed since the outage began (they reached the chat's own
    /// subscription, but perhaps not a page's, made again later on another connection).
    /// Pages drop a message they already show (by id); other subscribers of a room's topic
    /// may get such a message twice.
    fn reload(&self, messaging: Messaging) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let shards = Arc::clone(&self.shards);
        {
            let mut recovery = lock(&self.recovery);
            recovery.pending += 1;
            recovery.down = false;
        }
        let recovery = Arc::clone(&self.recovery);
        let spawned = std::thread::Builder::new()
            .name("chat-reload".into())
            .spawn(move || {
                std::thread::sleep(RELOAD_DELAY);
                let loaded = store.load_timeout(RELOAD_TIMEOUT);
                // Cluster mode: one shard, the whole chat.
                let mut chat = lock(&shards[0]);
                let (rooms, mut missed) = match loaded {
                    Ok(state) => chat.merge_loaded(state),
                    Err(e) => {
                        warn!(error = %e, "cluster: cannot reload the store");
                        (0, Vec::new())
                    }
                };
                let merged = missed.len();
                let stop = {
                    let mut recovery = lock(&recovery);
                    recovery.pending -= 1;
                    recovery.pending == 0 && !recovery.down
                };
                let mut ids: HashSet<u64> = missed.iter().map(|m| m.id).collect();
                let noted = chat.take_recovering(stop);
                missed.extend(noted.into_iter().filter(|m| ids.insert(m.id)));
                missed.sort_by_key(|m| m.id);
                for m in &missed {
                    let body = serde_json::to_string(m).unwrap_or_default();
                    messaging.deliver_local(&room_topic(&m.room_id), json_headers(), body);
                }
                info!(
                    rooms,
                    merged,
                    again = missed.len() - merged,
                    "cluster: merged what the store had, and gave this node's pages what they may have missed"
                );
            });
        match spawned {
            Ok(handle) => {
                let mut reloads = lock(&self.reloads);
                reloads.retain(|r| !r.is_finished());
                reloads.push(handle);
            }
            Err(e) => warn!(error = %e, "cluster: cannot start a reload of the store"),
        }
    }
}

impl Application for ChatApp {
    fn readiness(&self) -> Result<(), String> {
        match &self.store {
            Some(store) if !store.is_writing() => {
                Err(format!("the store ({store}) cannot be written to"))
            }
            _ => Ok(()),
        }
    }

    fn metrics(&self, out: &mut crate::server::metrics::Exposition) {
        let rooms: usize = self.shards.iter().map(|s| lock(s).rooms().len()).sum();
        out.single("sockeye_chat_rooms", "gauge", "Chat rooms.", rooms as f64);
        let Some(store) = &self.store else { return };
        out.single(
            "sockeye_store_queue_depth",
            "gauge",
            "Store writes queued and not yet written.",
            store.backlog() as f64,
        );
        out.single(
            "sockeye_store_dropped_total",
            "counter",
            "Store writes dropped because the queue was full.",
            store.dropped() as f64,
        );
        let (writes, micros) = store.write_time();
        out.family(
            "sockeye_store_write_seconds",
            "summary",
            "Time of the store's batch writes.",
            &[],
        );
        out.sample("sockeye_store_write_seconds_sum", micros as f64 / 1e6);
        out.sample("sockeye_store_write_seconds_count", writes as f64);
    }

    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging) {
        let relay = Relay::from_u8(self.relay.load(Ordering::Relaxed));
        if relay == Relay::Down && message.destination.starts_with("/chat.") {
            // Nothing could reach the room: the sender is told at once, and nothing is kept
            // that nobody received.
            let body = ErrorBody {
                error: "the chat cannot reach its message broker: try again in a moment".into(),
                code: Some("unavailable".into()),
                room_id: None,
            };
            let body = serde_json::to_string(&body).unwrap_or_default();
            messaging.publish_to_session(message.session, ERRORS_DESTINATION, json_headers(), body);
            return;
        }
        self.handle_app(message, messaging);
    }

    fn on_event(&self, event: &BrokerEvent, messaging: &Messaging) {
        if let BrokerEvent::Relay { available } = event {
            self.relay_changed(*available, messaging);
        }
        self.handle_event(event, messaging);
    }

    fn on_http_from(
        &self,
        peer: Option<std::net::IpAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
        messaging: &Messaging,
    ) -> HttpResponse {
        let creating = req.method == "POST" && req.path() == "/api/rooms";
        let (Some(quota), Some(ip), true) = (&self.room_quota, peer, creating) else {
            return self.on_http(req, body, messaging);
        };
        let creator = ip.to_string();
        let now = messaging.now_ms();
        if let Err(secs) = lock(quota).check(&creator, now) {
            warn!(peer = %creator, retry_after_s = secs, "room not created: rooms per hour used up");
            let mut r =
                HttpResponse::text(429, "too many rooms created from this address; try later\n");
            r.headers.push(("Retry-After".into(), secs.to_string()));
            return r;
        }
        let response = self.on_http(req, body, messaging);
        if response.status == 201 {
            lock(quota).record(&creator, now);
        }
        response
    }

    fn on_http(&self, req: &Request<'_, '_>, body: &[u8], messaging: &Messaging) -> HttpResponse {
        if self.shards.len() == 1 {
            let mut chat = self.chat();
            let reply = http::handle_request(&mut *chat, req, body, messaging.now_ms());
            self.apply(reply.effects, messaging);
            return reply.response;
        }
        let mut rooms = Sharded {
            app: self,
            messaging,
        };
        let reply = http::handle_request(&mut rooms, req, body, messaging.now_ms());
        self.apply(reply.effects, messaging);
        reply.response
    }
}

/// The HTTP surface's view of rooms spread over shards (see the module docs). A room it
/// creates has its effects carried out under its shard's lock, before anything else can
/// happen in it.
struct Sharded<'a> {
    app: &'a ChatApp,
    messaging: &'a Messaging,
}

impl http::Rooms for Sharded<'_> {
    fn summaries(&self) -> Vec<RoomSummary> {
        let mut all: Vec<RoomSummary> = self
            .app
            .shards
            .iter()
            .flat_map(|s| lock(s).summaries())
            .collect();
        // Oldest first: a room's number (its id's last part) counts rooms as they were made.
        all.sort_by_key(|r| (number_of(&r.id), r.created));
        all
    }

    fn detail(&self, id: &str) -> Option<RoomDetail> {
        lock(self.app.shard(id)).room(id).map(|r| r.detail())
    }

    fn exists(&self, id: &str) -> bool {
        lock(self.app.shard(id)).room(id).is_some()
    }

    fn create_room(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<(RoomSummary, Vec<Effect>), ChatError> {
        let app = self.app;
        let mut next = lock(&app.creating);
        // The checks of Chat::create_room, in its order, over every shard.
        let name =
            validate_name(name, app.config.max_room_name_chars).map_err(ChatError::RoomName)?;
        let (mut rooms, mut taken) = (0, false);
        for shard in app.shards.iter() {
            let chat = lock(shard);
            rooms += chat.rooms().len();
            taken |= chat.has_room_named(&name);
        }
        if rooms >= app.config.max_rooms {
            return Err(ChatError::TooManyRooms(app.config.max_rooms));
        }
        if taken {
            return Err(ChatError::DuplicateRoomName(name));
        }
        loop {
            let id = room_id(&name, *next);
            *next += 1;
            let mut chat = lock(app.shard(&id));
            if chat.room(&id).is_none() {
                let (summary, effects) = chat.add_room(id, name, now_ms);
                app.apply(effects, self.messaging);
                return Ok((summary, Vec::new()));
            }
        }
    }
}

/// The number a room id ends with (`general-chat-3` → 3); rooms without one sort last.
fn number_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}
