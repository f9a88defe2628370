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
mod scenarios;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use common::TIMEOUT;
use scenarios::{any, server_config, Node, Upstream};
use sockeye_chat::relay::{Dialect, RelayConfig};
use sockeye_chat::server::{NoApplication, StompConfig, StompServer};

/// The external broker: a plain Sockeye STOMP server that wants the login relay/right.
struct SockeyeUpstream {
    server: Option<StompServer>,
    tcp: SocketAddr,
}

impl SockeyeUpstream {
    fn start_at(tcp: SocketAddr) -> StompServer {
        let mut stomp = StompConfig::default();
        stomp.broker.authenticator = Some(std::sync::Arc::new(
            |req: &sockeye_chat::broker::ConnectRequest<'_>| match (req.login, req.passcode) {
                (Some("relay"), Some("right")) => Ok(Some("relay".into())),
                _ => Err("bad login or passcode".into()),
            },
        ));
        StompServer::start(
            any(),
            Some(tcp),
            server_config(),
            stomp,
            Box::new(NoApplication),
        )
        .expect("upstream starts")
    }

    fn new() -> Self {
        let server = Self::start_at(any());
        let tcp = server.tcp_addr().unwrap();
        SockeyeUpstream {
            server: Some(server),
            tcp,
        }
    }

    fn counts(&self) -> (usize, usize) {
        self.server.as_ref().map_or((0, 0), |s| {
            let hub = s.hub();
            let sessions = hub.messaging().with_broker(|b| b.session_count());
            (sessions, hub.subscription_count())
        })
    }
}

impl Upstream for SockeyeUpstream {
    fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            login: "relay".into(),
            passcode: "right".into(),
            dialect: Dialect::Sockeye,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(400),
            ..RelayConfig::new(self.tcp.ip().to_string(), self.tcp.port())
        }
    }

    fn connections(&self) -> usize {
        self.counts().0
    }

    fn topic_subscriptions(&self) -> usize {
        self.counts().1
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            scenarios::shutdown(server);
        }
    }

    fn start(&mut self) {
        self.server = Some(Self::start_at(self.tcp));
    }
}

impl Drop for SockeyeUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

macro_rules! scenario {
    ($name:ident) => {
        #[test]
        fn $name() {
            let mut up = SockeyeUpstream::new();
            scenarios::$name(&mut up);
        }
    };
}

scenario!(topics_cross_nodes_through_one_upstream_subscription_per_node);
scenario!(a_client_that_subscribes_and_sends_at_once_gets_its_own_message);
scenario!(queues_keep_competing_consumers_acks_and_redelivery);
scenario!(transactions_are_the_external_brokers);
scenario!(user_destinations_reach_every_session_of_the_user_on_every_node);
scenario!(the_applications_own_subscriptions_hear_every_node);
scenario!(the_external_broker_going_away_and_coming_back);
scenario!(a_broker_that_refuses_the_relay_leaves_it_unavailable_and_sends_refused);

#[test]
fn what_a_node_publishes_just_before_it_stops_still_goes_out() {
    let up = SockeyeUpstream::new();
    let (a, b) = scenarios::two_nodes(&up);
    let mut sub = b.client("subscriber on B", None);
    sub.subscribe("s", "/topic/last.words");
    let messaging = a.server.hub().messaging();
    for n in 0..2000 {
        messaging.publish("/topic/last.words", Vec::new(), format!("m{n}"));
    }
    a.stop(); // the relay stops with the server
    for n in 0..2000 {
        let f = sub.expect("MESSAGE", &format!("message {n} of the stopping node"));
        assert_eq!(f.text(), format!("m{n}"));
    }
    b.stop();
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
        dialect: Dialect::Sockeye,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..RelayConfig::new("127.0.0.1", addr.port())
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
    a.stop();
}

/// What a scripted broker saw on one of its connections.
#[derive(Debug)]
enum Seen {
    /// A frame: its connection, command and headers, and when it came.
    Frame(usize, String, Vec<(String, String)>, std::time::Instant),
    /// The broker answered an UNSUBSCRIBE's receipt on connection `.0`.
    Confirmed(usize, std::time::Instant),
    /// The connection closed.
    Closed(usize, std::time::Instant),
}

/// What the scripted broker does with an UNSUBSCRIBE that asks for a receipt.
#[derive(Clone, Copy, Debug)]
enum OnUnsubscribe {
    /// Answers the receipt this late.
    ConfirmAfter(Duration),
    /// Never answers.
    Ignore,
    /// Closes the connection instead.
    HangUp,
}

/// A broker that answers CONNECT and every SUBSCRIBE's receipt at once, an UNSUBSCRIBE's as
/// `on_unsubscribe` says, and reports what it sees.
fn scripted_broker(on_unsubscribe: OnUnsubscribe) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind(any()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for n in 0.. {
            let Ok((s, _)) = listener.accept() else {
                return;
            };
            let tx = tx.clone();
            std::thread::spawn(move || serve_scripted(n, s, on_unsubscribe, tx));
        }
    });
    (addr, rx)
}

fn serve_scripted(
    n: usize,
    mut s: std::net::TcpStream,
    on_unsubscribe: OnUnsubscribe,
    tx: mpsc::Sender<Seen>,
) {
    use std::time::Instant;
    // Bounded: a connection the relay forgets ends the thread within a minute.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == 0) {
            let frame: Vec<u8> = buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&frame[..frame.len() - 1]).into_owned();
            let text = text.trim_start_matches(['\n', '\r']);
            let mut lines = text.split('\n');
            let command = lines.next().unwrap_or("").to_owned();
            let headers: Vec<(String, String)> = lines
                .take_while(|l| !l.is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let receipt = headers
                .iter()
                .find(|(k, _)| k == "receipt")
                .map(|(_, v)| v.clone());
            let _ = tx.send(Seen::Frame(n, command.clone(), headers, Instant::now()));
            let answer = match (command.as_str(), receipt) {
                ("CONNECT" | "STOMP", _) => {
                    Some("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0".to_owned())
                }
                ("UNSUBSCRIBE", Some(r)) => match on_unsubscribe {
                    OnUnsubscribe::ConfirmAfter(delay) => {
                        std::thread::sleep(delay);
                        let _ = tx.send(Seen::Confirmed(n, Instant::now()));
                        Some(format!("RECEIPT\nreceipt-id:{r}\n\n\0"))
                    }
                    OnUnsubscribe::Ignore => None,
                    OnUnsubscribe::HangUp => {
                        let _ = tx.send(Seen::Closed(n, Instant::now()));
                        return;
                    }
                },
                (_, Some(r)) => Some(format!("RECEIPT\nreceipt-id:{r}\n\n\0")),
                _ => None,
            };
            if let Some(answer) = answer {
                if s.write_all(answer.as_bytes()).is_err() {
                    let _ = tx.send(Seen::Closed(n, Instant::now()));
                    return;
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(n_read) if n_read > 0 => buf.extend_from_slice(&chunk[..n_read]),
            _ => {
                let _ = tx.send(Seen::Closed(n, Instant::now()));
                return;
            }
        }
    }
}

/// A session with a `client` subscription to a queue (on a consumer connection of its own)
/// and an `auto` one to the same queue (on the pool) closes. Its consumer connection, whose
/// closing gives the unacknowledged messages back, must go only after the broker confirmed
/// the pool subscription's UNSUBSCRIBE: otherwise the broker may hand a message given back
/// to the `auto` subscription that is going away, and it is lost (seen with RabbitMQ).
/// Returns (UNSUBSCRIBE received, its receipt sent, consumer connection closed).
fn close_a_session_with_two_queue_subscriptions(
    on_unsubscribe: OnUnsubscribe,
    withdraw_timeout: Duration,
) -> (
    std::time::Instant,
    Option<std::time::Instant>,
    std::time::Instant,
) {
    let (addr, seen) = scripted_broker(on_unsubscribe);
    let config = RelayConfig {
        pool: 1,
        heart_beat: (0, 0),
        dialect: Dialect::Sockeye,
        withdraw_timeout,
        ..RelayConfig::new("127.0.0.1", addr.port())
    };
    let node = Node::start(config);
    node.wait_available("the relay connected to the scripted broker");
    let mut c = node.client("closing session", None);
    c.send("SUBSCRIBE\nid:c1\ndestination:/queue/closing\nack:client\nreceipt:r1\n\n");
    c.expect("RECEIPT", "the receipt of the client-ack SUBSCRIBE");
    c.send("SUBSCRIBE\nid:c2\ndestination:/queue/closing\nreceipt:r2\n\n");
    c.expect("RECEIPT", "the receipt of the auto SUBSCRIBE");
    c.send("DISCONNECT\nreceipt:bye\n\n");
    c.expect("RECEIPT", "the receipt of DISCONNECT");
    // The consumer connection is the one that carried the SUBSCRIBE that acknowledges.
    let mut consumer = None;
    let mut unsubscribed = None;
    let mut confirmed = None;
    let closed;
    loop {
        let event = seen
            .recv_timeout(TIMEOUT)
            .expect("the scripted broker saw the closing session's consumer connection close");
        eprintln!("scripted broker: {event:?}");
        match event {
            Seen::Frame(n, command, headers, _)
                if command == "SUBSCRIBE"
                    && headers.iter().any(|(k, v)| k == "ack" && v != "auto") =>
            {
                consumer = Some(n);
            }
            Seen::Frame(n, command, _, at) if command == "UNSUBSCRIBE" && Some(n) != consumer => {
                unsubscribed = Some(at);
            }
            Seen::Confirmed(n, at) if Some(n) != consumer => confirmed = Some(at),
            Seen::Closed(n, at) if Some(n) == consumer => {
                closed = at;
                break;
            }
            _ => {}
        }
    }
    node.stop();
    let unsubscribed = unsubscribed.expect("the auto subscription was withdrawn on the pool");
    (unsubscribed, confirmed, closed)
}

#[test]
fn a_closing_sessions_consumer_connection_waits_for_its_pool_subscriptions_to_go() {
    let (unsubscribed, confirmed, closed) = close_a_session_with_two_queue_subscriptions(
        OnUnsubscribe::ConfirmAfter(Duration::from_millis(300)),
        TIMEOUT,
    );
    let confirmed = confirmed.expect("the broker confirmed the UNSUBSCRIBE before the close");
    assert!(
        closed >= confirmed,
        "the consumer connection closed {:?} before the pool's UNSUBSCRIBE was confirmed",
        confirmed - closed
    );
    assert!(closed >= unsubscribed + Duration::from_millis(300));
}

#[test]
fn a_closing_sessions_consumer_connection_goes_at_the_deadline_when_no_receipt_comes() {
    let (unsubscribed, confirmed, closed) = close_a_session_with_two_queue_subscriptions(
        OnUnsubscribe::Ignore,
        Duration::from_millis(500),
    );
    assert!(confirmed.is_none());
    let waited = closed - unsubscribed;
    assert!(
        waited >= Duration::from_millis(450) && waited < TIMEOUT,
        "the consumer connection closed {waited:?} after the UNSUBSCRIBE (deadline 500 ms)"
    );
}

#[test]
fn a_closing_sessions_consumer_connection_goes_when_the_pool_connection_is_lost() {
    // The UNSUBSCRIBE's connection is gone, and the subscription with it: no need to wait
    // for the deadline (10 s here).
    let (unsubscribed, confirmed, closed) =
        close_a_session_with_two_queue_subscriptions(OnUnsubscribe::HangUp, TIMEOUT);
    assert!(confirmed.is_none());
    let waited = closed - unsubscribed;
    assert!(
        waited < TIMEOUT / 2,
        "the consumer connection closed {waited:?} after the pool connection was lost"
    );
}
