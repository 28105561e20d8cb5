//! The failed-login throttle: when a client's next credential check may run, against online
//! password guessing.
//!
//! A client is its key from [`ClientPrefixes::key`](crate::policy::ClientPrefixes::key) —
//! the same key the per-client session cap and rates use — so rotating addresses inside its
//! network does not reset a client's record. Before checking credentials the front end asks
//! [`LoginThrottle::admit`]: [`Verdict::Check`] after a wait (zero for a client in good
//! standing), or [`Verdict::Refuse`] (fail the login without checking) when that wait would
//! exceed what the caller can afford (`max_wait`). Every `Check` is followed by one
//! [`LoginThrottle::finish`] with the [`Outcome`]. Other clients are never affected.
//!
//! Two [`Schedule`]s:
//!
//! * [`Schedule::Backoff`] (the server's): one failure costs nothing (a typo); after two the
//!   next check waits `base`, doubling with each further failure up to `cap` between two
//!   checks; checks still running count as failures when the next one is scheduled, so
//!   parallel attempts are spaced out — except the first `parallel` of a client whose last
//!   finished check succeeded (a chaining proxy or a shared address logging many users in at
//!   once is not a guesser); a success forgets the failures and the wait, and `quiet` time
//!   without an attempt forgets the client.
//! * [`Schedule::Lockout`] (the firmware's): `failures` failed logins within `window` of the
//!   first of them lock the client out until the window ends (the right password fails
//!   too); a success changes nothing; the next failure after the window starts a new one.
//!
//! The table is bounded: it keeps at most three quarters of its places filled (see
//! [`places_for`](crate::client_table::places_for)) and, to make room for a new client,
//! forgets the least recently used one. Finding it scans the table, which happens only when
//! a new client's login meets a full table and costs far less than the check it precedes.

use core::time::Duration;

use crate::client_table::{ClientTable, Place};
use crate::rules::Cidr;
use crate::time::Instant;

/// How failures slow a client down; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Schedule {
    /// Exponential back-off between checks.
    Backoff {
        /// The wait after the second consecutive failure; doubles with each further one.
        base: Duration,
        /// The longest wait between two checks.
        cap: Duration,
        /// A client without an attempt for this long starts over.
        quiet: Duration,
        /// Checks a client whose last finished check succeeded may run at once before the
        /// running ones count as failures.
        parallel: u32,
    },
    /// A lockout after a number of failures.
    Lockout {
        /// Failures within the window that lock the client out (0: never).
        failures: u32,
        /// The window, from the first failure; the lockout ends with it.
        window: Duration,
    },
}

impl Schedule {
    /// 100 ms doubling to 10 s, forgotten after a quiet minute.
    pub const BACKOFF: Self = Self::Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(10),
        quiet: Duration::from_secs(60),
        parallel: 32,
    };

    /// The longest a client waits for a check: a back-off's cap, a lockout's window.
    pub fn longest_wait(&self) -> Duration {
        match *self {
            Self::Backoff { cap, .. } => cap,
            Self::Lockout { window, .. } => window,
        }
    }

    /// The wait a back-off imposes after `failures` consecutive failures (zero for a
    /// lockout, which has no waits between checks).
    pub fn backoff(&self, failures: u32) -> Duration {
        match *self {
            Self::Backoff { base, cap, .. } if failures >= 2 => {
                let shift = (failures - 2).min(30);
                base.saturating_mul(1u32 << shift).min(cap)
            }
            _ => Duration::ZERO,
        }
    }
}

/// What the front end does with a login attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Wait this long, check the credentials, then [`LoginThrottle::finish`].
    Check(Duration),
    /// Fail the login without checking (nothing to finish).
    Refuse,
}

/// How an admitted attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// The credentials were right.
    Accepted,
    /// They were wrong.
    Rejected,
    /// They were not checked (the client left, the handshake timed out).
    Unchecked,
}

/// What the throttle remembers of one client (the value of its table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Attempts {
    /// Consecutive failures (back-off) or failures in the window (lockout).
    failures: u32,
    /// Admitted checks not finished yet.
    pending: u32,
    /// Whether the last finished check succeeded (back-off).
    proven: bool,
    /// The earliest start of the next check.
    next: Instant,
    /// Back-off: the last attempt; lockout: the start of the window.
    mark: Instant,
    /// Recency, for eviction.
    used: u64,
}

impl Attempts {
    fn fresh(now: Instant) -> Self {
        Self {
            failures: 0,
            pending: 0,
            proven: false,
            next: now,
            mark: now,
            used: 0,
        }
    }

    /// Whether the record has nothing left to say at `now` (and may start over).
    fn expired(&self, schedule: &Schedule, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.mark);
        self.pending == 0
            && match *schedule {
                Schedule::Backoff { quiet, .. } => age >= quiet,
                Schedule::Lockout { window, .. } => self.failures == 0 || age >= window,
            }
    }
}

/// The per-client throttle table in `S` (`[Place<Attempts>; N]`, `Box<[Place<Attempts>]>`,
/// …); see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct LoginThrottle<S> {
    table: ClientTable<Attempts, S>,
    used: u64,
}

impl<S: AsRef<[Place<Attempts>]> + AsMut<[Place<Attempts>]>> LoginThrottle<S> {
    /// Nothing remembered, in `places`, hashing with `hash_key` (see
    /// [`ClientTable::new`]).
    pub fn new(places: S, hash_key: [u64; 2]) -> Self {
        Self {
            table: ClientTable::new(places, hash_key),
            used: 0,
        }
    }

    /// Clients remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Clients remembered at most: three quarters of the places (all of a table of fewer
    /// than four).
    pub fn capacity(&self) -> usize {
        let places = self.table.capacity();
        places - places / 4
    }

    /// Decides a login attempt of `client` at `now`: check after a wait, or refuse if the
    /// wait would exceed `max_wait`. A `Check` reserves the client's next slot and counts
    /// as a pending failure until [`finish`](Self::finish)ed.
    pub fn admit(
        &mut self,
        client: Cidr,
        schedule: &Schedule,
        now: Instant,
        max_wait: Duration,
    ) -> Verdict {
        let known = self.table.get(&client).copied();
        let mut e = match known {
            Some(e) if !e.expired(schedule, now) => e,
            _ => Attempts::fresh(now),
        };
        let start = match *schedule {
            Schedule::Backoff { .. } => e.next.max(now),
            // From the schedule as it is now, so a lockout changed or lifted applies at once.
            Schedule::Lockout { failures, window } if failures > 0 && e.failures >= failures => {
                (e.mark + window).max(now)
            }
            Schedule::Lockout { .. } => now,
        };
        let wait = start.saturating_duration_since(now);
        if wait > max_wait {
            return Verdict::Refuse;
        }
        if let Schedule::Backoff { parallel, .. } = *schedule {
            let running = if e.proven {
                e.pending.saturating_sub(parallel)
            } else {
                e.pending
            };
            e.next = start + schedule.backoff(e.failures.saturating_add(running));
            e.mark = e.mark.max(now);
        }
        e.pending = e.pending.saturating_add(1);
        if known.is_none() {
            self.make_room();
        }
        self.store(client, e);
        Verdict::Check(wait)
    }

    /// Records how an admitted attempt of `client` ended at `now`.
    pub fn finish(&mut self, client: Cidr, schedule: &Schedule, now: Instant, outcome: Outcome) {
        let Some(mut e) = self.table.get(&client).copied() else {
            return;
        };
        e.pending = e.pending.saturating_sub(1);
        match (outcome, *schedule) {
            (Outcome::Accepted, Schedule::Backoff { .. }) => {
                e.failures = 0;
                e.next = now;
                e.proven = true;
            }
            (Outcome::Rejected, Schedule::Backoff { .. }) => {
                e.proven = false;
                e.failures = e.failures.saturating_add(1);
                e.mark = now;
                e.next = e.next.max(now + schedule.backoff(e.failures));
            }
            (Outcome::Rejected, Schedule::Lockout { window, .. }) => {
                if e.failures == 0 || now.saturating_duration_since(e.mark) >= window {
                    e.failures = 0;
                    e.mark = now;
                }
                e.failures = e.failures.saturating_add(1);
            }
            (Outcome::Accepted, Schedule::Lockout { .. }) | (Outcome::Unchecked, _) => {}
        }
        // A back-off keeps a proven client (its parallel allowance) until it is quiet.
        if e.pending == 0
            && e.failures == 0
            && outcome == Outcome::Accepted
            && matches!(schedule, Schedule::Lockout { .. })
        {
            self.table.remove(&client);
            return;
        }
        self.store(client, e);
    }

    fn store(&mut self, client: Cidr, mut e: Attempts) {
        self.used = self.used.wrapping_add(1);
        e.used = self.used;
        if let Ok(slot) = self.table.get_or_insert(client, e) {
            *slot = e;
        }
    }

    /// Forgets least recently used clients until a new one fits.
    fn make_room(&mut self) {
        while self.table.len() >= self.capacity() {
            let oldest = self
                .table
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.table.remove(&k);
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::client_table::places_for;
    use crate::policy::ClientPrefixes;

    const MS: Duration = Duration::from_millis(1);
    const LONG: Duration = Duration::from_secs(3600);
    const B: Schedule = Schedule::BACKOFF;

    fn key(s: &str) -> Cidr {
        ClientPrefixes::DEFAULT.key(s.parse::<IpAddr>().unwrap())
    }

    fn table() -> LoginThrottle<[Place<Attempts>; 32]> {
        LoginThrottle::new([Place::EMPTY; 32], [5, 6])
    }

    fn wait(v: Verdict) -> Duration {
        match v {
            Verdict::Check(w) => w,
            Verdict::Refuse => panic!("refused"),
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let got: Vec<u128> = (0..12).map(|n| B.backoff(n).as_millis()).collect();
        assert_eq!(
            got,
            [
                0, 0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000
            ]
        );
        assert_eq!(B.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn sequential_failures_wait_longer_and_success_forgets() {
        let mut t = table();
        let a = key("192.0.2.1");
        let mut now = Instant::from_millis(1000);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let w = wait(t.admit(a, &B, now, LONG));
            now = now + w;
            waits.push(w.as_millis());
            t.finish(a, &B, now, Outcome::Rejected);
        }
        assert_eq!(waits, [0, 0, 100, 200, 400, 800]);
        // Another client is not affected.
        let b = key("192.0.2.2");
        assert_eq!(t.admit(b, &B, now, LONG), Verdict::Check(Duration::ZERO));
        t.finish(b, &B, now, Outcome::Accepted);
        // The slot of a (correct) login still waits; success then forgets the client.
        let w = wait(t.admit(a, &B, now, LONG));
        assert_eq!(w, 1600 * MS);
        now = now + w;
        t.finish(a, &B, now, Outcome::Accepted);
        assert_eq!(t.admit(a, &B, now, LONG), Verdict::Check(Duration::ZERO));
    }

    #[test]
    fn a_proven_client_runs_parallel_checks_and_a_failure_ends_that() {
        let mut t = table();
        let a = key("192.0.2.1");
        let now = Instant::from_millis(5);
        let max = Duration::from_secs(5);
        assert_eq!(wait(t.admit(a, &B, now, max)), Duration::ZERO);
        t.finish(a, &B, now, Outcome::Accepted);
        // 32 checks at once wait nothing; beyond them the running ones count as failures.
        let Schedule::Backoff { parallel, .. } = B else {
            unreachable!()
        };
        let waits: Vec<u128> = (0..parallel + 4)
            .map(|_| wait(t.admit(a, &B, now, max)).as_millis())
            .collect();
        assert!(
            waits[..parallel as usize + 3].iter().all(|w| *w == 0),
            "{waits:?}"
        );
        assert_eq!(waits[parallel as usize + 3], 100);
        // A success in between forgets the wait: the next check starts at once.
        t.finish(a, &B, now, Outcome::Accepted);
        assert_eq!(t.admit(a, &B, now, max), Verdict::Check(Duration::ZERO));
        // A failure makes it a stranger again: running checks count from the first.
        t.finish(a, &B, now, Outcome::Rejected);
        let later = now + Duration::from_millis(1);
        let v = t.admit(a, &B, later, max);
        assert!(
            matches!(v, Verdict::Check(w) if w > Duration::ZERO),
            "{v:?}"
        );
    }

    #[test]
    fn parallel_attempts_are_spaced_and_refused_beyond_max_wait() {
        let mut t = table();
        let a = key("192.0.2.1");
        let now = Instant::from_millis(5);
        let mut waits = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            match t.admit(a, &B, now, Duration::from_secs(5)) {
                Verdict::Check(w) => waits.push(w.as_millis()),
                Verdict::Refuse => refused += 1,
            }
        }
        // Pending checks count as failures: 0, 0, then 100, 300, 700, 1500, 3100 ms.
        assert_eq!(waits, [0, 0, 0, 100, 300, 700, 1500, 3100]);
        assert_eq!(refused, 12);
        // Abandoned attempts release their pending mark.
        for _ in 0..waits.len() {
            t.finish(a, &B, now, Outcome::Unchecked);
        }
        assert_eq!(
            t.admit(a, &B, now + Duration::from_secs(7), LONG),
            Verdict::Check(Duration::ZERO)
        );
    }

    #[test]
    fn quiet_period_forgets_and_the_key_is_the_client_network() {
        let mut t = table();
        let a = key("2001:db8::1");
        let mut now = Instant::from_millis(0);
        for _ in 0..4 {
            now = now + wait(t.admit(a, &B, now, LONG));
            t.finish(a, &B, now, Outcome::Rejected);
        }
        // Same /64, other address: same back-off.
        assert_eq!(
            t.admit(key("2001:db8::ffff"), &B, now, LONG),
            Verdict::Check(400 * MS)
        );
        t.finish(a, &B, now, Outcome::Unchecked);
        // Another /64: none.
        let other = key("2001:db8:0:1::1");
        assert_eq!(
            t.admit(other, &B, now, LONG),
            Verdict::Check(Duration::ZERO)
        );
        t.finish(other, &B, now, Outcome::Unchecked);
        // A wider prefix groups both /64s as one client.
        let wide = ClientPrefixes::new(32, 48).unwrap();
        assert_eq!(
            wide.key("2001:db8:0:1::1".parse().unwrap()),
            wide.key("2001:db8::1".parse().unwrap())
        );
        // After a quiet minute: none.
        now = now + Duration::from_secs(61);
        assert_eq!(t.admit(a, &B, now, LONG), Verdict::Check(Duration::ZERO));
    }

    #[test]
    fn lockout_after_failures_in_the_window_until_it_ends() {
        let lock = Schedule::Lockout {
            failures: 3,
            window: Duration::from_secs(60),
        };
        let mut t = table();
        let a = key("192.0.2.7");
        let start = Instant::from_millis(10_000);
        for i in 0..3u64 {
            let now = start + Duration::from_secs(i);
            assert_eq!(
                t.admit(a, &lock, now, Duration::ZERO),
                Verdict::Check(Duration::ZERO)
            );
            t.finish(a, &lock, now, Outcome::Rejected);
        }
        // Locked: even a right password is not checked, until 60 s after the first failure.
        let late = start + Duration::from_millis(59_999);
        assert_eq!(t.admit(a, &lock, late, Duration::ZERO), Verdict::Refuse);
        assert_eq!(
            t.admit(key("192.0.2.8"), &lock, late, Duration::ZERO),
            Verdict::Check(Duration::ZERO)
        );
        let over = start + Duration::from_secs(60);
        assert_eq!(
            t.admit(a, &lock, over, Duration::ZERO),
            Verdict::Check(Duration::ZERO)
        );
        t.finish(a, &lock, over, Outcome::Rejected);
        // That failure opened a new window of one failure.
        assert_eq!(
            t.admit(a, &lock, over, Duration::ZERO),
            Verdict::Check(Duration::ZERO)
        );
        t.finish(a, &lock, over, Outcome::Accepted);
        assert_eq!(
            t.len(),
            2,
            "a success does not forget failures in the window"
        );
        // Failures spread over more than a window never lock.
        let spread = Instant::from_millis(1_000_000);
        for i in 0..6u64 {
            let now = spread + Duration::from_secs(31 * i);
            assert_eq!(
                t.admit(a, &lock, now, Duration::ZERO),
                Verdict::Check(Duration::ZERO)
            );
            t.finish(a, &lock, now, Outcome::Rejected);
        }
        let never = Schedule::Lockout {
            failures: 0,
            window: LONG,
        };
        let c = key("192.0.2.9");
        for _ in 0..10 {
            assert_eq!(
                t.admit(c, &never, spread, Duration::ZERO),
                Verdict::Check(Duration::ZERO)
            );
            t.finish(c, &never, spread, Outcome::Rejected);
        }
    }

    #[test]
    fn table_is_bounded_and_evicts_the_least_recently_used() {
        let mut t = LoginThrottle::new([Place::EMPTY; places_for(3)], [0, 0]);
        assert_eq!(t.capacity(), 3);
        let now = Instant::from_millis(0);
        let ip = |i: u8| Cidr::host(IpAddr::from([192, 0, 2, i]));
        for i in 1..=5u8 {
            let _ = t.admit(ip(i), &B, now, LONG);
            t.finish(ip(i), &B, now, Outcome::Rejected);
            if i == 3 {
                // Touch the first: the second is now the least recently used.
                let _ = t.admit(ip(1), &B, now, LONG);
                t.finish(ip(1), &B, now, Outcome::Unchecked);
            }
            assert!(t.len() <= 3);
        }
        let held: Vec<Cidr> = t.table.iter().map(|(k, _)| *k).collect();
        assert_eq!(held.len(), 3);
        for (i, kept) in [(1, true), (2, false), (3, false), (4, true), (5, true)] {
            assert_eq!(held.contains(&ip(i)), kept, "{i}");
        }
    }

    proptest! {
        /// Whatever the attempts and outcomes, a back-off wait never exceeds what was
        /// allowed, the table stays bounded, and a client's record never affects another.
        #[test]
        fn waits_are_bounded_and_per_client(
            ops in proptest::collection::vec((0..6u8, 0..3u8, 0..2000u64, any::<bool>()), 0..200),
        ) {
            let mut t = LoginThrottle::new([Place::EMPTY; 8], [1, 1]);
            let mut now = Instant::from_millis(0);
            let max_wait = Duration::from_secs(5);
            for (c, outcome, step, lockout) in ops {
                let schedule = if lockout {
                    Schedule::Lockout { failures: 2, window: Duration::from_secs(1) }
                } else {
                    B
                };
                now = now + Duration::from_millis(step);
                let k = Cidr::host(IpAddr::from([10, 0, 0, c]));
                let stranger = Cidr::host(IpAddr::from([10, 0, 1, c]));
                if let Verdict::Check(w) = t.admit(k, &schedule, now, max_wait) {
                    prop_assert!(w <= max_wait);
                    let outcome = [Outcome::Accepted, Outcome::Rejected, Outcome::Unchecked][usize::from(outcome)];
                    t.finish(k, &schedule, now + w, outcome);
                }
                prop_assert!(t.len() <= t.capacity());
                // A client never seen is checked at once.
                let mut fresh = t.clone();
                prop_assert_eq!(fresh.admit(stranger, &schedule, now, Duration::ZERO), Verdict::Check(Duration::ZERO));
            }
        }
    }
}
