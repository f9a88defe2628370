//! Sending from other threads: each worker's inbox, the handles that post to it, broadcast.
//!
//! A [`SessionHandle`] names a session by its worker's inbox and its slot (slab key plus
//! generation, so a handle to a session that ended never reaches a later one in the same
//! slot). Posting locks the inbox, pushes a command and — only when the inbox was empty —
//! wakes the loop; the loop takes the whole inbox once per turn and applies the commands in
//! order, so messages from one sender arrive in the order they were posted. Nothing blocks on
//! the loop: the outcome (written, queued or dropped at the session's cap) is decided there,
//! and shows in [`ServerStats`](super::ServerStats).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use mio::Waker;

use super::gate::{Flow, Gate};
use super::session::data_opcode;
use crate::close;
use crate::connection::DataKind;
use crate::driver::Tag;
use crate::frame::FrameHeader;

/// A frame header encoded once, for any number of recipients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    bytes: [u8; 14],
    len: u8,
}

impl Head {
    fn data(kind: DataKind, len: usize) -> Head {
        let (bytes, n) = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: data_opcode(kind),
            mask: None,
            payload_len: len as u64,
        }
        .encode();
        Head {
            bytes,
            len: n as u8,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What other threads ask a loop to do.
#[derive(Debug)]
pub(crate) enum Command {
    Send {
        to: Tag,
        head: Head,
        /// Copied before `payload` inside the same message (empty for most sends).
        prefix: Bytes,
        payload: Bytes,
        /// Under the session's cap (else sent whatever it holds).
        bounded: bool,
        /// Counted in the session's flow (to be taken off when applied).
        counted: bool,
    },
    Broadcast {
        to: Vec<Tag>,
        head: Head,
        payload: Bytes,
    },
    Close {
        to: Tag,
        code: u16,
        reason: Box<str>,
    },
    /// A gate the session waited for opened: read it again.
    Resume { to: Tag },
    /// A connection another worker handed over, with the bytes it had read (a SockJS request
    /// for a session this worker owns).
    Adopt {
        stream: crate::driver::transport::Transport,
        head: Vec<u8>,
    },
    /// Work for the handler (see [`super::task`]).
    Task(super::task::Task),
    /// Stop reading the session until `gate` opens (if it is still closed when applied).
    Hold { to: Tag, gate: Arc<Gate> },
    /// Last words, then the close (see `Session::end_with`).
    End {
        to: Tag,
        head: Head,
        payload: Bytes,
        code: u16,
        reason: Box<str>,
    },
}

#[derive(Debug, Default)]
struct Queue {
    commands: Vec<Command>,
    /// What `commands` holds, as counted against the limit.
    bytes: usize,
    stopped: bool,
}

/// One worker's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    waker: Arc<Waker>,
    limit: usize,
    /// Closed while the inbox holds more than a quarter of `limit`: sessions that post to it
    /// from other loops pause reading until this loop has taken it (see [`super::gate`]).
    gate: Arc<Gate>,
}

thread_local! {
    /// The address of the inbox of the worker running on this thread (0 elsewhere).
    static OWN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as the loop that takes `inbox`: what it posts there itself needs no
/// wake-up (the loop looks at its inbox before it sleeps, see [`Inbox::has_commands`]).
pub(crate) fn enlist(inbox: &Arc<Inbox>) {
    OWN.with(|own| own.set(Arc::as_ptr(inbox) as usize));
}

impl Inbox {
    /// Whether posting here must wake the loop: not from the loop's own thread, which looks
    /// before it sleeps.
    fn needs_wake(&self) -> bool {
        OWN.with(|own| own.get() != self as *const Inbox as usize)
    }

    /// Whether anything waits to be taken (the loop checks before it sleeps: its own posts
    /// did not wake it).
    pub fn has_commands(&self) -> bool {
        !self.lock().commands.is_empty()
    }

    pub fn new(waker: Arc<Waker>, limit: usize) -> Inbox {
        Inbox {
            queue: Mutex::default(),
            waker,
            limit,
            gate: Gate::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned queue is still a valid queue: commands are pushed and taken whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a command costing `bytes` and wakes the loop if it may be waiting.
    fn post(&self, command: Command, bytes: usize) -> Result<(), PostError> {
        let bytes = bytes + size_of::<Command>();
        let mut queue = self.lock();
        if queue.stopped {
            return Err(PostError::Stopped);
        }
        // An empty inbox takes any one command, so a message larger than the limit can pass.
        if queue.bytes > 0 && queue.bytes + bytes > self.limit {
            return Err(PostError::Full);
        }
        let wake = queue.commands.is_empty() && self.needs_wake();
        queue.commands.push(command);
        queue.bytes += bytes;
        if queue.bytes > self.limit / 4 {
            self.gate.close();
        }
        drop(queue);
        if wake {
            // Failing to wake means the poll is gone, that is, the worker is stopping.
            let _ = self.waker.wake();
        }
        self.gate.pass();
        Ok(())
    }

    /// Queues a task (see [`super::task::Workers::post`]).
    pub(crate) fn post_task(&self, command: Command, cost: usize) -> Result<(), PostError> {
        self.post(command, cost)
    }

    /// Queues a command that must not be refused for want of room (closes, resumes: small,
    /// and what frees room in the end). Dropped only when the worker has stopped.
    pub(crate) fn post_control(&self, command: Command) {
        let mut queue = self.lock();
        if queue.stopped {
            return;
        }
        let wake = queue.commands.is_empty() && self.needs_wake();
        queue.commands.push(command);
        drop(queue);
        if wake {
            let _ = self.waker.wake();
        }
    }

    /// Moves every queued command into `into` (which the loop keeps, to reuse its capacity),
    /// and opens the inbox's gate.
    pub fn take(&self, into: &mut Vec<Command>) {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.commands, into);
        queue.bytes = 0;
        drop(queue);
        self.gate.open();
    }

    fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Refuses further posts and drops what is queued: the worker has stopped.
    pub fn stop(&self) {
        let commands = {
            let mut queue = self.lock();
            queue.stopped = true;
            queue.bytes = 0;
            std::mem::take(&mut queue.commands)
        };
        drop(commands);
    }
}

/// Why a post from another thread was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    /// The session's worker has stopped (the server shut down).
    Stopped,
    /// The worker's inbox already holds `max_inbox_bytes`: producers are outrunning the loop.
    /// Nothing was queued; retry later or drop.
    Full,
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Stopped => f.write_str("the session's worker has stopped"),
            PostError::Full => f.write_str("the worker's inbox is full"),
        }
    }
}

impl std::error::Error for PostError {}

/// A session that any thread can send to: `Clone + Send + Sync`, 32 bytes.
///
/// Sends are posted to the session's worker and applied there in order (per sender); the
/// session's backpressure cap and policy apply as for [`Session`](super::Session)'s sends.
/// A session that has ended silently ignores what is posted to it. `Ok` means posted, not
/// delivered.
#[derive(Clone)]
pub struct SessionHandle {
    inbox: Arc<Inbox>,
    tag: Tag,
    /// The session's books and gate (and its id).
    flow: Arc<Flow>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.flow.id)
            .finish()
    }
}

/// Handles are equal when they name the same session.
impl PartialEq for SessionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.flow.id == other.flow.id
    }
}

impl Eq for SessionHandle {}

impl Hash for SessionHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.flow.id.hash(state);
    }
}

impl SessionHandle {
    pub(crate) fn new(inbox: Arc<Inbox>, tag: Tag, flow: Arc<Flow>) -> Self {
        SessionHandle { inbox, tag, flow }
    }

    /// The session's own gate: closed while it is behind (more than half its cap queued or
    /// posted and not yet taken by its loop), open again once it is down to a quarter, or
    /// over. A producer that [passes](Gate::pass) it before posting pauses while the session
    /// is behind: credit flow, as RabbitMQ holds publishers to the pace of their queues.
    /// Posting alone never pauses anyone.
    pub fn gate(&self) -> &Arc<Gate> {
        self.flow.gate()
    }

    /// The session's [`Session::id`](super::Session::id).
    pub fn id(&self) -> u64 {
        self.flow.id
    }

    /// Copies `text` once and posts it.
    pub fn send_text(&self, text: &str) -> Result<(), PostError> {
        self.send_shared(DataKind::Text, Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Copies `bytes` once and posts them.
    pub fn send_binary(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.send_shared(DataKind::Binary, Bytes::copy_from_slice(bytes))
    }

    /// Posts a payload without copying it. A `Text` payload must be UTF-8.
    pub fn send_shared(&self, kind: DataKind, payload: Bytes) -> Result<(), PostError> {
        self.send_parts(kind, Bytes::new(), payload)
    }

    /// Posts one message made of `prefix` followed by `payload`, neither copied (a STOMP
    /// MESSAGE: its per-subscriber head, then the body every subscriber shares).
    pub fn send_parts(
        &self,
        kind: DataKind,
        prefix: Bytes,
        payload: Bytes,
    ) -> Result<(), PostError> {
        let len = prefix.len() + payload.len();
        let command = self.command(kind, prefix, payload, true);
        self.post_send(command, len, false)
    }

    /// [`SessionHandle::send_parts`] for a message that must not be lost and is bounded some
    /// other way (see [`Session::send_unbounded`](super::Session::send_unbounded)): sent
    /// whatever the session's cap, and never refused for a full inbox.
    pub fn send_parts_unbounded(
        &self,
        kind: DataKind,
        prefix: Bytes,
        payload: Bytes,
    ) -> Result<(), PostError> {
        let len = prefix.len() + payload.len();
        let command = self.command(kind, prefix, payload, false);
        self.post_send(command, len, true)
    }

    /// The last words to a session that is being let go, from any thread (see
    /// [`Session::end_with`](super::Session::end_with)): what is queued and not started is
    /// dropped, `payload` goes whatever the cap, then the close handshake. Never refused for a
    /// full inbox.
    pub fn end_with(
        &self,
        kind: DataKind,
        payload: Bytes,
        code: u16,
        reason: &str,
    ) -> Result<(), PostError> {
        let command = Command::End {
            to: self.tag,
            head: Head::data(kind, payload.len()),
            payload,
            code,
            reason: close::truncate_reason(reason).into(),
        };
        self.post_control(command)
    }

    /// Whether the session lives on the worker that owns `inbox`.
    pub(crate) fn is_on(&self, inbox: &Arc<Inbox>) -> bool {
        Arc::ptr_eq(&self.inbox, inbox)
    }

    /// A send applied by the session's own worker (not counted in its flow: it never waits
    /// in the inbox).
    pub(crate) fn local_command(
        &self,
        kind: DataKind,
        prefix: Bytes,
        payload: Bytes,
        bounded: bool,
    ) -> Command {
        self.send_command(kind, prefix, payload, bounded, false)
    }

    /// Stops reading this session until `gate` opens (from any thread): a producer that feeds
    /// what is behind, found so on another worker (where a [`Gate::pass`] would pause nobody).
    /// Applied on the session's worker a moment later; nothing happens if the gate is open
    /// by then. Never refused for a full inbox.
    pub fn hold_until(&self, gate: &Arc<Gate>) -> Result<(), PostError> {
        self.post_control(Command::Hold {
            to: self.tag,
            gate: gate.clone(),
        })
    }

    fn command(&self, kind: DataKind, prefix: Bytes, payload: Bytes, bounded: bool) -> Command {
        let counted = self.flow.posted(prefix.len() + payload.len());
        self.send_command(kind, prefix, payload, bounded, counted)
    }

    fn send_command(
        &self,
        kind: DataKind,
        prefix: Bytes,
        payload: Bytes,
        bounded: bool,
        counted: bool,
    ) -> Command {
        Command::Send {
            to: self.tag,
            head: Head::data(kind, prefix.len() + payload.len()),
            prefix,
            payload,
            bounded,
            counted,
        }
    }

    /// Posts a send (counted in the session's flow by [`SessionHandle::command`]; taken off
    /// again if the post fails).
    fn post_send(&self, command: Command, len: usize, control: bool) -> Result<(), PostError> {
        let counted = matches!(command, Command::Send { counted: true, .. });
        let posted = match control {
            true => self.post_control(command),
            false => self.inbox.post(command, len),
        };
        if posted.is_err() && counted {
            self.flow.taken(len);
        }
        posted
    }

    fn post_control(&self, command: Command) -> Result<(), PostError> {
        if self.inbox.is_stopped() {
            return Err(PostError::Stopped);
        }
        self.inbox.post_control(command);
        Ok(())
    }

    /// Starts the session's close handshake (the reason is cut to fit a control frame; an
    /// invalid code is ignored when applied).
    pub fn close(&self, code: u16, reason: &str) -> Result<(), PostError> {
        let command = Command::Close {
            to: self.tag,
            code,
            reason: close::truncate_reason(reason).into(),
        };
        // Never refused for want of room: a close is how a stuck session is let go.
        self.post_control(command)
    }
}

/// Sends one message to many sessions, on any workers. The frame header is encoded once and
/// the payload is shared by every recipient (no copy per recipient, nor per worker); each
/// worker gets a single command listing its recipients. Returns the number of recipients it
/// was posted for: those whose worker stopped or whose inbox is full are skipped. A `Text`
/// payload must be UTF-8.
pub fn broadcast<'a>(
    to: impl IntoIterator<Item = &'a SessionHandle>,
    kind: DataKind,
    payload: Bytes,
) -> usize {
    let mut groups: Vec<(&Arc<Inbox>, Vec<Tag>)> = Vec::new();
    for handle in to {
        match groups
            .iter_mut()
            .find(|(i, _)| Arc::ptr_eq(i, &handle.inbox))
        {
            Some((_, tags)) => tags.push(handle.tag),
            None => groups.push((&handle.inbox, vec![handle.tag])),
        }
    }
    let head = Head::data(kind, payload.len());
    let mut posted = 0;
    for (inbox, tags) in groups {
        let count = tags.len();
        let cost = payload.len() + count * size_of::<Tag>();
        let command = Command::Broadcast {
            to: tags,
            head,
            payload: payload.clone(),
        };
        if inbox.post(command, cost).is_ok() {
            posted += count;
        }
    }
    posted
}
