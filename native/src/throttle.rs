//! Per-client back-off for failed logins (RFC 1929 and GSS-API), against online password
//! guessing: the core's [`LoginThrottle`] with [`Schedule::BACKOFF`] under a lock.
//!
//! The decision is the core's (`socksgate_core::login_throttle`, which the firmware uses with
//! its lockout schedule); in short, per client network (the key the session limits use:
//! `client_prefix_ipv4` / `client_prefix_ipv6`, IPv4 /32 and IPv6 /64 by default):
//!
//! * no failure, or one: no delay (a typo costs nothing);
//! * then 100 ms, doubling with every failure, capped at 10 s between two checks;
//! * checks still running count as failures when the next slot is reserved, so opening many
//!   connections at once does not multiply the rate;
//! * an attempt whose slot is further away than the caller's `max_wait` is refused at once,
//!   without checking the password (the client gets the failure status);
//! * a success forgets the client; a client quiet for 60 s starts over.
//!
//! The table remembers [`CLIENTS`] client networks; when full, the least recently used is
//! forgotten. Other clients are never delayed by one client's failures.

use std::sync::Mutex;
use std::time::Duration;

use socksgate_core::client_table::{Place, places_for};
use socksgate_core::login_throttle::{Attempts, LoginThrottle, Outcome, Schedule};
use socksgate_core::rules::Cidr;

use crate::clock;

pub use socksgate_core::login_throttle::Verdict;

/// Client networks the throttle remembers at once.
pub const CLIENTS: usize = 16_384;

/// The per-client login back-off table.
#[derive(Debug)]
pub struct AuthThrottle {
    table: Mutex<LoginThrottle<Box<[Place<Attempts>]>>>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self::with_clients(CLIENTS)
    }
}

impl AuthThrottle {
    /// A table remembering `clients` client networks at most.
    pub fn with_clients(clients: usize) -> Self {
        let places = vec![Place::EMPTY; places_for(clients)].into_boxed_slice();
        Self {
            table: Mutex::new(LoginThrottle::new(places, crate::limits::random_hash_key())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginThrottle<Box<[Place<Attempts>]>>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The longest wait between two checks of one client.
    pub fn cap(&self) -> Duration {
        Schedule::BACKOFF.longest_wait()
    }

    /// Client networks currently remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves the next credential-check slot for the client network `client`. A
    /// [`Verdict::Check`] must be followed by [`Pending::finish`] (or the guard dropped).
    pub fn admit(&self, client: Cidr, max_wait: Duration) -> Verdict {
        self.lock()
            .admit(client, &Schedule::BACKOFF, clock::now(), max_wait)
    }

    /// A guard for an admitted attempt: [`Pending::finish`] records the outcome; dropping it
    /// unfinished (the client left, the handshake timed out) releases the slot.
    pub fn pending(&self, client: Cidr) -> Pending<'_> {
        Pending {
            throttle: self,
            client,
            done: false,
        }
    }

    fn finish(&self, client: Cidr, outcome: Outcome) {
        self.lock()
            .finish(client, &Schedule::BACKOFF, clock::now(), outcome);
    }
}

/// An admitted attempt; see [`AuthThrottle::pending`].
#[derive(Debug)]
pub struct Pending<'a> {
    throttle: &'a AuthThrottle,
    client: Cidr,
    done: bool,
}

impl Pending<'_> {
    /// Records whether the credentials were right.
    pub fn finish(mut self, ok: bool) {
        self.done = true;
        let outcome = if ok {
            Outcome::Accepted
        } else {
            Outcome::Rejected
        };
        self.throttle.finish(self.client, outcome);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(self.client, Outcome::Unchecked);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use socksgate_core::policy::ClientPrefixes;

    use super::*;

    #[test]
    fn the_guard_records_outcomes_per_client_network() {
        let t = AuthThrottle::with_clients(4);
        let wide = ClientPrefixes::new(24, 64).unwrap();
        let a = wide.key("192.0.2.1".parse::<IpAddr>().unwrap());
        for _ in 0..2 {
            assert_eq!(t.admit(a, Duration::ZERO), Verdict::Check(Duration::ZERO));
            t.pending(a).finish(false);
        }
        // Two failures: the next check of anyone in the /24 waits 100 ms, over max_wait 0.
        let b = wide.key("192.0.2.200".parse::<IpAddr>().unwrap());
        assert_eq!(b, a);
        assert_eq!(t.admit(b, Duration::ZERO), Verdict::Refuse);
        // An abandoned attempt releases its slot; a success forgets the client.
        assert!(matches!(t.admit(b, t.cap()), Verdict::Check(_)));
        drop(t.pending(b));
        assert!(matches!(t.admit(b, t.cap()), Verdict::Check(_)));
        t.pending(b).finish(true);
        assert_eq!(t.admit(b, Duration::ZERO), Verdict::Check(Duration::ZERO));
    }
}
