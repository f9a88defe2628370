//! Rooms and recent history, written by a thread of its own so that a slow disk or database
//! never stalls the event loop. Two backends:
//!
//! * **SQLite** (the embedded default): `chat.sqlite3` in a data directory ([`Store::open`]);
//! * **PostgreSQL**: one database that several chat nodes may share
//!   ([`Store::open_postgres`]; see the `postgres` module for its schema, migrations and how
//!   two nodes' messages are kept apart).
//!
//! [`Store::open_with`] takes either as a [`StoreConfig`]. Opening loads what is there (rooms
//! with their newest [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages, oldest first) and
//! starts the writer.
//!
//! [`Store::apply`] only queues: a push onto a queue under a lock that nothing holds for long
//! (the writer takes its batches out in one go), so the event loop never waits on I/O. The
//! writer takes up to [`BATCH`] queued operations at a time and writes them in one transaction.
//!
//! # When the database is away
//!
//! A write that fails because the database cannot be reached (a dropped connection, a server
//! restarting, a busy SQLite file, a full disk) keeps its operations queued, in order, and the
//! writer tries again with a bounded backoff (100 ms doubling to 5 s), reconnecting as needed.
//! It logs a WARN once when an outage starts and an INFO when writes go through again. The
//! queue is bounded ([`StoreOptions::max_queued`]): past it the *oldest* queued operations are
//! dropped, counted ([`Store::dropped`]) and logged. A write that fails for any other reason (the
//! operation itself is at fault) is retried alone, one operation at a time, and the ones that
//! still fail are logged and dropped, so one bad operation cannot hold back the others.
//!
//! [`Store::flush`] waits until everything queued before it is written; in an outage it makes
//! one immediate attempt and answers `false` when that fails, so it always returns.
//! [`Store::load`] reads the current rooms and history again (after the writes queued before
//! it), for learning about rooms that another node created. Dropping the store writes what is
//! queued (trying for up to [`StoreOptions::shutdown_grace`] in an outage), then stops.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ChatMessage, PersistOp};

mod postgres;
mod sqlite;

pub use self::postgres::redact_url;

/// Operations written in one transaction, at most.
pub const BATCH: usize = 1024;
/// The first wait before trying a failed write again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Drops of queued operations are logged at most this often.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What was in the database at startup (or at [`Store::load`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Oldest first.
    pub rooms: Vec<LoadedRoom>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedRoom {
    pub id: String,
    pub name: String,
    pub created: u64,
    /// The newest [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages, oldest first.
    pub history: Vec<ChatMessage>,
}

/// Where the store keeps rooms and history.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite: `chat.sqlite3` in this directory (created if needed).
    Sqlite(PathBuf),
    /// PostgreSQL at this URL: `postgres://user:password@host:port/database` (any form the
    /// `postgres` crate accepts). Shown with the password masked ([`redact_url`]).
    Postgres(String),
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite(dir) => {
                write!(f, "SQLite {}", dir.join(sqlite::FILE_NAME).display())
            }
            StoreConfig::Postgres(url) => write!(f, "PostgreSQL {}", redact_url(url)),
        }
    }
}

/// Like `Display`: never shows a password.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How the writer copes with a database that is away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Operations kept queued, at most; past it the oldest are dropped. Default 100,000.
    pub max_queued: usize,
    /// How long dropping the store keeps trying to write what is queued when the database is
    /// away. Default 3 s.
    pub shutdown_grace: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_queued: 100_000,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Opening, loading or writing failed.
#[derive(Debug)]
pub enum StoreError {
    Io(std::io::Error),
    Sqlite(rusqlite::Error),
    Postgres(::postgres::Error),
    /// The database's schema is not one this build can use.
    Schema(String),
    /// The store could not reach its database, or its writer is gone.
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "data directory: {e}"),
            StoreError::Sqlite(e) => write!(f, "database: {e}"),
            StoreError::Postgres(e) => {
                // The crate's errors say what kind they are ("db error") and keep the server's
                // message in their source.
                write!(f, "PostgreSQL: {e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            StoreError::Schema(why) => write!(f, "database schema: {why}"),
            StoreError::Unavailable(why) => write!(f, "database unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(e) => Some(e),
            StoreError::Sqlite(e) => Some(e),
            StoreError::Postgres(e) => Some(e),
            StoreError::Schema(_) | StoreError::Unavailable(_) => None,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// A database the writer thread writes to.
trait Backend: Send + 'static {
    /// Writes `ops`, in order, in one transaction.
    fn write(&mut self, ops: &[PersistOp]) -> Result<(), BackendError>;
    /// Reads the rooms and their newest [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages.
    fn load(&mut self) -> Result<LoadedState, BackendError>;
}

#[derive(Debug)]
enum BackendError {
    /// The database cannot be reached, or refuses for now: keep the operations, try later.
    Unavailable(StoreError),
    /// The operations (or the query) failed; trying again will not help.
    Failed(StoreError),
}

impl BackendError {
    fn into_inner(self) -> StoreError {
        match self {
            BackendError::Unavailable(e) | BackendError::Failed(e) => e,
        }
    }
}

/// Integers in both databases are signed; ids and times are far below `i64::MAX`.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

enum Reply {
    Flush(mpsc::SyncSender<bool>),
    Load(mpsc::SyncSender<Result<LoadedState, StoreError>>),
}

/// A flush or load, waiting for the operations queued before it.
struct Request {
    /// Operations numbered below this one must be written first.
    upto: u64,
    reply: Reply,
    /// One of those operations was dropped or failed.
    lost: bool,
    /// A write was attempted on its behalf during an outage; if the outage goes on, the request
    /// is answered with failure rather than waiting.
    tried: bool,
}

impl Request {
    fn fail(self, why: &str) {
        match self.reply {
            Reply::Flush(tx) => {
                let _ = tx.send(false);
            }
            Reply::Load(tx) => {
                let _ = tx.send(Err(StoreError::Unavailable(why.to_owned())));
            }
        }
    }
}

struct Queue {
    /// Operations not yet written, oldest first, each with its number (consecutive).
    ops: VecDeque<(u64, PersistOp)>,
    next_seq: u64,
    requests: VecDeque<Request>,
    /// The store was dropped: write what is queued, then stop.
    closed: bool,
    /// The writer thread has stopped (it answers nothing more).
    writer_gone: bool,
    /// Operations that failed or were dropped while no flush waited for them: the next flush
    /// answers for them (bounded; past the bound only the fact is kept).
    losses: BTreeSet<u64>,
    losses_overflowed: bool,
}

/// The most unreported losses remembered one by one.
const MAX_LOSSES: usize = 4096;

impl Queue {
    /// Operation `seq` will not be written: the flushes waiting for it answer `false`, or, with
    /// none waiting, the next one will.
    fn lost(&mut self, seq: u64) {
        let mut told = false;
        for r in self.requests.iter_mut().filter(|r| seq < r.upto) {
            r.lost = true;
            told |= matches!(r.reply, Reply::Flush(_));
        }
        if told {
            return;
        }
        if self.losses.len() < MAX_LOSSES {
            self.losses.insert(seq);
        } else {
            self.losses_overflowed = true;
        }
    }

    /// Whether an operation numbered below `upto` was lost and not yet answered for; forgets
    /// those (a flush answers for them).
    fn take_losses(&mut self, upto: u64) -> bool {
        let earlier = self.losses.first().is_some_and(|&seq| seq < upto);
        let any = earlier || std::mem::take(&mut self.losses_overflowed);
        self.losses = self.losses.split_off(&upto);
        any
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    options: StoreOptions,
    /// Operations queued and not yet written (nor dropped).
    backlog: AtomicUsize,
    /// Operations dropped because the queue was full.
    dropped: AtomicU64,
    /// Batches written (or attempted) and the time they took, in microseconds.
    writes: AtomicU64,
    write_micros: AtomicU64,
    /// In an outage now (the database unreachable).
    away: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the oldest queued operations past the limit.
    fn enforce_limit(&self, q: &mut Queue) {
        while q.ops.len() > self.options.max_queued {
            let Some((seq, _)) = q.ops.pop_front() else {
                break;
            };
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            q.lost(seq);
        }
    }
}

/// The persistent store.
pub struct Store {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    config: StoreConfig,
    path: Option<PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("backlog", &self.backlog())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// `SQLite /data/chat.sqlite3` or `PostgreSQL postgres://user:***@host/db`.
impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

impl Store {
    /// The SQLite database file inside the data directory.
    pub const FILE_NAME: &'static str = sqlite::FILE_NAME;

    /// Opens (creating if needed) the SQLite store in `dir`, loads rooms and their newest
    /// [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages, and starts the writer thread.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Store, LoadedState), StoreError> {
        Store::open_with(
            &StoreConfig::Sqlite(dir.as_ref().to_owned()),
            StoreOptions::default(),
        )
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:password@host:port/database`), brings
    /// its schema up to date, loads rooms and their newest
    /// [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages, and starts the writer thread.
    pub fn open_postgres(url: &str) -> Result<(Store, LoadedState), StoreError> {
        Store::open_with(
            &StoreConfig::Postgres(url.to_owned()),
            StoreOptions::default(),
        )
    }

    /// Opens the store `config` names.
    pub fn open_with(
        config: &StoreConfig,
        options: StoreOptions,
    ) -> Result<(Store, LoadedState), StoreError> {
        match config {
            StoreConfig::Sqlite(dir) => {
                let (backend, state, path) = sqlite::Sqlite::open(dir)?;
                let store = Store::start(backend, config.clone(), Some(path), options)?;
                Ok((store, state))
            }
            StoreConfig::Postgres(url) => {
                let (backend, state) = postgres::Postgres::open(url)?;
                let store = Store::start(backend, config.clone(), None, options)?;
                Ok((store, state))
            }
        }
    }

    fn start(
        backend: impl Backend,
        config: StoreConfig,
        path: Option<PathBuf>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                next_seq: 0,
                requests: VecDeque::new(),
                closed: false,
                writer_gone: false,
                losses: BTreeSet::new(),
                losses_overflowed: false,
            }),
            wake: Condvar::new(),
            options,
            backlog: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            away: std::sync::atomic::AtomicBool::new(false),
        });
        let writer = Writer {
            backend,
            shared: Arc::clone(&shared),
            outage: None,
            closing: None,
            reported_drops: 0,
            last_drop_report: None,
            name: config.to_string(),
        };
        let writer = std::thread::Builder::new()
            .name("chat-store".into())
            .spawn(move || writer.run())?;
        Ok(Store {
            shared,
            writer: Some(writer),
            config,
            path,
        })
    }

    /// Which database this is.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Several nodes may share this database (PostgreSQL), so each writes only its own rooms
    /// and messages; SQLite is one node's.
    pub fn is_shared(&self) -> bool {
        matches!(self.config, StoreConfig::Postgres(_))
    }

    /// The SQLite database file (`None` for PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Queues a write. Never blocks on I/O.
    pub fn apply(&self, op: PersistOp) {
        let mut q = self.shared.lock();
        if q.writer_gone {
            drop(q);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("chat store writer is gone; write dropped");
            return;
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.ops.push_back((seq, op));
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        self.shared.enforce_limit(&mut q);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Operations queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Batches written (or tried) so far, and the time they took in microseconds.
    pub fn write_time(&self) -> (u64, u64) {
        (
            self.shared.writes.load(Ordering::Relaxed),
            self.shared.write_micros.load(Ordering::Relaxed),
        )
    }

    /// Whether the store can take writes now: its writer runs and the database is reachable.
    pub fn is_writing(&self) -> bool {
        !self.shared.away.load(Ordering::Relaxed) && !self.shared.lock().writer_gone
    }

    /// Operations dropped, unwritten, because the queue was full (the database was away too
    /// long).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn request(&self, reply: Reply) {
        let mut q = self.shared.lock();
        if q.writer_gone {
            drop(q);
            Request {
                upto: 0,
                reply,
                lost: true,
                tried: true,
            }
            .fail("the store's writer thread is gone");
            return;
        }
        let upto = q.next_seq;
        // A flush answers for the operations before it that failed or were dropped earlier.
        let lost = matches!(reply, Reply::Flush(_)) && q.take_losses(upto);
        q.requests.push_back(Request {
            upto,
            reply,
            lost,
            tried: false,
        });
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Blocks until everything queued before has been written: for tests and shutdown, not for
    /// the event loop. `false` if some of it could not be written (the database is away, an
    /// operation failed or was dropped) or the writer is gone.
    pub fn flush(&self) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request(Reply::Flush(tx));
        rx.recv().unwrap_or(false)
    }

    /// [`Store::flush`], waiting at most `timeout`: `None` if no answer came in time.
    pub fn flush_timeout(&self, timeout: Duration) -> Option<bool> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request(Reply::Flush(tx));
        match rx.recv_timeout(timeout) {
            Ok(ok) => Some(ok),
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(false),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        }
    }

    /// Reads the rooms and their newest [`HISTORY_LIMIT`](super::HISTORY_LIMIT) messages from
    /// the database again, after writing what was queued before: how a node learns of rooms
    /// another node created. Blocks the caller on the database: call it off the event loop.
    pub fn load(&self) -> Result<LoadedState, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request(Reply::Load(tx));
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the store's writer thread is gone".into(),
            ))
        })
    }

    /// [`Store::load`], waiting at most `timeout` for the answer.
    pub fn load_timeout(&self, timeout: Duration) -> Result<LoadedState, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.request(Reply::Load(tx));
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(
                "the store's writer thread is gone".into(),
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(format!(
                "no answer from the store's writer within {timeout:?}"
            ))),
        }
    }
}

impl Drop for Store {
    /// Writes what is queued, then stops the writer.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Outage {
    since: Instant,
    delay: Duration,
    next_try: Instant,
    error: String,
}

/// What the writer does next.
enum Work {
    /// A request whose operations are all written (or lost).
    Answer(Request),
    /// Write these operations, numbered from `first`.
    Write {
        first: u64,
        ops: Vec<PersistOp>,
    },
    /// Log the drops since the last report.
    ReportDrops,
    /// The store is closed and the database stayed away: give up on what is queued.
    GiveUp,
    Exit,
}

struct Writer<B> {
    backend: B,
    shared: Arc<Shared>,
    outage: Option<Outage>,
    /// When the store was dropped, the time to give up on an absent database.
    closing: Option<Instant>,
    reported_drops: u64,
    last_drop_report: Option<Instant>,
    /// The database, for logs (the password masked).
    name: String,
}

/// Marks the writer gone and fails what waits on it, however the writer ends (a panic too).
struct GoneGuard<'a>(&'a Shared);

impl Drop for GoneGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.writer_gone = true;
        let requests: Vec<Request> = q.requests.drain(..).collect();
        drop(q);
        for r in requests {
            r.fail("the store's writer thread stopped");
        }
    }
}

impl<B: Backend> Writer<B> {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let _guard = GoneGuard(&shared);
        loop {
            match self.next_work() {
                Work::Answer(request) => self.answer(request),
                Work::Write { first, ops } => self.write(first, ops),
                Work::ReportDrops => self.report_drops(),
                Work::GiveUp => {
                    let mut q = self.shared.lock();
                    let lost = q.ops.len();
                    q.ops.clear();
                    self.shared.backlog.fetch_sub(lost, Ordering::Relaxed);
                    drop(q);
                    let why = self.outage.as_ref().map_or("", |o| o.error.as_str());
                    tracing::error!(
                        store = %self.name,
                        lost,
                        error = why,
                        "chat store: the database stayed away; queued writes lost at shutdown"
                    );
                }
                Work::Exit => break,
            }
        }
        self.report_drops();
    }

    fn next_work(&mut self) -> Work {
        let mut q = self.shared.lock();
        loop {
            let now = Instant::now();
            let lowest = q.ops.front().map_or(q.next_seq, |(seq, _)| *seq);
            if let Some(i) = q.requests.iter().position(|r| r.upto <= lowest) {
                if let Some(request) = q.requests.remove(i) {
                    return Work::Answer(request);
                }
            }
            let dropped = self.shared.dropped.load(Ordering::Relaxed);
            if dropped != self.reported_drops
                && self
                    .last_drop_report
                    .is_none_or(|t| now.duration_since(t) >= DROP_REPORT_INTERVAL)
            {
                return Work::ReportDrops;
            }
            if q.ops.is_empty() {
                if q.closed && q.requests.is_empty() {
                    return Work::Exit;
                }
                q = self.wait(q, None, now);
                continue;
            }
            let Some(outage) = &self.outage else {
                return take_batch(&mut q);
            };
            if q.closed {
                let deadline = *self
                    .closing
                    .get_or_insert(now + self.shared.options.shutdown_grace);
                if now >= outage.next_try {
                    return take_batch(&mut q);
                }
                if now >= deadline {
                    return Work::GiveUp;
                }
                let until = outage.next_try.min(deadline);
                q = self.wait(q, Some(until), now);
                continue;
            }
            // A flush or load waiting on the outage gets one immediate attempt.
            let urgent = q.requests.iter().any(|r| !r.tried);
            if urgent || now >= outage.next_try {
                for r in &mut q.requests {
                    r.tried = true;
                }
                return take_batch(&mut q);
            }
            let until = outage.next_try;
            q = self.wait(q, Some(until), now);
        }
    }

    /// Waits for news, or until `until`, or until unreported drops are due for a report.
    fn wait<'a>(
        &self,
        q: MutexGuard<'a, Queue>,
        until: Option<Instant>,
        now: Instant,
    ) -> MutexGuard<'a, Queue> {
        let report = (self.shared.dropped.load(Ordering::Relaxed) != self.reported_drops)
            .then(|| self.last_drop_report.map(|t| t + DROP_REPORT_INTERVAL))
            .flatten();
        let until = match (until, report) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match until.map(|t| t.saturating_duration_since(now)) {
            None => self
                .shared
                .wake
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                self.shared
                    .wake
                    .wait_timeout(q, t)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        }
    }

    fn answer(&mut self, request: Request) {
        match request.reply {
            Reply::Flush(tx) => {
                let _ = tx.send(!request.lost);
            }
            Reply::Load(tx) => {
                let _ = tx.send(self.backend.load().map_err(BackendError::into_inner));
            }
        }
    }

    fn write(&mut self, first: u64, ops: Vec<PersistOp>) {
        let started = Instant::now();
        let result = self.backend.write(&ops);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        self.shared
            .write_micros
            .fetch_add(micros, Ordering::Relaxed);
        match result {
            Ok(()) => self.written(ops.len()),
            Err(BackendError::Unavailable(e)) => self.unavailable(first, ops, &e),
            Err(BackendError::Failed(e)) => {
                if ops.len() > 1 {
                    // One bad operation must not lose the others: retry them one by one.
                    tracing::warn!(
                        error = %e,
                        ops = ops.len(),
                        "chat store batch failed; retrying singly"
                    );
                } else {
                    tracing::error!(error = %e, op = ?ops[0], "chat store write failed");
                    self.failed(first);
                    return;
                }
                let mut rest = ops.into_iter();
                let mut seq = first;
                while let Some(op) = rest.next() {
                    match self.backend.write(std::slice::from_ref(&op)) {
                        Ok(()) => self.written(1),
                        Err(BackendError::Failed(e)) => {
                            tracing::error!(error = %e, ?op, "chat store write failed");
                            self.failed(seq);
                        }
                        Err(BackendError::Unavailable(e)) => {
                            let ops = std::iter::once(op).chain(rest).collect();
                            self.unavailable(seq, ops, &e);
                            return;
                        }
                    }
                    seq += 1;
                }
            }
        }
    }

    /// `n` operations are in the database.
    fn written(&mut self, n: usize) {
        self.shared.backlog.fetch_sub(n, Ordering::Relaxed);
        self.shared.away.store(false, Ordering::Relaxed);
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                store = %self.name,
                after = ?outage.since.elapsed(),
                queued = self.shared.backlog.load(Ordering::Relaxed),
                "chat store: writing to the database again"
            );
        }
    }

    /// Operation `seq` could not be written and is dropped.
    fn failed(&mut self, seq: u64) {
        self.shared.backlog.fetch_sub(1, Ordering::Relaxed);
        self.shared.lock().lost(seq);
    }

    /// The database is away: put `ops` (numbered from `first`) back at the front of the queue,
    /// start or extend the outage, and fail the requests that already had their attempt.
    fn unavailable(&mut self, first: u64, ops: Vec<PersistOp>, error: &StoreError) {
        let now = Instant::now();
        let mut q = self.shared.lock();
        for (i, op) in ops.into_iter().enumerate().rev() {
            q.ops.push_front((first + i as u64, op));
        }
        self.shared.enforce_limit(&mut q);
        let lowest = q.ops.front().map_or(q.next_seq, |(seq, _)| *seq);
        let mut failed = Vec::new();
        let mut i = 0;
        while i < q.requests.len() {
            if q.requests[i].tried && q.requests[i].upto > lowest {
                failed.extend(q.requests.remove(i));
            } else {
                i += 1;
            }
        }
        let queued = q.ops.len();
        drop(q);
        self.shared.away.store(true, Ordering::Relaxed);
        match &mut self.outage {
            None => {
                tracing::warn!(
                    store = %self.name,
                    error = %error,
                    queued,
                    max_queued = self.shared.options.max_queued,
                    "chat store: cannot write to the database; keeping writes queued and retrying"
                );
                self.outage = Some(Outage {
                    since: now,
                    delay: MIN_BACKOFF,
                    next_try: now + MIN_BACKOFF,
                    error: error.to_string(),
                });
            }
            Some(outage) => {
                outage.delay = (outage.delay * 2).min(MAX_BACKOFF);
                outage.next_try = now + outage.delay;
                outage.error = error.to_string();
                tracing::debug!(
                    store = %self.name,
                    error = %error,
                    queued,
                    "chat store: database still away"
                );
            }
        }
        for r in failed {
            r.fail(&error.to_string());
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped == self.reported_drops {
            return;
        }
        tracing::warn!(
            store = %self.name,
            dropped = dropped - self.reported_drops,
            total = dropped,
            max_queued = self.shared.options.max_queued,
            "chat store: write queue full; dropped the oldest queued writes"
        );
        self.reported_drops = dropped;
        self.last_drop_report = Some(Instant::now());
    }
}

fn take_batch(q: &mut Queue) -> Work {
    let first = q.ops.front().map_or(q.next_seq, |(seq, _)| *seq);
    let n = q.ops.len().min(BATCH);
    let ops = q.ops.drain(..n).map(|(_, op)| op).collect();
    Work::Write { first, ops }
}

#[cfg(test)]
mod tests;
