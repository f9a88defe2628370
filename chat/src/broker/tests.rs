//! Broker behaviour, frame by frame.

use super::*;
use crate::stomp::{parse, Limits, Status};

/// Parses one complete frame from `text` (with `\0` terminator added).
fn frame(text: &str) -> Frame<'static> {
    let bytes: &'static [u8] = Box::leak(format!("{text}\0").into_bytes().into_boxed_slice());
    match parse(bytes, &Limits::default(), Some(Version::V1_2)) {
        Ok(Status::Complete(f, _)) => f,
        other => panic!("bad test frame {text:?}: {other:?}"),
    }
}

struct Harness {
    broker: Broker,
    out: Vec<Action>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            broker: Broker::new(BrokerConfig::default()),
            out: Vec::new(),
        }
    }

    fn with(config: BrokerConfig) -> Self {
        Harness {
            broker: Broker::new(config),
            out: Vec::new(),
        }
    }

    fn send(&mut self, session: SessionId, text: &str) -> Vec<Action> {
        self.broker.handle(session, &frame(text), &mut self.out);
        std::mem::take(&mut self.out)
    }

    fn connect(&mut self, session: SessionId) {
        let actions = self.send(session, "CONNECT\naccept-version:1.2\nhost:x\n\n");
        assert!(
            matches!(&actions[0], Action::Send { frame, .. } if frame.to_vec().starts_with(b"CONNECTED\n"))
        );
    }
}

/// The frames sent to `session`, as text.
fn frames_to(actions: &[Action], session: SessionId) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, frame } if *to == session => {
                Some(String::from_utf8_lossy(&frame.to_vec()).into_owned())
            }
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action], session: SessionId) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Close { to, .. } if *to == session))
}

fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
}

#[test]
fn connect_negotiates_version_and_heart_beat() {
    let mut h = Harness::new();
    let actions = h.send(
        1,
        "CONNECT\naccept-version:1.0,1.1\nheart-beat:5000,20000\n\n",
    );
    let connected = &frames_to(&actions, 1)[0];
    assert_eq!(header(connected, "version"), Some("1.1"));
    // We send every max(10000, 20000); we expect every max(5000, 10000).
    assert_eq!(header(connected, "heart-beat"), Some("20000,10000"));
    assert!(actions.contains(&Action::HeartBeat {
        to: 1,
        send_every: 20000,
        expect_every: 10000
    }));
    assert!(actions.contains(&Action::Event(BrokerEvent::Connected {
        session: 1,
        user: None
    })));
    // No accept-version: 1.0. heart-beat 0,0: none.
    let actions = h.send(2, "CONNECT\nheart-beat:0,0\n\n");
    let connected = &frames_to(&actions, 2)[0];
    assert_eq!(header(connected, "version"), Some("1.0"));
    assert!(actions.contains(&Action::HeartBeat {
        to: 2,
        send_every: 0,
        expect_every: 0
    }));
}

#[test]
fn unsupported_version_and_frames_before_connect_are_errors() {
    let mut h = Harness::new();
    let actions = h.send(1, "CONNECT\naccept-version:2.0\n\n");
    assert!(frames_to(&actions, 1)[0].starts_with("ERROR\n"));
    assert!(header(&frames_to(&actions, 1)[0], "message")
        .unwrap()
        .contains("version"));
    assert!(closed(&actions, 1));
    let actions = h.send(2, "SEND\ndestination:/topic/x\n\nhi");
    assert_eq!(
        header(&frames_to(&actions, 2)[0], "message"),
        Some("SEND before CONNECT")
    );
    assert!(closed(&actions, 2));
}

#[test]
fn authentication_hook_names_or_refuses() {
    let config = BrokerConfig {
        authenticator: Some(std::sync::Arc::new(|req: &ConnectRequest<'_>| {
            match (req.login, req.passcode) {
                (Some(u), Some("secret")) => Ok(Some(u.to_owned())),
                _ => Err("bad credentials".into()),
            }
        })),
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    let actions = h.send(
        1,
        "CONNECT\naccept-version:1.2\nlogin:ann\npasscode:secret\n\n",
    );
    assert_eq!(header(&frames_to(&actions, 1)[0], "user-name"), Some("ann"));
    assert_eq!(h.broker.user(1), Some("ann"));
    let actions = h.send(
        2,
        "CONNECT\naccept-version:1.2\nlogin:bob\npasscode:nope\n\n",
    );
    assert_eq!(
        header(&frames_to(&actions, 2)[0], "message"),
        Some("not authorized: bad credentials")
    );
    assert!(closed(&actions, 2));
}

#[test]
fn topic_fans_out_one_shared_body() {
    let mut h = Harness::new();
    for s in 1..=3 {
        h.connect(s);
        h.send(
            s,
            &format!("SUBSCRIBE\nid:sub-{s}\ndestination:/topic/rooms.1\n\n"),
        );
    }
    let actions = h.send(9, "CONNECT\naccept-version:1.2\n\n");
    assert!(!closed(&actions, 9));
    let actions = h.send(
        9,
        "SEND\ndestination:/topic/rooms.1\ncontent-type:text/plain\nx-app:7\n\nhello",
    );
    let mut tails = Vec::new();
    for s in 1..=3 {
        let frames = frames_to(&actions, s);
        assert_eq!(frames.len(), 1);
        let m = &frames[0];
        assert!(m.starts_with("MESSAGE\n"), "{m}");
        assert_eq!(header(m, "subscription"), Some(format!("sub-{s}").as_str()));
        assert_eq!(header(m, "destination"), Some("/topic/rooms.1"));
        assert_eq!(header(m, "content-type"), Some("text/plain"));
        assert_eq!(header(m, "content-length"), Some("5"));
        assert_eq!(header(m, "x-app"), Some("7"));
        assert!(m.ends_with("\n\nhello\0"));
    }
    for a in &actions {
        if let Action::Send { frame, .. } = a {
            tails.push(frame.tail.as_ref().unwrap().as_ptr());
        }
    }
    assert!(
        tails.windows(2).all(|w| w[0] == w[1]),
        "every subscriber shares one body buffer"
    );
    let ids: Vec<String> = (1..=3)
        .map(|s| {
            header(&frames_to(&actions, s)[0], "message-id")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]));
    // Another message gets another id.
    let actions = h.send(9, "SEND\ndestination:/topic/rooms.1\n\nagain");
    assert_ne!(
        header(&frames_to(&actions, 1)[0], "message-id").unwrap(),
        ids[0]
    );
}

#[test]
fn wildcard_subscriptions() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, "SUBSCRIBE\nid:a\ndestination:/topic/rooms.*\n\n");
    h.send(1, "SUBSCRIBE\nid:b\ndestination:/topic/**\n\n");
    let actions = h.send(1, "SEND\ndestination:/topic/rooms.42\n\nx");
    assert_eq!(frames_to(&actions, 1).len(), 2);
    let actions = h.send(1, "SEND\ndestination:/topic/other/deep\n\nx");
    assert_eq!(frames_to(&actions, 1).len(), 1);
}

#[test]
fn queue_round_robin_and_hold() {
    let mut h = Harness::new();
    h.connect(9);
    // Nobody subscribed: held.
    h.send(9, "SEND\ndestination:/queue/jobs\n\nearly");
    h.connect(1);
    let actions = h.send(1, "SUBSCRIBE\nid:q\ndestination:/queue/jobs\n\n");
    assert!(frames_to(&actions, 1)[0].ends_with("\n\nearly\0"));
    h.connect(2);
    h.send(2, "SUBSCRIBE\nid:q\ndestination:/queue/jobs\n\n");
    let mut got = [0, 0];
    for i in 0..10 {
        let actions = h.send(9, &format!("SEND\ndestination:/queue/jobs\n\njob{i}"));
        let n1 = frames_to(&actions, 1).len();
        let n2 = frames_to(&actions, 2).len();
        assert_eq!(n1 + n2, 1, "exactly one subscriber per message");
        got[0] += n1;
        got[1] += n2;
    }
    assert_eq!(got, [5, 5]);
}

#[test]
fn held_queue_is_bounded() {
    let config = BrokerConfig {
        max_held_per_queue: 3,
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    h.connect(9);
    for i in 0..10 {
        h.send(9, &format!("SEND\ndestination:/queue/q\n\n{i}"));
    }
    assert_eq!((h.broker.held_count(), h.broker.held_dropped()), (3, 7));
    h.connect(1);
    let actions = h.send(1, "SUBSCRIBE\nid:q\ndestination:/queue/q\n\n");
    assert_eq!((h.broker.held_count(), h.broker.held_dropped()), (0, 7));
    let bodies: Vec<String> = frames_to(&actions, 1)
        .iter()
        .map(|f| {
            f.rsplit("\n\n")
                .next()
                .unwrap()
                .trim_end_matches('\0')
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, ["7", "8", "9"]);
}

#[test]
fn a_queue_whose_subscribers_are_all_at_their_limit_holds_then_drops_its_oldest_and_counts() {
    let config = BrokerConfig {
        max_unacked: 1,
        max_held_per_queue: 2,
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    h.connect(1);
    h.send(
        1,
        "SUBSCRIBE\nid:s\ndestination:/queue/q\nack:client-individual\n\n",
    );
    h.connect(9);
    let mut to_1 = Vec::new();
    for i in 0..5 {
        let actions = h.send(9, &format!("SEND\ndestination:/queue/q\n\n{i}"));
        to_1.extend(frames_to(&actions, 1));
    }
    // One unacknowledged at a time: "0" delivered, "3" and "4" held, "1" and "2" dropped.
    assert_eq!(to_1.len(), 1);
    assert_eq!((h.broker.held_count(), h.broker.held_dropped()), (2, 2));
    let ack = header(&to_1[0], "ack").unwrap().to_owned();
    let actions = h.send(1, &format!("ACK\nid:{ack}\n\n"));
    let next = frames_to(&actions, 1);
    assert_eq!(next.len(), 1);
    assert!(next[0].ends_with("\n\n3\0"), "{next:?}");
    assert_eq!((h.broker.held_count(), h.broker.held_dropped()), (1, 2));
}

#[test]
fn room_made_by_an_ack_or_a_new_subscription_drains_the_queues_it_matches() {
    let config = BrokerConfig {
        max_unacked: 1,
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    h.connect(9);
    for q in ["a", "b"] {
        for i in 0..2 {
            h.send(9, &format!("SEND\ndestination:/queue/{q}\n\n{q}{i}"));
        }
    }
    assert_eq!(h.broker.held_count(), 4);
    h.connect(1);
    let actions = h.send(
        1,
        "SUBSCRIBE\nid:s\ndestination:/queue/a\nack:client-individual\n\n",
    );
    let got = frames_to(&actions, 1);
    assert!(got.len() == 1 && got[0].ends_with("\n\na0\0"), "{got:?}");
    let ack = header(&got[0], "ack").unwrap().to_owned();
    let got = frames_to(&h.send(1, &format!("ACK\nid:{ack}\n\n")), 1);
    assert!(got.len() == 1 && got[0].ends_with("\n\na1\0"), "{got:?}");
    // /queue/b is not the ACKing subscription's: it still holds both.
    assert_eq!(h.broker.held_count(), 2);
    h.connect(2);
    let got = frames_to(&h.send(2, "SUBSCRIBE\nid:p\ndestination:/queue/*\n\n"), 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(h.broker.held_count(), 0);
}

#[test]
fn an_ack_settles_only_what_its_id_names_for_the_session_that_sends_it() {
    let mut h = Harness::new();
    h.connect(1);
    h.connect(2);
    h.send(
        1,
        "SUBSCRIBE\nid:a\ndestination:/queue/a\nack:client-individual\n\n",
    );
    h.send(
        1,
        "SUBSCRIBE\nid:b\ndestination:/queue/b\nack:client-individual\n\n",
    );
    let to_1 = |actions: &[Action]| frames_to(actions, 1);
    let a = to_1(&h.send(2, "SEND\ndestination:/queue/a\n\nA"));
    let b = to_1(&h.send(2, "SEND\ndestination:/queue/b\n\nB"));
    let (ack_a, ack_b) = (header(&a[0], "ack").unwrap(), header(&b[0], "ack").unwrap());
    // Another session's ACK of them does nothing; nor does a made-up id naming a's shard
    // and part.
    h.send(2, &format!("ACK\nid:{ack_a}\n\n"));
    let (_, place_a) = ack_a.rsplit_once('-').unwrap();
    assert!(
        place_a.starts_with('q'),
        "a queue message's id names its place: {ack_a}"
    );
    h.send(1, &format!("ACK\nid:m0-{place_a}\n\n"));
    // A topic message's ack id settles nothing either.
    h.send(1, &format!("ACK\nid:m0-t{}\n\n", &place_a[1..]));
    let pending = |h: &Harness| -> usize { h.broker.queues().unacked_count() };
    assert_eq!(pending(&h), 2);
    // b's own id settles b, on the second subscription.
    h.send(1, &format!("ACK\nid:{ack_b}\n\n"));
    assert_eq!(pending(&h), 1);
    // STOMP 1.1 acknowledges by message-id, looked for in every subscription.
    h.send(3, "CONNECT\naccept-version:1.1\nhost:x\n\n");
    h.send(3, "SUBSCRIBE\nid:c\ndestination:/queue/c\nack:client\n\n");
    let c = frames_to(&h.send(2, "SEND\ndestination:/queue/c\n\nC"), 3);
    let id = header(&c[0], "message-id").unwrap().to_owned();
    assert_eq!(pending(&h), 2);
    h.send(3, &format!("ACK\nsubscription:c\nmessage-id:{id}\n\n"));
    assert_eq!(pending(&h), 1);
}

#[test]
fn user_destinations_reach_all_sessions_of_that_user_only() {
    let config = BrokerConfig {
        authenticator: Some(std::sync::Arc::new(|req: &ConnectRequest<'_>| {
            Ok(req.login.map(str::to_owned))
        })),
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    for (s, user) in [(1, "ann"), (2, "ann"), (3, "bob")] {
        h.send(s, &format!("CONNECT\naccept-version:1.2\nlogin:{user}\n\n"));
        h.send(s, "SUBSCRIBE\nid:u\ndestination:/user/queue/replies\n\n");
    }
    h.send(3, "SUBSCRIBE\nid:plain\ndestination:/queue/replies\n\n");
    let mut out = Vec::new();
    h.broker.publish_to_user(
        "ann",
        "/queue/replies",
        vec![],
        Bytes::from_static(b"for ann"),
        &mut out,
    );
    assert_eq!(frames_to(&out, 1).len(), 1);
    assert_eq!(frames_to(&out, 2).len(), 1);
    assert!(frames_to(&out, 3).is_empty());
    assert_eq!(
        header(&frames_to(&out, 1)[0], "destination"),
        Some("/user/queue/replies")
    );
    // A plain /queue/replies message does not leak into user subscriptions.
    let actions = h.send(1, "SEND\ndestination:/queue/replies\n\nplain");
    assert_eq!(frames_to(&actions, 3).len(), 1);
    assert!(frames_to(&actions, 1).is_empty() && frames_to(&actions, 2).is_empty());
    // SEND to /user/bob/queue/replies reaches bob's user subscription.
    let actions = h.send(1, "SEND\ndestination:/user/bob/queue/replies\n\nhi bob");
    assert_eq!(frames_to(&actions, 3).len(), 1);
    assert_eq!(
        header(&frames_to(&actions, 3)[0], "subscription"),
        Some("u")
    );
    // The users' index follows UNSUBSCRIBE and closes: nothing reaches a gone subscription.
    assert_eq!(h.broker.users().count_for_user("ann"), 2);
    h.send(1, "UNSUBSCRIBE\nid:u\n\n");
    let mut c = Vec::new();
    h.broker.closed(2, &mut c);
    assert_eq!(h.broker.users().count_for_user("ann"), 0);
    let mut out = Vec::new();
    h.broker
        .publish_to_user("ann", "/queue/replies", vec![], Bytes::new(), &mut out);
    assert!(frames_to(&out, 1).is_empty() && frames_to(&out, 2).is_empty());
    // One session's own user subscriptions (the reply to a sender), anonymous or not.
    h.send(1, "SUBSCRIBE\nid:u2\ndestination:/user/queue/replies\n\n");
    let mut out = Vec::new();
    h.broker
        .publish_to_session(1, "/queue/replies", vec![], Bytes::new(), &mut out);
    assert_eq!(frames_to(&out, 1).len(), 1);
    assert!(frames_to(&out, 3).is_empty());
}

#[test]
fn client_individual_nack_redelivers_to_another_subscriber() {
    let mut h = Harness::new();
    h.connect(1);
    h.connect(2);
    h.send(
        1,
        "SUBSCRIBE\nid:a\ndestination:/queue/work\nack:client-individual\n\n",
    );
    h.send(
        2,
        "SUBSCRIBE\nid:b\ndestination:/queue/work\nack:client-individual\n\n",
    );
    h.connect(9);
    let actions = h.send(9, "SEND\ndestination:/queue/work\n\ntask");
    let (first, other) = if frames_to(&actions, 1).is_empty() {
        (2, 1)
    } else {
        (1, 2)
    };
    let m = &frames_to(&actions, first)[0];
    let ack = header(m, "ack")
        .expect("ack header in client-individual mode")
        .to_owned();
    let actions = h.send(first, &format!("NACK\nid:{ack}\n\n"));
    let again = frames_to(&actions, other);
    assert_eq!(again.len(), 1, "redelivered to the other subscriber");
    assert_eq!(header(&again[0], "redelivered"), Some("true"));
    let ack2 = header(&again[0], "ack").unwrap().to_owned();
    let actions = h.send(other, &format!("ACK\nid:{ack2}\nreceipt:r1\n\n"));
    assert!(frames_to(&actions, other)[0].starts_with("RECEIPT\nreceipt-id:r1\n"));
}

#[test]
fn client_ack_is_cumulative_and_unacked_messages_survive_a_disconnect() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(
        1,
        "SUBSCRIBE\nid:a\ndestination:/queue/work\nack:client\n\n",
    );
    h.connect(9);
    let mut acks = Vec::new();
    for i in 0..3 {
        let actions = h.send(9, &format!("SEND\ndestination:/queue/work\n\nt{i}"));
        acks.push(
            header(&frames_to(&actions, 1)[0], "ack")
                .unwrap()
                .to_owned(),
        );
    }
    // Acking the second settles the first two.
    h.send(1, &format!("ACK\nid:{}\n\n", acks[1]));
    // Session 1 goes away: only t2 is redelivered, to the next subscriber.
    let mut out = Vec::new();
    h.broker.closed(1, &mut out);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Event(BrokerEvent::Disconnected { session: 1, .. })
    )));
    h.connect(2);
    let actions = h.send(2, "SUBSCRIBE\nid:b\ndestination:/queue/work\n\n");
    let got = frames_to(&actions, 2);
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with("\n\nt2\0"));
}

#[test]
fn transactions_apply_at_commit_and_vanish_on_abort() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, "SUBSCRIBE\nid:a\ndestination:/topic/t\n\n");
    h.connect(9);
    h.send(9, "BEGIN\ntransaction:tx1\n\n");
    let actions = h.send(9, "SEND\ndestination:/topic/t\ntransaction:tx1\n\nlater");
    assert!(frames_to(&actions, 1).is_empty());
    let actions = h.send(9, "COMMIT\ntransaction:tx1\nreceipt:c\n\n");
    assert_eq!(frames_to(&actions, 1).len(), 1);
    assert!(frames_to(&actions, 9)[0].starts_with("RECEIPT"));
    h.send(9, "BEGIN\ntransaction:tx2\n\n");
    h.send(9, "SEND\ndestination:/topic/t\ntransaction:tx2\n\nnever");
    let actions = h.send(9, "ABORT\ntransaction:tx2\n\n");
    assert!(frames_to(&actions, 1).is_empty());
    let actions = h.send(9, "COMMIT\ntransaction:tx2\n\n");
    assert_eq!(
        header(&frames_to(&actions, 9)[0], "message"),
        Some("unknown transaction tx2")
    );
}

#[test]
fn bad_frames_get_an_error_naming_the_problem_and_a_close() {
    let cases = [
        ("SEND\n\nx", "SEND without destination"),
        (
            "SUBSCRIBE\ndestination:/topic/a\n\n",
            "SUBSCRIBE without id",
        ),
        (
            "SUBSCRIBE\nid:1\ndestination:/nowhere\n\n",
            "unknown destination /nowhere",
        ),
        (
            "SUBSCRIBE\nid:1\ndestination:/topic/a\nack:sometimes\n\n",
            "invalid ack mode sometimes",
        ),
        ("UNSUBSCRIBE\nid:nope\n\n", "no subscription with id nope"),
        (
            "SEND\ndestination:/user\n\n",
            "invalid user destination /user (want /user/NAME/...)",
        ),
        (
            "SEND\ndestination:/user.x\n\n",
            "invalid user destination /user.x (want /user/NAME/...)",
        ),
        (
            "SEND\ndestination:/user/ann\n\n",
            "invalid user destination /user/ann (want /user/NAME/...)",
        ),
        (
            "SEND\ndestination:/user//queue/a\n\n",
            "invalid user destination /user//queue/a (want /user/NAME/...)",
        ),
        ("BEGIN\n\n", "BEGIN without transaction"),
        ("MESSAGE\n\n", "MESSAGE is a server frame"),
        ("CONNECT\n\n", "already connected"),
    ];
    for (text, message) in cases {
        let mut h = Harness::new();
        h.connect(1);
        h.connect(2);
        h.send(2, "SUBSCRIBE\nid:s\ndestination:/topic/a\n\n");
        let actions = h.send(1, text);
        let frames = frames_to(&actions, 1);
        assert!(frames[0].starts_with("ERROR\n"), "{text}");
        assert_eq!(header(&frames[0], "message"), Some(message), "{text}");
        assert!(closed(&actions, 1));
        assert!(!closed(&actions, 2), "other sessions untouched");
    }
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, "SUBSCRIBE\nid:s\ndestination:/topic/a\n\n");
    let actions = h.send(1, "SUBSCRIBE\nid:s\ndestination:/topic/b\nreceipt:77\n\n");
    let error = &frames_to(&actions, 1)[0];
    assert_eq!(
        header(error, "message"),
        Some("duplicate subscription id s")
    );
    assert_eq!(header(error, "receipt-id"), Some("77"));
}

#[test]
fn application_destinations_go_to_the_application() {
    let mut h = Harness::new();
    h.connect(1);
    let actions = h.send(
        1,
        "SEND\ndestination:/app/chat.send\ncontent-type:application/json\n\n{\"a\":1}",
    );
    let app = actions.iter().find_map(|a| match a {
        Action::App(m) => Some(m.clone()),
        _ => None,
    });
    let app = app.expect("app message");
    assert_eq!(app.destination, "/chat.send");
    assert_eq!(app.session, 1);
    assert_eq!(&app.body[..], b"{\"a\":1}");
    assert!(app
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v == "application/json"));
}

#[test]
fn disconnect_with_receipt_answers_then_closes() {
    let mut h = Harness::new();
    h.connect(1);
    let actions = h.send(1, "DISCONNECT\nreceipt:bye\n\n");
    assert!(frames_to(&actions, 1)[0].starts_with("RECEIPT\nreceipt-id:bye"));
    assert!(matches!(actions.last(), Some(Action::Close { to: 1, .. })));
}

#[test]
fn binary_bodies_are_flagged() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, "SUBSCRIBE\nid:s\ndestination:/topic/a\n\n");
    let mut out = Vec::new();
    h.broker.publish(
        "/topic/a",
        vec![],
        Bytes::from_static(b"\xff\x00\xfe"),
        &mut out,
    );
    match &out[0] {
        Action::Send { frame, .. } => assert!(!frame.utf8),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_closing_session_does_not_keep_its_own_unacked_messages() {
    let mut h = Harness::new();
    h.connect(1);
    h.send(1, "SUBSCRIBE\nid:c1\ndestination:/queue/q\nack:client\n\n");
    h.connect(9);
    let actions = h.send(9, "SEND\ndestination:/queue/q\n\nm1");
    assert_eq!(frames_to(&actions, 1).len(), 1);
    // A second, auto-ack subscription of the same session on the same queue.
    h.send(1, "SUBSCRIBE\nid:c2\ndestination:/queue/q\n\n");
    let mut out = Vec::new();
    h.broker.closed(1, &mut out);
    assert!(
        frames_to(&out, 1).is_empty(),
        "not redelivered to the leaving session"
    );
    h.connect(2);
    let actions = h.send(2, "SUBSCRIBE\nid:d\ndestination:/queue/q\n\n");
    let got = frames_to(&actions, 2);
    assert_eq!(got.len(), 1, "held for the next subscriber");
    assert!(got[0].ends_with("\n\nm1\0"));
    assert_eq!(header(&got[0], "redelivered"), Some("true"));
}

#[test]
fn application_only_destinations_refuse_clients_sends_but_not_the_application() {
    let mut h = Harness::with(BrokerConfig {
        app_only: vec!["/topic/rooms.*".into(), "/topic/sockeye.cluster".into()],
        ..BrokerConfig::default()
    });
    h.connect(1);
    h.connect(2);
    h.send(2, "SUBSCRIBE\nid:s\ndestination:/topic/rooms.general-1\n\n");
    let actions = h.send(
        1,
        "SEND\ndestination:/topic/rooms.general-1\nreceipt:r\n\nforged",
    );
    let error = &frames_to(&actions, 1)[0];
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert_eq!(
        header(error, "message"),
        Some("/topic/rooms.general-1 is the application's (clients cannot send to it)")
    );
    assert!(closed(&actions, 1));
    assert!(frames_to(&actions, 2).is_empty(), "nothing delivered");
    // Other topics are open; the application publishes where clients may not.
    h.connect(3);
    let actions = h.send(3, "SEND\ndestination:/topic/rooms-news\n\nfine");
    assert!(frames_to(&actions, 3).is_empty());
    let mut out = Vec::new();
    h.broker.publish(
        "/topic/rooms.general-1",
        Vec::new(),
        Bytes::from_static(b"{}"),
        &mut out,
    );
    assert_eq!(frames_to(&out, 2).len(), 1);
}

#[test]
fn the_applications_own_sessions_skip_passcodes_rules_and_limits() {
    let config = BrokerConfig {
        authenticator: Some(std::sync::Arc::new(|_: &ConnectRequest<'_>| {
            Err("login and passcode required".into())
        })),
        permissions: Permissions::new(
            serde_json::from_str(
                r#"[{"user": "*", "command": "*", "destination": "/**", "access": "deny"}]"#,
            )
            .unwrap(),
        ),
        max_send_rate: Some(SendRate {
            per_second: 1,
            burst: 1,
        }),
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    let actions = h.send(1, "CONNECT\naccept-version:1.2\n\n");
    assert!(closed(&actions, 1), "a client needs a passcode");
    h.broker
        .connect_trusted(2, &frame("CONNECT\naccept-version:1.2\n\n"), &mut h.out);
    let actions = std::mem::take(&mut h.out);
    assert!(frames_to(&actions, 2)[0].starts_with("CONNECTED\n"));
    let actions = h.send(2, "SUBSCRIBE\nid:a\ndestination:/topic/**\nreceipt:r\n\n");
    assert!(
        frames_to(&actions, 2)[0].starts_with("RECEIPT\n"),
        "{actions:?}"
    );
    for _ in 0..3 {
        let actions = h.send(2, "SEND\ndestination:/topic/x\n\nhi");
        assert!(!closed(&actions, 2), "no rate for the application");
    }
}

#[test]
fn another_users_destination_cannot_be_subscribed_to() {
    let config = BrokerConfig {
        authenticator: Some(std::sync::Arc::new(|req: &ConnectRequest<'_>| {
            Ok(req.login.map(str::to_owned))
        })),
        ..BrokerConfig::default()
    };
    let mut h = Harness::with(config);
    h.send(1, "CONNECT\naccept-version:1.2\nlogin:ann\n\n");
    for dest in ["/user/bob/queue/x", "/user/ann/queue/x", "/user/**"] {
        let mut h2 = Harness::new();
        h2.connect(1);
        let actions = h2.send(1, &format!("SUBSCRIBE\nid:a\ndestination:{dest}\n\n"));
        let error = &frames_to(&actions, 1)[0];
        assert_eq!(
            header(error, "message").map(|m| m.starts_with("cannot subscribe to")),
            Some(true),
            "{dest}: {error}"
        );
    }
    let actions = h.send(
        1,
        "SUBSCRIBE\nid:a\ndestination:/user/queue/x\nreceipt:r\n\n",
    );
    assert!(frames_to(&actions, 1)[0].starts_with("RECEIPT\n"));
}

/// Queue pattern subscriptions (a part in every queue shard each) have a limit of their own
/// on the broker's path too; queues by name and topic patterns do not count against it.
#[test]
fn queue_pattern_subscriptions_have_a_limit_of_their_own() {
    let mut h = Harness::with(BrokerConfig {
        max_queue_patterns: 1,
        ..BrokerConfig::default()
    });
    h.connect(1);
    assert!(refusal(&h.send(1, "SUBSCRIBE\nid:p\ndestination:/queue/jobs.*\n\n")).is_none());
    let actions = h.send(1, "SUBSCRIBE\nid:q\ndestination:/queue/mail.*\n\n");
    assert_eq!(
        refusal(&actions).as_deref(),
        Some("more than 1 queue pattern subscriptions"),
        "{actions:?}"
    );
    for (id, destination) in [("a", "/queue/jobs.one"), ("t", "/topic/news.*")] {
        let frame = format!("SUBSCRIBE\nid:{id}\ndestination:{destination}\n\n");
        let actions = h.send(1, &frame);
        assert!(refusal(&actions).is_none(), "{destination}: {actions:?}");
    }
    assert!(refusal(&h.send(1, "UNSUBSCRIBE\nid:p\n\n")).is_none());
    let actions = h.send(1, "SUBSCRIBE\nid:q\ndestination:/queue/mail.*\n\n");
    assert!(refusal(&actions).is_none(), "room again: {actions:?}");
}

/// The `message` header of an ERROR to session 1 among `actions`, if any.
fn refusal(actions: &[Action]) -> Option<String> {
    frames_to(actions, 1).iter().find_map(|f| {
        f.strip_prefix("ERROR\n")?
            .lines()
            .find_map(|l| l.strip_prefix("message:"))
            .map(str::to_owned)
    })
}

/// With `shard_topics` the broker checks a client's topic SUBSCRIBE and hands it to the
/// transport ([`Action::TopicSubscribe`]) instead of keeping it, answers a SEND to a topic with
/// one [`Action::Publish`] and no MESSAGE of its own, counts the transport's subscriptions
/// against the limit, and keeps queue subscriptions itself as before.
#[test]
fn with_shard_topics_topic_subscriptions_and_publishes_go_to_the_transport() {
    let mut h = Harness::with(BrokerConfig {
        shard_topics: true,
        max_subscriptions: 2,
        ..BrokerConfig::default()
    });
    h.connect(1);
    let actions = h.send(
        1,
        "SUBSCRIBE\nid:t\ndestination:/topic/news\nreceipt:r1\n\n",
    );
    let handed = actions.iter().find_map(|a| match a {
        Action::TopicSubscribe { to, id, target, .. } => Some((*to, id.clone(), target.clone())),
        _ => None,
    });
    assert_eq!(
        handed,
        Some((1, "t".to_owned(), "/topic/news".to_owned())),
        "{actions:?}"
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Event(BrokerEvent::Subscribed { session: 1, .. }))));
    assert!(!h.broker.has_subscription(1, "t"), "the broker kept it");

    // A bad destination is still refused by the broker.
    let actions = h.send(1, "SUBSCRIBE\nid:bad\ndestination:/elsewhere/x\n\n");
    let frames = frames_to(&actions, 1);
    assert!(
        frames.first().is_some_and(|f| f.starts_with("ERROR\n")),
        "no ERROR for a SUBSCRIBE outside every prefix: {frames:?}"
    );

    h.connect(2);
    let actions = h.send(2, "SEND\ndestination:/topic/news\n\nhello");
    let published: Vec<&Arc<topics::Published>> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 1, "{actions:?}");
    assert_eq!(published[0].destination, "/topic/news");
    assert_eq!(&published[0].body[..], b"hello");
    assert!(
        frames_to(&actions, 1).is_empty(),
        "the broker delivered itself"
    );

    // The transport says session 2 holds two topic subscriptions: the limit (2) is reached.
    h.broker.set_topic_subscriptions(2, 2);
    let actions = h.send(2, "SUBSCRIBE\nid:q\ndestination:/queue/work\n\n");
    let frames = frames_to(&actions, 2);
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("ERROR\n") && f.contains("more than 2 subscriptions")),
        "{frames:?}"
    );
    // Under it, a queue subscription is the broker's own.
    h.connect(3);
    h.send(3, "SUBSCRIBE\nid:q\ndestination:/queue/work\n\n");
    assert!(h.broker.has_subscription(3, "q"));
    let actions = h.send(2, "SEND\ndestination:/queue/work\n\njob");
    assert_eq!(frames_to(&actions, 3).len(), 1, "{actions:?}");
}

/// A session's address is known from `opened` to `closed`, before and after its CONNECT (the
/// table of addresses hands it over to the session's state at CONNECT).
#[test]
fn a_sessions_address_is_kept_from_open_to_close() {
    let mut h = Harness::new();
    let ip: std::net::IpAddr = "127.0.0.7".parse().expect("an address");
    h.broker.opened(1, ip);
    assert_eq!(h.broker.address(1), Some(ip));
    h.connect(1);
    assert_eq!(h.broker.address(1), Some(ip));
    assert_eq!(h.broker.address(2), None);
    let mut out = Vec::new();
    h.broker.closed(1, &mut out);
    assert_eq!(h.broker.address(1), None);
}
