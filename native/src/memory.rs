//! Giving memory back to the system after a burst of sessions (glibc).
//!
//! glibc's malloc returns freed memory to the system only from the top of each arena; what a
//! burst of sessions freed in the middle stays resident, so the RSS of a long-running server
//! ratchets up with each peak. Every [`CHECK_EVERY`], if at least [`AFTER_SESSIONS`]
//! connections were accepted since the last time, `malloc_trim(0)` hands the free pages of
//! every arena back (`MADV_DONTNEED`); a quiet server is never touched. Elsewhere (musl, other
//! systems) this does nothing.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// How often the connection count is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Connections accepted since the last trim that make the next check trim.
pub const AFTER_SESSIONS: u64 = 256;

/// Runs forever, trimming after bursts (see the module documentation).
pub async fn trim_after_bursts(metrics: Arc<Metrics>) {
    let mut trimmed_at = metrics.connections_accepted();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let accepted = metrics.connections_accepted();
        if accepted.saturating_sub(trimmed_at) >= AFTER_SESSIONS {
            trimmed_at = accepted;
            // It walks every arena under its lock: off the async workers.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Returns the free memory of every malloc arena to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own arenas, each under its
    // lock; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
