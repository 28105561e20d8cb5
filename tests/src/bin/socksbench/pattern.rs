//! The deterministic byte stream every bulk transfer carries, so both ends can check every
//! byte with a `memcmp` instead of hashing.
//!
//! Byte `i` of a stream is `TABLE[i % PERIOD]`; `PERIOD` is a prime, so a dropped, duplicated
//! or reordered chunk of any power-of-two size shifts the phase and is caught.

use std::sync::LazyLock;

/// The largest slice [`window`] returns: the transfer chunk size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The pattern period (the largest prime below 2^16).
const PERIOD: usize = 65_521;

/// `PERIOD + CHUNK` bytes, so any window of up to `CHUNK` bytes is contiguous.
static TABLE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut state: u32 = 0x9e37_79b9;
    let period: Vec<u8> = (0..PERIOD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    period
        .iter()
        .cycle()
        .take(PERIOD + CHUNK)
        .copied()
        .collect()
});

/// The `len` (≤ [`CHUNK`]) pattern bytes starting at stream offset `offset`.
pub(crate) fn window(offset: u64, len: usize) -> &'static [u8] {
    assert!(len <= CHUNK, "window of {len} bytes exceeds CHUNK");
    let start = usize::try_from(offset % PERIOD as u64).expect("below PERIOD");
    &TABLE[start..start + len]
}

/// Whether `got` is the pattern at stream offset `offset`; on a mismatch, the index of the
/// first wrong byte within `got`.
pub(crate) fn check(offset: u64, got: &[u8]) -> Result<(), usize> {
    let want = window(offset, got.len());
    if got == want {
        Ok(())
    } else {
        Err(got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_agree_across_the_wrap() {
        let a = window(PERIOD as u64 - 10, 20);
        let b = window(0, 10);
        assert_eq!(&a[10..], b);
        assert_eq!(window(3 * PERIOD as u64 + 5, 100), window(5, 100));
    }

    #[test]
    fn check_finds_a_shift() {
        let w = window(1000, 4096).to_vec();
        assert_eq!(check(1000, &w), Ok(()));
        assert!(check(1001, &w).is_err());
        assert!(check(1000 + 4096, &w).is_err());
    }
}
