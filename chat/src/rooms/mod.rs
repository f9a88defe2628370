//! Chat rooms on the STOMP broker: the domain, sans-IO.
//!
//! [`Chat`] holds the rooms, their members and recent history. It reads no clock (every call
//! that stamps something takes `now_ms`) and does no I/O: it returns [`Effect`]s for the glue to
//! carry out on the broker and the [`Store`].
//!
//! Over STOMP:
//! * clients SUBSCRIBE to `/topic/rooms.{id}` (the room's messages), `/user/queue/history` and
//!   `/user/queue/errors`;
//! * and SEND [`ClientMessage`] JSON to `/app/chat.join`, `/app/chat.send`, `/app/chat.leave`;
//! * the broker hands those to the glue as [`AppMessage`]s (destination `/chat.join`, …), the
//!   glue calls [`Chat::handle_app`], and on [`BrokerEvent::Disconnected`]
//!   [`Chat::session_closed`] (or [`Chat::handle_event`] for any event);
//! * then carries out the effects in order:
//!
//! ```text
//! Effect::Publish { destination, body }            → broker.publish(destination, json_headers(), body)
//! Effect::ToSession { session, destination, body } → broker.publish_to_session(session, destination, json_headers(), body)
//! Effect::Persist(op)                              → store.apply(op)
//! ```
//!
//! A JOIN answers the joining session with the room's history (one JSON array of
//! [`ChatMessage`], oldest first, on `/user/queue/history`) *before* publishing its "X joined"
//! message, so a client that subscribed to the topic first sees the history, then its own JOIN,
//! without duplicates. Errors go to the session alone on `/user/queue/errors` as [`ErrorBody`].
//!
//! With several nodes behind one external broker, [`Chat::enable_cluster`] makes them agree on
//! rooms, members and history (ids unique across nodes, other nodes' messages and members,
//! dead nodes dropped): see [`cluster`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use crate::broker::{AppMessage, BrokerEvent, SessionId};

pub mod cluster;
mod model;
pub mod quota;
mod store;
mod validate;

pub use cluster::{
    cluster_id, node_of, parse_room_message, ClusterConfig, ClusterEvent, MemberLists, NodeId,
    RoomDigest, RoomInfo, CLUSTER_TOPIC, NODE_BITS, NODE_TIMEOUT_MS, PRESENCE_INTERVAL_MS,
    ROOMS_PATTERN,
};
pub use model::{
    ChatMessage, ClientMessage, CreateRoom, ErrorBody, MessageType, RoomDetail, RoomSummary,
};
pub use store::{
    redact_url, LoadedRoom, LoadedState, Store, StoreConfig, StoreError, StoreOptions,
};
pub use validate::{
    slug, validate_message, validate_name, validate_nickname, validate_room_name, MessageError,
    NameError, MAX_MESSAGE_CHARS, MAX_NICKNAME_CHARS, MAX_ROOM_NAME_CHARS,
};

/// The content type of every body [`Chat`] produces.
pub const CONTENT_TYPE: &str = "application/json";
/// Where a JOIN's history goes, for [`Broker::publish_to_session`](crate::broker::Broker::publish_to_session)
/// (clients subscribe to `/user/queue/history`).
pub const HISTORY_DESTINATION: &str = "/queue/history";
/// Where errors go (clients subscribe to `/user/queue/errors`).
pub const ERRORS_DESTINATION: &str = "/queue/errors";
/// Messages kept per room, by default.
pub const HISTORY_LIMIT: usize = 100;

/// The topic of a room: `/topic/rooms.{id}`.
pub fn room_topic(room_id: &str) -> String {
    format!("/topic/rooms.{room_id}")
}

/// STOMP headers for an effect's body: `content-type: application/json`.
pub fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())]
}

/// Limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// Messages kept per room (in memory and in the store). Default 100.
    pub history_limit: usize,
    /// Longest message, in characters. Default 2,000.
    pub max_message_chars: usize,
    /// Longest room name, in characters (after trimming). Default 64.
    pub max_room_name_chars: usize,
    /// Most rooms there can be. Default 1,000.
    pub max_rooms: usize,
    /// Largest application message body accepted, in bytes. Default 16 KiB.
    pub max_body_bytes: usize,
    /// Whether a JOIN's nickname is the session's authenticated user, whatever the JSON's
    /// `sender` says (set when CONNECT checks passcodes). Default false: the development mode,
    /// where the page picks a nickname.
    pub sender_is_user: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history_limit: HISTORY_LIMIT,
            max_message_chars: MAX_MESSAGE_CHARS,
            max_room_name_chars: MAX_ROOM_NAME_CHARS,
            max_rooms: 1000,
            max_body_bytes: 16 * 1024,
            sender_is_user: false,
        }
    }
}

/// Something for the glue to do. Bodies are JSON ([`CONTENT_TYPE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `Broker::publish(destination, json_headers(), body)`.
    Publish { destination: String, body: String },
    /// `Broker::publish_to_session(session, destination, json_headers(), body)`; `destination`
    /// is without the user prefix (`/queue/history`), as that method wants it.
    ToSession {
        session: SessionId,
        destination: String,
        body: String,
    },
    /// `Store::apply(op)`.
    Persist(PersistOp),
}

/// A change to write to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistOp {
    CreateRoom {
        id: String,
        name: String,
        created: u64,
    },
    /// Append a message to its room's history, then keep only the room's newest `keep`.
    AppendMessage { message: ChatMessage, keep: usize },
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatError {
    RoomName(NameError),
    Nickname(NameError),
    Message(MessageError),
    /// A room with this name (compared case-insensitively) exists.
    DuplicateRoomName(String),
    /// There are already this many rooms.
    TooManyRooms(usize),
    UnknownRoom(String),
    MissingRoomId,
    /// Another member of the room uses this nickname (compared case-insensitively).
    NicknameTaken(String),
    /// The session is already in the room, under this nickname.
    AlreadyJoined(String),
    /// The session is not a member of the room.
    NotInRoom(String),
    /// The body is not the expected JSON.
    InvalidBody(String),
    /// The body's `type` does not match the destination.
    TypeMismatch {
        expected: MessageType,
        got: MessageType,
    },
    UnknownDestination(String),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::RoomName(e) => write!(f, "room name {e}"),
            ChatError::Nickname(e) => write!(f, "nickname {e}"),
            ChatError::Message(e) => e.fmt(f),
            ChatError::DuplicateRoomName(name) => write!(f, "a room named {name:?} exists"),
            ChatError::TooManyRooms(max) => write!(f, "there are already {max} rooms"),
            ChatError::UnknownRoom(id) => write!(f, "no room {id:?}"),
            ChatError::MissingRoomId => f.write_str("roomId is required"),
            ChatError::NicknameTaken(nick) => {
                write!(f, "nickname {nick:?} is taken in this room")
            }
            ChatError::AlreadyJoined(nick) => write!(f, "already in this room as {nick:?}"),
            ChatError::NotInRoom(id) => write!(f, "not a member of room {id:?}: JOIN first"),
            ChatError::InvalidBody(why) => write!(f, "invalid message body: {why}"),
            ChatError::TypeMismatch { expected, got } => write!(
                f,
                "type {} does not belong here (expected {})",
                got.as_str(),
                expected.as_str()
            ),
            ChatError::UnknownDestination(d) => write!(f, "unknown destination /app{d}"),
        }
    }
}

impl std::error::Error for ChatError {}

impl ChatError {
    /// A stable identifier for programs.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::RoomName(_) => "invalid_room_name",
            ChatError::Nickname(_) => "invalid_nickname",
            ChatError::Message(_) => "invalid_message",
            ChatError::DuplicateRoomName(_) => "duplicate_room_name",
            ChatError::TooManyRooms(_) => "too_many_rooms",
            ChatError::UnknownRoom(_) => "unknown_room",
            ChatError::MissingRoomId => "missing_room_id",
            ChatError::NicknameTaken(_) => "nickname_taken",
            ChatError::AlreadyJoined(_) => "already_joined",
            ChatError::NotInRoom(_) => "not_in_room",
            ChatError::InvalidBody(_) => "invalid_body",
            ChatError::TypeMismatch { .. } => "type_mismatch",
            ChatError::UnknownDestination(_) => "unknown_destination",
        }
    }

    /// The HTTP status this error deserves.
    pub fn http_status(&self) -> u16 {
        match self {
            ChatError::UnknownRoom(_) => 404,
            ChatError::DuplicateRoomName(_)
            | ChatError::TooManyRooms(_)
            | ChatError::NicknameTaken(_)
            | ChatError::AlreadyJoined(_) => 409,
            _ => 400,
        }
    }

    /// The JSON body for this error.
    pub fn body(&self, room_id: Option<&str>) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            code: Some(self.code().to_owned()),
            room_id: room_id.map(str::to_owned),
        }
    }
}

#[derive(Clone, Debug)]
struct Member {
    nickname: String,
    /// `nickname`, case-folded.
    key: String,
    client: Option<String>,
}

/// A room.
#[derive(Clone, Debug)]
pub struct Room {
    id: String,
    name: String,
    created: u64,
    /// This node's members, by session.
    members: BTreeMap<SessionId, Member>,
    /// Cluster mode: the members other live nodes hold, node → case-folded nickname →
    /// nickname.
    remote: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Oldest first; in cluster mode ordered by id.
    history: VecDeque<ChatMessage>,
}

impl Room {
    fn new(id: String, name: String, created: u64, history: VecDeque<ChatMessage>) -> Room {
        Room {
            id,
            name,
            created,
            members: BTreeMap::new(),
            remote: BTreeMap::new(),
            history,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Milliseconds since the Unix epoch.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Members on every live node (a nickname held on two nodes at once counts once).
    pub fn member_count(&self) -> usize {
        if self.remote.is_empty() {
            self.members.len()
        } else {
            self.all_members().len()
        }
    }

    /// Members on this node.
    pub fn local_member_count(&self) -> usize {
        self.members.len()
    }

    /// The members' nicknames (on every live node), sorted case-insensitively.
    pub fn nicknames(&self) -> Vec<&str> {
        self.all_members().into_values().collect()
    }

    /// Case-folded nickname → nickname, this node's members first.
    fn all_members(&self) -> BTreeMap<&str, &str> {
        let mut all: BTreeMap<&str, &str> = self
            .members
            .values()
            .map(|m| (m.key.as_str(), m.nickname.as_str()))
            .collect();
        for set in self.remote.values() {
            for (key, nickname) in set {
                all.entry(key.as_str()).or_insert(nickname.as_str());
            }
        }
        all
    }

    /// Another node's member holds this (case-folded) nickname.
    fn held_remotely(&self, key: &str) -> bool {
        self.remote.values().any(|set| set.contains_key(key))
    }

    /// Anyone (here or on a live node) holds this (case-folded) nickname.
    fn held(&self, key: &str) -> bool {
        self.members.values().any(|m| m.key == key) || self.held_remotely(key)
    }

    /// This node's members' nicknames, sorted case-insensitively.
    fn local_nicknames(&self) -> Vec<String> {
        let mut names: Vec<(&str, &str)> = self
            .members
            .values()
            .map(|m| (m.key.as_str(), m.nickname.as_str()))
            .collect();
        names.sort_unstable();
        names.into_iter().map(|(_, n)| n.to_owned()).collect()
    }

    /// The nickname of `session` in this room.
    pub fn nickname_of(&self, session: SessionId) -> Option<&str> {
        self.members.get(&session).map(|m| m.nickname.as_str())
    }

    /// Recent messages, oldest first.
    pub fn history(&self) -> &VecDeque<ChatMessage> {
        &self.history
    }

    pub fn summary(&self) -> RoomSummary {
        RoomSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            created: self.created,
            members: self.member_count(),
        }
    }

    pub fn detail(&self) -> RoomDetail {
        RoomDetail {
            id: self.id.clone(),
            name: self.name.clone(),
            created: self.created,
            members: self.nicknames().into_iter().map(str::to_owned).collect(),
            history: self.history.iter().cloned().collect(),
        }
    }

    fn history_json(&self) -> String {
        let list: Vec<&ChatMessage> = self.history.iter().collect();
        to_json(&list)
    }
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// The JSON body of an application message (`/app/chat.*`), within `config`'s size limit.
pub fn parse_app_body(config: &ChatConfig, body: &[u8]) -> Result<ClientMessage, ChatError> {
    if body.len() > config.max_body_bytes {
        return Err(ChatError::InvalidBody(format!(
            "larger than {} bytes",
            config.max_body_bytes
        )));
    }
    serde_json::from_slice(body).map_err(|e| ChatError::InvalidBody(e.to_string()))
}

/// The shard of `room_id` among `n` (see [`Chat::split`]): FNV-1a of the id.
pub fn shard_of(room_id: &str, n: usize) -> usize {
    let hash = room_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % n.max(1) as u64) as usize
}

/// A new room's id: a slug of its name and a number (`General Chat`, 3 → `general-chat-3`).
pub fn room_id(name: &str, number: u64) -> String {
    let base = slug(name);
    let base = if base.is_empty() {
        "room"
    } else {
        base.as_str()
    };
    format!("{base}-{number}")
}

/// A `clientId` is used only when it is 1..=128 printable ASCII characters.
fn client_token(raw: Option<&str>) -> Option<String> {
    raw.filter(|c| !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// The chat: rooms, members, history.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    /// In creation order (rooms are never deleted).
    rooms: Vec<Room>,
    index: HashMap<String, usize>,
    /// The rooms each session is a member of.
    sessions: HashMap<SessionId, BTreeSet<String>>,
    /// Single-node counters (cluster mode numbers from [`cluster::ClusterState`]).
    next_room: u64,
    next_message: u64,
    /// Single-node message ids are `next_message × step + offset` (1 and 0, except in the
    /// shards of [`Chat::split`], whose ids never meet).
    id_step: u64,
    id_offset: u64,
    /// Cluster mode (see [`cluster`]); `None`: this node is alone.
    cluster: Option<cluster::ClusterState>,
}

impl Default for Chat {
    fn default() -> Self {
        Chat::new(ChatConfig::default())
    }
}

impl Chat {
    pub fn new(config: ChatConfig) -> Self {
        Chat {
            config,
            rooms: Vec::new(),
            index: HashMap::new(),
            sessions: HashMap::new(),
            next_room: 1,
            next_message: 1,
            id_step: 1,
            id_offset: 0,
            cluster: None,
        }
    }

    /// Splits a chat without a cluster into `n` (≥ 1) shards, shard `i` holding the rooms
    /// [`shard_of`] puts there, with their members: so that an application can lock one
    /// room's shard per message instead of the whole chat. Each shard numbers messages apart
    /// from the others (ids `k × n + i`, above every id so far) and keeps this chat's limits;
    /// creating a room across shards is the caller's (see [`Chat::new_room_name`],
    /// [`Chat::has_room_named`] and [`Chat::add_room`]), and so is the limit on their number.
    /// In cluster mode the chat stays whole: one shard.
    pub fn split(self, n: usize) -> Vec<Chat> {
        if self.cluster.is_some() || n <= 1 {
            return vec![self];
        }
        let step = n as u64;
        let used = self.next_message_id_bound();
        let mut shards: Vec<Chat> = (0..n)
            .map(|i| {
                let mut shard = Chat::new(self.config.clone());
                shard.next_room = self.next_room;
                shard.id_step = step;
                shard.id_offset = i as u64;
                // The first id, k × n + i, is at or above every id used so far.
                shard.next_message = used.saturating_sub(i as u64).div_ceil(step).max(1);
                shard
            })
            .collect();
        for room in self.rooms {
            let shard = &mut shards[shard_of(&room.id, n)];
            for &session in room.members.keys() {
                shard
                    .sessions
                    .entry(session)
                    .or_default()
                    .insert(room.id.clone());
            }
            shard.insert_room(room);
        }
        shards
    }

    /// Every single-node message id so far is below this.
    fn next_message_id_bound(&self) -> u64 {
        self.next_message
            .saturating_mul(self.id_step)
            .saturating_add(self.id_offset)
    }

    /// The number the next room created here would get (single node).
    pub fn next_room(&self) -> u64 {
        self.next_room
    }

    /// The chat as the [`Store`] loaded it (rooms with their history, nobody in them).
    pub fn restore(config: ChatConfig, state: LoadedState) -> Self {
        let mut chat = Chat::new(config);
        for loaded in state.rooms {
            if chat.index.contains_key(&loaded.id) {
                continue;
            }
            let mut history: VecDeque<ChatMessage> = loaded.history.into();
            while history.len() > chat.config.history_limit {
                history.pop_front();
            }
            if let Some(max) = history.iter().map(|m| m.id).max() {
                chat.next_message = chat.next_message.max(max + 1);
            }
            if let Some(n) = loaded
                .id
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                chat.next_room = chat.next_room.max(n.saturating_add(1));
            }
            chat.insert_room(Room::new(loaded.id, loaded.name, loaded.created, history));
        }
        chat
    }

    /// Adds a room (its id is new).
    fn insert_room(&mut self, room: Room) -> usize {
        let index = self.rooms.len();
        if let Some(cluster) = &mut self.cluster {
            cluster.room_added(&room.id);
        }
        self.index.insert(room.id.clone(), index);
        self.rooms.push(room);
        index
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// Rooms, oldest first.
    pub fn rooms(&self) -> impl ExactSizeIterator<Item = &Room> {
        self.rooms.iter()
    }

    pub fn room(&self, id: &str) -> Option<&Room> {
        self.index.get(id).map(|&i| &self.rooms[i])
    }

    /// Summaries of every room, oldest first (`GET /api/rooms`).
    pub fn summaries(&self) -> Vec<RoomSummary> {
        self.rooms.iter().map(Room::summary).collect()
    }

    /// The rooms `session` is a member of, sorted by id.
    pub fn rooms_of(&self, session: SessionId) -> Vec<&str> {
        self.sessions
            .get(&session)
            .map(|set| set.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Creates a room named `name` (validated), created at `now_ms`. Its id is a slug of the
    /// name and a counter: `General Chat` → `general-chat-3`.
    pub fn create_room(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<(RoomSummary, Vec<Effect>), ChatError> {
        let name = self.new_room_name(name)?;
        if self.rooms.len() >= self.config.max_rooms {
            return Err(ChatError::TooManyRooms(self.config.max_rooms));
        }
        if self.has_room_named(&name) {
            return Err(ChatError::DuplicateRoomName(name));
        }
        let id = loop {
            let candidate = room_id(&name, self.next_room_number());
            if !self.index.contains_key(&candidate) {
                break candidate;
            }
        };
        Ok(self.add_room(id, name, now_ms))
    }

    /// A new room's name, trimmed and validated against the limits ([`Chat::create_room`]'s
    /// first check).
    pub fn new_room_name(&self, name: &str) -> Result<String, ChatError> {
        validate_name(name, self.config.max_room_name_chars).map_err(ChatError::RoomName)
    }

    /// Whether a room here has this name, compared case-insensitively.
    pub fn has_room_named(&self, name: &str) -> bool {
        let folded = validate::fold(name);
        self.rooms.iter().any(|r| validate::fold(&r.name) == folded)
    }

    /// Adds a room whose name and id were checked (the id is new): its summary, and the
    /// effects to carry out ([`Chat::create_room`]'s last step).
    pub fn add_room(
        &mut self,
        id: String,
        name: String,
        now_ms: u64,
    ) -> (RoomSummary, Vec<Effect>) {
        let room = Room::new(id.clone(), name.clone(), now_ms, VecDeque::new());
        let summary = room.summary();
        self.insert_room(room);
        let mut effects = vec![Effect::Persist(PersistOp::CreateRoom {
            id: id.clone(),
            name: name.clone(),
            created: now_ms,
        })];
        if let Some(announce) = self.announce_room(id, name, now_ms) {
            effects.push(announce);
        }
        (summary, effects)
    }

    /// The number of a new room's id: a counter alone, or in cluster mode unique across
    /// nodes.
    fn next_room_number(&mut self) -> u64 {
        match &mut self.cluster {
            Some(cluster) => cluster.next_room_number(),
            None => {
                self.next_room += 1;
                self.next_room - 1
            }
        }
    }

    /// The id of a new message: a counter alone, or in cluster mode unique across nodes.
    fn next_message_id(&mut self) -> u64 {
        match &mut self.cluster {
            Some(cluster) => cluster.next_message_id(),
            None => {
                self.next_message += 1;
                (self.next_message - 1) * self.id_step + self.id_offset
            }
        }
    }

    /// A SEND to an application destination. Destinations outside `/chat.` are not the chat's:
    /// no effects.
    pub fn handle_app(&mut self, msg: &AppMessage, now_ms: u64) -> Vec<Effect> {
        if !msg.destination.starts_with("/chat.") {
            return Vec::new();
        }
        let body = parse_app_body(&self.config, &msg.body);
        self.handle_app_body(msg, body, now_ms)
    }

    /// [`Chat::handle_app`] with the body already read ([`parse_app_body`]): an application
    /// that routes by room reads it once.
    pub fn handle_app_body(
        &mut self,
        msg: &AppMessage,
        body: Result<ClientMessage, ChatError>,
        now_ms: u64,
    ) -> Vec<Effect> {
        let kind = match msg.destination.as_str() {
            "/chat.join" => MessageType::Join,
            "/chat.send" => MessageType::Talk,
            "/chat.leave" => MessageType::Leave,
            other if other.starts_with("/chat.") => {
                let e = ChatError::UnknownDestination(other.to_owned());
                return vec![self.error_effect(msg.session, &e, None)];
            }
            _ => return Vec::new(),
        };
        let mut effects = Vec::new();
        let body = match body {
            Ok(body) => body,
            Err(e) => return vec![self.error_effect(msg.session, &e, None)],
        };
        let room_id = body.room_id.as_deref();
        let result = match body.kind {
            Some(got) if got != kind => Err(ChatError::TypeMismatch {
                expected: kind,
                got,
            }),
            _ => match room_id {
                None | Some("") => Err(ChatError::MissingRoomId),
                Some(room) => match kind {
                    MessageType::Join => self.join(
                        msg.session,
                        room,
                        self.sender(msg, &body),
                        client_token(body.client_id.as_deref()),
                        now_ms,
                        &mut effects,
                    ),
                    MessageType::Talk => self.talk(
                        msg.session,
                        room,
                        body.message.as_deref().unwrap_or(""),
                        now_ms,
                        &mut effects,
                    ),
                    MessageType::Leave => self.leave(msg.session, room, now_ms, &mut effects),
                },
            },
        };
        if let Err(e) = result {
            effects.push(self.error_effect(msg.session, &e, room_id));
        }
        effects
    }

    /// Who a JOIN says it is: the authenticated user when [`ChatConfig::sender_is_user`],
    /// else the JSON's `sender`.
    fn sender<'a>(&self, msg: &'a AppMessage, body: &'a ClientMessage) -> &'a str {
        match (&msg.user, self.config.sender_is_user) {
            (Some(user), true) => user,
            _ => body.sender.as_deref().unwrap_or(""),
        }
    }

    /// A broker event: [`BrokerEvent::Disconnected`] is [`Chat::session_closed`]; others
    /// change nothing.
    pub fn handle_event(&mut self, event: &BrokerEvent, now_ms: u64) -> Vec<Effect> {
        match event {
            BrokerEvent::Disconnected { session, .. } => self.session_closed(*session, now_ms),
            _ => Vec::new(),
        }
    }

    /// The session is gone: it leaves every room it was in ("X left" in each, by room id).
    pub fn session_closed(&mut self, session: SessionId, now_ms: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for room in self
            .rooms_of(session)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
        {
            // Cannot fail: the session is a member.
            let _ = self.leave(session, &room, now_ms, &mut effects);
        }
        self.sessions.remove(&session);
        effects
    }

    fn error_effect(&self, session: SessionId, error: &ChatError, room_id: Option<&str>) -> Effect {
        // Echo the room id only when it names a room (not arbitrary client text).
        let room_id = room_id.filter(|id| self.index.contains_key(*id));
        Effect::ToSession {
            session,
            destination: ERRORS_DESTINATION.to_owned(),
            body: to_json(&error.body(room_id)),
        }
    }

    fn room_index(&self, room_id: &str) -> Result<usize, ChatError> {
        self.index
            .get(room_id)
            .copied()
            .ok_or_else(|| ChatError::UnknownRoom(room_id.to_owned()))
    }

    fn history_effect(&self, session: SessionId, index: usize) -> Effect {
        Effect::ToSession {
            session,
            destination: HISTORY_DESTINATION.to_owned(),
            body: self.rooms[index].history_json(),
        }
    }

    fn join(
        &mut self,
        session: SessionId,
        room_id: &str,
        sender: &str,
        client: Option<String>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ChatError> {
        let index = self.room_index(room_id)?;
        let nickname = validate_nickname(sender).map_err(ChatError::Nickname)?;
        let key = validate::fold(&nickname);
        let room = &mut self.rooms[index];
        if let Some(current) = room.members.get(&session) {
            if current.key == key {
                // Joining again under the same name: just the history again.
                effects.push(self.history_effect(session, index));
                return Ok(());
            }
            return Err(ChatError::AlreadyJoined(current.nickname.clone()));
        }
        let holder = room
            .members
            .iter()
            .find(|(_, m)| m.key == key)
            .map(|(&s, m)| (s, m.client.clone()));
        if holder.is_none() && room.held_remotely(&key) {
            // Another node's member: the clientId takeover is for this node's sessions only.
            return Err(ChatError::NicknameTaken(nickname));
        }
        if let Some((other, holder_client)) = holder {
            if client.is_none() || holder_client != client {
                return Err(ChatError::NicknameTaken(nickname));
            }
            // The same browser, reconnected: the membership moves to the new session, quietly
            // (the others see no change).
            room.members.remove(&other);
            room.members.insert(
                session,
                Member {
                    nickname,
                    key,
                    client,
                },
            );
            if let Some(set) = self.sessions.get_mut(&other) {
                set.remove(room_id);
                if set.is_empty() {
                    self.sessions.remove(&other);
                }
            }
            self.sessions
                .entry(session)
                .or_default()
                .insert(room_id.to_owned());
            effects.push(self.history_effect(session, index));
            return Ok(());
        }
        room.members.insert(
            session,
            Member {
                nickname: nickname.clone(),
                key,
                client,
            },
        );
        self.sessions
            .entry(session)
            .or_default()
            .insert(room_id.to_owned());
        effects.push(self.history_effect(session, index));
        let text = format!("{nickname} joined");
        self.post(index, MessageType::Join, nickname, text, now_ms, effects);
        Ok(())
    }

    fn talk(
        &mut self,
        session: SessionId,
        room_id: &str,
        text: &str,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ChatError> {
        let index = self.room_index(room_id)?;
        let nickname = self.rooms[index]
            .nickname_of(session)
            .ok_or_else(|| ChatError::NotInRoom(room_id.to_owned()))?
            .to_owned();
        let text =
            validate_message(text, self.config.max_message_chars).map_err(ChatError::Message)?;
        self.post(index, MessageType::Talk, nickname, text, now_ms, effects);
        Ok(())
    }

    fn leave(
        &mut self,
        session: SessionId,
        room_id: &str,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ChatError> {
        let index = self.room_index(room_id)?;
        let member = self.rooms[index]
            .members
            .remove(&session)
            .ok_or_else(|| ChatError::NotInRoom(room_id.to_owned()))?;
        if let Some(set) = self.sessions.get_mut(&session) {
            set.remove(room_id);
            if set.is_empty() {
                self.sessions.remove(&session);
            }
        }
        let text = format!("{} left", member.nickname);
        self.post(
            index,
            MessageType::Leave,
            member.nickname,
            text,
            now_ms,
            effects,
        );
        Ok(())
    }

    /// Stamps a message, keeps it in the history, persists and publishes it.
    fn post(
        &mut self,
        index: usize,
        kind: MessageType,
        sender: String,
        message: String,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let limit = self.config.history_limit;
        let id = self.next_message_id();
        let room = &mut self.rooms[index];
        let msg = ChatMessage {
            id,
            room_id: room.id.clone(),
            kind,
            sender,
            message,
            timestamp: now_ms,
        };
        room.history.push_back(msg.clone());
        while room.history.len() > limit {
            room.history.pop_front();
        }
        let body = to_json(&msg);
        let destination = room_topic(&room.id);
        effects.push(Effect::Persist(PersistOp::AppendMessage {
            message: msg,
            keep: limit,
        }));
        effects.push(Effect::Publish { destination, body });
    }
}

#[cfg(test)]
mod tests;
