//! Benchmarks and load generation for Sockeye (filled by the benchmarks issue).
