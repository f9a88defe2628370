//! Per-session and per-client limits the broker enforces: the SEND rate (a token bucket per
//! session), and how many sessions one user or one address may hold. Time is passed in
//! (milliseconds from any fixed start), never read here.

use std::collections::HashMap;
use std::hash::Hash;

/// A SEND rate: `per_second` on average, with bursts of up to `burst` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRate {
    pub per_second: u32,
    pub burst: u32,
}

impl SendRate {
    /// `per_second`, with bursts of five seconds' worth.
    pub fn per_second(per_second: u32) -> Self {
        SendRate {
            per_second,
            burst: per_second.saturating_mul(5).max(1),
        }
    }
}

/// One session's SEND allowance, in thousandths of a frame.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    milli_tokens: u64,
    last_ms: u64,
}

impl Bucket {
    /// Full, at `now_ms`.
    pub fn full(rate: SendRate, now_ms: u64) -> Self {
        Bucket {
            milli_tokens: u64::from(rate.burst) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one frame's token if there is one (refilled for the time since the last take).
    pub fn take(&mut self, rate: SendRate, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let refill = elapsed.saturating_mul(u64::from(rate.per_second));
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(refill)
            .min(u64::from(rate.burst) * 1000);
        match self.milli_tokens >= 1000 {
            true => {
                self.milli_tokens -= 1000;
                true
            }
            false => false,
        }
    }
}

/// How many sessions each key (a user, an address) holds.
#[derive(Debug)]
pub struct Census<K> {
    counts: HashMap<K, usize>,
}

impl<K> Default for Census<K> {
    fn default() -> Self {
        Census {
            counts: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Census<K> {
    pub fn count(&self, key: &K) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }

    pub fn add(&mut self, key: K) {
        *self.counts.entry(key).or_default() += 1;
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(n) = self.counts.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let rate = SendRate {
            per_second: 10,
            burst: 3,
        };
        let mut b = Bucket::full(rate, 0);
        assert!((0..3).all(|_| b.take(rate, 0)));
        assert!(!b.take(rate, 0), "the burst is spent");
        assert!(!b.take(rate, 99), "a tenth of a second not yet passed");
        assert!(b.take(rate, 100));
        assert!(b.take(rate, 10_000) && b.take(rate, 10_000) && b.take(rate, 10_000));
        assert!(!b.take(rate, 10_000), "refilled no further than the burst");
        assert!(!b.take(rate, 5_000), "time going back refills nothing");
    }

    #[test]
    fn the_census_counts_and_forgets() {
        let mut c = Census::default();
        c.add("ann");
        c.add("ann");
        assert_eq!(c.count(&"ann"), 2);
        c.remove(&"ann");
        c.remove(&"ann");
        c.remove(&"ann");
        assert_eq!(c.count(&"ann"), 0);
        assert!(c.counts.is_empty());
    }
}
