//! Rooms created per client per hour: a sliding window of creation times for each creator (an
//! address: the HTTP API has no login). Times are passed in, in ms.

use std::collections::{HashMap, VecDeque};

const HOUR_MS: u64 = 60 * 60 * 1000;
/// Creators remembered before those with nothing in the window are forgotten (memory bound).
const MAX_CREATORS: usize = 100_000;

/// The quota: at most `per_hour` rooms per creator in any hour.
#[derive(Debug)]
pub struct RoomQuota {
    per_hour: usize,
    created: HashMap<String, VecDeque<u64>>,
}

impl RoomQuota {
    pub fn new(per_hour: usize) -> Self {
        RoomQuota {
            per_hour,
            created: HashMap::new(),
        }
    }

    /// Whether `creator` may create a room now; `Err(seconds)` until it may.
    pub fn check(&mut self, creator: &str, now_ms: u64) -> Result<(), u64> {
        let Some(times) = self.created.get_mut(creator) else {
            return Ok(());
        };
        while times.front().is_some_and(|&t| t + HOUR_MS <= now_ms) {
            times.pop_front();
        }
        match (times.len() >= self.per_hour, times.front()) {
            (true, Some(&oldest)) => Err((oldest + HOUR_MS - now_ms).div_ceil(1000)),
            _ => Ok(()),
        }
    }

    /// Counts a room created by `creator`.
    pub fn record(&mut self, creator: &str, now_ms: u64) {
        if self.created.len() >= MAX_CREATORS {
            self.created
                .retain(|_, t| t.back().is_some_and(|&last| last + HOUR_MS > now_ms));
        }
        self.created
            .entry(creator.to_owned())
            .or_default()
            .push_back(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creator_gets_per_hour_rooms_then_waits() {
        let mut q = RoomQuota::new(2);
        for t in [0, 1000] {
            assert_eq!(q.check("a", t), Ok(()));
            q.record("a", t);
        }
        assert_eq!(q.check("a", 2000), Err(3598));
        assert_eq!(
            q.check("b", 2000),
            Ok(()),
            "another creator is not affected"
        );
        assert_eq!(
            q.check("a", HOUR_MS),
            Ok(()),
            "the first one left the window"
        );
    }
}
