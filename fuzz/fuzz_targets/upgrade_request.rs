//! Fuzz target `upgrade_request`: its body is `easel_tests::fuzz::upgrade_request`, which the stable tests replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| easel_tests::fuzz::upgrade_request(data));
