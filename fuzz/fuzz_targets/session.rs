//! Fuzz target `session`: its body is `easel_tests::fuzz::session`, which the stable tests replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| easel_tests::fuzz::session(data));
