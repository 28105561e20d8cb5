//! Time as the core sees it: the driver's monotonic clock, passed in.
//!
//! The core has no clock. Every call that depends on time takes the current [`Instant`], which
//! the driver builds from its own monotonic clock, and every object with a deadline says when
//! it wants to be called again through a `poll_timeout` method.

use core::ops::Add;
use core::time::Duration;

/// A point in time on the driver's monotonic clock, in milliseconds since an arbitrary epoch.
///
/// Drivers convert from their clock (`tokio::time::Instant` relative to a start instant,
/// `embassy_time::Instant::as_millis`, …). Arithmetic saturates, so no input panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The instant `ms` milliseconds after the driver's epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the driver's epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the largest instant.
    #[must_use]
    // Not inlined: deadlines are computed in many places, and 64-bit saturating arithmetic
    // is long on 32-bit targets.
    #[inline(never)]
    pub fn saturating_add(self, d: Duration) -> Self {
        // `Duration::as_millis` is a u128: costly on 32-bit targets, and any duration whose
        // milliseconds overflow a u64 saturates anyway.
        let ms = d
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()));
        Self(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Self;

    /// Saturating: see [`Instant::saturating_add`].
    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_add_saturates_and_truncates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_micros(1999), Instant::from_millis(6));
        assert_eq!(t + Duration::from_secs(3), Instant::from_millis(3005));
        assert_eq!(t + Duration::MAX, Instant::from_millis(u64::MAX));
        let near = Duration::from_millis(u64::MAX - 1);
        assert_eq!(t + near, Instant::from_millis(u64::MAX));
    }
}
