//! The JSON shapes, as the browser sees them (camelCase field names).

use serde::{Deserialize, Serialize};

/// What a chat message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MessageType {
    Join,
    Talk,
    Leave,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Join => "JOIN",
            MessageType::Talk => "TALK",
            MessageType::Leave => "LEAVE",
        }
    }

    pub fn parse(s: &str) -> Option<MessageType> {
        match s {
            "JOIN" => Some(MessageType::Join),
            "TALK" => Some(MessageType::Talk),
            "LEAVE" => Some(MessageType::Leave),
            _ => None,
        }
    }
}

/// A message of a room, as published on `/topic/rooms.{id}`, kept in the history and sent in
/// `/user/queue/history`:
/// `{"id":7,"roomId":"general-1","type":"TALK","sender":"ann","message":"hi","timestamp":1700000000000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Server-assigned: unique, and increasing within a room (across restarts too). Without a
    /// cluster each shard of the application's rooms numbers its own (see `Chat::split`), so
    /// ids of different rooms do not say which came first.
    pub id: u64,
    pub room_id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub sender: String,
    pub message: String,
    /// Server time, milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// What a client SENDs to `/app/chat.join`, `/app/chat.send` and `/app/chat.leave`:
/// `{"roomId":"general-1","type":"JOIN","sender":"ann","message":"","clientId":"…"}`.
///
/// Only `roomId` is required everywhere; `sender` is read on JOIN only (TALK and LEAVE use the
/// session's membership); `message` on TALK only; `type`, when present, must match the
/// destination. `clientId` is an optional secret the browser keeps (e.g. in `localStorage`):
/// a JOIN with a nickname already held in the room by a session with the same `clientId` takes
/// the membership over (the page reconnected before the old connection was noticed dead).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientMessage {
    #[serde(default)]
    pub room_id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<MessageType>,
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// A room in `GET /api/rooms` and the `201` of `POST /api/rooms`:
/// `{"id":"general-1","name":"General","created":1700000000000,"members":2}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub id: String,
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
    /// How many members the room has.
    pub members: usize,
}

/// A room in `GET /api/rooms/{id}`: its members' nicknames (sorted) and recent history
/// (oldest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDetail {
    pub id: String,
    pub name: String,
    pub created: u64,
    pub members: Vec<String>,
    pub history: Vec<ChatMessage>,
}

/// An error, on `/user/queue/errors` and in HTTP error responses:
/// `{"error":"nickname ann is taken in this room","code":"nickname_taken","roomId":"general-1"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// For programs: a stable identifier, see [`super::ChatError::code`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The room the failed request was about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            code: None,
            room_id: None,
        }
    }
}

/// `POST /api/rooms` body: `{"name":"General"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoom {
    pub name: Option<String>,
}
