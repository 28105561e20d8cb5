//! Per-client back-off for failed logins (RFC 1929), against online password guessing.
//!
//! Clients are keyed by IPv4 address or IPv6 /64 prefix (one host usually owns a whole /64,
//! so rotating addresses inside it does not reset the back-off): the core's
//! [`ClientPrefixes::DEFAULT`], the keying the session limits use by default. For each key the table
//! keeps the consecutive failures and the earliest time the next password check may start:
//!
//! * no failure, or one: no delay (a typo costs nothing);
//! * then 100 ms, doubling with every failure, capped at 10 s between two checks;
//! * checks still running count as failures when the next slot is reserved, so opening many
//!   connections at once does not multiply the rate;
//! * an attempt whose slot is further away than the caller's `max_wait` is refused at once,
//!   without checking the password (the client gets the failure status);
//! * a success forgets the key; a key quiet for `quiet` (60 s) starts over.
//!
//! The table is bounded (`max_entries`, 16384 keys): when full, the least recently used key
//! is evicted. Other clients are never delayed by one client's failures.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socksgate_core::policy::ClientPrefixes;
use socksgate_core::rules::Cidr;

/// Back-off parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The delay after the second consecutive failure; doubles with each further one.
    pub base: Duration,
    /// The longest delay between two checks for one client.
    pub cap: Duration,
    /// Failures older than this are forgotten.
    pub quiet: Duration,
    /// Clients remembered at most (least recently used evicted first).
    pub max_entries: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            quiet: Duration::from_secs(60),
            max_entries: 16_384,
        }
    }
}

impl Policy {
    /// The pause imposed after `failures` consecutive failures.
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures < 2 {
            return Duration::ZERO;
        }
        let shift = (failures - 2).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.cap)
    }
}

/// What the caller should do with a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Wait this long, then check the password.
    Wait(Duration),
    /// Refuse without checking (the wait would exceed `max_wait`).
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    pending: u32,
    next: Instant,
    last: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Cidr, Entry>,
    by_age: BTreeMap<u64, Cidr>,
    seq: u64,
}

impl Table {
    fn touch(&mut self, key: Cidr, entry: &mut Entry) {
        self.by_age.remove(&entry.seq);
        self.seq += 1;
        entry.seq = self.seq;
        self.by_age.insert(entry.seq, key);
    }

    fn remove(&mut self, key: Cidr) {
        if let Some(e) = self.entries.remove(&key) {
            self.by_age.remove(&e.seq);
        }
    }
}

/// The per-client login back-off table.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    policy: Policy,
    table: Mutex<Table>,
}

/// The table key: the IPv4 address (also for IPv4-mapped IPv6) or the IPv6 /64.
fn key(ip: IpAddr) -> Cidr {
    ClientPrefixes::DEFAULT.key(ip)
}

impl AuthThrottle {
    /// A table with these parameters.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            table: Mutex::new(Table::default()),
        }
    }

    /// The parameters.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Clients currently remembered.
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.entries.len())
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves the next password-check slot for `ip`. Every `Wait` must be followed by
    /// [`Self::finish`] (also when the check never happens, with `None`).
    pub fn admit(&self, ip: IpAddr, now: Instant, max_wait: Duration) -> Admission {
        let Ok(mut t) = self.table.lock() else {
            return Admission::Wait(Duration::ZERO);
        };
        let k = key(ip);
        let fresh = Entry {
            failures: 0,
            pending: 0,
            next: now,
            last: now,
            seq: 0,
        };
        let mut e = match t.entries.get(&k) {
            Some(e)
                if e.pending > 0 || now.saturating_duration_since(e.last) < self.policy.quiet =>
            {
                *e
            }
            // Quiet long enough: start over (keeping its place in the age index).
            Some(e) => Entry {
                seq: e.seq,
                ..fresh
            },
            None => fresh,
        };
        let start = e.next.max(now);
        let wait = start - now;
        if wait > max_wait {
            return Admission::Refuse;
        }
        e.next = start + self.policy.backoff(e.failures.saturating_add(e.pending));
        e.pending += 1;
        e.last = e.last.max(now);
        if e.seq == 0 {
            while t.entries.len() >= self.policy.max_entries.max(1) {
                let Some((_, oldest)) = t.by_age.pop_first() else {
                    break;
                };
                t.entries.remove(&oldest);
            }
        }
        t.touch(k, &mut e);
        t.entries.insert(k, e);
        Admission::Wait(wait)
    }

    /// A guard for an admitted attempt: [`Pending::finish`] records the outcome; dropping it
    /// unfinished (the client left, the handshake timed out) releases the slot.
    pub fn pending(&self, ip: IpAddr) -> Pending<'_> {
        Pending {
            throttle: self,
            ip,
            done: false,
        }
    }

    /// Records the outcome of an admitted attempt: `Some(true)` success, `Some(false)`
    /// failure, `None` not checked (the client left).
    pub fn finish(&self, ip: IpAddr, now: Instant, outcome: Option<bool>) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        let k = key(ip);
        let Some(mut e) = t.entries.get(&k).copied() else {
            return;
        };
        e.pending = e.pending.saturating_sub(1);
        match outcome {
            Some(true) => {
                if e.pending == 0 {
                    t.remove(k);
                    return;
                }
                e.failures = 0;
            }
            Some(false) => {
                e.failures = e.failures.saturating_add(1);
                e.last = now;
                e.next = e.next.max(now + self.policy.backoff(e.failures));
            }
            None => {}
        }
        t.touch(k, &mut e);
        t.entries.insert(k, e);
    }
}

/// An admitted attempt; see [`AuthThrottle::pending`].
#[derive(Debug)]
pub struct Pending<'a> {
    throttle: &'a AuthThrottle,
    ip: IpAddr,
    done: bool,
}

impl Pending<'_> {
    /// Records whether the password was right.
    pub fn finish(mut self, ok: bool) {
        self.done = true;
        self.throttle.finish(self.ip, Instant::now(), Some(ok));
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(self.ip, Instant::now(), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LONG: Duration = Duration::from_secs(3600);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = Policy::default();
        let got: Vec<u128> = (0..12).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(
            got,
            [
                0, 0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000
            ]
        );
        assert_eq!(p.backoff(u32::MAX), p.cap);
    }

    #[test]
    fn sequential_failures_wait_longer_and_success_forgets() {
        let t = AuthThrottle::default();
        let a = ip("192.0.2.1");
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Admission::Wait(w) = t.admit(a, now, LONG) else {
                panic!("refused")
            };
            now += w;
            waits.push(w.as_millis());
            t.finish(a, now, Some(false));
        }
        assert_eq!(waits, [0, 0, 100, 200, 400, 800]);
        // Another client is not affected.
        assert_eq!(
            t.admit(ip("192.0.2.2"), now, LONG),
            Admission::Wait(Duration::ZERO)
        );
        t.finish(ip("192.0.2.2"), now, Some(true));
        // The slot of a (correct) login still waits; success then forgets the client.
        let Admission::Wait(w) = t.admit(a, now, LONG) else {
            panic!()
        };
        assert_eq!(w, 1600 * MS);
        now += w;
        t.finish(a, now, Some(true));
        assert!(t.is_empty());
        assert_eq!(t.admit(a, now, LONG), Admission::Wait(Duration::ZERO));
    }

    #[test]
    fn parallel_attempts_are_spaced_and_refused_beyond_max_wait() {
        let t = AuthThrottle::default();
        let a = ip("192.0.2.1");
        let now = Instant::now();
        let mut waits = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            match t.admit(a, now, Duration::from_secs(5)) {
                Admission::Wait(w) => waits.push(w.as_millis()),
                Admission::Refuse => refused += 1,
            }
        }
        // Pending checks count as failures: 0, 0, then 100, 300, 700, 1500, 3100 ms.
        assert_eq!(waits, [0, 0, 0, 100, 300, 700, 1500, 3100]);
        assert_eq!(refused, 12);
        // Abandoned attempts release their pending mark.
        for _ in 0..waits.len() {
            t.finish(a, now, None);
        }
        assert_eq!(
            t.admit(a, now + 7 * Duration::from_secs(1), LONG),
            Admission::Wait(Duration::ZERO)
        );
    }

    #[test]
    fn quiet_period_forgets_and_ipv6_is_keyed_by_prefix() {
        let t = AuthThrottle::default();
        let a = ip("2001:db8::1");
        let mut now = Instant::now();
        for _ in 0..4 {
            let Admission::Wait(w) = t.admit(a, now, LONG) else {
                panic!()
            };
            now += w;
            t.finish(a, now, Some(false));
        }
        // Same /64, other address: same back-off.
        assert_eq!(
            t.admit(ip("2001:db8::ffff"), now, LONG),
            Admission::Wait(400 * MS)
        );
        t.finish(a, now, None);
        // Another /64: none.
        assert_eq!(
            t.admit(ip("2001:db8:0:1::1"), now, LONG),
            Admission::Wait(Duration::ZERO)
        );
        t.finish(ip("2001:db8:0:1::1"), now, None);
        // After a quiet minute: none.
        now += Duration::from_secs(61);
        assert_eq!(t.admit(a, now, LONG), Admission::Wait(Duration::ZERO));
        // IPv4-mapped and plain IPv4 share a key.
        assert_eq!(key(ip("::ffff:192.0.2.9")), key(ip("192.0.2.9")));
    }

    #[test]
    fn table_is_bounded_and_evicts_the_oldest() {
        let t = AuthThrottle::new(Policy {
            max_entries: 3,
            ..Policy::default()
        });
        let now = Instant::now();
        for i in 1..=5u8 {
            let a = IpAddr::from([192, 0, 2, i]);
            let _ = t.admit(a, now, LONG);
            t.finish(a, now, Some(false));
            assert!(t.len() <= 3);
        }
        assert_eq!(t.len(), 3);
        let t = t.table.lock().unwrap();
        assert!(!t.entries.contains_key(&key(IpAddr::from([192, 0, 2, 1]))));
        assert!(t.entries.contains_key(&key(IpAddr::from([192, 0, 2, 5]))));
        assert_eq!(t.by_age.len(), 3);
    }
}
