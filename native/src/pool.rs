//! Sessions recycled across connections.
//!
//! While a connection negotiates it needs the core's [`Session`] (its handshake machine and
//! a read buffer, about 6 KiB); once it relays it needs neither. Kept inline in the session
//! task, it would size every task for the handshake — idle relays included, since a task's
//! size is that of its largest state. Allocated per connection, it would put the allocator on
//! every handshake. Instead each thread keeps a few spares: a connection leases one for its
//! handshake and the lease returns it when dropped, typically before the relay starts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};

use socksgate_core::{Instant, Policy, Session};

/// The session's input buffer; also bounds the early payload a client may pipeline.
pub(crate) const READ_BUF: usize = 4096;

/// Spare sessions kept per thread: enough for bursts of new connections without holding
/// much memory after one.
const SPARES_PER_THREAD: usize = 32;

type Spare = Box<Session<READ_BUF>>;

thread_local! {
    static SPARES: RefCell<Vec<Spare>> = const { RefCell::new(Vec::new()) };
}

/// A [`Session`] on loan; dropping it returns it to this thread's spares.
pub(crate) struct Lease(Option<Spare>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    /// A fresh session for a client at `client`: a spare when this thread has one.
    pub(crate) fn take(policy: &Policy<'_>, client: SocketAddr, now: Instant) -> Self {
        let spare = SPARES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let session = match spare {
            Some(mut s) => {
                s.reset(policy, client, now);
                s
            }
            None => Box::new(Session::new(policy, client, now)),
        };
        Self(Some(session))
    }
}

impl Deref for Lease {
    type Target = Session<READ_BUF>;

    fn deref(&self) -> &Session<READ_BUF> {
        // Only `drop` empties the option.
        self.0.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Session<READ_BUF> {
        self.0.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(session) = self.0.take() else { return };
        // During thread teardown the spares are gone; the session is then simply freed.
        let _ = SPARES.try_with(|s| {
            let mut spares = s.borrow_mut();
            if spares.len() < SPARES_PER_THREAD {
                spares.push(session);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn a_returned_session_is_reused_fresh() {
        let policy = Policy::default();
        let now = Instant::from_millis(0);
        let mut first = Lease::take(&policy, client(), now);
        let _ = first.handle_input(&policy, &[5, 1, 0], now);
        assert!(!first.pending_transmit().is_empty());
        let addr: *const Session<READ_BUF> = &*first;
        drop(first);
        let second = Lease::take(&policy, "127.0.0.2:1".parse().unwrap(), now);
        assert_eq!(
            &*second as *const Session<READ_BUF>, addr,
            "the spare is reused"
        );
        assert!(second.pending_transmit().is_empty(), "the session is reset");
        assert_eq!(second.client(), "127.0.0.2:1".parse().unwrap());
        assert!(second.request().is_none());
    }

    #[test]
    fn spares_are_bounded() {
        let policy = Policy::default();
        let now = Instant::from_millis(0);
        let leases: Vec<Lease> = (0..SPARES_PER_THREAD + 5)
            .map(|_| Lease::take(&policy, client(), now))
            .collect();
        drop(leases);
        assert_eq!(SPARES.with(|s| s.borrow().len()), SPARES_PER_THREAD);
    }
}
