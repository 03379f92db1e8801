//! Arbitrary bytes as a client's HTTP/1.1 request stream: heads, bodies, pipelining.
//! `cargo +nightly fuzz run h1_request fuzz/corpus/h1_request fuzz/seeds/h1_request`
//! (README, "Fuzzing").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headroom_edge::h1::request::fuzz_check(data);
});
