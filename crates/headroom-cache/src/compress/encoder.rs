//! The streaming encoder: body chunks in, compressed bytes out, as the body streams.

use std::io::Write;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

use super::Coding;

// The levels are chosen for a proxy, which compresses on the fly and holds one encoder per
// response in flight: fast levels, small windows. Numbers (ratio, MB/s, heap per encoder) are
// in the module docs; `bench_encoders` reproduces the first two.

/// gzip level 5 (of 1–9). Output 1–6% larger than level 6's (zlib's default) for 1.2–1.5× its
/// speed; level 9 gains under 1% on 6; level 4 loses up to 5% for ~1.3× more speed.
/// miniz_oxide's state is 311 KiB whatever the level (its 32 KiB window and tables are fixed).
pub const GZIP_LEVEL: u32 = 5;

/// brotli quality 3 (of 0–11). This brotli (the Rust port) is memory-hungry from quality 2 up,
/// and at quality 4 it gathers input into meta-blocks: 1.2 MiB held at lgwin 16, 1.5 MiB at
/// lgwin 18, for output 3–9% smaller than quality 3's at half its speed; quality 5 and up, where
/// brotli beats gzip 5 on size, take 2 MiB and more. Quality 3 holds 660 KiB, runs ~2×
/// gzip 5's speed, and is close to zstd 3 on size (6–22% more bytes than gzip 5).
pub const BROTLI_QUALITY: u32 = 3;

/// brotli window: 2^16 = 64 KiB of history instead of the 4 MiB default (lgwin 22). The ring
/// buffer (twice the window) and the memory it drags along scale with it: 660 KiB held at 2^16,
/// 790 KiB at 2^17, 1 MiB at 2^18. Bodies up to 64 KiB lose nothing; a 1.8 MB HTML body
/// compresses 3.73× instead of 3.88× at 2^18.
pub const BROTLI_LGWIN: u32 = 16;

/// zstd level 3 (zstd's default): ~5× gzip 5's speed, for output 4–32% larger. Level 1 is
/// ~1.2× faster for 1–9% more bytes; level 6 costs 4× the CPU.
pub const ZSTD_LEVEL: i32 = 3;

/// zstd window: 2^16 = 64 KiB instead of level 3's 2 MiB. zstd's buffers scale with its block,
/// which is the smaller of 128 KiB and the window, so the window sets the memory: 585 KiB per
/// encoder at 2^16, 1.1 MiB at 2^17, 1.5 MiB at 2^18, 3.5 MiB at level 3's own settings. Bodies
/// up to 64 KiB lose under 0.5%; a 1.8 MB HTML body compresses 3.69× instead of 4.29×.
pub const ZSTD_WINDOW_LOG: u32 = 16;

/// zstd's hash and chain tables get 2^(window log − 2) entries of 4 bytes each (2^14 at the
/// chosen window, instead of level 3's 2^17 and 2^16): as many bytes as the window; one more
/// bit (128 KiB more) gained under 0.5%.
const ZSTD_TABLE_LOG_BELOW_WINDOW: u32 = 2;

/// Bytes reserved at a time for the encoder's output: output is handed out after every call,
/// so this bounds the copy, not the total.
const OUTPUT_RESERVE: usize = 16 * 1024;

/// brotli holds input back until a meta-block is worth emitting (at quality 4 and up, up to
/// twice its window), and its command and output buffers grow with it. A flush every 32 KiB of
/// input caps that: 660 KiB held instead of 820 KiB at the chosen settings (1.5 MiB instead of
/// 3.2 MiB at quality 4, lgwin 18), for ~1% larger output, and output streams every 32 KiB.
const BROTLI_FLUSH_EVERY: usize = 32 * 1024;

/// brotli's internal output buffer (the writer copies from it into ours).
const BROTLI_BUFFER: usize = 4 * 1024;

/// gzip's fixed header: magic, deflate, no flags, no mtime, no extra flags, OS "unknown" —
/// what flate2's `GzBuilder` writes by default.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A streaming encoder for one response body.
///
/// Feed the body's chunks to [`push`](Encoder::push) and send what it returns; send what
/// [`finish`](Encoder::finish) returns last. Output is handed out on every call; inside, each
/// coding keeps only its window and block buffers, so a body of any length streams in bounded
/// memory. The codings hold input back until a block is worth emitting: on text, brotli emits
/// every 32 KiB of input, zstd every 64 KiB (its block), gzip every ~250 KiB (miniz_oxide's
/// buffer of 64 Ki matches; incompressible input: every 32 KiB). A body smaller than that comes
/// out at `finish`. When the upstream pauses mid-body, call [`flush`](Encoder::flush) to send
/// what is held back, so that a slow stream does not sit in the encoder.
///
/// Memory per encoder (heap held while streaming, any body length): gzip 311 KiB, allocated by
/// `new`; brotli 660 KiB, allocated as input arrives (13 KiB for a 4 KiB body); zstd 585 KiB,
/// allocated at the first push. Identity holds nothing and passes chunks through (one copy).
///
/// Errors: the encoders write into memory, so they cannot fail for lack of room; an internal
/// error (zstd reports them; none is expected) marks the encoder [`failed`](Encoder::failed),
/// after which it returns empty output: the body is then truncated and must be aborted, never
/// sent as complete.
pub struct Encoder {
    state: State,
    failed: bool,
}

enum State {
    Identity,
    Gzip(Box<Gzip>),
    Brotli(Box<Brotli>),
    Zstd(Box<Zstd>),
    Finished,
}

struct Gzip {
    deflate: Compress,
    crc: Crc,
    /// The 10-byte header is sent with the first output, so an empty push sends nothing.
    header_sent: bool,
}

struct Zstd {
    cctx: CCtx<'static>,
}

impl Encoder {
    /// An encoder for `coding` at the levels above. Cost: the coding's state (sizes above);
    /// Identity allocates nothing. Never panics. If zstd cannot create its context (out of
    /// memory) the encoder starts out [`failed`](Encoder::failed): check before sending.
    pub fn new(coding: Coding) -> Encoder {
        let (level, window_log) = match coding {
            Coding::Identity => (0, 0),
            Coding::Gzip => (GZIP_LEVEL, 15),
            Coding::Brotli => (BROTLI_QUALITY, BROTLI_LGWIN),
            Coding::Zstd => (ZSTD_LEVEL as u32, ZSTD_WINDOW_LOG),
        };
        Encoder::with_settings(coding, level, window_log)
    }

    /// An encoder at another level and window (gzip's window is fixed at 2^15); the benchmark
    /// compares settings with it.
    fn with_settings(coding: Coding, level: u32, window_log: u32) -> Encoder {
        let state = match coding {
            Coding::Identity => State::Identity,
            Coding::Gzip => State::Gzip(Box::new(Gzip {
                deflate: Compress::new(Compression::new(level), false),
                crc: Crc::new(),
                header_sent: false,
            })),
            Coding::Brotli => State::Brotli(Box::new(Brotli::new(level, window_log))),
            Coding::Zstd => match zstd_context(level as i32, window_log) {
                Some(z) => State::Zstd(Box::new(z)),
                None => State::Finished,
            },
        };
        let failed = matches!(state, State::Finished);
        Encoder { state, failed }
    }

    /// Compresses `chunk`; returns the compressed bytes ready so far (often empty: the coding
    /// buffers up to a block). After [`finish`](Encoder::finish) or a failure: a no-op
    /// returning empty.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let result = match &mut self.state {
            State::Identity => return Bytes::copy_from_slice(chunk),
            State::Finished => return Bytes::new(),
            State::Gzip(g) => g.run(chunk, FlushCompress::None),
            State::Brotli(b) => b.push(chunk),
            State::Zstd(z) => z.run(
                chunk,
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
            ),
        };
        self.settle(result)
    }

    /// Sends out everything buffered so far, so that the client can decode all the input pushed
    /// until now (a sync flush: the stream continues). Costs a few bytes of output and some ratio
    /// each time: call it when the upstream pauses, not per chunk.
    pub fn flush(&mut self) -> Bytes {
        let result = match &mut self.state {
            State::Identity | State::Finished => return Bytes::new(),
            State::Gzip(g) => g.run(&[], FlushCompress::Sync),
            State::Brotli(b) => b.flush(),
            State::Zstd(z) => z.run(&[], zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush),
        };
        self.settle(result)
    }

    /// Ends the stream: returns the last bytes (the coding's trailer) and frees the coding's
    /// state. Calling it again, or `push` after it, returns empty.
    pub fn finish(&mut self) -> Bytes {
        let result = match std::mem::replace(&mut self.state, State::Finished) {
            State::Identity | State::Finished => return Bytes::new(),
            State::Gzip(mut g) => g.finish(),
            State::Brotli(b) => Ok(b.writer.into_inner()),
            State::Zstd(mut z) => z.run(&[], zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end),
        };
        self.settle(result)
    }

    /// Whether the coding reported an error (the output is then incomplete and the response
    /// must be aborted). Not expected in practice: see the type's docs.
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn settle(&mut self, result: Result<Vec<u8>, ()>) -> Bytes {
        match result {
            Ok(out) if out.is_empty() => Bytes::new(),
            // The output buffer was reserved ahead; a `Bytes` made from it keeps its capacity
            // alive for as long as the chunk is queued, so a mostly-empty one is copied out.
            Ok(out) if out.len() < out.capacity() / 2 => Bytes::copy_from_slice(&out),
            Ok(out) => Bytes::from(out),
            Err(()) => {
                self.failed = true;
                self.state = State::Finished;
                Bytes::new()
            }
        }
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match self.state {
            State::Identity => "identity",
            State::Gzip(_) => "gzip",
            State::Brotli(_) => "br",
            State::Zstd(_) => "zstd",
            State::Finished => "finished",
        };
        f.debug_struct("Encoder")
            .field("state", &coding)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Gzip {
    /// Deflates `input` with `flush`, returning the output (with the header first, once).
    fn run(&mut self, input: &[u8], flush: FlushCompress) -> Result<Vec<u8>, ()> {
        self.crc.update(input);
        let mut out = Vec::new();
        let header = if self.header_sent {
            0
        } else {
            GZIP_HEADER.len()
        };
        out.extend_from_slice(&GZIP_HEADER[..header]);
        let mut consumed = 0;
        loop {
            out.reserve(OUTPUT_RESERVE);
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(&input[consumed..], &mut out, flush)
                .map_err(|_| ())?;
            consumed += (self.deflate.total_in() - before) as usize;
            // Finishing is done at the stream's end; otherwise when the input is taken and the
            // compressor left room unused (a full buffer may mean more is pending).
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => consumed == input.len() && out.len() < out.capacity(),
            };
            if done {
                break;
            }
        }
        if out.len() == header && flush != FlushCompress::Finish {
            // Nothing deflated yet: keep the header for the first real output.
            out.clear();
        } else {
            self.header_sent = true;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, ()> {
        let mut out = self.run(&[], FlushCompress::Finish)?;
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        Ok(out)
    }
}

struct Brotli {
    writer: brotli::CompressorWriter<Vec<u8>>,
    /// Input written since the last flush.
    unflushed: usize,
}

impl Brotli {
    /// A brotli writer in text mode (the compressible types are text or text-like).
    fn new(quality: u32, lgwin: u32) -> Brotli {
        let params = brotli::enc::BrotliEncoderParams {
            quality: quality as i32,
            lgwin: lgwin as i32,
            mode: brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
            ..Default::default()
        };
        Brotli {
            writer: brotli::CompressorWriter::with_params(Vec::new(), BROTLI_BUFFER, &params),
            unflushed: 0,
        }
    }

    /// Writes `chunk`, flushing every [`BROTLI_FLUSH_EVERY`] bytes of input.
    fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<u8>, ()> {
        while !chunk.is_empty() {
            let room = BROTLI_FLUSH_EVERY - self.unflushed;
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            self.writer.write_all(now).map_err(|_| ())?;
            self.unflushed += now.len();
            if self.unflushed == BROTLI_FLUSH_EVERY {
                self.writer.flush().map_err(|_| ())?;
                self.unflushed = 0;
            }
            chunk = later;
        }
        Ok(std::mem::take(self.writer.get_mut()))
    }

    fn flush(&mut self) -> Result<Vec<u8>, ()> {
        self.writer.flush().map_err(|_| ())?;
        self.unflushed = 0;
        Ok(std::mem::take(self.writer.get_mut()))
    }
}

/// A zstd context at `level` with `window_log` and tables to match (`window_log` 0: the
/// level's own window and tables, for the benchmark); `None` if zstd refuses a parameter (it
/// does not for these constants; a test checks).
fn zstd_context(level: i32, window_log: u32) -> Option<Zstd> {
    let mut cctx = CCtx::try_create()?;
    // The checksum lets a client detect a corrupt body; 4 bytes per response.
    let level_params = [
        CParameter::CompressionLevel(level),
        CParameter::ChecksumFlag(true),
    ];
    let window_params = [
        CParameter::WindowLog(window_log),
        CParameter::HashLog(window_log.saturating_sub(ZSTD_TABLE_LOG_BELOW_WINDOW)),
        CParameter::ChainLog(window_log.saturating_sub(ZSTD_TABLE_LOG_BELOW_WINDOW)),
    ];
    let window_params = if window_log == 0 {
        &[][..]
    } else {
        &window_params[..]
    };
    for &param in level_params.iter().chain(window_params) {
        cctx.set_parameter(param).ok()?;
    }
    Some(Zstd { cctx })
}

impl Zstd {
    fn run(
        &mut self,
        input: &[u8],
        directive: zstd_safe::zstd_sys::ZSTD_EndDirective,
    ) -> Result<Vec<u8>, ()> {
        use zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue;
        let mut out = Vec::new();
        let mut input = InBuffer::around(input);
        loop {
            out.reserve(OUTPUT_RESERVE);
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self
                .cctx
                .compress_stream2(&mut output, &mut input, directive)
                .map_err(|_| ())?;
            let room_left = output.pos() < output.capacity();
            let done = if directive == ZSTD_e_continue {
                // zstd takes all input it can buffer; it is done when all input is taken and
                // it stopped short of filling the output.
                input.pos() == input.src.len() && room_left
            } else {
                // Flush and end report what is still to be written; 0 is done.
                remaining == 0
            };
            if done {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
#[path = "encoder_tests.rs"]
mod tests;
