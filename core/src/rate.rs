//! Token buckets: how many bytes, datagrams or new sessions are allowed per second.
//!
//! A [`TokenBucket`] holds up to `burst` tokens and gains `per_second` tokens each second;
//! spending needs tokens. The same bucket limits bandwidth (a token is a byte) and rates of
//! events (a token is a session). Like every timed object in the core it has no clock: each
//! call takes the driver's current [`Instant`].
//!
//! Written here rather than taken from a rate-limiting crate: those need `std` or `alloc`
//! and keep their own clock, and the core has neither.

use core::time::Duration;

use crate::time::Instant;

/// A rate: `per_second` tokens gained each second, at most `burst` held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rate {
    /// Tokens gained per second; 0 means nothing is ever refilled.
    pub per_second: u64,
    /// The most tokens held at once: what may be spent at once after a quiet period.
    pub burst: u64,
}

impl Rate {
    /// `per_second` tokens a second, with a burst of one second's worth (at least 1).
    pub const fn per_second(per_second: u64) -> Self {
        Self {
            per_second,
            burst: if per_second == 0 { 1 } else { per_second },
        }
    }
}

/// Tokens are kept in thousandths, so that refilling every millisecond loses nothing at
/// rates below 1,000 per second.
const MILLI: u64 = 1000;

/// A token bucket: see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TokenBucket {
    rate: Rate,
    /// Thousandths of a token.
    level: u64,
    /// When `level` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub const fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            level: rate.burst.saturating_mul(MILLI),
            updated: now,
        }
    }

    /// The rate.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// Changes the rate (a reloaded configuration), keeping the tokens held up to the new
    /// burst.
    pub fn set_rate(&mut self, rate: Rate, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.level = self.level.min(self.capacity());
    }

    fn capacity(&self) -> u64 {
        self.rate.burst.saturating_mul(MILLI)
    }

    fn refill(&mut self, now: Instant) {
        // A clock that goes backwards (it should not) refills nothing.
        if now <= self.updated {
            return;
        }
        let elapsed_ms = now.as_millis() - self.updated.as_millis();
        // `per_second` tokens per 1000 ms is `per_second` thousandths per millisecond.
        let gained = self.rate.per_second.saturating_mul(elapsed_ms);
        self.level = self.level.saturating_add(gained).min(self.capacity());
        self.updated = now;
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.level / MILLI
    }

    /// Spends `n` tokens if that many are available at `now`; otherwise spends nothing.
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        self.refill(now);
        match self.level.checked_sub(n.saturating_mul(MILLI)) {
            Some(rest) => {
                self.level = rest;
                true
            }
            None => false,
        }
    }

    /// Spends and returns as many tokens as are available at `now`, at most `max`.
    pub fn take_up_to(&mut self, now: Instant, max: u64) -> u64 {
        let n = self.available(now).min(max);
        self.level -= n * MILLI;
        n
    }

    /// Returns `n` unspent tokens taken earlier (a read that moved less than it was granted),
    /// up to the burst.
    pub fn give_back(&mut self, n: u64) {
        self.level = self
            .level
            .saturating_add(n.saturating_mul(MILLI))
            .min(self.capacity());
    }

    /// When `n` tokens will be available (at most `burst` are ever held, so a larger `n`
    /// is treated as `burst`): `now` if they already are, `None` if never (a rate of 0).
    pub fn ready_at(&mut self, now: Instant, n: u64) -> Option<Instant> {
        self.refill(now);
        let want = n.min(self.rate.burst).saturating_mul(MILLI);
        let missing = want.saturating_sub(self.level);
        if missing == 0 {
            return Some(now);
        }
        if self.rate.per_second == 0 {
            return None;
        }
        let ms = missing.div_ceil(self.rate.per_second);
        Some(now + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn test_starts_full_and_refills_at_rate() {
        let mut b = TokenBucket::new(
            Rate {
                per_second: 1000,
                burst: 500,
            },
            at(0),
        );
        assert_eq!(b.available(at(0)), 500);
        assert!(b.try_take(at(0), 500));
        assert!(!b.try_take(at(0), 1));
        assert_eq!(b.available(at(100)), 100);
        assert_eq!(b.available(at(10_000)), 500, "capped at burst");
    }

    #[test]
    fn test_slow_rates_keep_fractions() {
        let mut b = TokenBucket::new(Rate::per_second(3), at(0));
        assert!(b.try_take(at(0), 3));
        // 3 per second: one token every 333.3 ms, however finely the clock is sampled.
        for ms in 1..=333 {
            assert_eq!(b.available(at(ms)), 0, "{ms}");
        }
        assert_eq!(b.available(at(334)), 1);
        assert_eq!(b.available(at(1000)), 3);
    }

    #[test]
    fn test_try_take_is_all_or_nothing() {
        let mut b = TokenBucket::new(Rate::per_second(10), at(0));
        assert!(!b.try_take(at(0), 11));
        assert_eq!(b.available(at(0)), 10);
        assert_eq!(b.take_up_to(at(0), 25), 10);
        assert_eq!(b.take_up_to(at(0), 25), 0);
    }

    #[test]
    fn test_give_back_is_capped_at_burst() {
        let mut b = TokenBucket::new(Rate::per_second(100), at(0));
        assert_eq!(b.take_up_to(at(0), 60), 60);
        b.give_back(20);
        assert_eq!(b.available(at(0)), 60);
        b.give_back(1000);
        assert_eq!(b.available(at(0)), 100);
    }

    #[test]
    fn test_ready_at() {
        let mut b = TokenBucket::new(
            Rate {
                per_second: 2000,
                burst: 100,
            },
            at(0),
        );
        assert_eq!(b.ready_at(at(0), 100), Some(at(0)));
        assert_eq!(b.take_up_to(at(0), 100), 100);
        assert_eq!(b.ready_at(at(0), 10), Some(at(5)));
        assert_eq!(
            b.ready_at(at(0), 1_000_000),
            Some(at(50)),
            "capped at burst"
        );
        let mut dry = TokenBucket::new(
            Rate {
                per_second: 0,
                burst: 1,
            },
            at(0),
        );
        assert!(dry.try_take(at(0), 1));
        assert_eq!(dry.ready_at(at(1_000_000), 1), None);
    }

    #[test]
    fn test_huge_values_saturate() {
        let mut b = TokenBucket::new(
            Rate {
                per_second: u64::MAX,
                burst: u64::MAX,
            },
            at(0),
        );
        assert!(b.try_take(at(u64::MAX), u64::MAX / MILLI));
        let _ = b.ready_at(at(u64::MAX), u64::MAX);
        b.set_rate(Rate::per_second(1), at(u64::MAX));
        assert!(
            b.available(at(u64::MAX)) <= 1,
            "held tokens capped at the new burst"
        );
    }

    #[test]
    fn test_clock_going_back_refills_nothing() {
        let mut b = TokenBucket::new(Rate::per_second(1000), at(1000));
        assert_eq!(b.take_up_to(at(1000), 1000), 1000);
        assert_eq!(b.available(at(500)), 0);
        assert_eq!(b.available(at(1001)), 1);
    }
}
