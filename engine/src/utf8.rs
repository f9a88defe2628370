//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! RFC 6455 §8.1: an endpoint that receives invalid UTF-8 in a text message MUST fail the
//! connection, and Autobahn's 6.4 cases check that it does so as soon as the invalid byte
//! arrives, not at the end of the message. A code point split across pieces is carried (at most
//! three bytes) and finished with the next piece; everything else goes through simdutf8.

use simdutf8::compat::from_utf8;

/// Where validation failed, counted in bytes from the start of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error {
    pub valid_up_to: u64,
}

/// Validates a byte stream fed in arbitrary pieces.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
    /// Bytes fed so far, including the carried ones.
    fed: u64,
}

/// Total length of the sequence that starts with `lead`, or 0 when `lead` cannot start one.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. Fails as soon as the input can no longer be the prefix of valid
    /// UTF-8, even when the offending sequence is not complete yet.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Utf8Error> {
        let start = self.fed;
        self.fed += bytes.len() as u64;
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let need = sequence_len(self.carry[0]);
            let take = (need - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            let have = have + take;
            let carry_start = start - (self.carry_len as u64);
            match from_utf8(&self.carry[..have]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix and `bytes` is used up.
                    self.carry_len = have as u8;
                    return Ok(());
                }
                Err(_) => {
                    return Err(Utf8Error {
                        valid_up_to: carry_start,
                    })
                }
            }
            bytes = &bytes[take..];
        }
        let base = self.fed - bytes.len() as u64;
        match from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.error_len().is_some() {
                    return Err(Utf8Error {
                        valid_up_to: base + e.valid_up_to() as u64,
                    });
                }
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: a code point left unfinished is an error.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let incomplete = self.carry_len > 0;
        let at = self.fed - u64::from(self.carry_len);
        *self = Self::default();
        if incomplete {
            Err(Utf8Error { valid_up_to: at })
        } else {
            Ok(())
        }
    }

    /// True while a code point is split across pieces.
    pub fn is_mid_sequence(&self) -> bool {
        self.carry_len > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at the given points and returns the result of the whole.
    fn run(input: &[u8], cuts: &[usize]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            v.feed(&input[last..cut])?;
            last = cut;
        }
        v.finish()
    }

    fn reference(input: &[u8]) -> Result<(), Utf8Error> {
        std::str::from_utf8(input)
            .map(|_| ())
            .map_err(|e| Utf8Error {
                valid_up_to: e.valid_up_to() as u64,
            })
    }

    const SAMPLES: &[&[u8]] = &[
        b"",
        b"hello",
        "κόσμε".as_bytes(),
        "a€b𝄞c".as_bytes(),
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        b"\xf4\x90\x80\x80",
        b"\xf0\x9f\x98",
        b"ab\xc0\xafcd",
        b"\xed\x9f\xbf",
        b"\xef\xbf\xbf\xf4\x8f\xbf\xbf",
        b"\x80",
        b"\xe0\x80\x80",
    ];

    #[test]
    fn agrees_with_std_for_every_single_and_double_split() {
        for sample in SAMPLES {
            let expected = reference(sample);
            assert_eq!(run(sample, &[]), expected, "{sample:x?}");
            for a in 0..=sample.len() {
                assert_eq!(run(sample, &[a]), expected, "{sample:x?} at {a}");
                for b in a..=sample.len() {
                    assert_eq!(run(sample, &[a, b]), expected, "{sample:x?} at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn fails_fast_on_a_truncated_but_impossible_sequence() {
        // 0xF4 0x90 can never start a code point <= U+10FFFF: fail before the rest arrives.
        let mut v = Utf8Validator::new();
        v.feed(b"ok").unwrap();
        v.feed(b"\xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error { valid_up_to: 2 }));
        // A surrogate lead sequence fails on its second byte too.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xed\xa0").is_err());
    }

    #[test]
    fn unfinished_sequence_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"x\xe2\x82").unwrap();
        assert!(v.is_mid_sequence());
        assert_eq!(v.finish(), Err(Utf8Error { valid_up_to: 1 }));
    }
}
