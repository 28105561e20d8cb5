//! Growing the wasm heap in large steps.
//!
//! Rust's allocator on wasm32 (dlmalloc) grows the linear memory by what it lacks, rounded up
//! to 64 KiB. Each `memory.grow` costs the engine far more than its bytes: V8 replaces the
//! memory's `ArrayBuffer` and counts it as new external memory, which starts garbage
//! collections. Keeping the 183,000 sessions of a 200 MB handshake-only capture (250 MiB of
//! heap) took about 4,000 grows, and they and the collections they caused were 45 % of the
//! inspection's time in Node (`e2e/profile-node.mjs`), the same in Chromium.
//!
//! [`reserve_ahead`], called after each push, notices that the memory grew during it and then
//! allocates and frees one block of a quarter of the memory (at least [`MIN_STEP`]): the
//! allocator grows once by that much, and the block, freed at the top of the heap, merges into
//! the free space the next allocations are carved from. The memory then grows a few dozen
//! times instead of thousands, overshooting what is used by at most a quarter; an inspection
//! whose memory does not grow (one that streams its sessions out) reserves nothing.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The smallest block reserved ahead.
pub(crate) const MIN_STEP: usize = 4 << 20;

/// The memory's size after the last [`reserve_ahead`] (0: not called yet).
static SEEN: AtomicUsize = AtomicUsize::new(0);

/// After a push: if the memory grew since the last call, grows it once by a quarter (see the
/// module docs).
pub(crate) fn reserve_ahead() {
    const PAGE: usize = 64 * 1024;
    let size = core::arch::wasm32::memory_size(0) * PAGE;
    let seen = SEEN.swap(size, Ordering::Relaxed);
    if seen != 0 && size > seen {
        let block = Vec::<u8>::with_capacity((size / 4).max(MIN_STEP));
        // Keeps the allocation from being optimised away with its free.
        core::hint::black_box(&block);
        drop(block);
        SEEN.store(core::arch::wasm32::memory_size(0) * PAGE, Ordering::Relaxed);
    }
}
