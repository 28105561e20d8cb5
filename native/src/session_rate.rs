//! Session-rate limits: new sessions per second per client network and per user, with token
//! buckets (the core's [`TokenBucket`]).
//!
//! Per client, the check comes before the handshake, so an over-limit connection costs an
//! accept and a close; per user, it comes once the user has authenticated, and the request
//! gets reply 2 (only RFC 1929 logins have users; SOCKS4's USERID is not one). Refusals are
//! logged once per burst ([`BurstLog`]).
//!
//! The tables are bounded ([`MAX_KEYS`]): when full, buckets that have refilled completely
//! (a client that has been quiet) are dropped, at most once a second; if none has, a new key
//! is admitted untracked (the global `max_sessions` still applies) rather than refused, so
//! that a flood from many networks cannot lock new clients out.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use socksgate_core::Instant;
use socksgate_core::rate::{Rate, TokenBucket};
use socksgate_core::rules::Cidr;

use crate::burst_log::BurstLog;

/// Keys held at most per table.
pub const MAX_KEYS: usize = 65_536;

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, TokenBucket>,
    swept: Option<Instant>,
}

impl<K: Eq + Hash> Table<K> {
    /// Spends a token of `key` at `rate`: whether the session may start.
    fn take<Q>(&mut self, key: &Q, rate: Rate, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(bucket) = self.buckets.get_mut(key) {
            if bucket.rate() != rate {
                bucket.set_rate(rate, now);
            }
            return bucket.try_take(now, 1);
        }
        if self.buckets.len() >= MAX_KEYS {
            let recently = self
                .swept
                .is_some_and(|t| now.as_millis().saturating_sub(t.as_millis()) < 1000);
            if recently {
                return true;
            }
            self.swept = Some(now);
            self.buckets
                .retain(|_, b| b.available(now) < b.rate().burst);
            if self.buckets.len() >= MAX_KEYS {
                return true;
            }
        }
        let mut bucket = TokenBucket::new(rate, now);
        let ok = bucket.try_take(now, 1);
        self.buckets.insert(key.to_owned(), bucket);
        ok
    }
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            swept: None,
        }
    }
}

/// A user name as logs show it (hashed as the bare name, so it can be looked up by one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey(pub Vec<u8>);

impl Borrow<[u8]> for UserKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user {}", String::from_utf8_lossy(&self.0))
    }
}

/// The session-rate tables, kept across reloads (a reload changes the rates, not the tokens
/// held).
#[derive(Debug)]
pub struct SessionRates {
    clients: Mutex<Table<Cidr>>,
    users: Mutex<Table<Vec<u8>>>,
    /// Refusals before the handshake, by client network: per-client rate and
    /// `max_sessions_per_ip`.
    pub client_refusals: BurstLog<Cidr>,
    /// Refusals after authentication, by user.
    pub user_refusals: BurstLog<UserKey>,
}

impl Default for SessionRates {
    fn default() -> Self {
        Self {
            clients: Mutex::default(),
            users: Mutex::default(),
            client_refusals: BurstLog::new("client"),
            user_refusals: BurstLog::new("user"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionRates {
    /// Whether client network `key` may start a session at `now` under `rate`.
    pub fn admit_client(&self, key: Cidr, rate: Rate, now: Instant) -> bool {
        lock(&self.clients).take(&key, rate, now)
    }

    /// Whether `user` may start a session at `now` under `rate`.
    pub fn admit_user(&self, user: &[u8], rate: Rate, now: Instant) -> bool {
        lock(&self.users).take(user, rate, now)
    }

    /// Client networks with a bucket.
    pub fn clients(&self) -> usize {
        lock(&self.clients).buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn clients_are_limited_separately() {
        let r = SessionRates::default();
        let rate = Rate {
            per_second: 2,
            burst: 3,
        };
        let a = Cidr::host("192.0.2.1".parse().unwrap());
        let b = Cidr::host("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(r.admit_client(a, rate, at(0)));
        }
        assert!(!r.admit_client(a, rate, at(0)), "burst spent");
        assert!(r.admit_client(b, rate, at(0)), "another client");
        assert!(!r.admit_client(a, rate, at(400)));
        assert!(
            r.admit_client(a, rate, at(500)),
            "2 per second: one per 500 ms"
        );
        // A reload that raises the rate applies from the next session on: 100 per second
        // refill a token in 10 ms, where 2 per second would take 500.
        let faster = Rate::per_second(100);
        assert!(!r.admit_client(a, faster, at(500)));
        assert!(r.admit_client(a, faster, at(511)));
        assert!(r.admit_user(b"alice", rate, at(0)));
        assert!(r.admit_user(b"bob", rate, at(0)));
    }

    #[test]
    fn a_full_table_drops_quiet_clients() {
        let mut t = Table::<u32>::default();
        let rate = Rate::per_second(1);
        for k in 0..MAX_KEYS as u32 {
            assert!(t.take(&k, rate, at(0)));
        }
        // Full, nobody refilled yet: a new key is admitted untracked.
        assert!(t.take(&u32::MAX, rate, at(10)));
        assert_eq!(t.buckets.len(), MAX_KEYS);
        // A second later every bucket is full again: they are dropped for the new key.
        assert!(t.take(&u32::MAX, rate, at(1_100)));
        assert_eq!(t.buckets.len(), 1);
        assert!(!t.take(&u32::MAX, rate, at(1_100)));
    }
}
