//! Bytes kept deflated in wasm memory and read back in bounded pieces: what the JSON document's
//! `sessions` array needs while its head (known only at the end of input) is not yet written.
//! Compressing here rather than in a JS `CompressionStream` keeps the parts out of the JS
//! heap: in workerd their garbage, collected late, made most of the process's peak (see
//! wasm/README.md, "Edge").

use miniz_oxide::deflate::core::CompressorOxide;
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Level 6 (zlib's default): on the 60,000-connection document (131 MB of JSON) it left the
/// wasm memory at 38 MiB against 46 MiB at level 1 (runtimes.mjs, after the lines), in no
/// more time under workerd.
const LEVEL: u8 = 6;

/// Output room per compressor call.
const STEP: usize = 64 * 1024;

/// Raw deflate written with [`Deflated::write`], ended with [`Deflated::finish`], then read
/// back with [`Deflated::read`].
pub struct Deflated {
    compressor: Box<CompressorOxide>,
    compressed: Vec<u8>,
    scratch: Vec<u8>,
    finished: bool,
    inflater: Option<Box<InflateState>>,
    read_at: usize,
    ended: bool,
}

impl core::fmt::Debug for Deflated {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deflated")
            .field("compressed", &self.compressed.len())
            .field("finished", &self.finished)
            .field("read_at", &self.read_at)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Default for Deflated {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflated {
    /// Nothing written yet.
    pub fn new() -> Self {
        let mut compressor = Box::<CompressorOxide>::default();
        compressor.set_format_and_level(DataFormat::Raw, LEVEL);
        Self {
            compressor,
            compressed: Vec::new(),
            scratch: Vec::new(),
            finished: false,
            inflater: None,
            read_at: 0,
            ended: false,
        }
    }

    /// Compressed bytes held.
    pub fn compressed_len(&self) -> usize {
        self.compressed.len()
    }

    /// Appends `bytes`. Errors after [`Deflated::finish`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.deflate(bytes, MZFlush::None)
    }

    /// Ends the writing; [`Deflated::read`] may start.
    pub fn finish(&mut self) -> Result<(), String> {
        self.deflate(&[], MZFlush::Finish)?;
        self.finished = true;
        self.compressed.shrink_to_fit();
        self.scratch = Vec::new();
        Ok(())
    }

    fn deflate(&mut self, mut input: &[u8], flush: MZFlush) -> Result<(), String> {
        if self.finished {
            return Err("the deflated bytes are finished".to_owned());
        }
        // The compressor writes into `scratch` (zeroed once) and what it wrote is appended:
        // resizing `compressed` per call would zero a whole step each time.
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.resize(STEP, 0);
        let result = loop {
            let r = miniz_oxide::deflate::stream::deflate(
                &mut self.compressor,
                input,
                &mut scratch,
                flush,
            );
            self.compressed
                .extend_from_slice(scratch.get(..r.bytes_written).unwrap_or_default());
            input = input.get(r.bytes_consumed..).unwrap_or_default();
            let done = match (flush, r.status) {
                (MZFlush::Finish, Ok(status)) => status == MZStatus::StreamEnd,
                // All input taken and the output not full, or no progress left to make
                // (`Buf`) without flushing: what is pending stays in the compressor.
                (_, Ok(_)) => input.is_empty() && r.bytes_written < STEP,
                (MZFlush::None, Err(MZError::Buf)) if input.is_empty() => true,
                (_, Err(e)) => break Err(format!("deflate: {e:?}")),
            };
            if done {
                break Ok(());
            }
        };
        self.scratch = scratch;
        result
    }

    /// The next at most `max` (at least 1) bytes of what was written, in order; empty once all
    /// is read. Errors before [`Deflated::finish`].
    pub fn read(&mut self, max: usize) -> Result<Vec<u8>, String> {
        if !self.finished {
            return Err("the deflated bytes are read after finish".to_owned());
        }
        if self.ended {
            return Ok(Vec::new());
        }
        let inflater = self
            .inflater
            .get_or_insert_with(|| InflateState::new_boxed(DataFormat::Raw));
        let mut out = vec![0; max.max(1)];
        let mut filled = 0;
        while filled < out.len() && !self.ended {
            let input = self.compressed.get(self.read_at..).unwrap_or_default();
            let r = miniz_oxide::inflate::stream::inflate(
                inflater,
                input,
                out.get_mut(filled..).unwrap_or_default(),
                MZFlush::None,
            );
            self.read_at += r.bytes_consumed;
            filled += r.bytes_written;
            match r.status.map_err(|e| format!("inflate: {e:?}"))? {
                MZStatus::StreamEnd => self.ended = true,
                _ if r.bytes_consumed == 0 && r.bytes_written == 0 => {
                    return Err("inflate: the deflated bytes end short".to_owned());
                }
                _ => {}
            }
        }
        out.truncate(filled);
        if self.ended {
            // Read through: the memory goes back to the allocator for the next inspection.
            self.compressed = Vec::new();
            self.inflater = None;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_in_any_pieces() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| {
                format!("{{\"first_frame\":{i},\"dst_host\":\"example.com\"}},").into_bytes()
            })
            .collect();
        for (write_size, read_size) in [(3, 1 << 20), (777, 1000), (1 << 20, 1), (5000, 64 * 1024)]
        {
            let mut d = Deflated::new();
            assert!(d.read(10).is_err());
            for part in text.chunks(write_size) {
                d.write(part).unwrap();
            }
            d.finish().unwrap();
            assert!(
                d.compressed_len() < text.len() / 4,
                "{}",
                d.compressed_len()
            );
            assert!(d.write(b"x").is_err());
            let mut back = Vec::new();
            // 1-byte reads of 8 MB are slow: cap them.
            let max_reads = if read_size == 1 { 10_000 } else { usize::MAX };
            let mut reads = 0;
            loop {
                let piece = d.read(read_size).unwrap();
                if piece.is_empty() {
                    break;
                }
                assert!(piece.len() <= read_size);
                back.extend_from_slice(&piece);
                reads += 1;
                if reads == max_reads {
                    break;
                }
            }
            let want = text.get(..back.len()).unwrap();
            assert_eq!(back, want);
            if reads < max_reads {
                assert_eq!(back.len(), text.len());
            }
        }
    }

    #[test]
    fn nothing_written_reads_nothing() {
        let mut d = Deflated::new();
        d.finish().unwrap();
        assert_eq!(d.read(100).unwrap(), Vec::<u8>::new());
        assert_eq!(d.read(100).unwrap(), Vec::<u8>::new());
    }
}
