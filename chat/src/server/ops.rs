//! The operator's endpoints on the HTTP port: `GET /metrics` (Prometheus text), `GET /healthz`
//! (the process answers) and `GET /readyz` (the application's store is open and, in relay
//! mode, the external broker reachable: 503 with the reason otherwise).

use std::sync::Arc;

use sockeye::handshake::Request;
use sockeye::server::HttpResponse;

use super::metrics::{totals, Counter, Exposition};
use super::Hub;

/// The content type of the Prometheus text format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers the operator's paths, or `None` for any other request.
pub fn answer(hub: &Arc<Hub>, req: &Request<'_, '_>) -> Option<HttpResponse> {
    let path = req.path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return None;
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = HttpResponse::text(405, "GET only\n");
        r.headers.push(("Allow".into(), "GET, HEAD".into()));
        return Some(r);
    }
    Some(match path {
        "/metrics" => HttpResponse::new(200, PROMETHEUS, hub.metrics()),
        "/healthz" => HttpResponse::text(200, "ok\n"),
        _ => match hub.readiness() {
            Ok(()) => HttpResponse::text(200, "ready\n"),
            Err(why) => HttpResponse::text(503, &format!("not ready: {why}\n")),
        },
    })
}

impl Hub {
    /// Whether the server can do its work: the application's say, then the relay's.
    pub fn readiness(&self) -> Result<(), String> {
        self.app.readiness()?;
        match (&self.relay_config, self.relay()) {
            (Some(_), Some(relay)) if !relay.is_available() => {
                Err("the relay is not connected to the external broker".into())
            }
            (Some(_), None) => Err("the relay has not started".into()),
            _ => Ok(()),
        }
    }

    /// Every metric, in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let t = totals();
        let mut e = Exposition::default();
        e.counters(&t);
        let engine = self.engine.get().map(|h| h.stats());
        let v = |c: Counter| t[c as usize] as f64;
        e.family(
            "sockeye_connections_refused_total",
            "counter",
            "Connections or sessions refused, by reason.",
            &[
                ("reason=\"origin\"", v(Counter::RefusedOrigin)),
                ("reason=\"path\"", v(Counter::RefusedPath)),
                ("reason=\"auth\"", v(Counter::RefusedAuth)),
                ("reason=\"session_limit\"", v(Counter::RefusedSessionLimit)),
                (
                    "reason=\"max_connections\"",
                    engine.as_ref().map_or(0.0, |s| s.refused as f64),
                ),
            ],
        );
        if let Some(s) = &engine {
            e.single(
                "sockeye_tcp_connections_open",
                "gauge",
                "TCP connections open (handshakes, sessions, HTTP requests lingering).",
                s.connections as f64,
            );
            e.single(
                "sockeye_dropped_messages_total",
                "counter",
                "Messages dropped because a session was at its backpressure cap.",
                s.dropped_messages as f64,
            );
            e.single(
                "sockeye_overflow_closes_total",
                "counter",
                "Sessions closed because they overflowed (slow consumers let go).",
                s.overflow_closes as f64,
            );
            e.single(
                "sockeye_pong_timeouts_total",
                "counter",
                "Sessions dropped because no pong came in time.",
                s.pong_timeouts as f64,
            );
            e.single(
                "sockeye_queued_bytes_peak",
                "gauge",
                "The most bytes one session had queued, since the start.",
                s.peak_queued as f64,
            );
            e.single(
                "sockeye_read_pauses_total",
                "counter",
                "Times a session stopped being read because of its own queue.",
                s.read_pauses as f64,
            );
        }
        let slow = self.slow_stats();
        e.single(
            "sockeye_slow_consumer_disconnects_total",
            "counter",
            "Sessions sent ERROR slow consumer and closed.",
            slow.disconnects as f64,
        );
        e.single(
            "sockeye_slow_consumer_dropped_total",
            "counter",
            "Messages dropped under --slow-consumer drop.",
            slow.dropped as f64,
        );
        let (sessions, subscriptions, destinations, held, dropped) = {
            let broker = self.broker();
            (
                broker.session_count(),
                broker.subscription_count() + self.shards.get().map_or(0, |s| s.subscriptions()),
                broker.destination_count(),
                broker.held_count(),
                broker.held_dropped(),
            )
        };
        e.single(
            "sockeye_broker_queue_held",
            "gauge",
            "Queue messages held for want of a subscriber that can take them.",
            held as f64,
        );
        e.single(
            "sockeye_broker_queue_dropped_total",
            "counter",
            "Held queue messages dropped, the oldest of a queue over --max-held-per-queue.",
            dropped as f64,
        );
        e.single(
            "sockeye_broker_sessions",
            "gauge",
            "STOMP sessions connected (CONNECT answered).",
            sessions as f64,
        );
        e.single(
            "sockeye_broker_subscriptions",
            "gauge",
            "Subscriptions of every session.",
            subscriptions as f64,
        );
        e.single(
            "sockeye_broker_destinations",
            "gauge",
            "Destinations with subscribers or held messages.",
            destinations as f64,
        );
        if self.relay_config.is_some() {
            let up = self.relay().is_some_and(|r| r.is_available());
            e.single(
                "sockeye_relay_up",
                "gauge",
                "1 when the relay's connections to the external broker are all up.",
                f64::from(u8::from(up)),
            );
        }
        self.app.metrics(&mut e);
        e.finish()
    }
}
