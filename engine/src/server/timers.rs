//! Deadlines owned by an event loop: one FIFO queue per kind of timeout.
//!
//! Every deadline of one kind is "now + the same duration", so pushing in arrival order keeps
//! each queue sorted: arming is a push, expiry pops from the front, and a connection that went
//! away (or moved on) is recognised by its generation and skipped. No allocation per connection
//! per tick, no thread, no sorting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Identifies a connection slot at a point in time: the slab key and the slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub key: usize,
    pub gen: u32,
}

#[derive(Debug)]
pub struct Deadlines {
    after: Duration,
    queue: VecDeque<(Instant, Tag)>,
}

impl Deadlines {
    pub fn new(after: Duration) -> Self {
        Deadlines {
            after,
            queue: VecDeque::new(),
        }
    }

    /// Arms a deadline `after` from `now`.
    pub fn arm(&mut self, now: Instant, tag: Tag) {
        self.queue.push_back((now + self.after, tag));
    }

    /// Arms a deadline at `at`, which must not be earlier than the ones already armed
    /// (used to clamp to a shutdown deadline).
    pub fn arm_at(&mut self, at: Instant, tag: Tag) {
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
}
