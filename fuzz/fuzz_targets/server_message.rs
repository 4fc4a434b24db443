//! Fuzz target `server_message`: its body is `easel_tests::fuzz::server_message`, which the stable tests replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| easel_tests::fuzz::server_message(data));
