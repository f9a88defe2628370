//! `Utf8Validator` fed in pieces the input chooses, against `std::str::from_utf8`.
//!
//! Checked after every piece: the validator fails exactly when the bytes so far can no longer
//! begin valid UTF-8 (std reports an error with a length), at std's `valid_up_to`, and
//! `is_mid_sequence` says whether the bytes so far end inside a code point. At the end `finish`
//! agrees with std on the whole. Each input is run twice on one validator, to check that
//! `finish` resets it.

use sockeye::utf8::Utf8Validator;

use crate::input::{chunks, Cursor};

/// `Err(valid_up_to)` of the first failure.
fn validate(v: &mut Utf8Validator, whole: &[u8], pieces: &[&[u8]]) -> Result<(), u64> {
    let mut fed = 0;
    for piece in pieces {
        fed += piece.len();
        let prefix = std::str::from_utf8(&whole[..fed]);
        match v.feed(piece) {
            Ok(()) => match prefix {
                Ok(_) => assert!(!v.is_mid_sequence(), "mid-sequence after valid {fed} bytes"),
                Err(e) => {
                    assert!(
                        e.error_len().is_none(),
                        "invalid at {} not caught",
                        e.valid_up_to()
                    );
                    assert!(v.is_mid_sequence(), "truncated code point not carried");
                }
            },
            Err(err) => {
                let e = prefix.expect_err("validator failed on valid UTF-8");
                assert!(e.error_len().is_some(), "failed on a valid prefix");
                assert_eq!(err.valid_up_to, e.valid_up_to() as u64);
                let _ = v.finish();
                return Err(err.valid_up_to);
            }
        }
    }
    v.finish().map_err(|e| e.valid_up_to)
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let sizes = input.take_prefixed(15);
    let bytes = input.rest();
    let expected = std::str::from_utf8(bytes)
        .map(|_| ())
        .map_err(|e| e.valid_up_to() as u64);
    let mut v = Utf8Validator::new();
    let pieces = chunks(sizes, bytes);
    assert_eq!(validate(&mut v, bytes, &pieces), expected, "in pieces");
    assert_eq!(
        validate(&mut v, bytes, &[bytes]),
        expected,
        "whole, after a reset"
    );
}
