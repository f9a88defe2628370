#![no_main]

use sockeye::Role;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockeye_fuzz::targets::connection::run(
    Role::Client,
    data
));
