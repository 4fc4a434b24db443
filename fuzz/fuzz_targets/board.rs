//! Fuzz target `board`: its body is `easel_tests::fuzz::board`, which the stable tests replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| easel_tests::fuzz::board(data));
