//! The PostgreSQL backend: one database that several chat nodes may share.
//!
//! # Client
//!
//! The synchronous `postgres` crate (rust-postgres). It runs tokio-postgres on a small
//! current-thread runtime that lives inside each connection, so tokio stays confined to the
//! store's writer thread (and to whoever opens the store); the engine and the event loop do not
//! see it.
//!
//! # Schema and migrations
//!
//! Numbered migrations ([`MIGRATIONS`]) run at open in one transaction that first takes
//! `pg_advisory_xact_lock(MIGRATION_LOCK)`: nodes starting at the same moment take turns, and
//! the later ones find the work done. `schema_migrations (version, applied)` records what ran;
//! a database newer than this build is refused.
//!
//! * `rooms (id, name, created, seq)`: `seq` keeps creation order among rooms created in the
//!   same millisecond (SQLite's `rowid`). `CREATE` is `ON CONFLICT DO NOTHING`: two nodes
//!   creating the same room both succeed and the first one's name stays.
//! * `writers (id, started, application)`: one row per store opened.
//! * `messages (room_id, writer, id, type, sender, message, timestamp)`, primary key
//!   `(room_id, writer, id)`.
//!
//! # Message ids with several nodes
//!
//! [`Chat`](super::super::Chat) numbers messages itself, from one counter per process that
//! starts after the largest id it loaded: two nodes appending to the same room hand out the
//! same ids. So the store does not key messages by that id alone: each opened store registers a
//! *writer* (a row in `writers`, its id from the database) and every message it writes carries
//! that writer id. Within one writer the chat's ids only increase, so `(room_id, writer, id)`
//! never collides across nodes or restarts, and inserts are `ON CONFLICT DO NOTHING`, so a batch
//! written again after a connection dropped mid-commit is harmless. History is ordered by
//! `(timestamp, writer, id)`: server time first, then a fixed order between writers for the same
//! millisecond, then each writer's own order. Loaded messages keep their chat ids (which may
//! repeat across nodes).
//!
//! # Trimming with concurrent writers
//!
//! After inserting, a transaction deletes each room's messages older than its newest `keep`,
//! holding `pg_advisory_xact_lock(ROOM_LOCK, key(room))` for the room until it commits. Rooms
//! are locked in key order, so two nodes' transactions cannot deadlock on each other; under
//! READ COMMITTED the delete of the later one sees the earlier one's rows, so once both commit
//! the room holds at most `keep` messages.
//!
//! # Connections
//!
//! Without them in the URL, `connect_timeout` is 10 s, `application_name` is `sockeye-chat`,
//! and TCP keepalives are on; each connection sets `statement_timeout` to 30 s. A dropped
//! connection is made again on the next write (the writer retries with backoff). TLS is not
//! supported (`sslmode=require` fails to connect): use it on a private network or a socket.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::{Client, Config, IsolationLevel, NoTls, Statement};

use super::{from_sql, to_sql, Backend, BackendError, LoadedRoom, LoadedState, StoreError};
use crate::rooms::{ChatMessage, MessageType, PersistOp, HISTORY_LIMIT};

/// The advisory lock around migrations (one bigint key: "sockeye" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x0073_6f63_6b65_7965;
/// The first key of the two-key advisory locks around trimming a room ("sock").
const ROOM_LOCK: i32 = 0x736f_636b;
/// How long a statement (and a wait for a lock) may take.
const STATEMENT_TIMEOUT_MS: u32 = 30_000;
/// Attempts at a transaction that hit a deadlock or serialization failure.
const TX_ATTEMPTS: usize = 3;

/// The schema, version by version. Never edit one that shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE rooms (
        id      TEXT PRIMARY KEY,
        name    TEXT NOT NULL,
        created BIGINT NOT NULL,
        seq     BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE TABLE writers (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        started     BIGINT NOT NULL,
        application TEXT NOT NULL
    );
    CREATE TABLE messages (
        room_id   TEXT NOT NULL,
        writer    BIGINT NOT NULL,
        id        BIGINT NOT NULL,
        type      TEXT NOT NULL,
        sender    TEXT NOT NULL,
        message   TEXT NOT NULL,
        timestamp BIGINT NOT NULL,
        PRIMARY KEY (room_id, writer, id)
    );
    CREATE INDEX messages_newest ON messages (room_id, timestamp DESC, writer DESC, id DESC);",
)];

/// The URL with its password (in the user info or a `password=` parameter) replaced by `***`:
/// what logs and errors show.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // The user info runs from "://" to the last '@' (a password may hold '/', '?' or '@'); a
    // '@' later in the URL only masks more than needed.
    if let (Some(start), Some(at)) = (url.find("://").map(|i| i + 3), url.rfind('@')) {
        if at > start {
            if let Some(colon) = url[start..at].find(':') {
                out = format!("{}***{}", &url[..start + colon + 1], &url[at..]);
            }
        }
    }
    // `password=` in a query string or a key=value connection string.
    let mut masked = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let value = i + "password=".len();
        masked.push_str(&rest[..value]);
        masked.push_str("***");
        let end = rest[value..]
            .find(|c: char| c == '&' || c.is_whitespace())
            .map_or(rest.len(), |e| value + e);
        rest = &rest[end..];
    }
    masked.push_str(rest);
    masked
}

fn config(url: &str) -> Result<Config, StoreError> {
    let mut config: Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("sockeye-chat");
    }
    config.keepalives(true);
    Ok(config)
}

fn connect(config: &Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))?;
    Ok(client)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A connection with its statements prepared.
struct Conn {
    client: Client,
    create_room: Statement,
    insert_messages: Statement,
    lock_room: Statement,
    trim: Statement,
}

impl Conn {
    fn connect(config: &Config) -> Result<Conn, postgres::Error> {
        Conn::prepare(connect(config)?)
    }

    fn prepare(mut client: Client) -> Result<Conn, postgres::Error> {
        let create_room = client.prepare(
            "INSERT INTO rooms (id, name, created) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )?;
        let insert_messages = client.prepare(
            "INSERT INTO messages (room_id, writer, id, type, sender, message, timestamp)
             SELECT m.room_id, $1, m.id, m.type, m.sender, m.message, m.timestamp
             FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                  AS m (room_id, id, type, sender, message, timestamp)
             ON CONFLICT (room_id, writer, id) DO NOTHING",
        )?;
        let lock_room = client.prepare("SELECT pg_advisory_xact_lock($1::int4, $2::int4)")?;
        let trim = client.prepare(
            "DELETE FROM messages WHERE room_id = $1 AND (timestamp, writer, id) <= (
                SELECT timestamp, writer, id FROM messages WHERE room_id = $1
                ORDER BY timestamp DESC, writer DESC, id DESC OFFSET $2 LIMIT 1)",
        )?;
        Ok(Conn {
            client,
            create_room,
            insert_messages,
            lock_room,
            trim,
        })
    }
}

pub(super) struct Postgres {
    config: Config,
    conn: Option<Conn>,
    /// This store's row in `writers`.
    writer: i64,
}

impl Postgres {
    /// Connects, migrates, registers a writer and loads.
    pub(super) fn open(url: &str) -> Result<(Postgres, LoadedState), StoreError> {
        let config = config(url)?;
        // Connecting is where a wrong password or a missing server shows.
        let mut client = connect(&config)?;
        migrate(&mut client)?;
        // The statements name the tables: prepared once they exist.
        let mut conn = Conn::prepare(client)?;
        let application = format!(
            "sockeye-chat {} pid {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        let writer: i64 = conn
            .client
            .query_one(
                "INSERT INTO writers (started, application) VALUES ($1, $2) RETURNING id",
                &[&now_ms(), &application],
            )?
            .get(0);
        let state = load(&mut conn.client)?;
        tracing::info!(writer, "chat store: PostgreSQL schema up to date");
        Ok((
            Postgres {
                config,
                conn: Some(conn),
                writer,
            },
            state,
        ))
    }

    /// The connection, made again if it is gone.
    fn conn(&mut self) -> Result<&mut Conn, BackendError> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            let conn = Conn::connect(&self.config)
                .map_err(|e| BackendError::Unavailable(StoreError::from(e)))?;
            tracing::debug!("chat store: connected to PostgreSQL again");
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| {
            BackendError::Unavailable(StoreError::Unavailable("no connection".into()))
        })
    }

    /// Runs `f` on the connection, again after a deadlock or serialization failure; classifies
    /// what fails, and drops the connection when it is the connection that failed.
    fn attempt<T>(
        &mut self,
        mut f: impl FnMut(&mut Conn, i64) -> Result<T, postgres::Error>,
    ) -> Result<T, BackendError> {
        let writer = self.writer;
        let mut attempt = 1;
        loop {
            let conn = self.conn()?;
            match f(conn, writer) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < TX_ATTEMPTS && is_conflict(&e) => attempt += 1,
                Err(e) => {
                    let unavailable = is_unavailable(&e);
                    if unavailable || conn.client.is_closed() {
                        self.conn = None;
                        return Err(BackendError::Unavailable(e.into()));
                    }
                    return Err(BackendError::Failed(e.into()));
                }
            }
        }
    }
}

impl Backend for Postgres {
    fn write(&mut self, ops: &[PersistOp]) -> Result<(), BackendError> {
        self.attempt(|conn, writer| write(conn, writer, ops))
    }

    fn load(&mut self) -> Result<LoadedState, BackendError> {
        self.attempt(|conn, _| load(&mut conn.client))
    }
}

/// Deadlocks and serialization failures: try the transaction again at once.
fn is_conflict(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// The connection or the server is in trouble (as opposed to the statement): keep the writes
/// and try later.
fn is_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let Some(db) = e.as_db_error() else {
        // I/O, timeouts, protocol trouble: the connection's fault, not the data's.
        return true;
    };
    let code = db.code().code();
    // 08 connection exception, 53 insufficient resources, 57 operator intervention (admin
    // shutdown, cancel, statement timeout), 58 system error, 40 transaction rollback (conflicts
    // that outlived the retries), 55P03 lock not available.
    ["08", "53", "57", "58", "40"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "55P03"
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Quiet: no NOTICE that schema_migrations exists, at every start.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {STATEMENT_TIMEOUT_MS}; SET LOCAL client_min_messages = warning"
    ))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied BIGINT NOT NULL
        )",
    )?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])?
        .get(0);
    let current = current.unwrap_or(0);
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(StoreError::Schema(format!(
            "the database is at version {current}, newer than this build knows ({latest})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
            &[version, &now_ms()],
        )?;
        tracing::info!(version, "chat store: applied PostgreSQL migration");
    }
    tx.commit()?;
    Ok(())
}

/// The advisory lock key of a room: FNV-1a of its id, the same on every node.
fn room_key(room: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

fn write(conn: &mut Conn, writer: i64, ops: &[PersistOp]) -> Result<(), postgres::Error> {
    let mut tx = conn.client.transaction()?;
    let mut rooms = Vec::new();
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut senders = Vec::new();
    let mut texts = Vec::new();
    let mut stamps = Vec::new();
    // Rooms to trim, with how many messages to keep (the last op's word).
    let mut trim: Vec<(&str, usize)> = Vec::new();
    for op in ops {
        match op {
            PersistOp::CreateRoom { id, name, created } => {
                tx.execute(&conn.create_room, &[id, name, &to_sql(*created)])?;
            }
            PersistOp::AppendMessage { message: m, keep } => {
                rooms.push(m.room_id.as_str());
                ids.push(to_sql(m.id));
                kinds.push(m.kind.as_str());
                senders.push(m.sender.as_str());
                texts.push(m.message.as_str());
                stamps.push(to_sql(m.timestamp));
                match trim.iter_mut().find(|(room, _)| *room == m.room_id) {
                    Some(entry) => entry.1 = *keep,
                    None => trim.push((&m.room_id, *keep)),
                }
            }
        }
    }
    if !rooms.is_empty() {
        tx.execute(
            &conn.insert_messages,
            &[&writer, &rooms, &ids, &kinds, &senders, &texts, &stamps],
        )?;
    }
    trim.sort_by_key(|(room, _)| (room_key(room), *room));
    let mut locked = None;
    for (room, keep) in trim {
        let key = room_key(room);
        if locked != Some(key) {
            tx.execute(&conn.lock_room, &[&ROOM_LOCK, &key])?;
            locked = Some(key);
        }
        tx.execute(&conn.trim, &[&room, &(keep as i64)])?;
    }
    tx.commit()
}

fn load(client: &mut Client) -> Result<LoadedState, postgres::Error> {
    // One snapshot for rooms and messages.
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let mut rooms: Vec<LoadedRoom> = tx
        .query(
            "SELECT id, name, created FROM rooms ORDER BY created, seq",
            &[],
        )?
        .into_iter()
        .map(|r| LoadedRoom {
            id: r.get(0),
            name: r.get(1),
            created: from_sql(r.get(2)),
            history: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let rows = tx.query(
        "SELECT r.id, m.id, m.type, m.sender, m.message, m.timestamp
         FROM rooms r CROSS JOIN LATERAL (
             SELECT id, type, sender, message, timestamp, writer FROM messages
             WHERE room_id = r.id
             ORDER BY timestamp DESC, writer DESC, id DESC LIMIT $1
         ) m
         ORDER BY r.id, m.timestamp, m.writer, m.id",
        &[&(HISTORY_LIMIT as i64)],
    )?;
    tx.commit()?;
    for row in rows {
        let room_id: String = row.get(0);
        let id = from_sql(row.get(1));
        let kind: String = row.get(2);
        let Some(&i) = index.get(&room_id) else {
            continue;
        };
        let Some(kind) = MessageType::parse(&kind) else {
            tracing::warn!(room = %room_id, id, kind, "skipping stored message of unknown type");
            continue;
        };
        rooms[i].history.push(ChatMessage {
            id,
            room_id,
            kind,
            sender: row.get(3),
            message: row.get(4),
            timestamp: from_sql(row.get(5)),
        });
    }
    Ok(LoadedState { rooms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        for (url, shown) in [
            (
                "postgres://sockeye:secret@127.0.0.1:5432/sockeye",
                "postgres://sockeye:***@127.0.0.1:5432/sockeye",
            ),
            (
                "postgresql://ann:p@ss/w?rd@db.example:5432/chat?sslmode=disable",
                "postgresql://ann:***@db.example:5432/chat?sslmode=disable",
            ),
            (
                "postgres://ann@host/db?password=secret&application_name=x",
                "postgres://ann@host/db?password=***&application_name=x",
            ),
            (
                "host=localhost user=ann PASSWORD=secret dbname=chat",
                "host=localhost user=ann PASSWORD=*** dbname=chat",
            ),
            ("postgres://host/db", "postgres://host/db"),
            ("postgres://ann@host/db", "postgres://ann@host/db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("secret"));
        }
    }

    #[test]
    fn room_keys_are_stable() {
        // Every node must compute the same key: FNV-1a, fixed here.
        assert_eq!(room_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(room_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(room_key("general-1"), room_key("general-2"));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(MIGRATIONS[0].0, 1);
    }
}
