//! The figures every measured window reports alike: its length, latency quantiles, and the
//! server's and the load generator's CPU over it.

use std::time::{Duration, Instant};

use crate::histogram::Histogram;

/// What was recorded over the measured window.
pub struct Measured<'a> {
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    /// The server's CPU time (utime + stime) at the window's start and end, if a pid was given.
    pub server_cpu: [Option<Duration>; 2],
    /// This process's CPU time at the window's start and end.
    pub own_cpu: [Duration; 2],
    pub latency: &'a Histogram,
    /// What the window counts (messages, deliveries): the denominator of "per unit" figures.
    pub units: u64,
}

/// The derived figures; latencies in µs, CPU shares in % of one core.
pub struct Figures {
    pub secs: Option<f64>,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Server CPU µs per unit.
    pub cpu_per_unit: Option<f64>,
    pub server_pct: Option<f64>,
    pub own_pct: Option<f64>,
}

impl Figures {
    pub fn of(m: &Measured<'_>) -> Figures {
        let secs = match (m.start, m.end) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        let us = |ns: u64| ns as f64 / 1000.0;
        let server_cpu = match m.server_cpu {
            [Some(a), Some(b)] => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let own = m.own_cpu[1].saturating_sub(m.own_cpu[0]).as_secs_f64();
        Figures {
            secs,
            p50: us(m.latency.quantile(0.5)),
            p99: us(m.latency.quantile(0.99)),
            max: us(m.latency.max()),
            cpu_per_unit: server_cpu
                .filter(|_| m.units > 0)
                .map(|c| c * 1e6 / m.units as f64),
            server_pct: server_cpu.zip(secs).map(|(c, t)| c / t * 100.0),
            own_pct: secs.map(|t| own / t * 100.0),
        }
    }

    /// `n` per second over the window.
    pub fn per_sec(&self, n: u64) -> Option<f64> {
        self.secs.map(|t| n as f64 / t)
    }
}
