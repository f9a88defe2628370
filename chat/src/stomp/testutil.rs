//! Test helpers: drive the parser like a real reader, with any chunking, and compare outcomes.

use super::{parse, Command, Limits, Status, StompError, Version};

/// What a reader saw, with everything owned so runs can be compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Frame {
        command: Command,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        consumed: usize,
    },
    HeartBeat(usize),
    /// The stream is dead after this.
    Error(StompError),
    /// Input ended with this many bytes of an incomplete frame buffered.
    Partial(usize),
}

impl Event {
    /// A short label, e.g. `frame SEND`.
    pub(crate) fn kind(&self) -> String {
        match self {
            Event::Frame { command, .. } => format!("frame {command}"),
            Event::HeartBeat(n) => format!("heartbeat {n}"),
            Event::Error(e) => format!("error {e:?}"),
            Event::Partial(n) => format!("partial {n}"),
        }
    }
}

/// Feeds `input` in chunks of the given sizes (the rest in one final chunk),
/// parsing after every chunk as a network reader would.
pub(crate) fn drive(
    input: &[u8],
    chunks: impl IntoIterator<Item = usize>,
    limits: &Limits,
    version: Option<Version>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut chunks = chunks.into_iter();
    while fed < input.len() {
        let n = chunks
            .next()
            .unwrap_or(input.len() - fed)
            .clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match parse(&buf, limits, version) {
                Ok(Status::Complete(frame, consumed)) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    events.push(Event::Frame {
                        command: frame.command,
                        headers: frame
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_string()))
                            .collect(),
                        body: frame.body.to_vec(),
                        consumed,
                    });
                    buf.drain(..consumed);
                }
                Ok(Status::HeartBeat(consumed)) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    events.push(Event::HeartBeat(consumed));
                    buf.drain(..consumed);
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    events.push(Event::Error(e));
                    return events;
                }
            }
        }
    }
    if !buf.is_empty() {
        events.push(Event::Partial(buf.len()));
    }
    events
}

/// Parses `input` handed over in one piece.
pub(crate) fn drive_whole(input: &[u8], limits: &Limits, version: Option<Version>) -> Vec<Event> {
    drive(input, [input.len()], limits, version)
}

/// Checks that `input` gives the same events whole, byte by byte, and split
/// in two at every position; returns the events.
pub(crate) fn assert_split_invariant(
    input: &[u8],
    limits: &Limits,
    version: Option<Version>,
) -> Vec<Event> {
    let whole = drive_whole(input, limits, version);
    let bytewise = drive(input, std::iter::repeat(1), limits, version);
    assert_eq!(
        bytewise,
        whole,
        "1-byte feed of {:?}",
        input.escape_ascii().to_string()
    );
    for split in 1..input.len() {
        let two = drive(input, [split], limits, version);
        assert_eq!(
            two,
            whole,
            "split at {split} of {:?}",
            input.escape_ascii().to_string()
        );
    }
    whole
}

/// A small deterministic PRNG (xorshift64*) for generated inputs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`; `0` when `n == 0`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}
