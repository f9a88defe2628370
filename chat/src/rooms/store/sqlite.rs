//! The SQLite backend: `chat.sqlite3` in a data directory, the embedded default.
//!
//! Messages are keyed by `(room_id, id)`: one process writes the file, and its [`Chat`]
//! numbers messages from one counter, so ids never collide. History is ordered by `id`.
//!
//! [`Chat`]: super::super::Chat

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{from_sql, to_sql, Backend, BackendError, LoadedRoom, LoadedState, StoreError};
use crate::rooms::{ChatMessage, MessageType, PersistOp, HISTORY_LIMIT};

/// The database file inside the data directory.
pub(super) const FILE_NAME: &str = "chat.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rooms (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room_id   TEXT NOT NULL,
    id        INTEGER NOT NULL,
    type      TEXT NOT NULL,
    sender    TEXT NOT NULL,
    message   TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (room_id, id)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

pub(super) struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating if needed) `dir/chat.sqlite3` and loads it.
    pub(super) fn open(dir: &Path) -> Result<(Sqlite, LoadedState, PathBuf), StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL: readers never wait for the writer, and each commit is one sequential append.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        let state = load(&conn)?;
        Ok((Sqlite { conn }, state, path))
    }
}

impl Backend for Sqlite {
    fn write(&mut self, ops: &[PersistOp]) -> Result<(), BackendError> {
        write(&mut self.conn, ops).map_err(classify)
    }

    fn load(&mut self) -> Result<LoadedState, BackendError> {
        load(&self.conn).map_err(classify)
    }
}

/// A busy or locked database, a full disk or an I/O error may pass: keep the writes and try
/// again. Anything else is the operation's fault.
fn classify(e: rusqlite::Error) -> BackendError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
        )
    );
    if transient {
        BackendError::Unavailable(e.into())
    } else {
        BackendError::Failed(e.into())
    }
}

fn load(conn: &Connection) -> Result<LoadedState, rusqlite::Error> {
    let mut rooms: Vec<LoadedRoom> = conn
        .prepare("SELECT id, name, created FROM rooms ORDER BY created, rowid")?
        .query_map([], |r| {
            Ok(LoadedRoom {
                id: r.get(0)?,
                name: r.get(1)?,
                created: from_sql(r.get(2)?),
                history: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut query = conn.prepare(
        "SELECT id, type, sender, message, timestamp FROM messages
         WHERE room_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    for room in &mut rooms {
        let rows = query.query_map(params![room.id, HISTORY_LIMIT as i64], |r| {
            Ok((
                from_sql(r.get(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                from_sql(r.get(4)?),
            ))
        })?;
        for row in rows {
            let (id, kind, sender, message, timestamp) = row?;
            let Some(kind) = MessageType::parse(&kind) else {
                tracing::warn!(room = %room.id, id, kind, "skipping stored message of unknown type");
                continue;
            };
            room.history.push(ChatMessage {
                id,
                room_id: room.id.clone(),
                kind,
                sender,
                message,
                timestamp,
            });
        }
        room.history.reverse();
    }
    Ok(LoadedState { rooms })
}

fn write(conn: &mut Connection, ops: &[PersistOp]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    // Rooms to prune, with how many messages to keep.
    let mut prune: Vec<(&str, usize)> = Vec::new();
    for op in ops {
        match op {
            PersistOp::CreateRoom { id, name, created } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO rooms (id, name, created) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, name, to_sql(*created)])?;
            }
            PersistOp::AppendMessage { message: m, keep } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO messages (room_id, id, type, sender, message, timestamp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    m.room_id,
                    to_sql(m.id),
                    m.kind.as_str(),
                    m.sender,
                    m.message,
                    to_sql(m.timestamp)
                ])?;
                match prune.iter_mut().find(|(room, _)| *room == m.room_id) {
                    Some(entry) => entry.1 = *keep,
                    None => prune.push((&m.room_id, *keep)),
                }
            }
        }
    }
    for (room, keep) in prune {
        // The id of the newest message past `keep`, and everything up to it, go.
        let cutoff: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM messages WHERE room_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
            )?
            .query_row(params![room, keep as i64], |r| r.get(0))
            .optional()?;
        if let Some(cutoff) = cutoff {
            tx.prepare_cached("DELETE FROM messages WHERE room_id = ?1 AND id <= ?2")?
                .execute(params![room, cutoff])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::Store;
    use super::*;
    use crate::broker::AppMessage;
    use crate::rooms::{Chat, ChatConfig, Effect};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = std::env::temp_dir().join(format!(
                "sockeye-chat-{name}-{}-{n}-{nanos}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn message(id: u64, room: &str) -> ChatMessage {
        ChatMessage {
            id,
            room_id: room.into(),
            kind: MessageType::Talk,
            sender: "ann".into(),
            message: format!("m{id} ☕ <b>"),
            timestamp: 1_700_000_000_000 + id,
        }
    }

    fn create(id: &str, name: &str, created: u64) -> PersistOp {
        PersistOp::CreateRoom {
            id: id.into(),
            name: name.into(),
            created,
        }
    }

    fn append(id: u64, room: &str) -> PersistOp {
        PersistOp::AppendMessage {
            message: message(id, room),
            keep: HISTORY_LIMIT,
        }
    }

    #[test]
    fn an_empty_directory_opens_empty_and_is_created() {
        let dir = TempDir::new("empty");
        let nested = dir.0.join("a").join("b");
        let (store, state) = Store::open(&nested).unwrap();
        assert_eq!(state, LoadedState::default());
        let path = store.path().expect("an SQLite store has a file");
        assert_eq!(path, nested.join("chat.sqlite3"));
        assert!(path.exists());
    }

    #[test]
    fn rooms_and_history_survive_a_reopen() {
        let dir = TempDir::new("reopen");
        {
            let (store, _) = Store::open(&dir.0).unwrap();
            store.apply(create("general-1", "General", 5));
            store.apply(create("room-2", "日本語", 6));
            store.apply(append(1, "general-1"));
            store.apply(append(2, "room-2"));
            store.apply(append(3, "general-1"));
            // Dropped: the queue is written before the writer stops.
        }
        let (_store, state) = Store::open(&dir.0).unwrap();
        assert_eq!(
            state,
            LoadedState {
                rooms: vec![
                    LoadedRoom {
                        id: "general-1".into(),
                        name: "General".into(),
                        created: 5,
                        history: vec![message(1, "general-1"), message(3, "general-1")],
                    },
                    LoadedRoom {
                        id: "room-2".into(),
                        name: "日本語".into(),
                        created: 6,
                        history: vec![message(2, "room-2")],
                    },
                ]
            }
        );
    }

    #[test]
    fn history_on_disk_is_pruned_to_the_newest_100_per_room() {
        let dir = TempDir::new("prune");
        let (store, _) = Store::open(&dir.0).unwrap();
        store.apply(create("a-1", "A", 1));
        store.apply(create("b-2", "B", 2));
        for id in 1..=250 {
            store.apply(append(id, if id % 5 == 0 { "b-2" } else { "a-1" }));
        }
        assert!(store.flush());
        assert_eq!(store.backlog(), 0);
        let conn = Connection::open(store.path().expect("an SQLite store has a file")).unwrap();
        let count = |room: &str| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM messages WHERE room_id = ?1",
                [room],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(count("a-1"), 100);
        assert_eq!(count("b-2"), 50);
        drop(store);
        let (_store, state) = Store::open(&dir.0).unwrap();
        let a = &state.rooms[0].history;
        assert_eq!(a.len(), 100);
        assert_eq!(
            a.first().unwrap().id,
            126,
            "the newest 100 not divisible by 5"
        );
        assert_eq!(a.last().unwrap().id, 249);
        assert!(a.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
        assert_eq!(state.rooms[1].history.len(), 50);
    }

    #[test]
    fn a_smaller_keep_prunes_harder() {
        let dir = TempDir::new("keep");
        let (store, _) = Store::open(&dir.0).unwrap();
        store.apply(create("a-1", "A", 1));
        for id in 1..=10 {
            store.apply(PersistOp::AppendMessage {
                message: message(id, "a-1"),
                keep: 3,
            });
        }
        drop(store);
        let (_store, state) = Store::open(&dir.0).unwrap();
        let ids: Vec<u64> = state.rooms[0].history.iter().map(|m| m.id).collect();
        assert_eq!(ids, [8, 9, 10]);
    }

    #[test]
    fn creating_a_room_twice_keeps_the_first() {
        let dir = TempDir::new("twice");
        let (store, _) = Store::open(&dir.0).unwrap();
        store.apply(create("a-1", "A", 1));
        store.apply(create("a-1", "Other", 9));
        drop(store);
        let (_store, state) = Store::open(&dir.0).unwrap();
        assert_eq!(state.rooms.len(), 1);
        assert_eq!(state.rooms[0].name, "A");
    }

    #[test]
    fn a_chat_restored_from_disk_carries_on() {
        let dir = TempDir::new("chat");
        let run = |store: &Store, effects: Vec<Effect>| {
            for e in effects {
                if let Effect::Persist(op) = e {
                    store.apply(op);
                }
            }
        };
        let app = |session, destination: &str, body: &str| AppMessage {
            session,
            user: None,
            destination: destination.into(),
            headers: vec![],
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        };
        {
            let (store, state) = Store::open(&dir.0).unwrap();
            let mut chat = Chat::restore(ChatConfig::default(), state);
            let (room, effects) = chat.create_room("General", 1_000).unwrap();
            run(&store, effects);
            assert_eq!(room.id, "general-1");
            let e = chat.handle_app(
                &app(1, "/chat.join", r#"{"roomId":"general-1","sender":"ann"}"#),
                2_000,
            );
            run(&store, e);
            let e = chat.handle_app(
                &app(
                    1,
                    "/chat.send",
                    r#"{"roomId":"general-1","message":"persisted"}"#,
                ),
                3_000,
            );
            run(&store, e);
            let e = chat.session_closed(1, 4_000);
            run(&store, e);
        }
        let (_store, state) = Store::open(&dir.0).unwrap();
        let mut chat = Chat::restore(ChatConfig::default(), state);
        let room = chat.room("general-1").unwrap();
        assert_eq!(room.name(), "General");
        assert_eq!(room.created(), 1_000);
        assert_eq!(room.member_count(), 0, "members are not persisted");
        let texts: Vec<(&str, u64)> = room
            .history()
            .iter()
            .map(|m| (m.message.as_str(), m.timestamp))
            .collect();
        assert_eq!(
            texts,
            [
                ("ann joined", 2_000),
                ("persisted", 3_000),
                ("ann left", 4_000)
            ]
        );
        let (next, _) = chat.create_room("Second", 5_000).unwrap();
        assert_eq!(next.id, "second-2");
    }
}
