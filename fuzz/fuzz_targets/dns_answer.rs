//! Arbitrary bytes as a DNS server's answer to an A and to an AAAA query (DNS discovery).
//! `cargo +nightly fuzz run dns_answer fuzz/corpus/dns_answer fuzz/seeds/dns_answer`
//! (README, "Fuzzing").
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headroom_edge::discovery::fuzz_check_answer(data);
});
