//! BEGIN, COMMIT and ABORT: the SENDs and ACKs a transaction holds until it ends.
//!
//! [`Transactions`] is one session's open transactions, sans-IO, with the limits and the
//! ERROR messages: the broker keeps one per session, and the server keeps one in each
//! session's link ([`Ticket`](crate::link::Ticket)) when it handles transactions without the
//! broker's lock (see `crate::server::router`).

use std::collections::HashMap;

use super::destination::Kind;
use super::{refuse, Action, Broker, Refusal, SessionId, Stored};
use crate::stomp::Frame;

/// A frame a transaction holds until COMMIT.
#[derive(Clone, Debug)]
pub(crate) enum TxOp {
    /// A SEND, checked when it arrived (its destination is `Stored::destination`).
    Send(Stored),
    Ack {
        id: String,
        nack: bool,
    },
}

/// One session's open transactions. Most sessions never open one: boxed once used (8 bytes
/// inline where an empty map is 48).
#[derive(Clone, Debug, Default)]
pub(crate) struct Transactions(
    #[allow(
        clippy::box_collection,
        reason = "8 bytes inline instead of an empty map's 48"
    )]
    Option<Box<HashMap<String, Vec<TxOp>>>>,
);

impl Transactions {
    /// BEGIN of `tx`, with at most `max_open` open at once.
    pub(crate) fn begin(&mut self, tx: &str, max_open: usize) -> Result<(), String> {
        let open = self.0.get_or_insert_with(Box::default);
        if open.contains_key(tx) {
            return Err(format!("transaction {tx} already started"));
        }
        if open.len() >= max_open {
            return Err(format!("more than {max_open} open transactions"));
        }
        open.insert(tx.to_owned(), Vec::new());
        Ok(())
    }

    /// Holds `op` in `tx`, up to `max_frames` frames.
    pub(crate) fn add(&mut self, tx: &str, op: TxOp, max_frames: usize) -> Result<(), String> {
        let ops = self
            .0
            .as_mut()
            .and_then(|open| open.get_mut(tx))
            .ok_or_else(|| format!("unknown transaction {tx}"))?;
        if ops.len() >= max_frames {
            return Err(format!(
                "transaction {tx} has more than {max_frames} frames"
            ));
        }
        ops.push(op);
        Ok(())
    }

    /// Ends `tx` (COMMIT or ABORT): what it held.
    pub(crate) fn take(&mut self, tx: &str) -> Result<Vec<TxOp>, String> {
        self.0
            .as_mut()
            .and_then(|open| open.remove(tx))
            .ok_or_else(|| format!("unknown transaction {tx}"))
    }

    pub(crate) fn contains(&self, tx: &str) -> bool {
        self.0.as_ref().is_some_and(|open| open.contains_key(tx))
    }
}

/// The `transaction` header of a BEGIN, COMMIT or ABORT.
pub(crate) fn named<'f>(frame: &'f Frame<'_>) -> Result<&'f str, String> {
    frame
        .header("transaction")
        .ok_or_else(|| format!("{} without transaction", frame.command))
}

impl Broker {
    fn transactions(&mut self, session: SessionId) -> Result<&mut Transactions, Refusal> {
        self.sessions
            .get_mut(&session)
            .map(|s| &mut s.transactions)
            .ok_or_else(|| refuse("not connected"))
    }

    /// Holds `op` in the open transaction `tx` of `session`, up to
    /// [`max_transaction_frames`](super::BrokerConfig::max_transaction_frames).
    pub(super) fn add_to_transaction(
        &mut self,
        session: SessionId,
        tx: &str,
        op: TxOp,
    ) -> Result<(), Refusal> {
        let limit = self.config.max_transaction_frames;
        self.transactions(session)?
            .add(tx, op, limit)
            .map_err(refuse)
    }

    pub(super) fn begin(&mut self, session: SessionId, frame: &Frame<'_>) -> Result<(), Refusal> {
        let tx = named(frame).map_err(refuse)?;
        let limit = self.config.max_transactions;
        self.transactions(session)?.begin(tx, limit).map_err(refuse)
    }

    fn take_transaction(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Result<Vec<TxOp>, Refusal> {
        let tx = named(frame).map_err(refuse)?;
        self.transactions(session)?.take(tx).map_err(refuse)
    }

    pub(super) fn commit(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        for op in self.take_transaction(session, frame)? {
            match op {
                TxOp::Send(stored) => {
                    let kind = self
                        .config
                        .prefixes
                        .kind(&stored.destination)
                        .unwrap_or(Kind::Topic);
                    self.deliver_send(session, kind, stored, out);
                }
                TxOp::Ack { id, nack } => self.apply_ack(session, &id, nack, out),
            }
        }
        Ok(())
    }

    pub(super) fn abort(&mut self, session: SessionId, frame: &Frame<'_>) -> Result<(), Refusal> {
        self.take_transaction(session, frame).map(drop)
    }

    /// Whether the session has the transaction open (for the relay's bookkeeping).
    pub fn has_transaction(&self, session: SessionId, tx: &str) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.transactions.contains(tx))
    }
}
