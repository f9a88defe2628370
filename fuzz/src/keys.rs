//! Deterministic mask keys for the client role.
//!
//! `MaskKeys` takes a plain `fn(&mut [u8])`, which cannot capture the input, so the generator's
//! state lives in a thread-local that [`mask_keys`] seeds from the input. libFuzzer runs inputs
//! one at a time on one thread, so every run of an input sees the same keys, and two runs that
//! are compared (whole and chunked) each start from the same seed.

use std::cell::Cell;

use sockeye::connection::MaskKeys;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// splitmix64: every seed, zero included, gives a full-period sequence.
fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// The `fill` function handed to `MaskKeys`.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let word = next().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// A key source whose keys are a function of `seed` alone. The pool is filled lazily, so the
/// connection using it must be driven to the end before another one is seeded.
pub fn mask_keys(seed: u64) -> MaskKeys {
    STATE.with(|s| s.set(seed));
    MaskKeys::new(fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_keys() {
        let take = |seed| {
            let mut k = mask_keys(seed);
            (0..100).map(|_| k.next_key()).collect::<Vec<_>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
    }
}
