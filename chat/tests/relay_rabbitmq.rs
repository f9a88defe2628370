//! The relay against a real RabbitMQ (its STOMP plugin), the external broker the relay is
//! built for: the scenarios of `tests/relay.rs`, and the count that proves the multiplexing
//! (a thousand WebSocket clients on ten rooms cost the broker the pool's connections and ten
//! subscriptions), read from `rabbitmqctl`.
//!
//! They need a private RabbitMQ node: `chat/scaleout/relay-tests.sh` starts one
//! (`scripts/rabbitmq.sh`) and runs them, one at a time (they stop and start the broker, and
//! count what it holds), with `SOCKEYE_TEST_RABBIT_STOMP_PORT` set.

mod common;
mod scenarios;

use std::process::Command;
use std::time::{Duration, Instant};

use common::eventually;
use scenarios::{Node, Upstream};
use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent};
use sockeye_chat::relay::{Dialect, RelayConfig};

const NEEDS: &str = "needs RabbitMQ: run chat/scaleout/relay-tests.sh";

fn script() -> String {
    format!("{}/../scripts/rabbitmq.sh", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/rabbitmq.sh ARGS`, bounded by `timeout` (seconds) through coreutils' timeout.
fn rabbit(args: &[&str], secs: u64) -> String {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/rabbitmq.sh {args:?}: {e}"));
    assert!(
        out.status.success(),
        "scripts/rabbitmq.sh {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct RabbitUpstream {
    port: u16,
}

impl RabbitUpstream {
    fn new() -> Self {
        let port = std::env::var("SOCKEYE_TEST_RABBIT_STOMP_PORT")
            .unwrap_or_else(|_| panic!("SOCKEYE_TEST_RABBIT_STOMP_PORT is not set: {NEEDS}"))
            .parse()
            .expect("SOCKEYE_TEST_RABBIT_STOMP_PORT is a port");
        RabbitUpstream { port }
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["ctl", "-s"];
        all.extend_from_slice(args);
        rabbit(&all, 60)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Upstream for RabbitUpstream {
    fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            dialect: Dialect::RabbitMq,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(500),
            ..RelayConfig::new("127.0.0.1", self.port)
        }
    }

    fn connections(&self) -> usize {
        self.lines(&["list_stomp_connections", "protocol"])
            .iter()
            .filter(|l| l.contains("STOMP"))
            .count()
    }

    fn topic_subscriptions(&self) -> usize {
        self.lines(&["list_consumers", "queue_name"])
            .iter()
            .filter(|l| l.starts_with("stomp-subscription-"))
            .count()
    }

    fn stop(&mut self) {
        rabbit(&["stop"], 120);
    }

    fn start(&mut self) {
        rabbit(&["start"], 180);
    }

    fn restart_wait(&self) -> Duration {
        Duration::from_secs(60)
    }
}

macro_rules! scenario {
    ($name:ident) => {
        #[test]
        #[ignore = "needs RabbitMQ: run chat/scaleout/relay-tests.sh"]
        fn $name() {
            let mut up = RabbitUpstream::new();
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

/// A WebSocket STOMP client of the node, every read bounded.
fn ws_client(node: &Node, name: &str) -> Client {
    let config = ClientConfig {
        protocols: vec!["v12.stomp".into()],
        handshake_timeout: Duration::from_secs(10),
        io_timeout: Some(Duration::from_secs(20)),
        ..ClientConfig::default()
    };
    let mut c = Client::connect_with(&format!("ws://{}/ws", node.server.ws_addr()), &config)
        .unwrap_or_else(|e| panic!("{name}: connecting: {e}"));
    c.send_text("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .unwrap();
    c
}

/// The next STOMP frame on a WebSocket client (heart-beats skipped).
fn ws_frame(c: &mut Client, what: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < until, "no {what} within 20 s");
        match c.read() {
            Ok(OwnedEvent::Text(t)) if t.trim().is_empty() => continue,
            Ok(OwnedEvent::Text(t)) => return t,
            Ok(other) => panic!("{what}: unexpected {other:?}"),
            Err(ClientError::Timeout) => panic!("no {what} within 20 s"),
            Err(e) => panic!("reading {what}: {e}"),
        }
    }
}

#[test]
#[ignore = "needs RabbitMQ: run chat/scaleout/relay-tests.sh"]
fn a_thousand_websocket_clients_cost_the_broker_a_pool_and_ten_subscriptions() {
    const CLIENTS: usize = 1000;
    const ROOMS: usize = 10;
    let up = RabbitUpstream::new();
    let (conns, topics) = (up.connections(), up.topic_subscriptions());
    let node = Node::start(up.relay_config()); // the default pool: 4
    node.wait_available("the relay connected");
    let run = scenarios::uid();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| ws_client(&node, &format!("client {i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let f = ws_frame(c, &format!("CONNECTED of client {i}"));
        assert!(f.starts_with("CONNECTED\n"), "{f}");
        c.send_text(&format!(
            "SUBSCRIBE\nid:0\ndestination:/topic/rooms.{run}-{}\nreceipt:r\n\n\0",
            i % ROOMS
        ))
        .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let f = ws_frame(c, &format!("the subscription receipt of client {i}"));
        assert!(f.starts_with("RECEIPT\n"), "{f}");
    }
    // What the broker holds for this node: the pool, and one subscription per room.
    let held = (up.connections() - conns, up.topic_subscriptions() - topics);
    println!(
        "{CLIENTS} WebSocket clients on {ROOMS} rooms: the broker holds {} STOMP connections and {} topic subscriptions for them",
        held.0, held.1
    );
    assert!(held.0 <= 4, "connections: {held:?}");
    assert_eq!(held.1, ROOMS, "subscriptions: {held:?}");
    // And every client hears its room.
    let mut publisher = node.client("publisher", None);
    for room in 0..ROOMS {
        publisher.send_body(
            &format!("SEND\ndestination:/topic/rooms.{run}-{room}\n\n"),
            format!("to room {room}").as_bytes(),
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let f = ws_frame(c, &format!("the room message at client {i}"));
        assert!(f.starts_with("MESSAGE\n"), "{f}");
        assert!(
            f.ends_with(&format!("\n\nto room {}\0", i % ROOMS)),
            "client {i}: {f}"
        );
    }
    drop(clients);
    drop(publisher);
    eventually(
        Duration::from_secs(60),
        "the subscriptions withdrawn",
        || up.topic_subscriptions() == topics,
    );
    node.stop();
}
