//! Arbitrary bytes as an upstream's HTTP/1.1 response: head and body.
//! `cargo +nightly fuzz run h1_response fuzz/corpus/h1_response fuzz/seeds/h1_response`
//! (README, "Fuzzing").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headroom_edge::h1::client::fuzz_check(data);
});
