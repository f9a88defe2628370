//! The broker relay on real sockets: two nodes relaying to a third Sockeye broker over STOMP
//! 1.2 (the same relay talks to RabbitMQ in `chat/scaleout/`; here the external broker is one
//! that builds with the workspace, so these run on any machine).
//!
//! What is shown: topics cross nodes with one upstream subscription per node and topic, and
//! the pool's connections are all the external broker sees; a client that subscribes and
//! sends at once gets its own message; receipts come after the external broker's; queues
//! keep competing consumers, ACK, NACK and redelivery; transactions; `/user` destinations
//! across nodes; the external broker going away (SENDs refused with an ERROR, availability
//! events) and coming back (subscriptions restored without clients doing anything); a broker
//! that refuses the relay's login; one that stops sending heart-beats.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{eventually, Stomp, TIMEOUT};
use sockeye::server::ServerConfig;
use sockeye_chat::broker::{AppMessage, BrokerEvent};
use sockeye_chat::relay::{Dialect, RelayConfig};
use sockeye_chat::server::{Application, Messaging, NoApplication, StompConfig, StompServer};

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server_config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// The external broker: a plain Sockeye STOMP server (on `tcp`, or any port).
fn upstream_at(tcp: SocketAddr, users: bool) -> StompServer {
    let mut stomp = StompConfig::default();
    if users {
        stomp.broker.authenticator = Some(Box::new(|req| match (req.login, req.passcode) {
            (Some("relay"), Some("right")) => Ok(Some("relay".into())),
            _ => Err("bad login or passcode".into()),
        }));
    }
    StompServer::start(
        any(),
        Some(tcp),
        server_config(),
        stomp,
        Box::new(NoApplication),
    )
    .expect("upstream starts")
}

fn relay_config(upstream: SocketAddr) -> RelayConfig {
    RelayConfig {
        pool: 2,
        dialect: Dialect::Sockeye,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..RelayConfig::new(upstream.ip().to_string(), upstream.port())
    }
}

/// Records broker events; `/app/echo` answers through the messaging template to the user.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<BrokerEvent>>,
}

impl Application for Recorder {
    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging) {
        if message.destination == "/publish" {
            messaging.publish("/topic/from-app", Vec::new(), message.body.clone());
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
    fn availability(&self) -> Vec<bool> {
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

struct Node {
    server: StompServer,
    app: Arc<Recorder>,
}

impl Node {
    fn start(relay: RelayConfig) -> Node {
        let app = Arc::new(Recorder::default());
        let mut stomp = StompConfig {
            relay: Some(relay),
            ..StompConfig::default()
        };
        // A CONNECT's login names its user (for /user destinations), as sockeye-chat's default.
        stomp.broker.authenticator = Some(Box::new(|req| Ok(req.login.map(str::to_owned))));
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

    fn tcp(&self) -> SocketAddr {
        self.server.tcp_addr().unwrap()
    }

    fn client(&self, name: &str, login: Option<&str>) -> Stomp {
        Stomp::connect(self.tcp(), name, login)
    }

    fn available(&self) -> bool {
        self.server.hub().relay().is_some_and(|r| r.is_available())
    }

    fn wait_available(&self, what: &str) {
        eventually(TIMEOUT, what, || self.available());
    }
}

/// Shuts a server down on a helper thread, waiting at most 10 s.
fn shutdown(server: StompServer) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.shutdown());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("StompServer::shutdown returned within 10 s")
        .expect("clean shutdown");
}

fn upstream_counts(upstream: &StompServer) -> (usize, usize) {
    upstream
        .hub()
        .messaging()
        .with_broker(|b| (b.session_count(), b.subscription_count()))
}

#[test]
fn topics_cross_nodes_through_one_upstream_subscription_per_node() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    let b = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("node A's relay connected");
    b.wait_available("node B's relay connected");
    assert_eq!(a.app.availability(), [true]);

    let mut subs: Vec<Stomp> = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = node.client(&format!("sub{i}"), None);
        c.subscribe("s", "/topic/room");
        subs.push(c);
    }
    // A pattern subscription is an upstream subscription of its own.
    let mut wild = a.client("wild", None);
    wild.subscribe("w", "/topic/*");
    // Two pools of 2 connections, and per node one subscription per target.
    eventually(TIMEOUT, "the upstream's counts", || {
        upstream_counts(&upstream) == (4, 3)
    });

    let mut publisher = b.client("publisher", None);
    for n in 0..20 {
        let receipt = if n == 19 { "receipt:last\n" } else { "" };
        publisher.send_body(
            &format!(
                "SEND\ndestination:/topic/room\ncontent-type:text/plain\nx-n:{n}\n{receipt}\n"
            ),
            format!("m{n}").as_bytes(),
        );
    }
    let r = publisher.expect("RECEIPT", "the receipt of the last SEND");
    assert_eq!(r.header("receipt-id"), Some("last"));
    for c in subs.iter_mut().chain(std::iter::once(&mut wild)) {
        for n in 0..20 {
            let f = c.expect("MESSAGE", &format!("message {n}"));
            assert_eq!(f.text(), format!("m{n}"), "{}: in order", c.name);
            assert_eq!(f.header("destination"), Some("/topic/room"));
            assert_eq!(f.header("content-type"), Some("text/plain"));
            assert_eq!(f.header("x-n"), Some(n.to_string().as_str()));
        }
    }
    // The application's publishes cross too.
    publisher.send_body("SEND\ndestination:/app/publish\n\n", b"from the app");
    let f = wild.expect("MESSAGE", "the application's message");
    assert_eq!(
        (f.header("destination"), f.text().as_str()),
        (Some("/topic/from-app"), "from the app")
    );

    // Leaving: the last local subscriber of a topic takes the node's upstream subscription.
    drop(subs);
    drop(wild);
    eventually(TIMEOUT, "upstream subscriptions withdrawn", || {
        upstream_counts(&upstream).1 == 0
    });
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn a_client_that_subscribes_and_sends_at_once_gets_its_own_message() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("relay connected");
    for round in 0..20 {
        let mut c = a.client(&format!("round {round}"), None);
        // No receipt: the SEND waits for the upstream subscription on its own.
        c.send(&format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/fresh.{round}\n\n\0SEND\ndestination:/topic/fresh.{round}\n\n"
        ));
        let f = c.expect("MESSAGE", "its own message");
        assert_eq!(
            f.header("destination"),
            Some(format!("/topic/fresh.{round}").as_str())
        );
    }
    shutdown(a.server);
    shutdown(upstream);
}

#[test]
fn queues_keep_competing_consumers_acks_and_redelivery() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    let b = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("A connected");
    b.wait_available("B connected");
    let mut ca = a.client("consumer A", None);
    let mut cb = b.client("consumer B", None);
    for c in [&mut ca, &mut cb] {
        c.send("SUBSCRIBE\nid:q\ndestination:/queue/jobs\nack:client-individual\nreceipt:r\n\n");
        c.expect("RECEIPT", "queue subscription");
    }
    let mut producer = a.client("producer", None);
    for n in 0..10 {
        producer.send_body(
            "SEND\ndestination:/queue/jobs\n\n",
            format!("job {n}").as_bytes(),
        );
    }
    producer.send("SEND\ndestination:/queue/jobs\nreceipt:sent\n\n");
    producer.expect("RECEIPT", "the producer's last receipt");
    // Each job reaches one consumer; A acks what it gets, B holds its own unacknowledged.
    let mut seen = Vec::new();
    let mut held_by_b = Vec::new();
    while seen.len() < 11 {
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
    producer.send_body("SEND\ndestination:/queue/jobs\n\n", b"nacked");
    let f = ca.expect("MESSAGE", "the job to NACK");
    ca.send(&format!("NACK\nid:{}\n\n", f.header("ack").unwrap()));
    let f = ca.expect("MESSAGE", "the NACKed job again");
    assert_eq!(f.text(), "nacked");
    ca.send(&format!(
        "ACK\nid:{}\nreceipt:done\n\n",
        f.header("ack").unwrap()
    ));
    ca.expect("RECEIPT", "the ACK's receipt");
    ca.quiet(Duration::from_millis(300), "everything acknowledged");
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn transactions_are_the_external_brokers() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    let b = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("A connected");
    b.wait_available("B connected");
    let mut sub = b.client("subscriber", None);
    sub.subscribe("s", "/topic/tx");
    let mut c = a.client("sender", None);
    c.send("BEGIN\ntransaction:t1\nreceipt:b\n\n");
    assert_eq!(c.expect("RECEIPT", "BEGIN").header("receipt-id"), Some("b"));
    for n in 0..3 {
        c.send_body(
            "SEND\ndestination:/topic/tx\ntransaction:t1\n\n",
            format!("in t1 {n}").as_bytes(),
        );
    }
    c.send("BEGIN\ntransaction:t2\n\n\0SEND\ndestination:/topic/tx\ntransaction:t2\n\naborted\0ABORT\ntransaction:t2\n\n");
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
        "BEGIN\ntransaction:t3\n\n\0SEND\ndestination:/topic/tx\ntransaction:t3\n\n",
        b"lost",
    );
    drop(c);
    sub.quiet(
        Duration::from_millis(300),
        "an abandoned transaction is aborted",
    );
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn user_destinations_reach_every_session_of_the_user_on_every_node() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    let b = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("A connected");
    b.wait_available("B connected");
    let mut ann_a = a.client("ann on A", Some("ann"));
    let mut ann_b = b.client("ann on B", Some("ann"));
    let mut bob = b.client("bob on B", Some("bob"));
    for c in [&mut ann_a, &mut ann_b, &mut bob] {
        c.subscribe("inbox", "/user/queue/inbox");
    }
    // One upstream subscription per node for ann, one for bob on B.
    eventually(TIMEOUT, "user subscriptions upstream", || {
        upstream_counts(&upstream).1 == 3
    });
    bob.send_body(
        "SEND\ndestination:/user/ann/queue/inbox\nreceipt:r\n\n",
        b"hi ann",
    );
    bob.expect("RECEIPT", "the SEND's receipt");
    for c in [&mut ann_a, &mut ann_b] {
        let f = c.expect("MESSAGE", "bob's message");
        assert_eq!(f.text(), "hi ann");
        assert_eq!(f.header("destination"), Some("/user/queue/inbox"));
    }
    bob.quiet(Duration::from_millis(200), "not for bob");
    // The application's convertAndSendToUser on node A reaches bob on B.
    ann_a.send_body("SEND\ndestination:/app/to-user/bob\n\n", b"from the app");
    assert_eq!(
        bob.expect("MESSAGE", "the app's message").text(),
        "from the app"
    );
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn the_external_broker_going_away_and_coming_back() {
    let upstream = upstream_at(any(), false);
    let port = upstream.tcp_addr().unwrap();
    let a = Node::start(relay_config(port));
    let b = Node::start(relay_config(port));
    a.wait_available("A connected");
    b.wait_available("B connected");
    let mut sub = b.client("subscriber on B", None);
    sub.subscribe("s", "/topic/news");
    let mut queue_sub = b.client("queue subscriber on B", None);
    queue_sub.subscribe("q", "/queue/work");
    let mut publisher = a.client("publisher on A", None);
    publisher.send_body("SEND\ndestination:/topic/news\nreceipt:1\n\n", b"before");
    publisher.expect("RECEIPT", "the first SEND's receipt");
    assert_eq!(sub.expect("MESSAGE", "the first message").text(), "before");

    shutdown(upstream);
    eventually(TIMEOUT, "A sees the broker gone", || !a.available());
    assert_eq!(a.app.availability(), [true, false]);
    // A SEND now is refused, never dropped in silence.
    publisher.send_body("SEND\ndestination:/topic/news\nreceipt:2\n\n", b"during");
    let e = publisher.expect("ERROR", "the refusal");
    assert_eq!(e.header("message"), Some("broker unavailable"));
    assert_eq!(e.header("receipt-id"), Some("2"));
    publisher.closed("after the ERROR");

    // The broker comes back on the same port: the relay reconnects and restores the
    // subscriptions; clients did nothing.
    let upstream = upstream_at(port, false);
    a.wait_available("A reconnected");
    b.wait_available("B reconnected");
    assert_eq!(a.app.availability(), [true, false, true]);
    let mut publisher = a.client("publisher again", None);
    publisher.send_body("SEND\ndestination:/topic/news\nreceipt:3\n\n", b"after");
    publisher.expect("RECEIPT", "the SEND's receipt after the return");
    assert_eq!(
        sub.expect("MESSAGE", "a message after the return").text(),
        "after"
    );
    publisher.send_body(
        "SEND\ndestination:/queue/work\nreceipt:4\n\n",
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
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn a_broker_that_refuses_the_relay_leaves_it_unavailable_and_sends_refused() {
    let upstream = upstream_at(any(), true);
    let mut wrong = relay_config(upstream.tcp_addr().unwrap());
    wrong.login = "relay".into();
    wrong.passcode = "wrong".into();
    let a = Node::start(wrong);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a.available(), "not available with a refused login");
    let mut c = a.client("client", None);
    c.send_body("SEND\ndestination:/topic/x\n\n", b"lost?");
    let e = c.expect("ERROR", "the refusal");
    assert_eq!(e.header("message"), Some("broker unavailable"));
    // The right passcode connects.
    let mut right = relay_config(upstream.tcp_addr().unwrap());
    right.login = "relay".into();
    right.passcode = "right".into();
    let b = Node::start(right);
    b.wait_available("connected with the right passcode");
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}

#[test]
fn a_broker_that_falls_silent_is_left_and_called_again() {
    // A broker that answers CONNECT promising heart-beats every 100 ms, then says nothing.
    let listener = TcpListener::bind(any()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            while !got.contains(&0) {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let _ = s.write_all(b"CONNECTED\nversion:1.2\nheart-beat:100,0\n\n\0");
            let _ = tx.send(std::time::Instant::now());
            // Hold the socket open, silent, until the relay leaves.
            let mut rest = [0u8; 64];
            let mut left = false;
            while !left {
                match s.read(&mut rest) {
                    Ok(0) => left = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => left = true,
                }
            }
        }
    });
    let config = RelayConfig {
        pool: 1,
        heart_beat: (0, 100),
        ..relay_config(addr)
    };
    let a = Node::start(config);
    let first = rx.recv_timeout(TIMEOUT).expect("the relay connected");
    let second = rx
        .recv_timeout(TIMEOUT)
        .expect("the relay left the silent broker and connected again");
    // Silence limit: 100 ms × 1.5 + 1 s.
    let gap = second - first;
    assert!(gap >= Duration::from_millis(1100), "left too soon: {gap:?}");
    let stats = a.server.hub().relay().unwrap().stats();
    assert!(stats.disconnects >= 1, "{stats:?}");
    shutdown(a.server);
}

#[test]
fn the_applications_own_subscriptions_hear_every_node() {
    let upstream = upstream_at(any(), false);
    let a = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    let b = Node::start(relay_config(upstream.tcp_addr().unwrap()));
    a.wait_available("A connected");
    b.wait_available("B connected");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let messaging = a.server.hub().messaging();
    messaging
        .subscribe("/topic/cluster.*", move |d, _| {
            let _ = tx.lock().unwrap().send((
                d.destination.clone(),
                d.header("x-k").map(str::to_owned),
                d.body.clone(),
            ));
        })
        .expect("the application subscribes");
    let refused = messaging.subscribe("/app/nope", |_, _| {});
    assert!(refused.is_err(), "{refused:?}");
    // B's application and B's clients publish; A's application hears both.
    eventually(TIMEOUT, "A's subscription upstream", || {
        upstream_counts(&upstream).1 == 1
    });
    b.server.hub().messaging().publish(
        "/topic/cluster.rooms",
        vec![("x-k".into(), "v".into())],
        "from B's app",
    );
    let (dest, k, body) = rx
        .recv_timeout(TIMEOUT)
        .expect("B's publish at A's listener");
    assert_eq!(
        (dest.as_str(), k.as_deref(), &body[..]),
        ("/topic/cluster.rooms", Some("v"), &b"from B's app"[..])
    );
    let mut c = b.client("client on B", None);
    c.send_body(
        "SEND\ndestination:/topic/cluster.chat\n\n",
        b"from a client",
    );
    let (dest, _, body) = rx
        .recv_timeout(TIMEOUT)
        .expect("a client's message at A's listener");
    assert_eq!(
        (dest.as_str(), &body[..]),
        ("/topic/cluster.chat", &b"from a client"[..])
    );
    shutdown(a.server);
    shutdown(b.server);
    shutdown(upstream);
}
