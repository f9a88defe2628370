#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockeye_fuzz::targets::broker::run(data));
