//! A STOMP byte stream bound to the broker: buffering of partial frames, parsing with the
//! negotiated version, liveness bookkeeping. Transport-neutral (WebSocket messages or TCP reads
//! feed it alike) and free of I/O.
//!
//! Over WebSocket, STOMP frames may be split across messages or several may share one; the
//! link does not care where message boundaries fall. Bytes are parsed straight from the
//! caller's slice when no partial frame is pending, and only an incomplete tail is copied.

use crate::broker::{Action, Broker, Credentials, SessionId};
use crate::stomp::{parse, Frame, Limits, Status, StompError, Version};

/// Where a link's frames go: the broker itself, or a transport's router in front of it (see
/// `crate::server::router`).
pub trait Sink {
    /// The session's negotiated version (`None` before CONNECT), for the parser.
    fn version(&self, session: SessionId) -> Option<Version>;
    /// See [`Broker::needs_authentication`].
    fn needs_authentication(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Option<Credentials>;
    fn handle(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>);
    fn parse_error(&mut self, session: SessionId, error: &StompError, out: &mut Vec<Action>);
}

impl Sink for Broker {
    fn version(&self, session: SessionId) -> Option<Version> {
        Broker::version(self, session)
    }

    fn needs_authentication(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Option<Credentials> {
        Broker::needs_authentication(self, session, frame)
    }

    fn handle(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) {
        Broker::handle(self, session, frame, out)
    }

    fn parse_error(&mut self, session: SessionId, error: &StompError, out: &mut Vec<Action>) {
        Broker::parse_error(self, session, error, out)
    }
}

/// One connection's side of the STOMP stream.
#[derive(Debug, Default)]
pub struct Link {
    /// Bytes of an incomplete frame (bounded by the parser's limits).
    pending: Vec<u8>,
    /// Set once an ERROR was sent: everything after is ignored.
    failed: bool,
    /// The address the connection came from, when the transport said.
    peer: Option<std::net::IpAddr>,
    /// A CONNECT's credentials waiting to be judged outside the broker lock (boxed: rare,
    /// and large next to the rest).
    credentials: Option<Box<Credentials>>,
    /// What the transport keeps of the session once connected (see [`Ticket`]).
    ticket: Option<Ticket>,
    /// The session's topic subscriptions in its worker's table (their keys there), when the
    /// transport keeps them per worker.
    topics: Vec<u32>,
    /// When the transport last stamped the session's liveness (its own clock, in seconds).
    pub touched: u32,
}

/// What a transport keeps of a connected session so that its SENDs to topics and
/// application destinations need no broker lock: its version, its user and its SEND
/// allowance (see `crate::server::router`).
#[derive(Debug)]
pub struct Ticket {
    pub version: Version,
    pub user: Option<std::sync::Arc<str>>,
    pub sends: Option<crate::broker::limits::Bucket>,
    /// Its subscriptions to queues and users' destinations, when the transport keeps them
    /// (its topic subscriptions are keys in its worker's table). Most sessions have none:
    /// boxed once used (8 bytes inline where an empty `Vec` is 24).
    #[allow(
        clippy::box_collection,
        reason = "8 bytes inline instead of an empty Vec's 24, for every idle session"
    )]
    pub(crate) kept: Option<Box<Vec<crate::broker::KeptSub>>>,
    /// Its open transactions, when the transport handles them without the broker's lock.
    pub(crate) transactions: crate::broker::Transactions,
}

/// What one [`Link::feed`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    pub frames: usize,
    pub heart_beats: usize,
    /// Bytes of the input used (all of them, unless a batch limit stopped the parse early: the
    /// rest, whole frames not yet handled, is the caller's to offer again).
    pub used: usize,
    /// Stopped before a CONNECT whose credentials are to be judged outside the broker lock
    /// ([`Link::take_credentials`]); the CONNECT is among the bytes not used.
    pub authenticate: bool,
}

/// How much one [`Link::feed_some`] may handle: at most `frames` frames, and no frame after
/// `bytes` of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub frames: usize,
    pub bytes: usize,
}

impl Batch {
    /// Everything there is.
    pub const ALL: Batch = Batch {
        frames: usize::MAX,
        bytes: usize::MAX,
    };
}

impl Link {
    pub fn new() -> Self {
        Link::default()
    }

    /// The credentials of the CONNECT the last feed stopped before ([`Fed::authenticate`]).
    pub fn take_credentials(&mut self) -> Option<Credentials> {
        self.credentials.take().map(|c| *c)
    }

    /// The session's [`Ticket`] and topic subscription keys (the transport's to keep).
    pub fn session_state(&mut self) -> (&mut Option<Ticket>, &mut Vec<u32>) {
        (&mut self.ticket, &mut self.topics)
    }

    /// A link for a connection from `peer`.
    pub fn from_peer(peer: Option<std::net::IpAddr>) -> Self {
        Link {
            peer,
            ..Link::default()
        }
    }

    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer
    }

    /// True after a protocol error: the connection is being closed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Parses every complete frame in `bytes` (after what was pending) and hands each to the
    /// broker, appending the resulting actions to `out`.
    pub fn feed(
        &mut self,
        session: SessionId,
        bytes: &[u8],
        broker: &mut Broker,
        limits: &Limits,
        out: &mut Vec<Action>,
    ) -> Fed {
        let mut total = Fed::default();
        loop {
            let fed = self.feed_some(
                session,
                &bytes[total.used..],
                broker,
                limits,
                out,
                Batch::ALL,
            );
            total.frames += fed.frames;
            total.heart_beats += fed.heart_beats;
            total.used += fed.used;
            if !fed.authenticate {
                return total;
            }
            // No lock to leave here: the CONNECT is judged inline.
            if let Some(credentials) = self.take_credentials() {
                let verdict = broker
                    .authenticator()
                    .map_or(Ok(None), |auth| auth(&credentials.request()));
                broker.authenticated(session, verdict);
            }
        }
    }

    /// [`Link::feed`], but stops at the end of a `batch`: whatever follows is left unused (`Fed::used` says where),
    /// not buffered, so that a transport that can hold input back (a TCP stream whose reading
    /// pauses) offers it again later. Only an incomplete last frame is buffered, as always.
    pub fn feed_some<S: Sink + ?Sized>(
        &mut self,
        session: SessionId,
        bytes: &[u8],
        broker: &mut S,
        limits: &Limits,
        out: &mut Vec<Action>,
        batch: Batch,
    ) -> Fed {
        if self.failed {
            return Fed {
                used: bytes.len(),
                ..Fed::default()
            };
        }
        if self.pending.is_empty() {
            let (mut fed, used, stopped) = self.run(session, bytes, broker, limits, out, batch);
            fed.used = bytes.len();
            if stopped {
                fed.used = used;
            } else if !self.failed {
                self.pending.extend_from_slice(&bytes[used..]);
            }
            fed
        } else {
            let old = self.pending.len();
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(bytes);
            let (mut fed, used, stopped) = self.run(session, &buf, broker, limits, out, batch);
            fed.used = bytes.len();
            if stopped && used < old {
                // Stopped before the frame the pending bytes begin (a CONNECT to authenticate):
                // they stay pending, and none of `bytes` is used.
                buf.truncate(old);
                buf.drain(..used);
                self.pending = buf;
                fed.used = 0;
            } else if stopped {
                // The pending bytes were an incomplete frame, now handled: what is left is a
                // tail of `bytes`.
                fed.used = used - old;
            } else if !self.failed {
                buf.drain(..used);
                self.pending = buf;
            }
            fed
        }
    }

    /// Parses and hands over frames; returns what it saw, the bytes used, and whether it
    /// stopped at the batch's limit with input left.
    fn run<S: Sink + ?Sized>(
        &mut self,
        session: SessionId,
        buf: &[u8],
        broker: &mut S,
        limits: &Limits,
        out: &mut Vec<Action>,
        batch: Batch,
    ) -> (Fed, usize, bool) {
        let mut fed = Fed::default();
        let mut pos = 0;
        while pos < buf.len() {
            if fed.frames == batch.frames || (fed.frames > 0 && pos >= batch.bytes) {
                return (fed, pos, true);
            }
            match parse(&buf[pos..], limits, broker.version(session)) {
                Ok(Status::Complete(frame, used)) => {
                    if let Some(credentials) = broker.needs_authentication(session, &frame) {
                        self.credentials = Some(Box::new(credentials));
                        fed.authenticate = true;
                        return (fed, pos, true);
                    }
                    pos += used;
                    fed.frames += 1;
                    broker.handle(session, &frame, out);
                    if out.iter().any(|a| a.ends(session)) {
                        // ERROR or DISCONNECT: nothing after it is read.
                        self.failed = true;
                        self.pending = Vec::new();
                        return (fed, buf.len(), false);
                    }
                }
                Ok(Status::HeartBeat(used)) => {
                    pos += used;
                    fed.heart_beats += 1;
                }
                Ok(Status::Partial) => break,
                Err(error) => {
                    broker.parse_error(session, &error, out);
                    self.failed = true;
                    self.pending = Vec::new();
                    return (fed, buf.len(), false);
                }
            }
        }
        (fed, pos, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerConfig;

    fn sent_to(actions: &[Action], session: SessionId) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, frame } if *to == session => Some(without_message_id(
                    &String::from_utf8_lossy(&frame.to_vec()),
                )),
                _ => None,
            })
            .collect()
    }

    /// Message ids are numbered process-wide (tests run side by side): left out of
    /// comparisons.
    fn without_message_id(frame: &str) -> String {
        frame
            .lines()
            .map(|l| match l.starts_with("message-id:") {
                true => "message-id:*",
                false => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    const STREAM: &[u8] = b"CONNECT\naccept-version:1.2\n\n\0\nSUBSCRIBE\nid:0\ndestination:/topic/a\nreceipt:r\n\n\0\r\nSEND\ndestination:/topic/a\ncontent-length:3\n\na\0b\0\n";

    #[test]
    fn frames_split_or_batched_anywhere_give_the_same_result() {
        let whole = {
            let mut broker = Broker::new(BrokerConfig::default());
            let mut link = Link::new();
            let mut out = Vec::new();
            let fed = link.feed(1, STREAM, &mut broker, &Limits::default(), &mut out);
            assert_eq!(
                fed,
                Fed {
                    frames: 3,
                    heart_beats: 3,
                    used: STREAM.len(),
                    authenticate: false,
                }
            );
            sent_to(&out, 1)
        };
        assert_eq!(whole.len(), 3, "CONNECTED, RECEIPT, MESSAGE: {whole:?}");
        assert!(whole[2].ends_with("\n\na\0b\0"));
        for cut in 0..STREAM.len() {
            let mut broker = Broker::new(BrokerConfig::default());
            let mut link = Link::new();
            let mut out = Vec::new();
            link.feed(1, &STREAM[..cut], &mut broker, &Limits::default(), &mut out);
            link.feed(1, &STREAM[cut..], &mut broker, &Limits::default(), &mut out);
            assert_eq!(sent_to(&out, 1), whole, "cut at {cut}");
            assert_eq!(link.buffered(), 0);
        }
    }

    #[test]
    fn batches_stop_early_and_what_is_left_is_offered_again() {
        let mut stream =
            b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0"
                .to_vec();
        for i in 0..10 {
            stream
                .extend_from_slice(format!("SEND\ndestination:/topic/a\n\n{i:01000}\0").as_bytes());
        }
        for (frames, bytes, cut) in [(3, usize::MAX, 40), (usize::MAX, 2048, 700), (1, 1, 0)] {
            let mut broker = Broker::new(BrokerConfig::default());
            let mut link = Link::new();
            let mut out = Vec::new();
            let mut offered = &stream[..];
            let mut total = 0;
            let mut calls = 0;
            let batch = Batch { frames, bytes };
            // The first call gets a cut-off piece (a partial frame to buffer), then the rest.
            let fed = link.feed_some(
                1,
                &offered[..cut],
                &mut broker,
                &Limits::default(),
                &mut out,
                batch,
            );
            assert_eq!(fed.used, cut.min(fed.used));
            offered = &offered[fed.used..];
            total += fed.frames;
            while !offered.is_empty() {
                calls += 1;
                assert!(calls < 100, "no progress");
                let fed =
                    link.feed_some(1, offered, &mut broker, &Limits::default(), &mut out, batch);
                assert!(fed.frames <= frames);
                total += fed.frames;
                offered = &offered[fed.used..];
            }
            assert_eq!(
                total, 12,
                "every frame once ({frames} frames, {bytes} bytes)"
            );
            let messages = sent_to(&out, 1)
                .iter()
                .filter(|f| f.starts_with("MESSAGE"))
                .count();
            assert_eq!(messages, 10);
            assert!(calls > 1, "the batch limit did stop the parse");
        }
    }

    #[test]
    fn a_bad_frame_errors_once_and_stops_reading() {
        let mut broker = Broker::new(BrokerConfig::default());
        let mut link = Link::new();
        let mut out = Vec::new();
        link.feed(
            1,
            b"CONNECT\naccept-version:1.2\n\n\0",
            &mut broker,
            &Limits::default(),
            &mut out,
        );
        out.clear();
        link.feed(
            1,
            b"BOGUS\n\n\0SEND\ndestination:/topic/a\n\nx\0",
            &mut broker,
            &Limits::default(),
            &mut out,
        );
        let frames = sent_to(&out, 1);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].starts_with("ERROR\n"), "{frames:?}");
        assert!(link.is_failed());
        out.clear();
        link.feed(
            1,
            b"SEND\ndestination:/topic/a\n\nx\0",
            &mut broker,
            &Limits::default(),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn an_oversized_body_is_refused_before_it_arrives() {
        let mut broker = Broker::new(BrokerConfig::default());
        let mut link = Link::new();
        let mut out = Vec::new();
        let limits = Limits {
            max_body: 16,
            ..Limits::default()
        };
        link.feed(
            1,
            b"CONNECT\naccept-version:1.2\n\n\0",
            &mut broker,
            &limits,
            &mut out,
        );
        out.clear();
        link.feed(
            1,
            b"SEND\ndestination:/topic/a\ncontent-length:1000000\n\n",
            &mut broker,
            &limits,
            &mut out,
        );
        let frames = sent_to(&out, 1);
        assert!(frames[0].starts_with("ERROR\n"), "{frames:?}");
        assert!(frames[0].contains("message:"), "{frames:?}");
        assert!(matches!(out.last(), Some(Action::Close { to: 1, .. })));
    }

    /// A broker whose authenticator counts its calls and lets in passcode "right".
    fn judged() -> (Broker, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let config = BrokerConfig {
            authenticator: Some(std::sync::Arc::new(
                move |req: &crate::broker::ConnectRequest<'_>| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    match req.passcode {
                        Some("right") => Ok(req.login.map(str::to_owned)),
                        _ => Err("bad login or passcode".to_owned().into()),
                    }
                },
            )),
            ..BrokerConfig::default()
        };
        (Broker::new(config), calls)
    }

    const LOGIN: &[u8] = b"CONNECT\naccept-version:1.2\nlogin:ann\npasscode:right\n\n\0";

    #[test]
    fn a_connect_is_judged_outside_the_broker_then_offered_again() {
        let (mut broker, calls) = judged();
        broker.opened(1, "127.0.0.7".parse().expect("address"));
        let mut link = Link::new();
        let mut out = Vec::new();
        let limits = Limits::default();
        let mut bytes = b"\n".to_vec();
        bytes.extend_from_slice(LOGIN);
        bytes.extend_from_slice(b"SUBSCRIBE\nid:0\ndestination:/topic/a\n\n\0");
        // The broker never calls the authenticator itself: the link stops before the CONNECT.
        let fed = link.feed_some(1, &bytes, &mut broker, &limits, &mut out, Batch::ALL);
        assert!(fed.authenticate);
        assert_eq!(
            fed.used, 1,
            "only the heart-beat before the CONNECT is used"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(out.is_empty());
        let credentials = link.take_credentials().expect("the CONNECT's credentials");
        assert_eq!(credentials.login.as_deref(), Some("ann"));
        assert_eq!(credentials.peer, "127.0.0.7".parse().ok());
        // What the server does with the broker unlocked, then the rest is offered again.
        let auth = broker.authenticator().expect("an authenticator");
        broker.authenticated(1, auth(&credentials.request()));
        let fed = link.feed_some(1, &bytes[1..], &mut broker, &limits, &mut out, Batch::ALL);
        assert!(!fed.authenticate);
        assert_eq!(fed.frames, 2);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(broker.user(1), Some("ann"));
        assert!(sent_to(&out, 1)[0].starts_with("CONNECTED\n"));
    }

    #[test]
    fn a_connect_split_over_reads_stays_pending_while_it_is_judged() {
        for cut in 1..LOGIN.len() {
            let (mut broker, calls) = judged();
            let mut link = Link::new();
            let mut out = Vec::new();
            let limits = Limits::default();
            let (head, tail) = LOGIN.split_at(cut);
            let fed = link.feed_some(1, head, &mut broker, &limits, &mut out, Batch::ALL);
            assert_eq!(
                (fed.used, fed.authenticate),
                (head.len(), false),
                "cut {cut}"
            );
            let fed = link.feed_some(1, tail, &mut broker, &limits, &mut out, Batch::ALL);
            assert!(fed.authenticate, "cut {cut}");
            assert_eq!(
                fed.used, 0,
                "cut {cut}: the CONNECT began in the pending bytes"
            );
            let credentials = link.take_credentials().expect("credentials");
            let auth = broker.authenticator().expect("an authenticator");
            broker.authenticated(1, auth(&credentials.request()));
            let fed = link.feed_some(1, tail, &mut broker, &limits, &mut out, Batch::ALL);
            assert_eq!((fed.used, fed.frames), (tail.len(), 1), "cut {cut}");
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "cut {cut}"
            );
            assert!(sent_to(&out, 1)[0].starts_with("CONNECTED\n"), "cut {cut}");
            assert_eq!(link.buffered(), 0);
        }
    }

    #[test]
    fn feed_judges_a_connect_inline() {
        let (mut broker, calls) = judged();
        let mut link = Link::new();
        let mut out = Vec::new();
        let wrong = b"CONNECT\naccept-version:1.2\nlogin:ann\npasscode:wrong\n\n\0";
        let fed = link.feed(1, wrong, &mut broker, &Limits::default(), &mut out);
        assert_eq!((fed.used, fed.frames), (wrong.len(), 1));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let frames = sent_to(&out, 1);
        assert!(frames[0].starts_with("ERROR\n"), "{frames:?}");
        assert!(frames[0].contains("not authorized"), "{frames:?}");
    }
}
