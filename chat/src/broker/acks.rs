//! ACK and NACK: settling pending queue messages and redelivering them.

use super::{refuse, Action, Broker, Refusal, SessionId, TxOp};
use crate::stomp::{Command, Frame, Version};

impl Broker {
    /// The pending message `id` names among `session`'s subscriptions (only those the relay
    /// serves when `relayed`): (subscription key, index in its pending list). An ack id
    /// (`{message-id}-{key}`) names its subscription, so only that one is searched; a
    /// `message-id` (what STOMP 1.0 and 1.1 acknowledge by) is looked for in each. A topic
    /// message's ack id (`{message-id}-t{key}`, see `topics`) names nothing pending.
    pub(super) fn find_pending(
        &self,
        session: SessionId,
        id: &str,
        relayed: bool,
    ) -> Option<(usize, usize)> {
        let state = self.sessions.get(&session)?;
        let position = |k: usize| {
            let sub = &self.subs[k];
            if relayed && !sub.relayed {
                return None;
            }
            sub.pending
                .iter()
                .position(|p| p.ack_id == id || p.message_id == id)
                .map(|i| (k, i))
        };
        let suffix = id.rsplit_once('-').map(|(_, k)| k);
        if suffix.is_some_and(|k| {
            k.strip_prefix('t')
                .is_some_and(|n| n.parse::<u32>().is_ok())
        }) {
            return None;
        }
        match suffix.map(str::parse::<usize>) {
            Some(Ok(key)) => state
                .subscriptions
                .contains(&key)
                .then(|| position(key))
                .flatten(),
            _ => state.subscriptions.iter().copied().find_map(position),
        }
    }

    pub(super) fn ack(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let nack = frame.command == Command::Nack;
        let version = self.version(session).unwrap_or(Version::V1_2);
        let id = match version {
            Version::V1_2 => frame.header("id"),
            _ => frame.header("message-id"),
        }
        .ok_or_else(|| {
            refuse(format!(
                "{} without {}",
                frame.command,
                if version == Version::V1_2 {
                    "id"
                } else {
                    "message-id"
                }
            ))
        })?
        .to_owned();
        if self.config.relay.is_some()
            && self.relay_ack(session, &id, nack, frame.header("transaction"), out)?
        {
            return Ok(());
        }
        if let Some(tx) = frame.header("transaction") {
            return self.add_to_transaction(session, tx, TxOp::Ack { id, nack });
        }
        self.apply_ack(session, &id, nack, out);
        Ok(())
    }

    /// Settles pending queue messages. Unknown ids are ignored (the message may have been
    /// settled already, or was a topic message, which is never tracked).
    pub(super) fn apply_ack(
        &mut self,
        session: SessionId,
        id: &str,
        nack: bool,
        out: &mut Vec<Action>,
    ) {
        self.queues.settle(session, id, nack, out);
    }
}
