//! Growing the wasm heap in large steps.
//!
//! Rust's allocator on wasm32 (dlmalloc) grows the linear memory by what it lacks, rounded up
//! to 64 KiB. Each `memory.grow` costs the engine far more than its bytes: V8 replaces the
//! memory's `ArrayBuffer` and counts it as new external memory, which starts garbage
//! collections. Keeping the 183,000 sessions of a 200 MB handshake-only capture (250 MiB of
//! heap) took about 4,000 grows, and they and the collections they caused were 45 % of the
//! inspection's time in Node (`e2e/profile-node.mjs`), the same in Chromium.
//!
//! [`reserve_ahead`], called after each push, notices that the memory grew during it and,
//! once the memory is past [`RESERVE_FROM`], allocates and frees one block of a quarter of
//! it: the allocator grows once by that much, and the block, freed at the top of the heap,
//! merges into the free space the next allocations are carved from. The memory then grows a
//! few dozen times instead of thousands, overshooting what is used by at most a quarter. Below
//! [`RESERVE_FROM`] nothing is reserved: the grows are few there, and an edge worker streaming
//! its sessions out (10-40 MiB) keeps its memory as small as it was.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The memory size from which growth is reserved ahead.
pub(crate) const RESERVE_FROM: usize = 64 << 20;

/// The memory's size after the last [`reserve_ahead`] (0: not called yet).
static SEEN: AtomicUsize = AtomicUsize::new(0);

/// After a push: if the memory grew since the last call and is past [`RESERVE_FROM`], grows
/// it once by a quarter (see the module docs).
pub(crate) fn reserve_ahead() {
    const PAGE: usize = 64 * 1024;
    let size = core::arch::wasm32::memory_size(0) * PAGE;
    let seen = SEEN.swap(size, Ordering::Relaxed);
    if seen != 0 && size > seen && size >= RESERVE_FROM {
        let block = Vec::<u8>::with_capacity(size / 4);
        // Keeps the allocation from being optimised away with its free.
        core::hint::black_box(&block);
        drop(block);
        SEEN.store(core::arch::wasm32::memory_size(0) * PAGE, Ordering::Relaxed);
    }
}
