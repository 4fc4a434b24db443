//! Fuzz target `client_message`: its body is `easel_tests::fuzz::client_message`, which the stable tests replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| easel_tests::fuzz::client_message(data));
