//! Gates: read-side backpressure across sessions and threads.
//!
//! A [`Gate`] stands for something producers must not outrun: a worker's inbox (closed while it
//! holds more than a quarter of `max_inbox_bytes`), or anything an application closes and opens
//! itself (a subscriber over its high-water mark, say). A producer [passes](Gate::pass) the
//! gates of what it feeds; when one is closed and the producer is a session being read on a
//! worker, the loop stops reading from that session at the end of the current message (what
//! is left of the read buffer is kept, not dropped) and resumes it when the gate opens. Its
//! peer's TCP window then pushes back on the peer: the same mechanism that keeps a session from
//! outrunning its own output cap, extended to the sessions it feeds.
//!
//! Passing an open gate costs one atomic load. Passes from threads that are not workers are
//! not recorded (such producers see [`PostError::Full`](super::PostError::Full) at the hard
//! limit instead).

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::inbox::{Command, Inbox};
use crate::driver::Tag;

/// Something producers wait for while it is closed. Cheap to share (`Arc<Gate>`); open when
/// made.
#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// Sessions whose reading waits for this gate to open: their worker's inbox and slot.
    sessions: Vec<(Arc<Inbox>, Tag)>,
    /// When the gate last closed.
    since: Option<Instant>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("closed", &self.is_closed())
            .finish()
    }
}

thread_local! {
    /// The closed gates passed since the worker last looked (`None` on threads that are not
    /// workers, so nothing piles up there).
    static PASSED: RefCell<Option<Vec<Arc<Gate>>>> = const { RefCell::new(None) };
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::default()
    }

    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the gate: producers that pass it from now on pause.
    #[inline]
    pub fn close(&self) {
        if !self.closed.load(Ordering::Acquire) && !self.closed.swap(true, Ordering::AcqRel) {
            self.lock().since = Some(Instant::now());
        }
    }

    /// How long the gate has been closed (`None` while it is open): an application lets go of
    /// what holds its producers up for too long.
    pub fn closed_for(&self) -> Option<Duration> {
        if !self.is_closed() {
            return None;
        }
        self.lock().since.map(|at| at.elapsed())
    }

    /// Opens the gate and resumes every session that waits for it.
    #[inline]
    pub fn open(&self) {
        // Most calls find it open: a load, not a read-modify-write, for those.
        if self.is_closed() {
            self.reopen();
        }
    }

    #[cold]
    fn reopen(&self) {
        if !self.closed.swap(false, Ordering::AcqRel) {
            return;
        }
        let waiters = {
            let mut waiting = self.lock();
            waiting.since = None;
            std::mem::take(&mut waiting.sessions)
        };
        for (inbox, to) in waiters {
            inbox.post_control(Command::Resume { to });
        }
    }

    /// A producer feeds what this gate guards: if it is closed and the producer is a session
    /// being read on a worker, that session pauses after its current message until the gate
    /// opens.
    #[inline]
    pub fn pass(self: &Arc<Self>) {
        if self.is_closed() {
            self.passed_closed();
        }
    }

    #[cold]
    fn passed_closed(self: &Arc<Self>) {
        PASSED.with(|passed| {
            if let Some(list) = passed.borrow_mut().as_mut() {
                if !list.iter().any(|g| Arc::ptr_eq(g, self)) {
                    list.push(self.clone());
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session to resume when the gate opens; false if it is open already.
    pub(crate) fn wait(&self, inbox: &Arc<Inbox>, tag: Tag) -> bool {
        let mut waiting = self.lock();
        // Checked under the lock: `open` clears the flag before it takes the waiters, so a
        // waiter is either seen by it or sees the gate open.
        if !self.is_closed() {
            return false;
        }
        waiting.sessions.push((inbox.clone(), tag));
        true
    }
}

/// Marks this thread as a worker: passes of closed gates are recorded from now on.
pub(crate) fn enlist() {
    PASSED.with(|passed| *passed.borrow_mut() = Some(Vec::new()));
}

/// Forgets the gates passed so far (before work whose passes must not pause anyone).
pub(crate) fn forget() {
    PASSED.with(|passed| {
        if let Some(list) = passed.borrow_mut().as_mut() {
            list.clear();
        }
    });
}

/// Registers the session `tag` (of the worker owning `inbox`) with every closed gate passed
/// since the last call; true when it must pause (some gate was still closed).
pub(crate) fn hold(inbox: &Arc<Inbox>, tag: Tag) -> bool {
    let passed = PASSED.with(|passed| {
        passed
            .borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    });
    let mut held = false;
    for gate in passed {
        held |= gate.wait(inbox, tag);
    }
    held
}

/// True when a closed gate was passed since the last [`hold`] or [`forget`] (cheap check
/// between messages).
pub(crate) fn passed_closed() -> bool {
    PASSED.with(|passed| passed.borrow().as_ref().is_some_and(|l| !l.is_empty()))
}

/// The books of a session that other threads post to: bytes posted and not yet taken by its
/// loop, its queue as of the loop's last flush, and its gate, closed while the two together
/// are over half the session's cap (open again at a quarter). Shared by the session and its
/// handles; made with the first handle. The books are kept only once someone asked for the
/// gate ([`SessionHandle::gate`](super::SessionHandle::gate)): until then posting costs one
/// load.
#[derive(Debug)]
pub(crate) struct Flow {
    /// The session's id (kept here rather than in every handle).
    pub id: u64,
    tracked: AtomicBool,
    inflight: AtomicUsize,
    queued: AtomicUsize,
    /// Half the session's cap.
    high: usize,
    ended: AtomicBool,
    gate: Arc<Gate>,
}

impl Flow {
    pub fn new(id: u64, cap: usize) -> Arc<Flow> {
        Arc::new(Flow {
            id,
            tracked: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            high: cap / 2,
            ended: AtomicBool::new(false),
            gate: Gate::new(),
        })
    }

    /// The gate; the books are kept from now on.
    pub fn gate(&self) -> &Arc<Gate> {
        if !self.tracked.load(Ordering::Relaxed) {
            self.tracked.store(true, Ordering::Relaxed);
        }
        &self.gate
    }

    /// `len` bytes are being posted to the session; true if they are counted (and must be
    /// [`taken`](Flow::taken) when the loop takes them).
    #[inline]
    pub fn posted(&self, len: usize) -> bool {
        if !self.tracked.load(Ordering::Relaxed) {
            return false;
        }
        let inflight = self.inflight.fetch_add(len, Ordering::AcqRel) + len;
        if inflight + self.queued.load(Ordering::Acquire) > self.high
            && !self.ended.load(Ordering::Acquire)
        {
            self.gate.close();
        }
        true
    }

    /// The loop took `len` counted bytes (or a post of them failed).
    pub fn taken(&self, len: usize) {
        self.inflight.fetch_sub(len, Ordering::AcqRel);
    }

    /// The loop flushed the session and `queued` bytes are left: the gate follows.
    #[inline]
    pub fn settled(&self, queued: usize) {
        if !self.tracked.load(Ordering::Relaxed) {
            return;
        }
        self.queued.store(queued, Ordering::Release);
        let total = queued + self.inflight.load(Ordering::Acquire);
        if total > self.high {
            self.gate.close();
        } else if total <= self.high / 2 {
            self.gate.open();
        }
    }

    /// The session is over: nobody waits for it any more.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.gate.open();
    }
}
