//! Settings shared by every bench target: short runs, so that the whole suite takes a couple
//! of minutes on two cores. Command-line flags still override them, e.g.
//! `cargo bench -p sockeye-benches -- --warm-up-time 3 --measurement-time 10`.

use std::time::Duration;

use criterion::Criterion;

pub fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
        .nresamples(20_000)
}
