//! One log line per burst of refusals, not one per connection.
//!
//! A client over a limit may open thousands of connections a second; a line for each would
//! flood the log and cost more than the refusal itself. The first refusal of a key (a client
//! network, a user) is logged at once; later ones are only counted, and the burst's summary
//! ("refused N connections over 3.2 s") is logged when the key is admitted again or has been
//! quiet for [`QUIET`]. While no burst is open, [`BurstLog::admitted`] is one atomic load.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// A burst with no refusal for this long is over.
pub const QUIET: Duration = Duration::from_secs(10);

/// Bursts tracked at once; refusals of further keys are counted together.
const MAX_OPEN: usize = 4096;

#[derive(Debug)]
struct Burst {
    refused: u64,
    first: Instant,
    last: Instant,
}

#[derive(Debug)]
struct Open<K> {
    bursts: HashMap<K, Burst>,
    /// Refusals of keys beyond [`MAX_OPEN`], and since when.
    untracked: Option<Burst>,
    /// The last time quiet bursts were looked for.
    swept: Option<Instant>,
}

/// Bursts of refusals by one limit (`what`), by key: see the [module documentation](self).
#[derive(Debug)]
pub struct BurstLog<K> {
    what: &'static str,
    open: Mutex<Open<K>>,
    count: AtomicUsize,
}

impl<K: Eq + Hash + Clone + Display> BurstLog<K> {
    /// A log for refusals by the limit called `what` in log lines.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            open: Mutex::new(Open {
                bursts: HashMap::new(),
                untracked: None,
                swept: None,
            }),
            count: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open<K>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection of `key` was refused because `reason`: logged if it starts a burst.
    pub fn refused(&self, key: &K, reason: &dyn Display, now: Instant) {
        let mut open = self.lock();
        self.sweep(&mut open, now);
        if let Some(b) = open.bursts.get_mut(key) {
            b.refused += 1;
            b.last = now;
            return;
        }
        let fresh = Burst {
            refused: 1,
            first: now,
            last: now,
        };
        if open.bursts.len() >= MAX_OPEN {
            match &mut open.untracked {
                Some(b) => {
                    b.refused += 1;
                    b.last = now;
                }
                None => {
                    warn!(
                        limit = self.what,
                        "{MAX_OPEN} clients are over their limits at once; refusals of others are counted together"
                    );
                    open.untracked = Some(fresh);
                }
            }
            return;
        }
        warn!(
            limit = self.what,
            key = %key,
            "refusing connections: {reason}; further refusals are counted until the burst ends"
        );
        open.bursts.insert(key.clone(), fresh);
        self.count.store(open.bursts.len(), Ordering::Relaxed);
    }

    /// A connection of `key` was admitted: ends its burst, if one is open. With no burst
    /// open anywhere (the usual case) this is one atomic load.
    pub fn admitted<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.admitted_at(key, Instant::now());
    }

    fn admitted_at<Q>(&self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut open = self.lock();
        if let Some((k, b)) = open.bursts.remove_entry(key) {
            self.summary(&k, &b);
        }
        self.sweep(&mut open, now);
        self.count.store(open.bursts.len(), Ordering::Relaxed);
    }

    /// Bursts open now.
    pub fn open(&self) -> usize {
        self.lock().bursts.len()
    }

    fn summary(&self, key: &dyn Display, b: &Burst) {
        let over = b.last.saturating_duration_since(b.first);
        warn!(
            limit = self.what,
            key = %key,
            refused = b.refused,
            "burst over: refused {} connection(s) in {:.1} s",
            b.refused,
            over.as_secs_f64()
        );
    }

    /// Ends the bursts that have been quiet for [`QUIET`] (at most once a second).
    fn sweep(&self, open: &mut Open<K>, now: Instant) {
        if open
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        open.swept = Some(now);
        let quiet = |b: &Burst| now.saturating_duration_since(b.last) >= QUIET;
        if open.bursts.values().any(quiet) {
            let ended: Vec<K> = open
                .bursts
                .iter()
                .filter(|(_, b)| quiet(b))
                .map(|(k, _)| k.clone())
                .collect();
            for k in ended {
                if let Some(b) = open.bursts.remove(&k) {
                    self.summary(&k, &b);
                }
            }
        }
        if let Some(b) = open.untracked.take_if(|b| quiet(b)) {
            self.summary(&"other clients", &b);
        }
        self.count.store(open.bursts.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_opened_counted_and_closed() {
        let log = BurstLog::<String>::new("test");
        let t0 = Instant::now();
        let a = "a".to_owned();
        log.admitted(&a);
        assert_eq!(log.open(), 0);
        for i in 0..100 {
            log.refused(&a, &"over", t0 + Duration::from_millis(i));
        }
        assert_eq!(log.open(), 1);
        assert_eq!(log.lock().bursts[&a].refused, 100);
        // Another key is another burst.
        log.refused(&"b".to_owned(), &"over", t0);
        assert_eq!(log.open(), 2);
        // Admitting `a` ends its burst.
        log.admitted_at(&a, t0 + Duration::from_millis(200));
        assert_eq!(log.open(), 1);
        // `b` ends by quiet, swept on a later call.
        log.admitted_at(&a, t0 + QUIET + Duration::from_secs(2));
        assert_eq!(log.open(), 0);
    }
}
