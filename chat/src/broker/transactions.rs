//! BEGIN, COMMIT and ABORT: the SENDs and ACKs a transaction holds until it ends.

use super::destination::Kind;
use super::{refuse, Action, Broker, Refusal, SessionId, TxOp};
use crate::stomp::Frame;

impl Broker {
    pub(super) fn transaction(
        &mut self,
        session: SessionId,
        tx: &str,
    ) -> Result<&mut Vec<TxOp>, Refusal> {
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.transactions.as_mut()?.get_mut(tx))
            .ok_or_else(|| refuse(format!("unknown transaction {tx}")))
    }

    /// Queues `op` in the open transaction `tx` of `session`, up to
    /// [`max_transaction_frames`](super::BrokerConfig::max_transaction_frames).
    pub(super) fn add_to_transaction(
        &mut self,
        session: SessionId,
        tx: &str,
        op: TxOp,
    ) -> Result<(), Refusal> {
        let limit = self.config.max_transaction_frames;
        let ops = self.transaction(session, tx)?;
        if ops.len() >= limit {
            return Err(refuse(format!(
                "transaction {tx} has more than {limit} frames"
            )));
        }
        ops.push(op);
        Ok(())
    }

    pub(super) fn begin(&mut self, session: SessionId, frame: &Frame<'_>) -> Result<(), Refusal> {
        let tx = frame
            .header("transaction")
            .ok_or_else(|| refuse("BEGIN without transaction"))?;
        let limit = self.config.max_transactions;
        let state = self
            .sessions
            .get_mut(&session)
            .ok_or_else(|| refuse("not connected"))?;
        let open = state.transactions.get_or_insert_with(Box::default);
        if open.contains_key(tx) {
            return Err(refuse(format!("transaction {tx} already started")));
        }
        if open.len() >= limit {
            return Err(refuse(format!("more than {limit} open transactions")));
        }
        open.insert(tx.to_owned(), Vec::new());
        Ok(())
    }

    pub(super) fn take_transaction(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Result<Vec<TxOp>, Refusal> {
        let tx = frame
            .header("transaction")
            .ok_or_else(|| refuse(format!("{} without transaction", frame.command)))?;
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.transactions.as_mut()?.remove(tx))
            .ok_or_else(|| refuse(format!("unknown transaction {tx}")))
    }

    pub(super) fn commit(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        for op in self.take_transaction(session, frame)? {
            match op {
                TxOp::Send(stored, destination) => {
                    let kind = self
                        .config
                        .prefixes
                        .kind(&destination)
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
}
