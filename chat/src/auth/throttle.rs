//! Failed CONNECTs per address: after a few free failures, each further one from the same
//! address is answered [`STEP_MS`] later than the previous (the broker defers the ERROR; no
//! thread sleeps), and while an address waits for its answers, its new CONNECTs are refused
//! without being checked. Guessing passcodes from one address thus runs at about five tries a
//! second at most, however many connections it opens; other addresses are not affected.
//!
//! Times are milliseconds from any fixed start, passed in (no clock here).

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures an address may have before answers slow down.
pub const FREE_FAILURES: u32 = 3;
/// How much later each further failure is answered than the one before.
pub const STEP_MS: u64 = 200;
/// The longest an answer waits (an address that keeps trying stays at this).
pub const MAX_WAIT_MS: u64 = 30_000;
/// An address with no failure for this long starts afresh.
pub const FORGET_MS: u64 = 10 * 60 * 1000;
/// Addresses remembered before old ones are forgotten early (a bound on memory).
const MAX_ADDRESSES: usize = 100_000;

/// What to do with a CONNECT from an address, before checking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the credentials.
    Check,
    /// Refuse unchecked, answering after `delay_ms`.
    Wait { delay_ms: u64 },
}

#[derive(Clone, Copy, Debug, Default)]
struct Record {
    failures: u32,
    last_ms: u64,
    /// Until when answers to this address are deferred.
    busy_until_ms: u64,
}

/// The failures of each address.
#[derive(Debug, Default)]
pub struct FailedLogins {
    records: HashMap<IpAddr, Record>,
}

impl FailedLogins {
    /// Whether a CONNECT from `ip` is checked or refused while its earlier failures are still
    /// being answered (such a refusal counts as a failure).
    pub fn before(&mut self, ip: IpAddr, now_ms: u64) -> Verdict {
        match self.records.get(&ip) {
            Some(r) if r.busy_until_ms > now_ms => Verdict::Wait {
                delay_ms: self.failed(ip, now_ms),
            },
            _ => Verdict::Check,
        }
    }

    /// Records a failure from `ip`; returns how long to wait before answering it.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) -> u64 {
        if self.records.len() >= MAX_ADDRESSES {
            self.forget_old(now_ms);
        }
        let r = self.records.entry(ip).or_default();
        if now_ms.saturating_sub(r.last_ms) > FORGET_MS {
            *r = Record::default();
        }
        r.failures = r.failures.saturating_add(1);
        r.last_ms = now_ms;
        if r.failures <= FREE_FAILURES {
            return 0;
        }
        r.busy_until_ms = (r.busy_until_ms.max(now_ms) + STEP_MS).min(now_ms + MAX_WAIT_MS);
        r.busy_until_ms - now_ms
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn forget_old(&mut self, now_ms: u64) {
        self.records
            .retain(|_, r| now_ms.saturating_sub(r.last_ms) <= FORGET_MS);
        if self.records.len() >= MAX_ADDRESSES {
            tracing::warn!(
                addresses = self.records.len(),
                "failed logins from too many addresses: forgetting them all"
            );
            self.records.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_few_failures_are_free_then_each_waits_longer() {
        let mut f = FailedLogins::default();
        for _ in 0..FREE_FAILURES {
            assert_eq!(f.before(A, 0), Verdict::Check);
            assert_eq!(f.failed(A, 0), 0);
        }
        assert_eq!(f.failed(A, 0), STEP_MS);
        // Tries while the answer is pending are refused unchecked, each later still.
        assert_eq!(
            f.before(A, 10),
            Verdict::Wait {
                delay_ms: 2 * STEP_MS - 10
            }
        );
        assert_eq!(
            f.before(B, 10),
            Verdict::Check,
            "another address is not slowed"
        );
        // Once answered, the next try is checked again.
        assert_eq!(f.before(A, 2 * STEP_MS), Verdict::Check);
        assert_eq!(f.failed(A, 2 * STEP_MS), STEP_MS);
    }

    #[test]
    fn fifty_failures_at_once_take_seconds_and_are_capped() {
        let mut f = FailedLogins::default();
        let last = (0..50)
            .map(|_| match f.before(A, 0) {
                Verdict::Check => f.failed(A, 0),
                Verdict::Wait { delay_ms } => delay_ms,
            })
            .max()
            .unwrap();
        assert_eq!(last, 47 * STEP_MS);
        for _ in 0..1000 {
            f.failed(A, 0);
        }
        assert_eq!(f.failed(A, 0), MAX_WAIT_MS);
        assert_eq!(f.before(A, FORGET_MS + MAX_WAIT_MS + 1), Verdict::Check);
        assert_eq!(
            f.failed(A, 2 * FORGET_MS),
            0,
            "forgotten after a quiet while"
        );
    }
}
