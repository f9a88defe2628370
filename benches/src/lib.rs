//! Benchmarks and load generation for Sockeye (filled by the benchmarks issue).
//!
//! The criterion micro-benchmarks live in `benches/` (see `README.md`); this library holds what
//! they measure beyond single calls, kept here so that unit tests check it does the real work:
//! the inputs ([`fixtures`]) and an in-memory client↔server driver of the sans-IO core
//! ([`exchange`]).

pub mod exchange;
pub mod fixtures;
