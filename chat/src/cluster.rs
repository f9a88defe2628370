//! Cluster mode's glue (with `--relay`): the application's subscriptions to
//! [`CLUSTER_TOPIC`] and to every room ([`ROOMS_PATTERN`]), which hand what other nodes say to
//! the [`Chat`](crate::rooms::Chat) (see [`crate::rooms::cluster`] for what it does with it),
//! and the presence timer: every [`ClusterConfig::presence_interval_ms`] it drops the nodes not
//! heard for the node timeout (only while the external broker is reachable: a node cut off
//! hears nobody) and publishes this node's presence.
//!
//! Stopping ([`Cluster::stop`], after the server has stopped, so that the node's sessions have
//! left with their own LEAVE messages) publishes `bye` with whatever members are left and
//! waits, bounded, for it to come back from the broker: then it, and everything published
//! before it, has gone through, and the relay may be stopped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::app::ChatApp;
use crate::broker::SessionId;
use crate::rooms::{
    node_of, parse_room_message, ClusterConfig, ClusterEvent, NodeId, CLUSTER_TOPIC, ROOMS_PATTERN,
};
use crate::server::{Delivered, Hub, Messaging};

/// How long [`Cluster::stop`] waits for its `bye` to come back.
const BYE_WAIT: Duration = Duration::from_secs(2);

/// A node number for a node started without `--node-id`: random in 1..=65535.
pub fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per process; the clock and pid are added for good measure.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    (hasher.finish() % u64::from(NodeId::MAX)) as NodeId + 1
}

#[derive(Debug, Default)]
struct Flags {
    stop: bool,
    bye_back: bool,
}

/// What the timer thread and the listeners tell [`Cluster`].
#[derive(Debug, Default)]
struct Signal {
    flags: Mutex<Flags>,
    changed: Condvar,
}

impl Signal {
    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut self.flags());
        self.changed.notify_all();
    }

    /// Waits until `done` holds or `wait` passes; whether it holds.
    fn wait_for(&self, wait: Duration, done: impl Fn(&Flags) -> bool) -> bool {
        let until = Instant::now() + wait;
        let mut flags = self.flags();
        while !done(&flags) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            flags = self
                .changed
                .wait_timeout(flags, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A running cluster node: its subscriptions and presence timer.
#[derive(Debug)]
pub struct Cluster {
    app: Arc<ChatApp>,
    hub: Arc<Hub>,
    node: NodeId,
    signal: Arc<Signal>,
    timer: Option<JoinHandle<()>>,
    subscriptions: Vec<SessionId>,
}

impl Cluster {
    /// Subscribes and starts the presence timer. `app`'s chat must be in cluster mode
    /// ([`Chat::enable_cluster`](crate::rooms::Chat::enable_cluster)) and `hub` in relay mode.
    pub fn start(app: Arc<ChatApp>, hub: &Arc<Hub>) -> Result<Cluster, String> {
        let config = app
            .with_chat(|chat| chat.cluster_config().cloned())
            .ok_or("the chat is not in cluster mode")?;
        let node = config.node;
        let mut cluster = Cluster {
            app,
            hub: Arc::clone(hub),
            node,
            signal: Arc::default(),
            timer: None,
            subscriptions: Vec::new(),
        };
        let messaging = hub.messaging();
        let (app, signal) = (cluster.app.clone(), cluster.signal.clone());
        let events = messaging
            .subscribe(CLUSTER_TOPIC, move |d, m| {
                on_cluster_event(&app, &signal, node, d, m)
            })
            .map_err(|e| format!("{CLUSTER_TOPIC}: {e}"))?;
        cluster.subscriptions.push(events);
        let app = cluster.app.clone();
        let rooms = messaging
            .subscribe(ROOMS_PATTERN, move |d, m| on_room_message(&app, node, d, m))
            .map_err(|e| format!("{ROOMS_PATTERN}: {e}"))?;
        cluster.subscriptions.push(rooms);
        let (app, hub, signal) = (
            cluster.app.clone(),
            cluster.hub.clone(),
            cluster.signal.clone(),
        );
        let timer = std::thread::Builder::new()
            .name("chat-cluster".into())
            .spawn(move || presence_timer(&app, &hub, &signal, &config))
            .map_err(|e| format!("cannot start the presence timer: {e}"))?;
        cluster.timer = Some(timer);
        info!(node, "cluster mode: node {node}");
        Ok(cluster)
    }

    /// This node's number.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Stops saying goodbye: the timer stops, `bye` goes out with the members left and is
    /// waited for (at most 2 s), the subscriptions end. Call it after the server stopped and
    /// before the relay stops.
    pub fn stop(mut self) {
        self.stop_timer();
        let messaging = self.hub.messaging();
        if self.hub.relay().is_some_and(|r| r.stats().connected > 0) {
            self.app
                .run(&messaging, |chat, _| chat.bye().into_iter().collect());
            if self.signal.wait_for(BYE_WAIT, |f| f.bye_back) {
                info!(node = self.node, "cluster: said bye");
            } else {
                warn!(
                    node = self.node,
                    "cluster: bye did not come back within {BYE_WAIT:?}: the other nodes will drop this one after the node timeout"
                );
            }
        }
        self.end(&messaging);
    }

    /// Stops without a word, as a node that dies: the other nodes drop it after the node
    /// timeout.
    pub fn halt(mut self) {
        self.stop_timer();
        let messaging = self.hub.messaging();
        self.end(&messaging);
    }

    fn stop_timer(&mut self) {
        self.signal.set(|f| f.stop = true);
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }

    fn end(&mut self, messaging: &Messaging) {
        for session in self.subscriptions.drain(..) {
            messaging.unsubscribe(session);
        }
        self.app.join_reloads();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_timer();
        if !self.subscriptions.is_empty() {
            let messaging = self.hub.messaging();
            self.end(&messaging);
        }
    }
}

fn on_cluster_event(
    app: &ChatApp,
    signal: &Signal,
    node: NodeId,
    delivered: &Delivered,
    messaging: &Messaging,
) {
    let event: ClusterEvent = match serde_json::from_slice(&delivered.body) {
        Ok(event) => event,
        Err(e) => {
            debug!(error = %e, "cluster: unreadable event ignored");
            return;
        }
    };
    if event.node() == node {
        if let ClusterEvent::Bye { .. } = event {
            signal.set(|f| f.bye_back = true);
        }
        return;
    }
    app.run(messaging, |chat, now| chat.handle_cluster_event(event, now));
}

fn on_room_message(app: &ChatApp, node: NodeId, delivered: &Delivered, messaging: &Messaging) {
    // Parsed outside the chat's lock; this node's own messages are already in.
    match parse_room_message(&delivered.destination, &delivered.body) {
        Ok(msg) if node_of(msg.id) == node => {}
        Ok(msg) => app.run(messaging, |chat, now| chat.handle_remote_message(msg, now)),
        Err(e) => {
            debug!(destination = %delivered.destination, error = %e, "cluster: unreadable room message ignored")
        }
    }
}

/// Every interval until told to stop: drop dead nodes (while the broker is reachable), then
/// publish this node's presence (while any connection to it is up).
fn presence_timer(app: &ChatApp, hub: &Arc<Hub>, signal: &Signal, config: &ClusterConfig) {
    let interval = Duration::from_millis(config.presence_interval_ms.max(1));
    let messaging = hub.messaging();
    while !signal.wait_for(interval, |f| f.stop) {
        let (available, connected) = hub.relay().map_or((false, false), |r| {
            (r.is_available(), r.stats().connected > 0)
        });
        app.run(&messaging, |chat, now| {
            let mut effects = if available {
                chat.expire_nodes(now)
            } else {
                Vec::new()
            };
            if connected {
                effects.extend(chat.presence());
            }
            effects
        });
    }
}
