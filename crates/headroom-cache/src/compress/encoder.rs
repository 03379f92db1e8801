//! The streaming encoder: body chunks in, compressed bytes out, as the body streams.

use std::io::Write;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

use super::Coding;

/// gzip level 5 (of 1–9). Measured on 64 KiB JSON and HTML bodies (see `bench_encoders`,
/// numbers in the module docs): level 6, zlib's default, gains well under 1% of size for
/// roughly 15% more CPU; below 5 the ratio falls off faster than speed rises. miniz_oxide's
/// state does not depend on the level (its window is fixed at 32 KiB).
pub const GZIP_LEVEL: u32 = 5;

/// brotli quality 4 (of 0–11). Quality 5 and up switch to the slower hashers and cost ~2× the
/// CPU for a few percent; quality 4 already beats gzip 5 on size at similar speed.
pub const BROTLI_QUALITY: u32 = 4;

/// brotli window: 2^18 = 256 KiB of history instead of the 4 MiB default (lgwin 22). The
/// encoder's ring buffer is sized from it, so it bounds the memory of a long response; a web
/// body rarely repeats itself across more than 256 KiB, and the ratio loss measured nil on
/// bodies up to the window (larger bodies lose little: matches are mostly local).
pub const BROTLI_LGWIN: u32 = 18;

/// zstd level 3 (zstd's default): the fastest of the three for a better ratio than gzip.
pub const ZSTD_LEVEL: i32 = 3;

/// zstd window: 2^18 = 256 KiB instead of level 3's 2 MiB (the decoder then needs no more
/// than that, and the encoder's buffers shrink with it).
pub const ZSTD_WINDOW_LOG: u32 = 18;

/// zstd hash and chain tables: 2^16 entries each instead of level 3's 2^17 and 2^16 — the
/// tables are 4 bytes per entry and dominate the encoder's memory at this window.
pub const ZSTD_HASH_LOG: u32 = 16;
pub const ZSTD_CHAIN_LOG: u32 = 16;

/// Bytes reserved at a time for the encoder's output: output is handed out after every call,
/// so this bounds the copy, not the total.
const OUTPUT_RESERVE: usize = 16 * 1024;

/// brotli's internal output buffer (the writer copies from it into ours).
const BROTLI_BUFFER: usize = 4 * 1024;

/// gzip's fixed header: magic, deflate, no flags, no mtime, no extra flags, OS "unknown" —
/// what flate2's `GzBuilder` writes by default.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A streaming encoder for one response body.
///
/// Feed the body's chunks to [`push`](Encoder::push) and send what it returns; send what
/// [`finish`](Encoder::finish) returns last. Output is handed out on every call (nothing
/// accumulates inside beyond the coding's own window and block buffers), so a body of any length
/// streams in bounded memory; the codings buffer input up to a block before emitting (gzip and
/// brotli a few KiB to 64 KiB, zstd up to its 128 KiB block), so a small body comes out at
/// `finish`. Call [`flush`](Encoder::flush) when the upstream pauses to send what is buffered.
///
/// Memory per encoder, measured with a counting allocator after streaming a 1 MiB body
/// (state stays flat after the first window's worth of input): see the module docs. Identity
/// holds nothing and passes chunks through (one copy into `Bytes`).
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
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
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
    /// An encoder for `coding` at the levels above. Cost: allocates the coding's state (see
    /// the module docs for sizes); Identity allocates nothing. Never panics.
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
            Coding::Brotli => State::Brotli(Box::new(brotli_writer(level, window_log))),
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
            State::Brotli(w) => brotli_push(w, chunk),
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
            State::Brotli(w) => brotli_flush(w),
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
            State::Brotli(w) => Ok((*w).into_inner()),
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

/// A brotli writer in text mode (the compressible types are text or text-like).
fn brotli_writer(quality: u32, lgwin: u32) -> brotli::CompressorWriter<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: quality as i32,
        lgwin: lgwin as i32,
        mode: brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
        ..Default::default()
    };
    brotli::CompressorWriter::with_params(Vec::new(), BROTLI_BUFFER, &params)
}

fn brotli_push(w: &mut brotli::CompressorWriter<Vec<u8>>, chunk: &[u8]) -> Result<Vec<u8>, ()> {
    w.write_all(chunk).map_err(|_| ())?;
    Ok(std::mem::take(w.get_mut()))
}

fn brotli_flush(w: &mut brotli::CompressorWriter<Vec<u8>>) -> Result<Vec<u8>, ()> {
    w.flush().map_err(|_| ())?;
    Ok(std::mem::take(w.get_mut()))
}

/// A zstd context at `level` with `window_log` and the tables above (`window_log` 0: the
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
        CParameter::HashLog(ZSTD_HASH_LOG),
        CParameter::ChainLog(ZSTD_CHAIN_LOG),
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
