//! What the server counts, and `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Counters are per thread: each thread that counts (the engine's workers, the relay's, the
//! application's) gets its own set of relaxed atomics on first use, so counting never
//! contends; a scrape sums the sets (those of threads that ended included). Gauges (open
//! connections, sessions, subscriptions, queued bytes...) are read at scrape time from where
//! they live. The counters are the process's: several hubs in one process (tests) share them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One counter (a label set of a metric family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    AcceptedWs,
    AcceptedSockjs,
    AcceptedTcp,
    ClosedWs,
    ClosedSockjs,
    ClosedTcp,
    RefusedOrigin,
    RefusedPath,
    RefusedAuth,
    RefusedSessionLimit,
    MessagesInWs,
    MessagesInSockjs,
    MessagesInTcp,
    BytesInWs,
    BytesInSockjs,
    BytesInTcp,
    /// STOMP frames sent (MESSAGE, RECEIPT, ERROR, CONNECTED...), and their bytes.
    FramesOut,
    BytesOut,
    Deliveries,
    Redeliveries,
    Receipts,
    ErrorAuth,
    ErrorPermission,
    ErrorRate,
    ErrorLimit,
    ErrorSlowConsumer,
    ErrorProtocol,
}

const COUNTERS: usize = Counter::ErrorProtocol as usize + 1;

/// A thread's counters.
#[derive(Debug)]
struct Set([AtomicU64; COUNTERS]);

static SETS: Mutex<Vec<Arc<Set>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<Set> = {
        let set = Arc::new(Set(std::array::from_fn(|_| AtomicU64::new(0))));
        SETS.lock().unwrap_or_else(|e| e.into_inner()).push(set.clone());
        set
    };
}

/// Adds `n` to a counter (this thread's share of it).
pub fn add(counter: Counter, n: u64) {
    MINE.with(|set| set.0[counter as usize].fetch_add(n, Ordering::Relaxed));
}

pub fn bump(counter: Counter) {
    add(counter, 1);
}

/// Every counter, summed over the threads.
pub fn totals() -> [u64; COUNTERS] {
    let mut sum = [0u64; COUNTERS];
    for set in SETS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for (total, c) in sum.iter_mut().zip(set.0.iter()) {
            *total += c.load(Ordering::Relaxed);
        }
    }
    sum
}

/// The total of one counter.
pub fn total(counter: Counter) -> u64 {
    totals()[counter as usize]
}

/// The kind of an ERROR, from its `message` header.
pub fn error_kind(message: &str) -> Counter {
    if message.starts_with("not authorized") {
        Counter::ErrorAuth
    } else if message.starts_with("permission denied") || message.starts_with("cannot subscribe to")
    {
        Counter::ErrorPermission
    } else if message.starts_with("SEND rate") {
        Counter::ErrorRate
    } else if message.starts_with("too many sessions") || message.starts_with("more than") {
        Counter::ErrorLimit
    } else if message.starts_with("slow consumer") {
        Counter::ErrorSlowConsumer
    } else {
        Counter::ErrorProtocol
    }
}

/// Writes Prometheus exposition text: families with `# HELP` and `# TYPE`, then samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// A family of samples: `name`, its type (`counter`, `gauge`), help, and (labels, value).
    pub fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            match labels.is_empty() {
                true => {
                    let _ = writeln!(self.text, "{name} {value}");
                }
                false => {
                    let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
                }
            }
        }
    }

    /// A sample of the family just written (a summary's `_sum` and `_count`).
    pub fn sample(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, &[("", value)]);
    }

    /// The families counted here, from `totals`.
    pub fn counters(&mut self, t: &[u64; COUNTERS]) {
        let v = |c: Counter| t[c as usize] as f64;
        use Counter::*;
        self.family(
            "sockeye_connections_accepted_total",
            "counter",
            "Sessions opened, by transport.",
            &[
                ("transport=\"websocket\"", v(AcceptedWs)),
                ("transport=\"sockjs\"", v(AcceptedSockjs)),
                ("transport=\"tcp\"", v(AcceptedTcp)),
            ],
        );
        self.family(
            "sockeye_connections_open",
            "gauge",
            "Sessions open now, by transport.",
            &[
                ("transport=\"websocket\"", v(AcceptedWs) - v(ClosedWs)),
                ("transport=\"sockjs\"", v(AcceptedSockjs) - v(ClosedSockjs)),
                ("transport=\"tcp\"", v(AcceptedTcp) - v(ClosedTcp)),
            ],
        );
        self.family(
            "sockeye_stomp_messages_received_total",
            "counter",
            "WebSocket or SockJS messages, or TCP reads, received, by transport.",
            &[
                ("transport=\"websocket\"", v(MessagesInWs)),
                ("transport=\"sockjs\"", v(MessagesInSockjs)),
                ("transport=\"tcp\"", v(MessagesInTcp)),
            ],
        );
        self.family(
            "sockeye_stomp_received_bytes_total",
            "counter",
            "Bytes received, by transport.",
            &[
                ("transport=\"websocket\"", v(BytesInWs)),
                ("transport=\"sockjs\"", v(BytesInSockjs)),
                ("transport=\"tcp\"", v(BytesInTcp)),
            ],
        );
        self.single(
            "sockeye_stomp_frames_sent_total",
            "counter",
            "STOMP frames sent to sessions (MESSAGE, RECEIPT, ERROR, CONNECTED).",
            v(FramesOut),
        );
        self.single(
            "sockeye_stomp_sent_bytes_total",
            "counter",
            "Bytes of the STOMP frames sent.",
            v(BytesOut),
        );
        self.single(
            "sockeye_broker_deliveries_total",
            "counter",
            "MESSAGE frames sent to subscribers.",
            v(Deliveries),
        );
        self.single(
            "sockeye_broker_redeliveries_total",
            "counter",
            "MESSAGE frames sent again after a NACK or a subscriber leaving.",
            v(Redeliveries),
        );
        self.single(
            "sockeye_broker_receipts_total",
            "counter",
            "RECEIPT frames sent.",
            v(Receipts),
        );
        self.family(
            "sockeye_stomp_errors_total",
            "counter",
            "ERROR frames sent (each closes its session), by kind.",
            &[
                ("kind=\"auth\"", v(ErrorAuth)),
                ("kind=\"permission\"", v(ErrorPermission)),
                ("kind=\"rate\"", v(ErrorRate)),
                ("kind=\"limit\"", v(ErrorLimit)),
                ("kind=\"slow_consumer\"", v(ErrorSlowConsumer)),
                ("kind=\"protocol\"", v(ErrorProtocol)),
            ],
        );
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_several_threads_are_summed() {
        let before = total(Counter::Receipts);
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..100).for_each(|_| bump(Counter::Receipts))))
            .collect();
        for t in threads {
            t.join().expect("a counting thread");
        }
        // Other tests of this process may count receipts too: at least ours.
        assert!(total(Counter::Receipts) >= before + 400);
    }

    #[test]
    fn the_exposition_has_help_type_and_samples() {
        let mut e = Exposition::default();
        e.single("sockeye_x", "gauge", "An x.", 3.0);
        e.family("sockeye_y_total", "counter", "Ys.", &[("kind=\"a\"", 1.0)]);
        assert_eq!(
            e.finish(),
            "# HELP sockeye_x An x.\n# TYPE sockeye_x gauge\nsockeye_x 3\n\
             # HELP sockeye_y_total Ys.\n# TYPE sockeye_y_total counter\nsockeye_y_total{kind=\"a\"} 1\n"
        );
        assert_eq!(error_kind("not authorized: x"), Counter::ErrorAuth);
        assert_eq!(error_kind("SEND rate over 1"), Counter::ErrorRate);
        assert_eq!(error_kind("unknown command"), Counter::ErrorProtocol);
    }
}
