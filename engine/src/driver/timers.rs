//! Deadlines owned by an event loop: one FIFO queue per kind of timeout.
//!
//! Every deadline of one kind is "now + the same duration", so pushing in arrival order keeps
//! each queue sorted: arming is a push, expiry pops from the front, and a connection that went
//! away (or moved on) is recognised by its generation and skipped. No allocation per connection
//! per tick, no thread, no sorting. Timeouts that depend on activity (idle) are not re-armed on
//! every byte: the connection keeps a 4-byte [`Clock`] tick of its last activity, and the
//! expiry looks at it and re-arms for the remainder.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Identifies a connection slot at a point in time: the slab key and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub key: usize,
    pub gen: u32,
}

/// One kind of deadline. A queue made with `None` is switched off: arming it does nothing.
#[derive(Debug)]
pub struct Deadlines {
    after: Option<Duration>,
    queue: VecDeque<(Instant, Tag)>,
}

impl Deadlines {
    pub fn new(after: Duration) -> Self {
        Deadlines::maybe(Some(after))
    }

    pub fn maybe(after: Option<Duration>) -> Self {
        Deadlines {
            after,
            queue: VecDeque::new(),
        }
    }

    pub fn after(&self) -> Option<Duration> {
        self.after
    }

    /// Arms a deadline `after` from `now`.
    pub fn arm(&mut self, now: Instant, tag: Tag) {
        if let Some(after) = self.after {
            self.queue.push_back((now + after, tag));
        }
    }

    /// Arms a deadline at `at`, or at the latest one already armed if that is later (so the
    /// queue stays sorted; used for a shutdown deadline and for re-arming the remainder of an
    /// activity timeout, where being late by less than one period is fine).
    pub fn arm_at(&mut self, at: Instant, tag: Tag) {
        if self.after.is_none() {
            return;
        }
        let at = self.queue.back().map_or(at, |(last, _)| at.max(*last));
        self.queue.push_back((at, tag));
    }

    /// The next deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }

    /// Pops one expired entry.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Tag> {
        match self.queue.front() {
            Some((at, _)) if *at <= now => self.queue.pop_front().map(|(_, tag)| tag),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Milliseconds since the loop started, as a wrapping `u32`: a 4-byte timestamp for fields
/// kept per connection. Differences are right while they stay under 49 days, far beyond any
/// timeout they are compared with.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new(epoch: Instant) -> Self {
        Clock { epoch }
    }

    pub fn tick(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// Time from `tick` to `now`.
    pub fn since(&self, tick: u32, now: Instant) -> Duration {
        Duration::from_millis(u64::from(self.tick(now).wrapping_sub(tick)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Duration::from_secs(1));
        d.arm(t0, Tag { key: 1, gen: 0 });
        d.arm(t0 + Duration::from_millis(10), Tag { key: 2, gen: 0 });
        assert_eq!(d.pop_expired(t0), None);
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(d.pop_expired(later), Some(Tag { key: 1, gen: 0 }));
        assert_eq!(d.pop_expired(later), Some(Tag { key: 2, gen: 0 }));
        assert!(d.is_empty());
    }

    #[test]
    fn arm_at_keeps_the_queue_sorted_and_off_does_nothing() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Duration::from_secs(1));
        d.arm(t0, Tag { key: 1, gen: 0 });
        d.arm_at(t0, Tag { key: 2, gen: 0 });
        assert_eq!(
            d.pop_expired(t0 + Duration::from_secs(1)),
            Some(Tag { key: 1, gen: 0 })
        );
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        let mut off = Deadlines::maybe(None);
        off.arm(t0, Tag { key: 1, gen: 0 });
        off.arm_at(t0, Tag { key: 1, gen: 0 });
        assert!(off.is_empty());
    }

    #[test]
    fn clock_measures_across_the_wrap() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(
            clock.since(clock.tick(t0), later),
            Duration::from_millis(1500)
        );
        assert_eq!(clock.since(u32::MAX, later), Duration::from_millis(1501));
    }
}
