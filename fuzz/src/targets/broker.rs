//! The in-memory broker (`sockeye_chat::broker::Broker`) driven by four sessions doing what the
//! input chooses: CONNECT, SUBSCRIBE (two queues, a queue pattern, a topic, a user's queue;
//! every ack mode), UNSUBSCRIBE, SEND (inside a transaction or not), ACK and NACK of ids they
//! were given or made up (inside a transaction or not), BEGIN / COMMIT / ABORT, DISCONNECT,
//! and the transport dropping them. Small limits (two unacknowledged messages per
//! subscription, four held per queue), so that holding, dropping and redelivery happen often.
//!
//! Besides "no panic", a model of the queues is checked, message by message (every body is
//! unique): a queue message is never handed out while another subscription still holds it
//! unacknowledged, never again once consumed (delivered to an `auto` subscription, or ACKed,
//! cumulatively for `client`), and never to a session that is gone; once every session is gone,
//! every message the broker accepted for a queue was consumed exactly once, or is held, or was
//! dropped and counted (`held_count`, `held_dropped`), and no subscription is left.

use std::collections::{HashMap, HashSet};

use sockeye_chat::broker::{Action, Broker, BrokerConfig, ConnectRequest, Ending, SessionId};
use sockeye_chat::stomp::{parse, Limits, Status, Version};

use crate::input::Cursor;

const SLOTS: usize = 4;
const DESTINATIONS: [&str; 5] = [
    "/queue/a",
    "/queue/b",
    "/queue/*",
    "/topic/t",
    "/user/queue/a",
];
const ACKS: [&str; 3] = ["auto", "client", "client-individual"];

/// One delivery the model tracks: a queue message held unacknowledged by a subscription.
#[derive(Clone, Debug)]
struct Held {
    session: SessionId,
    subscription: String,
    ack: String,
}

#[derive(Default)]
struct Model {
    /// Subscriptions the broker accepted: (session, id) → ack mode.
    modes: HashMap<(SessionId, String), String>,
    /// Queue messages out for acknowledgement, by body, and per subscription in delivery order.
    out: HashMap<String, Held>,
    order: HashMap<(SessionId, String), Vec<String>>,
    consumed: HashSet<String>,
    /// Queue messages the broker took (a SEND not refused, or a committed one).
    accepted: usize,
    /// Per session, its ACK ids in the order it was given them (for the input to pick from).
    given: HashMap<SessionId, Vec<String>>,
    /// Per session and transaction, the queue SENDs and ACK/NACKs it holds.
    tx: HashMap<(SessionId, String), Vec<TxOp>>,
    gone: HashSet<SessionId>,
}

#[derive(Clone, Debug)]
enum TxOp {
    QueueSend,
    Ack { id: String, nack: bool },
}

impl Model {
    /// The broker settled `id` for `session` (ACK or NACK): what the model releases or consumes.
    fn settle(&mut self, session: SessionId, id: &str, nack: bool) {
        let Some((body, held)) = self
            .out
            .iter()
            .find(|(_, h)| h.session == session && h.ack == id)
            .map(|(b, h)| (b.clone(), h.clone()))
        else {
            return; // unknown or stale: the broker ignores it too
        };
        let key = (session, held.subscription.clone());
        let mode = self.modes.get(&key).cloned().unwrap_or_default();
        let order = self.order.entry(key).or_default();
        let index = order.iter().position(|b| *b == body).expect("ordered");
        let settled: Vec<String> = if mode == "client" {
            order.drain(..=index).collect()
        } else {
            vec![order.remove(index)]
        };
        for b in settled {
            self.out.remove(&b);
            if !nack {
                assert!(self.consumed.insert(b.clone()), "{b} consumed twice");
            }
        }
    }

    /// Every message a subscription of `session` held goes back (the session is gone).
    fn release_session(&mut self, session: SessionId) {
        self.out.retain(|_, h| h.session != session);
        self.order.retain(|(s, _), _| *s != session);
        self.modes.retain(|(s, _), _| *s != session);
        self.tx.retain(|(s, _), _| *s != session);
        self.gone.insert(session);
    }

    fn release_subscription(&mut self, session: SessionId, id: &str) {
        self.out
            .retain(|_, h| !(h.session == session && h.subscription == id));
        self.order.remove(&(session, id.to_owned()));
        self.modes.remove(&(session, id.to_owned()));
    }

    /// A MESSAGE the broker sent.
    fn delivered(&mut self, to: SessionId, bytes: &[u8]) {
        assert!(!self.gone.contains(&to), "a MESSAGE to gone session {to}");
        let frame = match parse(bytes, &Limits::default(), Some(Version::V1_2)) {
            Ok(Status::Complete(f, _)) => f,
            other => panic!("the broker sent a frame it cannot parse back: {other:?}"),
        };
        if frame.command.as_str() != "MESSAGE" {
            return;
        }
        let destination = frame.header("destination").unwrap_or("");
        if !destination.starts_with("/queue/") {
            return; // topics and users' destinations: every subscriber gets a copy
        }
        let body = String::from_utf8_lossy(frame.body).into_owned();
        let subscription = frame
            .header("subscription")
            .expect("subscription")
            .to_owned();
        assert!(
            !self.consumed.contains(&body),
            "{body} delivered again after it was consumed"
        );
        assert!(
            !self.out.contains_key(&body),
            "{body} delivered while {:?} still holds it",
            self.out.get(&body)
        );
        let key = (to, subscription.clone());
        let mode = self
            .modes
            .get(&key)
            .unwrap_or_else(|| panic!("{body} delivered to unknown subscription {key:?}"))
            .clone();
        if mode == "auto" {
            self.consumed.insert(body);
            return;
        }
        let ack = frame.header("ack").expect("ack header in 1.2").to_owned();
        self.given.entry(to).or_default().push(ack.clone());
        self.order.entry(key).or_default().push(body.clone());
        self.out.insert(
            body,
            Held {
                session: to,
                subscription,
                ack,
            },
        );
    }
}

struct Harness {
    broker: Broker,
    model: Model,
    /// The session each slot holds now, and whether it is connected.
    slots: [(SessionId, bool); SLOTS],
    next_session: SessionId,
    next_body: u64,
}

impl Harness {
    /// Hands `text` to the broker as `session`'s frame; returns whether it was refused (the
    /// session got ERROR and is closed). Carries out the actions as a transport would.
    fn frame(&mut self, session: SessionId, text: &str) -> bool {
        let bytes = format!("{text}\0").into_bytes();
        let frame = match parse(&bytes, &Limits::default(), Some(Version::V1_2)) {
            Ok(Status::Complete(f, _)) => f,
            other => panic!("bad frame {text:?}: {other:?}"),
        };
        let mut out = Vec::new();
        self.broker.handle(session, &frame, &mut out);
        let refused = out
            .iter()
            .any(|a| matches!(a, Action::Close { to, ending: Ending::Error(_) } if *to == session));
        self.carry_out(out);
        refused
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        let mut closing = Vec::new();
        for action in actions {
            match action {
                Action::Send { to, frame } => self.model.delivered(to, &frame.to_vec()),
                Action::Close { to, .. } => closing.push(to),
                Action::Later { to, actions, .. } => {
                    self.carry_out(actions);
                    closing.push(to);
                }
                _ => {}
            }
        }
        for session in closing {
            self.drop_session(session);
        }
    }

    /// The transport is gone: the broker is told.
    fn drop_session(&mut self, session: SessionId) {
        if self.model.gone.contains(&session) {
            return;
        }
        self.model.release_session(session);
        for slot in self.slots.iter_mut().filter(|s| s.0 == session) {
            slot.1 = false;
        }
        let mut out = Vec::new();
        self.broker.closed(session, &mut out);
        self.carry_out(out);
    }

    fn body(&mut self) -> String {
        self.next_body += 1;
        format!("m{}", self.next_body)
    }

    fn step(&mut self, c: &mut Cursor<'_>) {
        let op = c.u8();
        let slot = usize::from(c.u8()) % SLOTS;
        let arg = c.u8();
        let (session, connected) = self.slots[slot];
        if !connected {
            // A fresh session for the slot, as user u0 or u1.
            if self.model.gone.contains(&session) || session == 0 {
                self.next_session += 1;
                self.slots[slot].0 = self.next_session;
            }
            let session = self.slots[slot].0;
            let user = slot % 2;
            if !self.frame(
                session,
                &format!("CONNECT\naccept-version:1.2\nlogin:u{user}\n\n"),
            ) {
                self.slots[slot].1 = true;
            }
            return;
        }
        let tx = (arg & 0x80 != 0).then(|| format!("tx{}", (arg >> 5) & 1));
        let tx_header = tx
            .as_deref()
            .map(|t| format!("transaction:{t}\n"))
            .unwrap_or_default();
        match op % 8 {
            0 => {
                let id = format!("s{}", arg % 3);
                let destination = DESTINATIONS[usize::from(arg >> 2) % DESTINATIONS.len()];
                let ack = ACKS[usize::from(arg >> 5) % ACKS.len()];
                let text = format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\nack:{ack}\n\n");
                // Known before the call: the broker may hand held messages to it at once.
                let key = (session, id.clone());
                let known = self.model.modes.contains_key(&key);
                if !known {
                    self.model.modes.insert(key.clone(), ack.to_owned());
                }
                if self.frame(session, &text) && !known {
                    self.model.modes.remove(&key);
                }
            }
            1 => {
                let id = format!("s{}", arg % 3);
                let known = self.model.modes.contains_key(&(session, id.clone()));
                // Released first: its messages are redelivered within the call.
                self.model.release_subscription(session, &id);
                let refused = self.frame(session, &format!("UNSUBSCRIBE\nid:{id}\n\n"));
                assert_eq!(refused, !known, "UNSUBSCRIBE {id} refused iff unknown");
            }
            2 | 3 => {
                let body = self.body();
                let destination = match arg % 4 {
                    0 => "/queue/a".to_owned(),
                    1 => "/queue/b".to_owned(),
                    2 => "/topic/t".to_owned(),
                    _ => format!("/user/u{}/queue/a", arg % 2),
                };
                let queue = destination.starts_with("/queue/");
                let text = format!("SEND\ndestination:{destination}\n{tx_header}\n{body}");
                let refused = self.frame(session, &text);
                if !refused && queue {
                    match &tx {
                        Some(t) => self
                            .model
                            .tx
                            .entry((session, t.clone()))
                            .or_default()
                            .push(TxOp::QueueSend),
                        None => self.model.accepted += 1,
                    }
                }
            }
            4 | 5 => {
                let nack = op % 8 == 5;
                let given = self.model.given.get(&session).cloned().unwrap_or_default();
                let id = if given.is_empty() || arg & 0x40 != 0 {
                    format!("m{arg}-{}", arg % 7)
                } else {
                    given[usize::from(arg) % given.len()].clone()
                };
                let command = if nack { "NACK" } else { "ACK" };
                let text = format!("{command}\nid:{id}\n{tx_header}\n");
                match &tx {
                    None => {
                        // Settled in the model first: a NACK's redelivery comes within the call.
                        self.model.settle(session, &id, nack);
                        self.frame(session, &text);
                    }
                    Some(t) => {
                        if !self.frame(session, &text) {
                            self.model
                                .tx
                                .entry((session, t.clone()))
                                .or_default()
                                .push(TxOp::Ack { id, nack });
                        }
                    }
                }
            }
            6 => {
                let t = format!("tx{}", arg & 1);
                match (arg >> 1) % 3 {
                    0 => {
                        if !self.frame(session, &format!("BEGIN\ntransaction:{t}\n\n")) {
                            self.model.tx.insert((session, t), Vec::new());
                        }
                    }
                    1 => {
                        let ops = self.model.tx.remove(&(session, t.clone()));
                        // Applied in the model before the call, as the broker applies them in
                        // order within it (the ids a transaction ACKs were given before).
                        for op in ops.iter().flatten() {
                            match op {
                                TxOp::QueueSend => self.model.accepted += 1,
                                TxOp::Ack { id, nack } => self.model.settle(session, id, *nack),
                            }
                        }
                        let refused = self.frame(session, &format!("COMMIT\ntransaction:{t}\n\n"));
                        assert_eq!(refused, ops.is_none(), "COMMIT {t}");
                    }
                    _ => {
                        self.model.tx.remove(&(session, t.clone()));
                        self.frame(session, &format!("ABORT\ntransaction:{t}\n\n"));
                    }
                }
            }
            _ => {
                if arg & 1 == 0 {
                    self.frame(session, "DISCONNECT\nreceipt:bye\n\n");
                }
                self.drop_session(session);
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let config = BrokerConfig {
        max_unacked: 2,
        max_held_per_queue: 4,
        authenticator: Some(std::sync::Arc::new(|req: &ConnectRequest<'_>| {
            Ok(req.login.map(str::to_owned))
        })),
        ..BrokerConfig::default()
    };
    let mut h = Harness {
        broker: Broker::new(config),
        model: Model::default(),
        slots: [(0, false); SLOTS],
        next_session: 0,
        next_body: 0,
    };
    let mut c = Cursor::new(data);
    let mut steps = 0;
    while !c.is_empty() && steps < 2_000 {
        h.step(&mut c);
        steps += 1;
    }
    for slot in 0..SLOTS {
        let (session, connected) = h.slots[slot];
        if connected {
            h.drop_session(session);
        }
    }
    let m = &h.model;
    assert!(m.out.is_empty(), "held by gone sessions: {:?}", m.out);
    assert_eq!(h.broker.session_count(), 0);
    assert_eq!(h.broker.subscription_count(), 0);
    let held = h.broker.held_count() as u64;
    let dropped = h.broker.held_dropped();
    assert_eq!(
        m.accepted as u64,
        m.consumed.len() as u64 + held + dropped,
        "accepted {} queue messages; consumed {}, held {held}, dropped {dropped}",
        m.accepted,
        m.consumed.len()
    );
}
