//! A streaming zstd decoder for the page: `.pcap.zst` / `.pcapng.zst` captures are
//! decompressed as they are read (browsers' `DecompressionStream` has no zstd), chunk by
//! chunk, so a compressed capture larger than memory opens like any other. ruzstd (pure Rust,
//! the decoder the CLI uses too) does the decoding; this only feeds it pushed chunks.

use ruzstd::decoding::FrameDecoder;
use wasm_bindgen::prelude::*;

/// Longest frame header (magic, descriptor, window, dictionary id, content size): a frame is
/// started only once this much input is there (or the input has ended).
const FRAME_HEADER_MAX: usize = 18;
/// Output taken from the decoder per step.
const STEP: usize = 256 * 1024;

/// Decompresses a zstd stream (one or more frames) pushed in chunks of any size.
#[wasm_bindgen(js_name = ZstdDecoder)]
#[derive(Default)]
pub struct ZstdDecoder {
    decoder: Option<FrameDecoder>,
    /// Input not yet consumed: at most a partial block (zstd blocks are ≤ 128 KiB).
    input: Vec<u8>,
    /// Output space for one step, allocated once.
    step: Vec<u8>,
}

impl core::fmt::Debug for ZstdDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZstdDecoder")
            .field("in_frame", &self.decoder.is_some())
            .field("buffered", &self.input.len())
            .finish()
    }
}

#[wasm_bindgen(js_class = ZstdDecoder)]
impl ZstdDecoder {
    /// A decoder at the start of a stream.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next compressed bytes; returns the bytes they decompress to (possibly none:
    /// a block is decoded once all of it has arrived).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, JsError> {
        self.input.extend_from_slice(chunk);
        self.run(false).map_err(|e| JsError::new(&e))
    }

    /// The end of the stream: returns the last decompressed bytes, or an error if the stream
    /// stops inside a frame.
    pub fn finish(&mut self) -> Result<Vec<u8>, JsError> {
        self.finish_bytes().map_err(|e| JsError::new(&e))
    }
}

impl ZstdDecoder {
    /// [`ZstdDecoder::finish`] with a plain error (for tests off wasm).
    pub fn finish_bytes(&mut self) -> Result<Vec<u8>, String> {
        let out = self.run(true)?;
        let mid_frame = self.decoder.as_ref().is_some_and(|d| !d.is_finished());
        if mid_frame || !self.input.is_empty() {
            return Err("zstd: the compressed stream ends inside a frame (truncated file)".into());
        }
        Ok(out)
    }

    /// Decodes what the buffered input allows.
    fn run(&mut self, last: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if self.step.is_empty() {
            self.step = vec![0; STEP];
        }
        loop {
            let decoder = match self.decoder.as_mut() {
                Some(d) if d.is_finished() && d.can_collect() == 0 => {
                    // A frame is over; another may follow.
                    self.decoder = None;
                    continue;
                }
                Some(d) => d,
                None if self.input.is_empty() => break,
                None if self.input.len() < FRAME_HEADER_MAX && !last => break,
                None => self.decoder.insert(FrameDecoder::new()),
            };
            // Fewer than 4 bytes can only be a block header's start or a checksum's: wait
            // (ruzstd's checksum step reports 4 bytes read whatever it was given).
            let source: &[u8] = if self.input.len() < 4 && !last {
                &[]
            } else {
                &self.input
            };
            let (read, written) = decoder
                .decode_from_to(source, &mut self.step)
                .map_err(|e| format!("zstd: {e}"))?;
            out.extend_from_slice(self.step.get(..written).unwrap_or_default());
            // ruzstd answers "4 read" when it still waits for a frame's checksum and was given
            // fewer bytes: nothing was consumed, wait for more.
            if read > source.len() || (read == 0 && written == 0) {
                break;
            }
            self.input.drain(..read);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(compressed: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let mut d = ZstdDecoder::new();
        let mut out = Vec::new();
        for part in compressed.chunks(chunk) {
            d.input.extend_from_slice(part);
            out.extend(d.run(false)?);
        }
        out.extend(d.finish_bytes()?);
        Ok(out)
    }

    #[test]
    fn any_chunking_gives_the_original_and_truncation_is_an_error() {
        // 1.5 MB over several blocks, two frames back to back.
        let plain: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let mut compressed = ruzstd::encoding::compress_to_vec(
            &plain[..200_000],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        compressed.extend(ruzstd::encoding::compress_to_vec(
            &plain[200_000..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        for chunk in [1, 7, 4096, 65_536, usize::MAX] {
            assert!(
                decode(&compressed, chunk) == Ok(plain.clone()),
                "chunks of {chunk}"
            );
        }
        let cut = &compressed[..compressed.len() / 3];
        assert!(decode(cut, 4096).is_err());
        assert!(decode(b"not zstd at all, certainly not", 5).is_err());
    }
}
