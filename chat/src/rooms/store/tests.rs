//! The writer's queue, outages and requests, against a database in memory that can be taken
//! away.

use std::sync::{Arc, Mutex};

use super::*;
use crate::rooms::{MessageType, HISTORY_LIMIT};

const ANSWER: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Fake {
    up: bool,
    /// Message ids written, in order.
    written: Vec<u64>,
    rooms: Vec<String>,
    attempts: usize,
    /// A message id whose writes always fail.
    poison: Option<u64>,
}

#[derive(Clone, Default)]
struct FakeDb(Arc<Mutex<Fake>>);

impl FakeDb {
    fn up() -> FakeDb {
        let db = FakeDb::default();
        db.set_up(true);
        db
    }

    fn lock(&self) -> MutexGuard<'_, Fake> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_up(&self, up: bool) {
        self.lock().up = up;
    }

    fn written(&self) -> Vec<u64> {
        self.lock().written.clone()
    }
}

impl Backend for FakeDb {
    fn write(&mut self, ops: &[PersistOp]) -> Result<(), BackendError> {
        let mut db = self.lock();
        db.attempts += 1;
        if !db.up {
            return Err(BackendError::Unavailable(StoreError::Unavailable(
                "the fake database is down".into(),
            )));
        }
        let poison = db.poison;
        if ops.iter().any(|op| {
            matches!(op, PersistOp::AppendMessage { message, .. } if Some(message.id) == poison)
        }) {
            return Err(BackendError::Failed(StoreError::Schema("poison".into())));
        }
        for op in ops {
            match op {
                PersistOp::AppendMessage { message, .. } => db.written.push(message.id),
                PersistOp::CreateRoom { id, .. } => db.rooms.push(id.clone()),
            }
        }
        Ok(())
    }

    fn load(&mut self) -> Result<LoadedState, BackendError> {
        let db = self.lock();
        if !db.up {
            return Err(BackendError::Unavailable(StoreError::Unavailable(
                "the fake database is down".into(),
            )));
        }
        Ok(LoadedState {
            rooms: db
                .rooms
                .iter()
                .map(|id| LoadedRoom {
                    id: id.clone(),
                    name: id.clone(),
                    created: 1,
                    history: Vec::new(),
                })
                .collect(),
        })
    }
}

fn open(db: &FakeDb, options: StoreOptions) -> Store {
    Store::start(
        db.clone(),
        StoreConfig::Postgres("postgres://fake:secret@nowhere/db".into()),
        None,
        options,
    )
    .expect("the writer thread starts")
}

fn append(id: u64) -> PersistOp {
    PersistOp::AppendMessage {
        message: ChatMessage {
            id,
            room_id: "a-1".into(),
            kind: MessageType::Talk,
            sender: "ann".into(),
            message: format!("m{id}"),
            timestamp: id,
        },
        keep: HISTORY_LIMIT,
    }
}

fn flush(store: &Store) -> bool {
    store
        .flush_timeout(ANSWER)
        .expect("the writer answered a flush within 20 s")
}

/// Waits (at most 20 s) until nothing is queued.
fn drained(store: &Store) {
    let deadline = Instant::now() + ANSWER;
    while store.backlog() > 0 {
        assert!(
            Instant::now() < deadline,
            "the writer did not write the {} queued operations within 20 s",
            store.backlog()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn writes_wait_out_an_outage_and_go_through_in_order() {
    let db = FakeDb::default();
    let store = open(&db, StoreOptions::default());
    for id in 1..=10 {
        store.apply(append(id));
    }
    assert!(!flush(&store), "a flush in an outage answers false");
    assert_eq!(store.backlog(), 10, "nothing is lost");
    db.set_up(true);
    // The writer retries on its own (backoff at most 5 s).
    drained(&store);
    assert_eq!(db.written(), (1..=10).collect::<Vec<_>>());
    assert!(flush(&store));
    assert_eq!(store.dropped(), 0);
}

#[test]
fn past_the_limit_the_oldest_are_dropped_and_counted() {
    let db = FakeDb::default();
    let store = open(
        &db,
        StoreOptions {
            max_queued: 5,
            ..StoreOptions::default()
        },
    );
    for id in 1..=12 {
        store.apply(append(id));
    }
    assert!(!flush(&store));
    assert_eq!(store.dropped(), 7);
    assert_eq!(store.backlog(), 5);
    db.set_up(true);
    assert!(
        flush(&store),
        "the immediate attempt finds the database back"
    );
    assert_eq!(db.written(), (8..=12).collect::<Vec<_>>());
    assert_eq!(store.backlog(), 0);
}

#[test]
fn a_failing_operation_is_dropped_alone() {
    let db = FakeDb::up();
    db.lock().poison = Some(3);
    let store = open(&db, StoreOptions::default());
    for id in 1..=5 {
        store.apply(append(id));
    }
    assert!(!flush(&store), "one of them failed");
    assert_eq!(db.written(), [1, 2, 4, 5]);
    assert_eq!(store.backlog(), 0);
    store.apply(append(6));
    assert!(flush(&store));
}

#[test]
fn a_failure_before_the_flush_was_asked_for_is_still_reported() {
    // The writer is done with all five (one failed) before the flush is asked for: the flush
    // still answers for what was queued before it, once.
    let db = FakeDb::up();
    db.lock().poison = Some(3);
    let store = open(&db, StoreOptions::default());
    for id in 1..=5 {
        store.apply(append(id));
    }
    drained(&store);
    assert_eq!(db.written(), [1, 2, 4, 5]);
    assert!(!flush(&store), "operation 3 failed");
    assert!(flush(&store), "the failure is answered for once");
}

#[test]
fn dropping_the_store_writes_what_is_queued() {
    let db = FakeDb::up();
    let store = open(&db, StoreOptions::default());
    for id in 1..=3000 {
        store.apply(append(id));
    }
    drop(store);
    assert_eq!(db.written(), (1..=3000).collect::<Vec<_>>());
}

#[test]
fn dropping_the_store_gives_up_after_the_grace_when_the_database_stays_away() {
    let db = FakeDb::default();
    let store = open(
        &db,
        StoreOptions {
            shutdown_grace: Duration::from_millis(300),
            ..StoreOptions::default()
        },
    );
    for id in 1..=3 {
        store.apply(append(id));
    }
    let started = Instant::now();
    drop(store);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(db.lock().attempts >= 2, "it kept trying during the grace");
    assert!(db.written().is_empty());
}

#[test]
fn load_follows_the_writes_queued_before_it() {
    let db = FakeDb::up();
    let store = open(&db, StoreOptions::default());
    store.apply(PersistOp::CreateRoom {
        id: "a-1".into(),
        name: "A".into(),
        created: 1,
    });
    let state = store.load_timeout(ANSWER).expect("load");
    assert_eq!(state.rooms.len(), 1);
    assert_eq!(state.rooms[0].id, "a-1");
    db.set_up(false);
    let err = store
        .load_timeout(ANSWER)
        .expect_err("the database is down");
    assert!(err.to_string().contains("down"), "{err}");
}

#[test]
fn the_store_shows_no_password() {
    let db = FakeDb::up();
    let store = open(&db, StoreOptions::default());
    for shown in [
        store.to_string(),
        format!("{store:?}"),
        format!("{:?}", store.config()),
    ] {
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("fake:***@nowhere"), "{shown}");
    }
}
