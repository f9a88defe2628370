//! Work for a worker's handler, posted from any thread: the way to keep state per worker
//! (one table per event loop, as uWebSockets keeps one topic tree per loop) and still reach it
//! from everywhere.
//!
//! [`Workers`] names every worker of a server by index. A [`Task`] posted to a worker travels
//! through its inbox like a cross-thread send (in order with everything else the same thread
//! posts there, bounded by `max_inbox_bytes`, passing the inbox's gate) and is handed to
//! [`Handler::on_task`] on that worker's thread, with a [`TaskOut`] that writes to the
//! worker's own sessions without another trip through the inbox: a fan-out to a thousand
//! subscribers on one worker is one post, not a thousand.
//!
//! [`Handler::on_task`]: super::Handler::on_task

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::inbox::{Command, Inbox};
use super::{PostError, SessionHandle, Shared};
use crate::connection::DataKind;

/// What a task carries: anything the handler knows how to take apart (`downcast`).
pub type Task = Box<dyn Any + Send>;

thread_local! {
    /// The index of the worker running on this thread (none elsewhere).
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as worker `index`.
pub(crate) fn enlist(index: usize) {
    CURRENT.with(|c| c.set(Some(index)));
}

/// Every worker of a server, for posting tasks. Cheap to clone; usable before the server
/// runs (posts then fail with [`PostError::Stopped`]: there is nobody to run them yet).
#[derive(Clone)]
pub struct Workers {
    shared: Arc<Shared>,
    count: usize,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.count)
            .finish()
    }
}

impl Workers {
    pub(crate) fn new(shared: Arc<Shared>, count: usize) -> Self {
        Workers { shared, count }
    }

    /// How many workers the server has (or will have).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The index of the worker whose thread calls this (`None` on other threads).
    pub fn current() -> Option<usize> {
        CURRENT.with(Cell::get)
    }

    /// Posts `task` to worker `index`, counting `cost` bytes against its inbox limit. Refused
    /// with [`PostError::Full`] when the inbox is full, [`PostError::Stopped`] when the worker
    /// is not running (stopped, or not started yet) or `index` names none. A session being
    /// read on a worker that posts into an inbox over a quarter full pauses after its current
    /// message (the inbox's gate).
    pub fn post(&self, index: usize, task: Task, cost: usize) -> Result<(), PostError> {
        let inbox = self.inbox(index).ok_or(PostError::Stopped)?;
        inbox.post_task(Command::Task(task), cost)
    }

    /// [`Workers::post`] for a small task that must not be refused for want of room (what a
    /// refused post leaves to be done: telling the recipients they missed something). Only
    /// a stopped worker refuses it.
    pub fn post_control(&self, index: usize, task: Task) -> Result<(), PostError> {
        let inbox = self.inbox(index).ok_or(PostError::Stopped)?;
        inbox.post_control(Command::Task(task));
        Ok(())
    }

    fn inbox(&self, index: usize) -> Option<&Arc<Inbox>> {
        self.shared.workers.get().and_then(|w| w.get(index))
    }
}

/// Sends to the sessions of the worker running a task (see [`Handler::on_task`]).
///
/// [`Handler::on_task`]: super::Handler::on_task
pub struct TaskOut<'a> {
    inbox: &'a Arc<Inbox>,
    commands: &'a mut Vec<Command>,
}

impl fmt::Debug for TaskOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskOut")
            .field("queued", &self.commands.len())
            .finish()
    }
}

impl<'a> TaskOut<'a> {
    pub(crate) fn new(inbox: &'a Arc<Inbox>, commands: &'a mut Vec<Command>) -> Self {
        TaskOut { inbox, commands }
    }

    /// Sends `prefix` then `payload` as one message to `to`, as
    /// [`SessionHandle::send_parts`] (`bounded`) or
    /// [`SessionHandle::send_parts_unbounded`] would, but without a post when `to` is a
    /// session of this worker: it is applied with this turn's other commands (in order, each
    /// session written once). A session of another worker is posted to as usual.
    pub fn send_parts(
        &mut self,
        to: &SessionHandle,
        kind: DataKind,
        prefix: Bytes,
        payload: Bytes,
        bounded: bool,
    ) -> Result<(), PostError> {
        if to.is_on(self.inbox) {
            self.commands
                .push(to.local_command(kind, prefix, payload, bounded));
            return Ok(());
        }
        match bounded {
            true => to.send_parts(kind, prefix, payload),
            false => to.send_parts_unbounded(kind, prefix, payload),
        }
    }
}
