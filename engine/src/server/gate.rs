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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::inbox::{Command, Inbox};
use crate::driver::Tag;

/// Something producers wait for while it is closed. Cheap to share (`Arc<Gate>`); open when
/// made.
#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    /// Sessions whose reading waits for this gate to open: their worker's inbox and slot.
    waiters: Mutex<Vec<(Arc<Inbox>, Tag)>>,
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

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the gate: producers that pass it from now on pause.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Opens the gate and resumes every session that waits for it.
    pub fn open(&self) {
        if !self.closed.swap(false, Ordering::AcqRel) {
            return;
        }
        let waiters = std::mem::take(&mut *self.lock());
        for (inbox, to) in waiters {
            inbox.post_control(Command::Resume { to });
        }
    }

    /// A producer feeds what this gate guards: if it is closed and the producer is a session
    /// being read on a worker, that session pauses after its current message until the gate
    /// opens.
    pub fn pass(self: &Arc<Self>) {
        if !self.is_closed() {
            return;
        }
        PASSED.with(|passed| {
            if let Some(list) = passed.borrow_mut().as_mut() {
                if !list.iter().any(|g| Arc::ptr_eq(g, self)) {
                    list.push(self.clone());
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<Inbox>, Tag)>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session to resume when the gate opens; false if it is open already.
    fn wait(&self, inbox: &Arc<Inbox>, tag: Tag) -> bool {
        let mut waiters = self.lock();
        // Checked under the lock: `open` clears the flag before it takes the waiters, so a
        // waiter is either seen by it or sees the gate open.
        if !self.is_closed() {
            return false;
        }
        waiters.push((inbox.clone(), tag));
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
