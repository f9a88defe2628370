//! An open connection as callbacks see it ([`ClientConn`]: the server's message API, masked
//! and corked), and the dispatch of what the core reads to the handler.

use std::fmt;
use std::time::Instant;

use super::state::Open;
use super::{ClientHandler, ClientId};
use crate::close::code;
use crate::connection::{Connection, DataKind, Event, Failure, Read, Sender};
use crate::deflate::Pool;
use crate::driver::out::CORK_LIMIT;
use crate::driver::transport::Transport;
use crate::driver::{Backlog, Cork, Message, SendStatus};
use crate::error::SendError;

/// A connection's outgoing bytes: a cork of its own (its sends may come between turns, and are
/// written once per turn) and its backlog, with the server's rules (see [`crate::driver`]).
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) cork: Cork,
    pub(super) backlog: Backlog,
}

impl Output {
    /// Everything not yet written: the backlog and the cork.
    pub(super) fn len(&self) -> usize {
        self.backlog.len() + self.cork.len()
    }
}

/// What every connection of a loop shares during a turn.
#[derive(Clone, Copy, Debug)]
pub(super) struct Env {
    pub max_backpressure: usize,
    /// When the current turn started.
    pub now: Instant,
}

/// An open connection as a callback (or the owner of the loop, between turns) sees it.
pub struct ClientConn<'a, D> {
    pub(super) id: ClientId,
    pub(super) stream: &'a mut Transport,
    pub(super) tx: &'a mut Sender,
    pub(super) out: &'a mut Output,
    pub(super) data: &'a mut D,
    pub(super) protocol: Option<&'a str>,
    pub(super) env: Env,
    /// The loop's permessage-deflate pool.
    pub(super) pool: &'a mut Pool,
}

impl<D> fmt::Debug for ClientConn<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn").field("id", &self.id).finish()
    }
}

impl<D> ClientConn<'_, D> {
    pub fn id(&self) -> ClientId {
        self.id
    }

    pub fn data(&self) -> &D {
        self.data
    }

    pub fn data_mut(&mut self) -> &mut D {
        self.data
    }

    /// When the current loop turn started (for a connection reached between turns: the last
    /// one). Callbacks that need a timestamp per message can take one clock reading per turn.
    pub fn turn_started(&self) -> Instant {
        self.env.now
    }

    /// The sub-protocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol
    }

    /// Whether permessage-deflate was agreed: messages of at least the configured
    /// `min_size` go out compressed, and compressed ones from the server are inflated.
    pub fn deflates(&self) -> bool {
        self.tx.deflate_params().is_some()
    }

    /// Bytes sent that the socket has not taken yet (corked this turn plus queued).
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// Sends a message (masked with a fresh key); see [`SendStatus`]. `Written` means corked
    /// with nothing queued before it: it goes out at the end of this turn. (The server's
    /// shared payloads have no client counterpart: every client frame is masked with its own
    /// key, so each is a copy anyway.)
    pub fn send(&mut self, message: Message<'_>) -> Result<SendStatus, SendError> {
        match message {
            Message::Text(text) => self.send_data(DataKind::Text, text.as_bytes()),
            Message::Binary(bytes) => self.send_data(DataKind::Binary, bytes),
        }
    }

    fn send_data(&mut self, kind: DataKind, payload: &[u8]) -> Result<SendStatus, SendError> {
        self.tx.check_data()?;
        let waiting = self.out.len();
        if waiting > 0 && waiting + payload.len() > self.env.max_backpressure {
            return Ok(self.out.backlog.refused());
        }
        self.tx
            .send_with(kind, payload, &mut self.out.cork, self.pool)?;
        if self.out.cork.len() >= CORK_LIMIT {
            // A burst goes out as it is made rather than piling up until the end of the turn.
            self.out
                .cork
                .flush_early(self.stream, &mut self.out.backlog);
        }
        Ok(self.out.backlog.accepted())
    }

    /// Sends a text message. `Ok` when written, queued or dropped: use [`ClientConn::send`] to
    /// tell which.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text)).map(drop)
    }

    /// Sends a binary message; see [`ClientConn::send_text`].
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(bytes)).map(drop)
    }

    /// Sends one fragment of a message (`fin` on the last); not subject to the cap.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), SendError> {
        self.tx
            .send_fragment(kind, payload, fin, &mut self.out.cork)
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.tx.ping(payload, &mut self.out.cork)
    }

    /// Starts the close handshake; `on_close` follows when the server has answered and closed
    /// TCP (or at the close deadline).
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        self.tx.close(code, reason, &mut self.out.cork)
    }

    pub fn is_closing(&self) -> bool {
        self.tx.is_close_sent()
    }
}

/// Runs the core over `buf`, calling the handler for each event; keeps the unconsumed tail.
#[allow(clippy::too_many_arguments)] // the parts of a slot, borrowed apart
pub(super) fn dispatch<H: ClientHandler>(
    handler: &mut H,
    id: ClientId,
    stream: &mut Transport,
    open: &mut Open,
    out: &mut Output,
    data: &mut H::Data,
    buf: &mut [u8],
    env: Env,
    pool: &mut Pool,
) {
    let Open {
        conn: Connection { rx, tx },
        stash,
        protocol,
        close,
        failure,
        ..
    } = open;
    let mut pos = 0;
    loop {
        match rx.read_with(&mut buf[pos..], tx, &mut out.cork, pool) {
            Ok(Read { consumed, event }) => {
                pos += consumed;
                let Some(event) = event else {
                    if consumed == 0 {
                        break;
                    }
                    continue;
                };
                let mut conn = ClientConn {
                    id,
                    stream: &mut *stream,
                    tx: &mut *tx,
                    out: &mut *out,
                    data: &mut *data,
                    protocol: protocol.as_deref(),
                    env,
                    pool: &mut *pool,
                };
                match event {
                    Event::Text(text) => handler.on_message(&mut conn, Message::Text(text)),
                    Event::Binary(bytes) => handler.on_message(&mut conn, Message::Binary(bytes)),
                    Event::Pong(payload) => handler.on_pong(&mut conn, payload),
                    Event::Ping(_) => {}
                    Event::Close(frame) => {
                        let (c, reason) =
                            frame.map_or((code::NO_STATUS, ""), |f| (f.code, f.reason));
                        close.get_or_insert_with(|| (c, reason.into()));
                    }
                }
            }
            Err(Failure { error, consumed }) => {
                pos += consumed;
                close.get_or_insert_with(|| (error.close_code(), error.to_string().into()));
                failure.get_or_insert(error);
            }
        }
    }
    stash.extend_from_slice(&buf[pos..]);
}
