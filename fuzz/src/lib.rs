//! Helpers shared by the sockeye fuzz targets, and the target bodies themselves.
//!
//! Each binary in `fuzz_targets/` is one line that hands libFuzzer's bytes to a function of
//! [`targets`], so the bodies can also be replayed without libFuzzer (`tests/replay.rs` runs the
//! committed seeds and regressions on stable). The helpers:
//!
//! * [`input`]: reading structured choices (flags, chunk sizes, lengths) off the fuzzer's bytes,
//!   and splitting a byte string into pieces whose sizes the input itself chose;
//! * [`keys`]: a deterministic, input-seeded mask-key source (`MaskKeys` takes a fn pointer);
//! * [`wire`]: decoding the frames a `Sender` wrote, and owned copies of `Event`s;
//! * [`driver`]: a driver that obeys the `Receiver::read` contract and checks the connection's
//!   invariants on every call.

pub mod driver;
pub mod input;
pub mod keys;
pub mod targets;
pub mod wire;
