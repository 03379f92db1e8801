//! Round trips through real decoders, streaming, flushing and the benchmark.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;

const COMPRESSED: [Coding; 3] = [Coding::Gzip, Coding::Brotli, Coding::Zstd];

fn decode(coding: Coding, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Identity => out.extend_from_slice(body),
        Coding::Gzip => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        Coding::Brotli => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        Coding::Zstd => out = zstd::stream::decode_all(body).expect("valid zstd"),
    }
    out
}

/// Decodes a stream that has not ended yet: what a client can read so far.
fn decode_prefix(coding: Coding, prefix: &[u8]) -> Vec<u8> {
    fn through(mut w: impl Write, prefix: &[u8]) {
        w.write_all(prefix).expect("valid prefix");
        w.flush().expect("flushed");
    }
    let mut out = Vec::new();
    match coding {
        Coding::Identity => out.extend_from_slice(prefix),
        Coding::Gzip => through(flate2::write::GzDecoder::new(&mut out), prefix),
        Coding::Brotli => {
            // The reader hands out what it decoded before it reports the truncation.
            let mut reader = brotli::Decompressor::new(prefix, 4096);
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
        }
        Coding::Zstd => through(zstd::stream::write::Decoder::new(&mut out).unwrap(), prefix),
    }
    out
}

/// Encodes `body` pushed in chunks of `chunk` bytes; returns (output before finish, all output).
fn encode(encoder: &mut Encoder, body: &[u8], chunk: usize) -> (usize, Vec<u8>) {
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        out.extend_from_slice(&encoder.push(piece));
    }
    let before_finish = out.len();
    out.extend_from_slice(&encoder.finish());
    (before_finish, out)
}

/// A deterministic JSON API response of about `size` bytes: records with repeated keys and
/// varied values, as an API sends.
fn json_body(size: usize) -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut out = String::from("{\"items\":[");
    let mut id = 0;
    while out.len() < size {
        id += 1;
        out.push_str(&format!(
            "{{\"id\":{id},\"sku\":\"SKU-{:06}\",\"name\":\"{} {}\",\"price\":{}.{:02},\
             \"in_stock\":{},\"tags\":[\"{}\",\"{}\"],\"rating\":{:.1}}},",
            rng.next() % 1_000_000,
            rng.word(),
            rng.word(),
            rng.next() % 500,
            rng.next() % 100,
            rng.next() & 1 == 0,
            rng.word(),
            rng.word(),
            (rng.next() % 50) as f64 / 10.0,
        ));
    }
    out.push_str("{}]}");
    out.into_bytes()
}

/// A deterministic HTML page of about `size` bytes: markup around varied text.
fn html_body(size: usize) -> Vec<u8> {
    let mut rng = Lcg(11);
    let mut out = String::from("<!doctype html><html><head><title>Catalog</title></head><body>");
    while out.len() < size {
        out.push_str("<div class=\"product-card\"><a href=\"/products/");
        out.push_str(&format!("{}\">", rng.next() % 100_000));
        out.push_str("<h2 class=\"product-title\">");
        for _ in 0..3 {
            out.push_str(rng.word());
            out.push(' ');
        }
        out.push_str("</h2></a><p class=\"description\">");
        for _ in 0..(12 + rng.next() % 20) {
            out.push_str(rng.word());
            out.push(' ');
        }
        out.push_str(&format!(
            "</p><span class=\"price\">${}.99</span></div>\n",
            rng.next() % 300
        ));
    }
    out.push_str("</body></html>");
    out.into_bytes()
}

/// Bytes that do not compress (an LCG's output), to make each coding emit as it goes.
fn noise(size: usize) -> Vec<u8> {
    let mut rng = Lcg(3);
    (0..size).map(|_| (rng.next() >> 24) as u8).collect()
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn word(&mut self) -> &'static str {
        const WORDS: [&str; 32] = [
            "alpine", "bamboo", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
            "juniper", "kelp", "lumen", "maple", "nimbus", "onyx", "pebble", "quartz", "river",
            "sierra", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr", "wool",
            "linen", "steel", "oak", "slate", "coral",
        ];
        WORDS[(self.next() % 32) as usize]
    }
}

#[test]
fn every_coding_round_trips_many_small_pushes() {
    let body = html_body(200 * 1024);
    for coding in COMPRESSED {
        let (_, out) = encode(&mut Encoder::new(coding), &body, 7);
        assert_eq!(decode(coding, &out), body, "{coding}");
        assert!(out.len() < body.len() / 3, "{coding}: {} bytes", out.len());
    }
}

#[test]
fn every_coding_round_trips_one_big_push() {
    let body = json_body(1024 * 1024);
    for coding in COMPRESSED {
        let (_, out) = encode(&mut Encoder::new(coding), &body, body.len());
        assert_eq!(decode(coding, &out), body, "{coding}");
    }
}

#[test]
fn every_coding_round_trips_an_empty_body() {
    for coding in COMPRESSED {
        let mut encoder = Encoder::new(coding);
        assert!(
            encoder.push(b"").is_empty(),
            "{coding}: an empty push sends nothing"
        );
        let out = encoder.finish();
        assert!(
            !out.is_empty(),
            "{coding}: an empty body still has a header and trailer"
        );
        assert_eq!(decode(coding, &out), b"", "{coding}");
        assert!(!encoder.failed());
    }
    let (_, out) = encode(&mut Encoder::new(Coding::Identity), b"", 1);
    assert!(out.is_empty());
}

#[test]
fn identity_passes_chunks_through() {
    let mut encoder = Encoder::new(Coding::Identity);
    assert_eq!(encoder.push(b"hello "), &b"hello "[..]);
    assert_eq!(encoder.push(b"world"), &b"world"[..]);
    assert!(encoder.finish().is_empty());
    assert!(
        encoder.push(b"late").is_empty(),
        "push after finish is a no-op"
    );
}

#[test]
fn output_arrives_before_finish_for_a_large_body() {
    // Incompressible input makes each coding emit as its blocks fill; with a text body gzip
    // and brotli emit early too, but zstd only past its 128 KiB block.
    let body = noise(1024 * 1024);
    for coding in COMPRESSED {
        let (before_finish, out) = encode(&mut Encoder::new(coding), &body, 16 * 1024);
        assert!(
            before_finish > out.len() / 2,
            "{coding}: only {before_finish} of {} bytes came out before finish",
            out.len()
        );
        assert_eq!(decode(coding, &out), body, "{coding}");
    }
    let text = json_body(1024 * 1024);
    for coding in COMPRESSED {
        let (before_finish, out) = encode(&mut Encoder::new(coding), &text, 16 * 1024);
        assert!(
            before_finish > out.len() / 2,
            "{coding}: {before_finish} of {}",
            out.len()
        );
    }
}

#[test]
fn brotli_sends_each_32_kib_of_input_whole() {
    // The periodic flush that bounds brotli's buffers: after each 32 KiB of input, everything
    // so far is out and decodable, without waiting for a meta-block to fill.
    let body = json_body(256 * 1024);
    let mut encoder = Encoder::new(Coding::Brotli);
    let mut sent = Vec::new();
    for (i, piece) in body.chunks(4 * 1024).enumerate().take(16) {
        sent.extend_from_slice(&encoder.push(piece));
        if (i + 1) % 8 == 0 {
            let pushed = (i + 1) * 4 * 1024;
            let decoded = decode_prefix(Coding::Brotli, &sent);
            assert!(
                decoded == body[..pushed],
                "after {pushed} bytes in, {} decode from {} out",
                decoded.len(),
                sent.len()
            );
        }
    }
}

#[test]
fn flush_makes_everything_pushed_so_far_decodable() {
    for coding in COMPRESSED {
        let mut encoder = Encoder::new(coding);
        let mut sent = encoder.push(b"data: first event\n\n").to_vec();
        sent.extend_from_slice(&encoder.flush());
        assert_eq!(
            decode_prefix(coding, &sent),
            b"data: first event\n\n",
            "{coding}"
        );
        sent.extend_from_slice(&encoder.push(b"data: second\n\n"));
        sent.extend_from_slice(&encoder.flush());
        assert_eq!(
            decode_prefix(coding, &sent),
            b"data: first event\n\ndata: second\n\n",
            "{coding}"
        );
        sent.extend_from_slice(&encoder.finish());
        assert_eq!(
            decode(coding, &sent),
            b"data: first event\n\ndata: second\n\n",
            "{coding}"
        );
    }
}

#[test]
fn push_after_finish_returns_nothing() {
    for coding in COMPRESSED {
        let mut encoder = Encoder::new(coding);
        let mut out = encoder.push(b"some text some text some text").to_vec();
        out.extend_from_slice(&encoder.finish());
        assert!(encoder.push(b"more").is_empty(), "{coding}");
        assert!(
            encoder.finish().is_empty(),
            "{coding}: a second finish sends nothing"
        );
        assert!(encoder.flush().is_empty(), "{coding}");
        assert_eq!(
            decode(coding, &out),
            b"some text some text some text",
            "{coding}"
        );
    }
}

#[test]
fn the_chosen_zstd_parameters_are_accepted() {
    let encoder = Encoder::new(Coding::Zstd);
    assert!(!encoder.failed(), "zstd refused a parameter: {encoder:?}");
    assert!(matches!(encoder.state, State::Zstd(_)));
}

#[test]
fn the_zstd_window_is_the_chosen_one() {
    // The frame header records the window; a client needs no more memory than that.
    let mut encoder = Encoder::new(Coding::Zstd);
    let (_, out) = encode(&mut encoder, &json_body(1024 * 1024), 64 * 1024);
    let mut decoder = zstd::stream::read::Decoder::new(&out[..]).unwrap();
    decoder.window_log_max(ZSTD_WINDOW_LOG).unwrap();
    let mut decoded = Vec::new();
    decoder
        .read_to_end(&mut decoded)
        .expect("decodes within the chosen window");
    assert_eq!(decoded.len(), json_body(1024 * 1024).len());
}

/// Compression ratio and throughput per coding and setting on 64 KiB bodies (and on the files
/// named in `HEADROOM_BENCH_BODIES`, colon-separated, if set). Prints only; no thresholds. Run
/// with `cargo test -p headroom-cache --release bench_encoders -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run by hand with --release --ignored --nocapture"]
fn bench_encoders() {
    let mut bodies = vec![
        ("json".to_owned(), json_body(64 * 1024)),
        ("html".to_owned(), html_body(64 * 1024)),
    ];
    for path in std::env::var("HEADROOM_BENCH_BODIES")
        .unwrap_or_default()
        .split(':')
    {
        if let Ok(body) = std::fs::read(path) {
            let name = path.rsplit('/').next().unwrap_or(path).to_owned();
            bodies.push((name, body));
        }
    }
    let settings: &[(Coding, u32, u32)] = &[
        (Coding::Gzip, 1, 15),
        (Coding::Gzip, 4, 15),
        (Coding::Gzip, 5, 15),
        (Coding::Gzip, 6, 15),
        (Coding::Gzip, 9, 15),
        (Coding::Brotli, 1, 18),
        (Coding::Brotli, 3, 16),
        (Coding::Brotli, 3, 18),
        (Coding::Brotli, 4, 16),
        (Coding::Brotli, 4, 17),
        (Coding::Brotli, 4, 18),
        (Coding::Brotli, 4, 22),
        (Coding::Brotli, 5, 18),
        (Coding::Brotli, 6, 18),
        (Coding::Zstd, 1, 16),
        (Coding::Zstd, 3, 16),
        (Coding::Zstd, 3, 17),
        (Coding::Zstd, 3, 18),
        (Coding::Zstd, 3, 0),
        (Coding::Zstd, 6, 16),
        (Coding::Zstd, 9, 16),
    ];
    println!("coding level window  body           ratio    MB/s  (16 KiB pushes; * = chosen)");
    for &(coding, level, window) in settings {
        let chosen = match coding {
            Coding::Gzip => level == GZIP_LEVEL,
            Coding::Brotli => level == BROTLI_QUALITY && window == BROTLI_LGWIN,
            _ => level == ZSTD_LEVEL as u32 && window == ZSTD_WINDOW_LOG,
        };
        for (name, body) in &bodies {
            let (mut runs, mut compressed, start) = (0u32, 0, Instant::now());
            while start.elapsed() < Duration::from_millis(300) || runs < 3 {
                let mut encoder = Encoder::with_settings(coding, level, window);
                let (_, out) = encode(&mut encoder, body, 16 * 1024);
                compressed = out.len();
                if runs == 0 {
                    assert_eq!(decode(coding, &out), *body);
                }
                runs += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            let mbps = (body.len() as f64 * f64::from(runs)) / secs / 1e6;
            let window = if window == 0 {
                "dflt".to_owned()
            } else {
                format!("2^{window}")
            };
            println!(
                "{:<6} {level:>5} {window:>6}  {name:<14} {:>5.2}  {mbps:>6.1} {}",
                coding.as_str(),
                body.len() as f64 / compressed as f64,
                if chosen { "*" } else { "" },
            );
        }
    }
    // zstd reports its own context size; the others are measured outside (module docs).
    let mut encoder = Encoder::new(Coding::Zstd);
    if let State::Zstd(z) = &encoder.state {
        println!("zstd context after new: {} KiB", z.cctx.sizeof() / 1024);
    }
    encoder.push(&json_body(1024 * 1024));
    if let State::Zstd(z) = &encoder.state {
        println!("zstd context after 1 MiB: {} KiB", z.cctx.sizeof() / 1024);
    }
}

#[test]
fn an_encoder_can_move_between_threads() {
    // The edge's response body is polled on whichever worker runs the task.
    fn assert_send<T: Send + 'static>(_: &T) {}
    assert_send(&Encoder::new(Coding::Brotli));
}
