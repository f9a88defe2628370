//! Cluster mode of the chat domain: several nodes behind one external broker (the relay) agree
//! on rooms, members and history. Nothing travels node to node but through the broker; this
//! module is sans-IO like the rest of [`Chat`]: it is told what arrived and returns
//! [`Effect`]s.
//!
//! # Ids
//!
//! A message id is `(k << 16) | node` ([`cluster_id`]), `k` a Lamport counter: a node's next
//! `k` is above its own last one and above every `k` it has seen in other nodes' messages and
//! in what the store loaded. Ids are unique across nodes, grow along causality, name their
//! node in their low 16 bits ([`node_of`]), and stay below 2^53 (JavaScript-safe) for about
//! 1.4e11 messages. Room ids get the same treatment from a room counter:
//! `{slug}-{(k << 16) | node}`.
//!
//! # What travels
//!
//! * The rooms' messages, on `/topic/rooms.{id}` as always: each node hears every room
//!   ([`ROOMS_PATTERN`]) and files other nodes' messages with [`Chat::handle_remote_message`]
//!   (into the history in id order, de-duplicated, trimmed; JOIN and LEAVE change the sender
//!   node's member set at once). A node's own messages coming back are ignored.
//! * [`ClusterEvent`]s on [`CLUSTER_TOPIC`], for [`Chat::handle_cluster_event`]: `room` (one
//!   created), `presence` (every [`PRESENCE_INTERVAL_MS`]: the node's members, its last message
//!   id and a digest of the rooms it knows), `rooms` (every room a node knows, sent when another
//!   node's digest differs, so a node started later learns older rooms) and `bye` (a node
//!   stopping: forget its members).
//!
//! # Members
//!
//! A room's members are this node's sessions' plus the members of live nodes (a nickname held
//! on two nodes counts once). A presence replaces its node's member sets wholesale, which
//! repairs a lost JOIN or LEAVE; a presence and the JOIN/LEAVE messages are ordered by id (the
//! presence carries the id of its node's last message), so a late presence never undoes a
//! newer JOIN, nor a late JOIN a newer presence.
//!
//! # Dead nodes
//!
//! A node not heard for [`NODE_TIMEOUT_MS`] ([`Chat::expire_nodes`]), or that said `bye`, is
//! dropped with its members; the lowest-numbered live node (maybe this one) posts "X left" in
//! each room for each of them (unless someone alive still holds the nickname), so pages see it
//! and the store keeps it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::validate::{fold, validate_nickname, validate_room_name};
use super::{
    room_topic, to_json, Chat, ChatError, ChatMessage, Effect, LoadedState, MessageType, PersistOp,
    Room,
};

/// The topic of the cluster's own events.
pub const CLUSTER_TOPIC: &str = "/topic/sockeye.cluster";
/// Every room's topic.
pub const ROOMS_PATTERN: &str = "/topic/rooms.*";
/// How often a node tells the others who its members are.
pub const PRESENCE_INTERVAL_MS: u64 = 2_000;
/// A node not heard for this long is dropped.
pub const NODE_TIMEOUT_MS: u64 = 4 * PRESENCE_INTERVAL_MS;
/// The low bits of an id that name its node.
pub const NODE_BITS: u32 = 16;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;
/// Rooms not known yet whose messages are kept until the room arrives, at most.
const MAX_ORPHAN_ROOMS: usize = 64;
/// The most messages from other nodes kept for handing to this node's pages again after a
/// broker outage (see [`Chat::cluster_suspended`]).
const MAX_RECOVERING: usize = 10_000;
/// The longest room id accepted from another node (a 24-character slug, a dash, 20 digits).
const MAX_ROOM_ID_LEN: usize = 64;

/// A node's number, 1..=65535.
pub type NodeId = u16;

/// The node that posted message `id` (or created room number `id`).
pub fn node_of(id: u64) -> NodeId {
    (id & NODE_MASK) as NodeId
}

/// The id of Lamport time `k` on `node`.
pub fn cluster_id(k: u64, node: NodeId) -> u64 {
    (k << NODE_BITS) | u64::from(node)
}

/// Cluster mode settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node (1..=65535).
    pub node: NodeId,
    /// Write other nodes' rooms and messages to the store too: yes when each node has a store
    /// of its own (SQLite), no when they share one (PostgreSQL: the originating node writes).
    pub persist_remote: bool,
    /// [`PRESENCE_INTERVAL_MS`] by default (for the glue's timer).
    pub presence_interval_ms: u64,
    /// [`NODE_TIMEOUT_MS`] by default.
    pub node_timeout_ms: u64,
}

impl ClusterConfig {
    /// Node `node` with the default timing, persisting only its own writes.
    pub fn new(node: NodeId) -> Self {
        ClusterConfig {
            node,
            persist_remote: false,
            presence_interval_ms: PRESENCE_INTERVAL_MS,
            node_timeout_ms: NODE_TIMEOUT_MS,
        }
    }
}

/// A room as the cluster events carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub created: u64,
}

/// Which rooms a node knows, in short: how many, and the XOR of their ids' FNV-1a hashes
/// (the same set gives the same digest on every node, in any order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDigest {
    pub count: usize,
    pub hash: u64,
}

impl RoomDigest {
    fn add(&mut self, id: &str) {
        self.count += 1;
        self.hash ^= fnv1a(id.as_bytes());
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Members by room id, as `presence` and `bye` carry them.
pub type MemberLists = BTreeMap<String, Vec<String>>;

/// What nodes tell each other on [`CLUSTER_TOPIC`]: JSON with `"type"` and `"node"`, e.g.
/// `{"type":"presence","node":3,"last":196611,"members":{"general-65539":["ann"]},"rooms":{"count":1,"hash":42}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClusterEvent {
    /// A room was created on `node`.
    Room {
        node: NodeId,
        id: String,
        name: String,
        created: u64,
    },
    /// Every room `node` knows (the answer to a presence whose room digest differs).
    Rooms { node: NodeId, rooms: Vec<RoomInfo> },
    /// `node` is alive; its members now, as of its message `last`.
    Presence {
        node: NodeId,
        #[serde(default)]
        last: u64,
        #[serde(default)]
        members: MemberLists,
        #[serde(default)]
        rooms: RoomDigest,
    },
    /// `node` is stopping: the members it still has (normally none: its sessions have left,
    /// each with its own LEAVE), as of its message `last`, are gone.
    Bye {
        node: NodeId,
        #[serde(default)]
        last: u64,
        #[serde(default)]
        members: MemberLists,
    },
}

impl ClusterEvent {
    /// The node that sent it.
    pub fn node(&self) -> NodeId {
        match self {
            ClusterEvent::Room { node, .. }
            | ClusterEvent::Rooms { node, .. }
            | ClusterEvent::Presence { node, .. }
            | ClusterEvent::Bye { node, .. } => *node,
        }
    }

    /// The event as a publish to [`CLUSTER_TOPIC`].
    fn effect(&self) -> Effect {
        Effect::Publish {
            destination: CLUSTER_TOPIC.to_owned(),
            body: to_json(self),
        }
    }
}

/// Another node, as this one knows it.
#[derive(Clone, Debug)]
struct Peer {
    /// When its last presence came.
    last_seen_ms: u64,
    /// The newest of its message ids whose membership change is applied (its JOIN/LEAVE
    /// messages, its presence's `last`): older ones change nothing.
    watermark: u64,
}

/// Cluster mode's part of [`Chat`].
#[derive(Debug)]
pub(super) struct ClusterState {
    config: ClusterConfig,
    /// Lamport times: the last message `k` and room `k` used or seen.
    message_k: u64,
    room_k: u64,
    /// The id of this node's last message.
    last_posted: u64,
    /// Live nodes other than this one.
    peers: BTreeMap<NodeId, Peer>,
    /// Nodes dropped (timed out or said bye): their JOINs are ignored until a presence comes.
    gone: BTreeSet<NodeId>,
    /// Messages for rooms not known yet, kept until the room arrives.
    orphans: HashMap<String, Vec<ChatMessage>>,
    digest: RoomDigest,
    /// When this node last sent every room it knows.
    last_sync_ms: Option<u64>,
    /// From a broker outage until the reload after it: the other nodes' messages filed
    /// meanwhile (bounded by [`MAX_RECOVERING`]), which this node's pages may not have had.
    recovering: Option<Vec<ChatMessage>>,
}

impl ClusterState {
    pub(super) fn next_message_id(&mut self) -> u64 {
        self.message_k += 1;
        self.last_posted = cluster_id(self.message_k, self.config.node);
        self.last_posted
    }

    pub(super) fn next_room_number(&mut self) -> u64 {
        self.room_k += 1;
        cluster_id(self.room_k, self.config.node)
    }

    pub(super) fn room_added(&mut self, id: &str) {
        self.digest.add(id);
        if let Some(n) = room_number(id) {
            self.room_k = self.room_k.max(n >> NODE_BITS);
        }
    }

    fn observe(&mut self, id: u64) {
        self.message_k = self.message_k.max(id >> NODE_BITS);
    }

    /// Another node's membership change with id `id`: apply it? (Not when a newer presence
    /// or change was applied, nor for a dropped node.) Notes the node as known.
    fn membership_news(&mut self, node: NodeId, id: u64, now_ms: u64) -> bool {
        if self.gone.contains(&node) {
            return false;
        }
        let peer = self.peers.entry(node).or_insert(Peer {
            last_seen_ms: now_ms,
            watermark: 0,
        });
        if id <= peer.watermark {
            return false;
        }
        peer.watermark = id;
        true
    }

    /// This node is the lowest-numbered live one.
    fn is_lowest(&self) -> bool {
        self.peers
            .keys()
            .next()
            .is_none_or(|&lowest| self.config.node < lowest)
    }
}

/// A room's message as a node published it to `destination` (a room's topic): parsed, and
/// checked against the topic.
pub fn parse_room_message(destination: &str, body: &[u8]) -> Result<ChatMessage, ChatError> {
    let msg: ChatMessage =
        serde_json::from_slice(body).map_err(|e| ChatError::InvalidBody(e.to_string()))?;
    if destination != room_topic(&msg.room_id) {
        return Err(ChatError::InvalidBody(format!(
            "roomId {:?} does not match {destination}",
            msg.room_id
        )));
    }
    Ok(msg)
}

/// The number at the end of a room id (`general-65537` → 65537).
fn room_number(id: &str) -> Option<u64> {
    id.rsplit('-').next().and_then(|n| n.parse().ok())
}

/// A room id as [`Chat::create_room`] makes them: ASCII lower-case letters, digits, dashes.
fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ROOM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Where a message from another node lands in a history ordered by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placed {
    Inserted,
    /// Already there.
    Duplicate,
    /// Older than everything a full history keeps.
    TooOld,
}

fn insert_by_id(history: &mut VecDeque<ChatMessage>, msg: ChatMessage, limit: usize) -> Placed {
    match history.binary_search_by_key(&msg.id, |m| m.id) {
        Ok(_) => Placed::Duplicate,
        Err(0) if history.len() >= limit => Placed::TooOld,
        Err(at) => {
            history.insert(at, msg);
            while history.len() > limit {
                history.pop_front();
            }
            Placed::Inserted
        }
    }
}

impl Chat {
    /// Turns cluster mode on (before any traffic; after [`Chat::restore`]): ids from now on are
    /// unique across nodes and above every id loaded. `config.node` must be 1..=65535.
    pub fn enable_cluster(&mut self, config: ClusterConfig) {
        assert!(config.node != 0, "node ids are 1..=65535");
        let mut state = ClusterState {
            message_k: self.next_message.saturating_sub(1) >> NODE_BITS,
            room_k: 0,
            last_posted: 0,
            config,
            peers: BTreeMap::new(),
            gone: BTreeSet::new(),
            orphans: HashMap::new(),
            digest: RoomDigest::default(),
            last_sync_ms: None,
            recovering: None,
        };
        for room in &mut self.rooms {
            state.room_added(&room.id);
            // Ordered by id from now on (a store shared by single nodes ordered by time).
            room.history.make_contiguous().sort_by_key(|m| m.id);
        }
        self.cluster = Some(state);
    }

    /// Cluster mode's settings, when on.
    pub fn cluster_config(&self) -> Option<&ClusterConfig> {
        self.cluster.as_ref().map(|c| &c.config)
    }

    /// This node's number, in cluster mode.
    pub fn node(&self) -> Option<NodeId> {
        self.cluster_config().map(|c| c.node)
    }

    /// The live nodes, this one included, lowest first (cluster mode; empty otherwise).
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        let mut nodes: Vec<NodeId> = c.peers.keys().copied().collect();
        nodes.push(c.config.node);
        nodes.sort_unstable();
        nodes
    }

    /// The `room` event for a room just created here (cluster mode).
    pub(super) fn announce_room(&self, id: String, name: String, created: u64) -> Option<Effect> {
        let node = self.node()?;
        Some(
            ClusterEvent::Room {
                node,
                id,
                name,
                created,
            }
            .effect(),
        )
    }

    /// This node's `presence`: its members, its last message id and its room digest.
    pub fn presence(&self) -> Option<Effect> {
        let c = self.cluster.as_ref()?;
        Some(
            ClusterEvent::Presence {
                node: c.config.node,
                last: c.last_posted,
                members: self.local_member_lists(),
                rooms: c.digest,
            }
            .effect(),
        )
    }

    /// This node's `bye`, with the members it still has.
    pub fn bye(&self) -> Option<Effect> {
        let c = self.cluster.as_ref()?;
        Some(
            ClusterEvent::Bye {
                node: c.config.node,
                last: c.last_posted,
                members: self.local_member_lists(),
            }
            .effect(),
        )
    }

    fn local_member_lists(&self) -> MemberLists {
        self.rooms
            .iter()
            .filter(|r| !r.members.is_empty())
            .map(|r| (r.id.clone(), r.local_nicknames()))
            .collect()
    }

    /// Drops the nodes not heard for the node timeout (see the module's docs); "X left" for
    /// their members when this node is the lowest live one. Call it on the presence timer,
    /// only while the broker is reachable (a node cut off hears nobody).
    pub fn expire_nodes(&mut self, now_ms: u64) -> Vec<Effect> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        let timeout = c.config.node_timeout_ms;
        let dead: Vec<NodeId> = c
            .peers
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.last_seen_ms) > timeout)
            .map(|(&n, _)| n)
            .collect();
        let mut effects = Vec::new();
        for node in dead {
            self.drop_node(node, now_ms, &mut effects);
        }
        effects
    }

    /// The broker is unreachable: until [`Chat::take_recovering`] ends it, the other nodes'
    /// messages this node files are noted as well. Coming back, a node's relay connections
    /// and subscriptions return one by one: a message can reach the chat's own subscription
    /// (and so the room's history) while a page's subscription on another connection is not
    /// in place yet, and the reload of the store would then find nothing new to give it.
    pub fn cluster_suspended(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.recovering.get_or_insert_with(Vec::new);
        }
    }

    /// The messages noted since [`Chat::cluster_suspended`]; `stop`: noting ends (no outage
    /// and no other reload pending).
    pub fn take_recovering(&mut self, stop: bool) -> Vec<ChatMessage> {
        let Some(c) = &mut self.cluster else {
            return Vec::new();
        };
        match stop {
            true => c.recovering.take().unwrap_or_default(),
            false => c
                .recovering
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
        }
    }

    /// The broker is reachable again after an outage: every node gets a fresh node timeout
    /// (nobody could be heard meanwhile).
    pub fn cluster_resumed(&mut self, now_ms: u64) {
        if let Some(c) = &mut self.cluster {
            for peer in c.peers.values_mut() {
                peer.last_seen_ms = now_ms;
            }
        }
    }

    /// Another node's event. This node's own events (coming back) change nothing.
    pub fn handle_cluster_event(&mut self, event: ClusterEvent, now_ms: u64) -> Vec<Effect> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        let from = event.node();
        if from == c.config.node || from == 0 {
            return Vec::new();
        }
        let mut effects = Vec::new();
        match event {
            ClusterEvent::Room {
                id, name, created, ..
            } => self.add_remote_room(RoomInfo { id, name, created }, now_ms, &mut effects),
            ClusterEvent::Rooms { rooms, .. } => {
                for info in rooms {
                    self.add_remote_room(info, now_ms, &mut effects);
                }
            }
            ClusterEvent::Presence {
                last,
                members,
                rooms,
                ..
            } => {
                self.presence_from(from, last, &members, now_ms);
                self.sync_rooms_if_needed(rooms, now_ms, &mut effects);
            }
            ClusterEvent::Bye { last, members, .. } => {
                // What it still had is what goes (its sessions' own LEAVEs may be on the way).
                self.replace_members(from, last, &members);
                self.drop_node(from, now_ms, &mut effects);
            }
        }
        effects
    }

    /// A message another node published to `destination` (a room's topic):
    /// [`parse_room_message`], then [`Chat::handle_remote_message`].
    pub fn handle_room_message(
        &mut self,
        destination: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Effect>, ChatError> {
        let msg = parse_room_message(destination, body)?;
        Ok(self.handle_remote_message(msg, now_ms))
    }

    /// A room's message from another node (see the module's docs). This node's own messages
    /// (coming back) change nothing.
    pub fn handle_remote_message(&mut self, msg: ChatMessage, now_ms: u64) -> Vec<Effect> {
        let max_chars = self.config.max_message_chars.max(64);
        let Some(c) = &mut self.cluster else {
            return Vec::new();
        };
        let from = node_of(msg.id);
        if from == c.config.node || from == 0 {
            return Vec::new();
        }
        let sender_ok = validate_nickname(&msg.sender).is_ok_and(|n| n == msg.sender);
        if !sender_ok || msg.message.chars().count() > max_chars {
            return Vec::new();
        }
        c.observe(msg.id);
        let mut effects = Vec::new();
        match self.index.get(&msg.room_id) {
            Some(&index) => self.file_remote(index, msg, now_ms, &mut effects),
            None => self.keep_orphan(msg),
        }
        effects
    }

    /// Puts another node's message into room `index`'s history and applies its membership
    /// change.
    fn file_remote(
        &mut self,
        index: usize,
        msg: ChatMessage,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let limit = self.config.history_limit;
        let Some(c) = &mut self.cluster else { return };
        let from = node_of(msg.id);
        let room = &mut self.rooms[index];
        let placed = insert_by_id(&mut room.history, msg.clone(), limit);
        if placed == Placed::Duplicate {
            return;
        }
        if let Some(noted) = &mut c.recovering {
            if placed == Placed::Inserted && noted.len() < MAX_RECOVERING {
                noted.push(msg.clone());
            }
        }
        if msg.kind != MessageType::Talk && c.membership_news(from, msg.id, now_ms) {
            let key = fold(&msg.sender);
            if msg.kind == MessageType::Join {
                room.remote
                    .entry(from)
                    .or_default()
                    .insert(key, msg.sender.clone());
            } else if let Some(set) = room.remote.get_mut(&from) {
                set.remove(&key);
                if set.is_empty() {
                    room.remote.remove(&from);
                }
            }
        }
        if placed == Placed::Inserted && c.config.persist_remote {
            effects.push(Effect::Persist(PersistOp::AppendMessage {
                message: msg,
                keep: limit,
            }));
        }
    }

    /// A message for a room not known yet: kept (bounded) until the room arrives.
    fn keep_orphan(&mut self, msg: ChatMessage) {
        let limit = self.config.history_limit;
        let Some(c) = &mut self.cluster else { return };
        if !valid_room_id(&msg.room_id)
            || (!c.orphans.contains_key(&msg.room_id) && c.orphans.len() >= MAX_ORPHAN_ROOMS)
        {
            return;
        }
        let list = c.orphans.entry(msg.room_id.clone()).or_default();
        list.push(msg);
        if list.len() > limit {
            list.remove(0);
        }
    }

    /// A room another node made: added unless known (or invalid), with the messages that
    /// came for it before it did.
    fn add_remote_room(&mut self, info: RoomInfo, now_ms: u64, effects: &mut Vec<Effect>) {
        if self.index.contains_key(&info.id) || !valid_room_id(&info.id) {
            return;
        }
        let Ok(name) = validate_room_name(&info.name) else {
            return;
        };
        // Rooms from other nodes are taken past max_rooms (nodes may race to the last one),
        // but not without end.
        if self.rooms.len() >= self.config.max_rooms.saturating_mul(2) {
            return;
        }
        let Some(c) = &mut self.cluster else { return };
        let persist = c.config.persist_remote;
        let orphans = c.orphans.remove(&info.id).unwrap_or_default();
        let index = self.insert_room(Room::new(
            info.id.clone(),
            name.clone(),
            info.created,
            VecDeque::new(),
        ));
        if persist {
            effects.push(Effect::Persist(PersistOp::CreateRoom {
                id: info.id,
                name,
                created: info.created,
            }));
        }
        for msg in orphans {
            self.file_remote(index, msg, now_ms, effects);
        }
    }

    /// A presence from `node`: it is alive; its members replace what was known of them
    /// (unless a newer JOIN or LEAVE of it was applied already).
    fn presence_from(&mut self, node: NodeId, last: u64, members: &MemberLists, now_ms: u64) {
        let Some(c) = &mut self.cluster else { return };
        c.gone.remove(&node);
        c.observe(last);
        c.peers
            .entry(node)
            .or_insert(Peer {
                last_seen_ms: now_ms,
                watermark: 0,
            })
            .last_seen_ms = now_ms;
        self.replace_members(node, last, members);
    }

    /// `node`'s members are `members` as of its message `last` (if nothing newer is known).
    fn replace_members(&mut self, node: NodeId, last: u64, members: &MemberLists) {
        let Some(c) = &mut self.cluster else { return };
        let Some(peer) = c.peers.get_mut(&node) else {
            return;
        };
        if last < peer.watermark {
            return;
        }
        peer.watermark = last;
        for room in &mut self.rooms {
            room.remote.remove(&node);
            let Some(names) = members.get(&room.id) else {
                continue;
            };
            let set: BTreeMap<String, String> = names
                .iter()
                .filter_map(|n| validate_nickname(n).ok())
                .map(|n| (fold(&n), n))
                .collect();
            if !set.is_empty() {
                room.remote.insert(node, set);
            }
        }
    }

    /// `node` is dead or gone: its members go, and the lowest live node says so in each room.
    fn drop_node(&mut self, node: NodeId, now_ms: u64, effects: &mut Vec<Effect>) {
        let Some(c) = &mut self.cluster else { return };
        c.peers.remove(&node);
        c.gone.insert(node);
        let lowest = c.is_lowest();
        let mut departed: Vec<(usize, String)> = Vec::new();
        for (index, room) in self.rooms.iter_mut().enumerate() {
            let Some(set) = room.remote.remove(&node) else {
                continue;
            };
            for (key, nickname) in set {
                if !room.held(&key) {
                    departed.push((index, nickname));
                }
            }
        }
        if !lowest {
            return;
        }
        for (index, nickname) in departed {
            let text = format!("{nickname} left");
            self.post(index, MessageType::Leave, nickname, text, now_ms, effects);
        }
    }

    /// Another node knows other rooms than this one: send every room this one knows (at most
    /// once per node timeout, so a lasting difference costs little).
    fn sync_rooms_if_needed(&mut self, theirs: RoomDigest, now_ms: u64, effects: &mut Vec<Effect>) {
        let Some(c) = &mut self.cluster else { return };
        let recent = c
            .last_sync_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < c.config.node_timeout_ms);
        if theirs == c.digest || recent {
            return;
        }
        c.last_sync_ms = Some(now_ms);
        let event = ClusterEvent::Rooms {
            node: c.config.node,
            rooms: self
                .rooms
                .iter()
                .map(|r| RoomInfo {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    created: r.created,
                })
                .collect(),
        };
        effects.push(event.effect());
    }

    /// Merges what the store holds now (read again after the broker came back): rooms and
    /// messages this node did not have. Nothing is published or written. Returns how many
    /// rooms were new, and the new messages, oldest first per room (for the glue to hand to
    /// this node's pages, which missed them).
    pub fn merge_loaded(&mut self, state: LoadedState) -> (usize, Vec<ChatMessage>) {
        let limit = self.config.history_limit;
        let (mut rooms, mut messages) = (0, Vec::new());
        for loaded in state.rooms {
            if let Some(c) = &mut self.cluster {
                for m in &loaded.history {
                    c.observe(m.id);
                }
            }
            let index = match self.index.get(&loaded.id) {
                Some(&index) => index,
                None => {
                    rooms += 1;
                    self.insert_room(Room::new(
                        loaded.id,
                        loaded.name,
                        loaded.created,
                        VecDeque::new(),
                    ))
                }
            };
            let history = &mut self.rooms[index].history;
            for m in loaded.history {
                if insert_by_id(history, m.clone(), limit) == Placed::Inserted {
                    messages.push(m);
                }
            }
        }
        (rooms, messages)
    }
}
