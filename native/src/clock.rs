//! The core's clock: milliseconds since the process started, on tokio's monotonic clock.

use std::sync::OnceLock;

use socksgate_core::Instant;

fn epoch() -> tokio::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    tokio::time::Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now))
}

/// Now, as the core counts time.
pub(crate) fn now() -> Instant {
    let ms = tokio::time::Instant::now()
        .saturating_duration_since(epoch())
        .as_millis();
    Instant::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A core deadline as a tokio instant, for `sleep_until` and `timeout_at`.
pub(crate) fn deadline(at: Instant) -> tokio::time::Instant {
    epoch() + std::time::Duration::from_millis(at.as_millis())
}
