//! The relay's scenarios, run against any external broker: a Sockeye broker in-process
//! (`tests/relay.rs`, every machine) or a private RabbitMQ (`tests/relay_rabbitmq.rs`, run by
//! `chat/scaleout/relay-tests.sh`). Destinations carry a fresh suffix, so that scenarios
//! sharing one broker do not meet; counts on the broker are taken as differences.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub use crate::common::shutdown;
use crate::common::{eventually, Stomp, TIMEOUT};
use sockeye::server::ServerConfig;
use sockeye_chat::broker::{AppMessage, BrokerEvent};
use sockeye_chat::relay::RelayConfig;
use sockeye_chat::server::{Application, Messaging, StompConfig, StompServer};

/// The external broker, as the scenarios need it.
pub trait Upstream {
    /// How a node reaches it (the right login).
    fn relay_config(&self) -> RelayConfig;
    /// Its STOMP connections now.
    fn connections(&self) -> usize;
    /// Its topic subscriptions now (RabbitMQ: its `stomp-subscription-` consumers).
    fn topic_subscriptions(&self) -> usize;
    /// Stops it; [`Upstream::start`] brings it back on the same port.
    fn stop(&mut self);
    fn start(&mut self);
    /// How long it may take to come back.
    fn restart_wait(&self) -> Duration {
        TIMEOUT
    }
}

pub fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// A fresh name part.
pub fn uid() -> String {
    let mut b = [0u8; 6];
    sockeye::client::os_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Records broker events; `/app/publish` publishes to `/topic/from-app.{suffix}` and
/// `/app/to-user/{name}` to the user's `/queue/inbox`, through the messaging template.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<BrokerEvent>>,
}

impl Application for Recorder {
    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging) {
        if let Some(suffix) = message.destination.strip_prefix("/publish/") {
            messaging.publish(
                &format!("/topic/from-app.{suffix}"),
                Vec::new(),
                message.body.clone(),
            );
        }
        if let Some(user) = message.destination.strip_prefix("/to-user/") {
            messaging.publish_to_user(user, "/queue/inbox", Vec::new(), message.body.clone());
        }
    }

    fn on_event(&self, event: &BrokerEvent, _messaging: &Messaging) {
        self.events.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    pub fn availability(&self) -> Vec<bool> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                BrokerEvent::Relay { available } => Some(*available),
                _ => None,
            })
            .collect()
    }
}

pub struct Node {
    pub server: StompServer,
    pub app: Arc<Recorder>,
}

impl Node {
    pub fn start(relay: RelayConfig) -> Node {
        let app = Arc::new(Recorder::default());
        let mut stomp = StompConfig {
            relay: Some(relay),
            ..StompConfig::default()
        };
        // A CONNECT's login names its user (for /user destinations), as sockeye-chat's default.
        stomp.broker.authenticator = Some(std::sync::Arc::new(
            |req: &sockeye_chat::broker::ConnectRequest<'_>| Ok(req.login.map(str::to_owned)),
        ));
        let server = StompServer::start(
            any(),
            Some(any()),
            server_config(),
            stomp,
            Box::new(app.clone()),
        )
        .expect("node starts");
        Node { server, app }
    }

    pub fn tcp(&self) -> SocketAddr {
        self.server.tcp_addr().unwrap()
    }

    pub fn client(&self, name: &str, login: Option<&str>) -> Stomp {
        Stomp::connect(self.tcp(), name, login)
    }

    pub fn available(&self) -> bool {
        self.server.hub().relay().is_some_and(|r| r.is_available())
    }

    pub fn wait_available(&self, what: &str) {
        eventually(TIMEOUT, what, || self.available());
    }

    pub fn stop(self) {
        shutdown(self.server);
    }
}

/// Two nodes with pools of 2, both connected.
pub fn two_nodes(up: &dyn Upstream) -> (Node, Node) {
    let config = RelayConfig {
        pool: 2,
        ..up.relay_config()
    };
    let a = Node::start(config.clone());
    let b = Node::start(config);
    a.wait_available("node A's relay connected");
    b.wait_available("node B's relay connected");
    (a, b)
}

pub fn topics_cross_nodes_through_one_upstream_subscription_per_node(up: &mut dyn Upstream) {
    let (conns, topics) = (up.connections(), up.topic_subscriptions());
    let (a, b) = two_nodes(up);
    assert_eq!(a.app.availability(), [true]);
    let family = format!("/topic/room-{}", uid());
    let room = format!("{family}.main");
    let mut subs: Vec<Stomp> = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = node.client(&format!("sub{i}"), None);
        c.subscribe("s", &room);
        subs.push(c);
    }
    // A pattern subscription is an upstream subscription of its own.
    let mut wild = a.client("wild", None);
    wild.subscribe("w", &format!("{family}.*"));
    // Two pools of 2 connections, and per node one subscription per target.
    eventually(Duration::from_secs(30), "the broker's counts", || {
        (up.connections(), up.topic_subscriptions()) == (conns + 4, topics + 3)
    });
    let mut publisher = b.client("publisher", None);
    for n in 0..20 {
        let receipt = if n == 19 { "receipt:last\n" } else { "" };
        publisher.send_body(
            &format!("SEND\ndestination:{room}\ncontent-type:text/plain\nx-n:{n}\n{receipt}\n"),
            format!("m{n}").as_bytes(),
        );
    }
    let r = publisher.expect("RECEIPT", "the receipt of the last SEND");
    assert_eq!(r.header("receipt-id"), Some("last"));
    for c in subs.iter_mut().chain(std::iter::once(&mut wild)) {
        for n in 0..20 {
            let f = c.expect("MESSAGE", &format!("message {n}"));
            assert_eq!(f.text(), format!("m{n}"), "{}: in order", c.name);
            assert_eq!(f.header("destination"), Some(room.as_str()));
            assert_eq!(f.header("content-type"), Some("text/plain"));
            assert_eq!(f.header("x-n"), Some(n.to_string().as_str()));
        }
    }
    // The application's publishes cross too.
    let suffix = uid();
    let mut app_sub = a.client("app subscriber", None);
    app_sub.subscribe("app", &format!("/topic/from-app.{suffix}"));
    publisher.send_body(
        &format!("SEND\ndestination:/app/publish/{suffix}\n\n"),
        b"from the app",
    );
    let f = app_sub.expect("MESSAGE", "the application's message");
    assert_eq!(f.text(), "from the app");
    // Leaving: the last local subscriber of a topic takes the node's upstream subscription.
    drop(subs);
    drop(wild);
    drop(app_sub);
    eventually(
        Duration::from_secs(30),
        "upstream subscriptions withdrawn",
        || up.topic_subscriptions() == topics,
    );
    a.stop();
    b.stop();
    eventually(
        Duration::from_secs(30),
        "the nodes' connections closed",
        || up.connections() == conns,
    );
}

pub fn a_client_that_subscribes_and_sends_at_once_gets_its_own_message(up: &mut dyn Upstream) {
    let a = Node::start(up.relay_config());
    a.wait_available("relay connected");
    let base = uid();
    for round in 0..20 {
        let mut c = a.client(&format!("round {round}"), None);
        // No receipt: the SEND waits for the upstream subscription on its own.
        c.send(&format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/fresh.{base}.{round}\n\n\0SEND\ndestination:/topic/fresh.{base}.{round}\n\n"
        ));
        let f = c.expect("MESSAGE", "its own message");
        assert_eq!(
            f.header("destination"),
            Some(format!("/topic/fresh.{base}.{round}").as_str())
        );
    }
    a.stop();
}

pub fn queues_keep_competing_consumers_acks_and_redelivery(up: &mut dyn Upstream) {
    let (a, b) = two_nodes(up);
    let queue = format!("/queue/jobs-{}", uid());
    let mut ca = a.client("consumer A", None);
    let mut cb = b.client("consumer B", None);
    for c in [&mut ca, &mut cb] {
        c.send(&format!(
            "SUBSCRIBE\nid:q\ndestination:{queue}\nack:client-individual\nreceipt:r\n\n"
        ));
        c.expect("RECEIPT", "queue subscription");
    }
    let mut producer = a.client("producer", None);
    for n in 0..10 {
        producer.send_body(
            &format!("SEND\ndestination:{queue}\n\n"),
            format!("job {n}").as_bytes(),
        );
    }
    producer.send(&format!("SEND\ndestination:{queue}\nreceipt:sent\n\n"));
    producer.expect("RECEIPT", "the producer's last receipt");
    // Each job reaches one consumer; A acks what it gets, B holds its own unacknowledged.
    let mut seen = Vec::new();
    let mut held_by_b = Vec::new();
    let until = std::time::Instant::now() + TIMEOUT;
    while seen.len() < 11 {
        assert!(std::time::Instant::now() < until, "jobs seen: {seen:?}");
        if let Some(f) = ca.frame_within("a job at A", Duration::from_millis(200)) {
            assert_eq!(f.command, "MESSAGE");
            let ack = f.header("ack").expect("ack header").to_owned();
            ca.send(&format!("ACK\nid:{ack}\n\n"));
            seen.push(f.text());
        }
        if let Some(f) = cb.frame_within("a job at B", Duration::from_millis(200)) {
            held_by_b.push(f.text());
            seen.push(f.text());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 11, "each job once: {seen:?}");
    assert!(!held_by_b.is_empty(), "both consumers compete: {seen:?}");
    // B goes away holding its jobs: the external broker gives them to A.
    drop(cb);
    let mut again = Vec::new();
    while again.len() < held_by_b.len() {
        let f = ca.expect("MESSAGE", "a job B left unacknowledged");
        let ack = f.header("ack").expect("ack header").to_owned();
        ca.send(&format!("ACK\nid:{ack}\n\n"));
        again.push(f.text());
    }
    again.sort();
    held_by_b.sort();
    assert_eq!(again, held_by_b);
    // A NACK gives the job back (to A again: the only consumer).
    producer.send_body(&format!("SEND\ndestination:{queue}\n\n"), b"nacked");
    let f = ca.expect("MESSAGE", "the job to NACK");
    ca.send(&format!("NACK\nid:{}\n\n", f.header("ack").unwrap()));
    let f = ca.expect("MESSAGE", "the NACKed job again");
    assert_eq!(f.text(), "nacked");
    // A cumulative (client) subscription settles everything up to the message it names.
    let cumulative = format!("/queue/cumulative-{}", uid());
    let mut cc = b.client("cumulative consumer", None);
    cc.send(&format!(
        "SUBSCRIBE\nid:c\ndestination:{cumulative}\nack:client\nreceipt:r\n\n"
    ));
    cc.expect("RECEIPT", "the cumulative subscription");
    for n in 0..5 {
        producer.send_body(
            &format!("SEND\ndestination:{cumulative}\n\n"),
            format!("c{n}").as_bytes(),
        );
    }
    let mut last = None;
    for n in 0..5 {
        let f = cc.expect("MESSAGE", "a cumulative job");
        assert_eq!(f.text(), format!("c{n}"));
        last = f.header("ack").map(str::to_owned);
    }
    cc.send(&format!("ACK\nid:{}\nreceipt:all\n\n", last.unwrap()));
    cc.expect("RECEIPT", "the cumulative ACK");
    ca.send(&format!(
        "ACK\nid:{}\nreceipt:done\n\n",
        f.header("ack").unwrap()
    ));
    ca.expect("RECEIPT", "the ACK's receipt");
    // Nothing comes back: every job was settled exactly once (a second settlement of one
    // would have cost the shared connection, and redelivered the others).
    drop(cc);
    let mut cc = a.client("cumulative again", None);
    cc.send(&format!(
        "SUBSCRIBE\nid:c\ndestination:{cumulative}\nack:client\n\n"
    ));
    cc.quiet(Duration::from_millis(500), "all cumulative jobs settled");
    ca.quiet(Duration::from_millis(300), "everything acknowledged");
    assert!(
        a.available() && b.available(),
        "the shared connections survived"
    );
    a.stop();
    b.stop();
}

pub fn transactions_are_the_external_brokers(up: &mut dyn Upstream) {
    let (a, b) = two_nodes(up);
    let topic = format!("/topic/tx.{}", uid());
    let mut sub = b.client("subscriber", None);
    sub.subscribe("s", &topic);
    let mut c = a.client("sender", None);
    c.send("BEGIN\ntransaction:t1\nreceipt:b\n\n");
    assert_eq!(c.expect("RECEIPT", "BEGIN").header("receipt-id"), Some("b"));
    for n in 0..3 {
        c.send_body(
            &format!("SEND\ndestination:{topic}\ntransaction:t1\n\n"),
            format!("in t1 {n}").as_bytes(),
        );
    }
    c.send(&format!(
        "BEGIN\ntransaction:t2\n\n\0SEND\ndestination:{topic}\ntransaction:t2\n\naborted\0ABORT\ntransaction:t2\n\n"
    ));
    sub.quiet(Duration::from_millis(300), "nothing before COMMIT");
    c.send("COMMIT\ntransaction:t1\nreceipt:c\n\n");
    assert_eq!(
        c.expect("RECEIPT", "COMMIT").header("receipt-id"),
        Some("c")
    );
    for n in 0..3 {
        assert_eq!(
            sub.expect("MESSAGE", "a committed message").text(),
            format!("in t1 {n}")
        );
    }
    sub.quiet(
        Duration::from_millis(300),
        "the aborted message never comes",
    );
    // A session that goes with a transaction open leaves nothing behind upstream.
    c.send_body(
        &format!("BEGIN\ntransaction:t3\n\n\0SEND\ndestination:{topic}\ntransaction:t3\n\n"),
        b"lost",
    );
    drop(c);
    sub.quiet(
        Duration::from_millis(300),
        "an abandoned transaction is aborted",
    );
    a.stop();
    b.stop();
}

pub fn user_destinations_reach_every_session_of_the_user_on_every_node(up: &mut dyn Upstream) {
    let topics = up.topic_subscriptions();
    let (a, b) = two_nodes(up);
    let (ann, bob) = (format!("ann-{}", uid()), format!("bob-{}", uid()));
    let mut ann_a = a.client("ann on A", Some(&ann));
    let mut ann_b = b.client("ann on B", Some(&ann));
    let mut bob_b = b.client("bob on B", Some(&bob));
    for c in [&mut ann_a, &mut ann_b, &mut bob_b] {
        c.subscribe("inbox", "/user/queue/inbox");
    }
    // One upstream subscription per node for ann, one for bob on B.
    eventually(
        Duration::from_secs(30),
        "user subscriptions upstream",
        || up.topic_subscriptions() == topics + 3,
    );
    bob_b.send_body(
        &format!("SEND\ndestination:/user/{ann}/queue/inbox\nreceipt:r\n\n"),
        b"hi ann",
    );
    bob_b.expect("RECEIPT", "the SEND's receipt");
    for c in [&mut ann_a, &mut ann_b] {
        let f = c.expect("MESSAGE", "bob's message");
        assert_eq!(f.text(), "hi ann");
        assert_eq!(f.header("destination"), Some("/user/queue/inbox"));
    }
    bob_b.quiet(Duration::from_millis(200), "not for bob");
    // The application's convertAndSendToUser on node A reaches bob on B.
    ann_a.send_body(
        &format!("SEND\ndestination:/app/to-user/{bob}\n\n"),
        b"from the app",
    );
    assert_eq!(
        bob_b.expect("MESSAGE", "the app's message").text(),
        "from the app"
    );
    a.stop();
    b.stop();
}

pub fn the_applications_own_subscriptions_hear_every_node(up: &mut dyn Upstream) {
    let (a, b) = two_nodes(up);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let messaging = a.server.hub().messaging();
    let base = format!("/topic/cluster-{}", uid());
    messaging
        .subscribe(&format!("{base}.*"), move |d, _| {
            let _ = tx.lock().unwrap().send((
                d.destination.clone(),
                d.header("x-k").map(str::to_owned),
                d.body.clone(),
            ));
        })
        .expect("the application subscribes");
    let refused = messaging.subscribe("/app/nope", |_, _| {});
    assert!(refused.is_err(), "{refused:?}");
    // Its subscription is confirmed upstream before anyone publishes: subscribe a client to
    // the same pattern on the same node and wait for its receipt.
    let mut probe = a.client("probe", None);
    probe.subscribe("p", &format!("{base}.*"));
    b.server.hub().messaging().publish(
        &format!("{base}.rooms"),
        vec![("x-k".into(), "v".into())],
        "from B's app",
    );
    let (dest, k, body) = rx
        .recv_timeout(TIMEOUT)
        .expect("B's publish at A's listener");
    assert_eq!(
        (dest, k.as_deref(), &body[..]),
        (format!("{base}.rooms"), Some("v"), &b"from B's app"[..])
    );
    let mut c = b.client("client on B", None);
    c.send_body(
        &format!("SEND\ndestination:{base}.chat\n\n"),
        b"from a client",
    );
    let (dest, _, body) = rx
        .recv_timeout(TIMEOUT)
        .expect("a client's message at A's listener");
    assert_eq!(
        (dest, &body[..]),
        (format!("{base}.chat"), &b"from a client"[..])
    );
    a.stop();
    b.stop();
}

pub fn the_external_broker_going_away_and_coming_back(up: &mut dyn Upstream) {
    let (a, b) = two_nodes(up);
    let topic = format!("/topic/news.{}", uid());
    let queue = format!("/queue/work-{}", uid());
    let mut sub = b.client("subscriber on B", None);
    sub.subscribe("s", &topic);
    let mut queue_sub = b.client("queue subscriber on B", None);
    queue_sub.subscribe("q", &queue);
    let mut publisher = a.client("publisher on A", None);
    publisher.send_body(
        &format!("SEND\ndestination:{topic}\nreceipt:1\n\n"),
        b"before",
    );
    publisher.expect("RECEIPT", "the first SEND's receipt");
    assert_eq!(sub.expect("MESSAGE", "the first message").text(), "before");

    up.stop();
    eventually(TIMEOUT, "A sees the broker gone", || !a.available());
    assert_eq!(a.app.availability(), [true, false]);
    // A SEND now is refused, never dropped in silence.
    publisher.send_body(
        &format!("SEND\ndestination:{topic}\nreceipt:2\n\n"),
        b"during",
    );
    let e = publisher.expect("ERROR", "the refusal");
    assert_eq!(e.header("message"), Some("broker unavailable"));
    assert_eq!(e.header("receipt-id"), Some("2"));
    publisher.closed("after the ERROR");

    // The broker comes back on the same port: the relay reconnects and restores the
    // subscriptions; clients did nothing.
    up.start();
    let wait = up.restart_wait();
    eventually(wait, "A reconnected", || a.available());
    eventually(wait, "B reconnected", || b.available());
    assert_eq!(a.app.availability(), [true, false, true]);
    let mut publisher = a.client("publisher again", None);
    publisher.send_body(
        &format!("SEND\ndestination:{topic}\nreceipt:3\n\n"),
        b"after",
    );
    publisher.expect("RECEIPT", "the SEND's receipt after the return");
    assert_eq!(
        sub.expect("MESSAGE", "a message after the return").text(),
        "after"
    );
    publisher.send_body(
        &format!("SEND\ndestination:{queue}\nreceipt:4\n\n"),
        b"queued after",
    );
    publisher.expect("RECEIPT", "the queue SEND's receipt");
    assert_eq!(
        queue_sub
            .expect("MESSAGE", "a queue message after the return")
            .text(),
        "queued after"
    );
    let stats = a.server.hub().relay().unwrap().stats();
    assert!(stats.disconnects >= 2 && stats.connects >= 4, "{stats:?}");
    assert!(stats.refused >= 1, "{stats:?}");
    a.stop();
    b.stop();
}

pub fn a_broker_that_refuses_the_relay_leaves_it_unavailable_and_sends_refused(
    up: &mut dyn Upstream,
) {
    let mut wrong = up.relay_config();
    wrong.passcode = "wrong".into();
    let a = Node::start(wrong);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a.available(), "not available with a refused login");
    let mut c = a.client("client", None);
    c.send_body("SEND\ndestination:/topic/x\n\n", b"lost?");
    let e = c.expect("ERROR", "the refusal");
    assert_eq!(e.header("message"), Some("broker unavailable"));
    // The right passcode connects.
    let b = Node::start(up.relay_config());
    b.wait_available("connected with the right passcode");
    a.stop();
    b.stop();
}
