//! The hub in relay mode: broker actions for the relay go to its thread, and what the relay
//! brings back (messages from upstream, receipts, errors, availability) reaches the node's
//! broker and sessions through [`NodeSide`], the relay's [`Downstream`].

use std::sync::{Arc, Weak};

use super::Hub;
use crate::broker::{Action, BrokerEvent, Ending, RelayOp, SessionId};
use crate::relay::{Delivery, Downstream, Relay};

impl Hub {
    /// Starts the relay when the hub was made in relay mode.
    pub(super) fn start_relay(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(config) = self.relay_config.clone() else {
            return Ok(());
        };
        let side = Arc::new(NodeSide {
            hub: Arc::downgrade(self),
        });
        let relay = Relay::start(config, side)?;
        let _ = self.relay.set(relay);
        Ok(())
    }

    /// The relay, in relay mode.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.get()
    }

    /// Hands the broker's relay operations over. A session being served passes the relay's
    /// gate: while the relay holds too much unwritten, it is not read.
    pub(super) fn relay_ops(&self, ops: Vec<RelayOp>, from_session: bool) {
        let Some(relay) = self.relay.get() else {
            tracing::error!("relay operations without a relay");
            return;
        };
        relay.submit(ops);
        if from_session {
            relay.gate().pass();
        }
    }
}

/// The node as the relay sees it (weakly: the hub owns the relay).
struct NodeSide {
    hub: Weak<Hub>,
}

impl Downstream for NodeSide {
    fn deliver(&self, batch: Vec<Delivery>) -> Vec<usize> {
        let Some(hub) = self.hub.upgrade() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        let mut gone = Vec::new();
        {
            let mut broker = hub.broker();
            for (i, delivery) in batch.into_iter().enumerate() {
                match delivery {
                    Delivery::Topic {
                        target,
                        destination,
                        headers,
                        body,
                    } => broker.deliver_topic(&target, &destination, headers, body, &mut actions),
                    Delivery::User {
                        user,
                        destination,
                        headers,
                        body,
                    } => broker.deliver_user(&user, &destination, headers, body, &mut actions),
                    Delivery::Queue {
                        session,
                        id,
                        destination,
                        headers,
                        body,
                        ack,
                    } => {
                        if !broker.deliver_queue(
                            session,
                            &id,
                            &destination,
                            headers,
                            body,
                            ack,
                            &mut actions,
                        ) {
                            gone.push(i);
                        }
                    }
                }
            }
        }
        hub.execute(actions, None);
        gone
    }

    fn receipt(&self, session: SessionId, receipt: &str) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut actions = Vec::new();
        hub.broker().relay_receipt(session, receipt, &mut actions);
        hub.execute(actions, None);
    }

    fn error(&self, session: SessionId, message: &str, detail: &str, receipt: Option<&str>) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let frame = hub.broker().error_frame(session, message, detail, receipt);
        let mut actions = Vec::new();
        if let Some(frame) = frame {
            actions.push(Action::Send { to: session, frame });
        }
        actions.push(Action::Close {
            to: session,
            ending: Ending::Error(message.to_owned()),
        });
        hub.execute(actions, None);
    }

    fn forget_unacked(&self, session: SessionId, id: &str) {
        if let Some(hub) = self.hub.upgrade() {
            hub.broker().forget_unacked(session, id);
        }
    }

    fn availability(&self, available: bool) {
        if let Some(hub) = self.hub.upgrade() {
            hub.execute(vec![Action::Event(BrokerEvent::Relay { available })], None);
        }
    }
}
