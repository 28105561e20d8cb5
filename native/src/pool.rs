//! Handshake state recycled across connections.
//!
//! While a session negotiates it needs the core's [`Server`] (about 1.6 KiB) and a read
//! buffer; once it relays it needs neither. Kept inline in the session task, they would size
//! every task for the handshake — idle relays included, since a task's size is that of its
//! largest state. Allocated per connection, they would put the allocator on every
//! handshake. Instead each thread keeps a few spare states: a session leases one for its
//! handshake and the lease returns it when dropped, typically before the relay starts.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use socksgate_core::server::{self, Request, Server};

/// Read buffer for the handshake; also bounds the early payload a client may pipeline.
pub(crate) const READ_BUF: usize = 4096;

/// Spare states kept per thread (about 6.3 KiB each): enough for bursts of new connections
/// without holding much memory after one.
const SPARES_PER_THREAD: usize = 32;

thread_local! {
    static SPARES: RefCell<Vec<Box<Handshake>>> = const { RefCell::new(Vec::new()) };
}

/// A session's handshake state: the connection's side and the request it yields.
pub(crate) struct Handshake {
    pub(crate) io: HandshakeIo,
    pub(crate) request: Option<Request>,
}

/// The core's state machine and unconsumed socket input (`buf[start..end]`).
pub(crate) struct HandshakeIo {
    pub(crate) server: Server,
    pub(crate) buf: [u8; READ_BUF],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A [`Handshake`] on loan; dropping it returns the state to this thread's spares.
pub(crate) struct Lease(Option<Box<Handshake>>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    /// A fresh handshake for `config`: a spare when this thread has one, else a new one.
    pub(crate) fn take(config: server::Config) -> Self {
        let spare = SPARES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let state = match spare {
            Some(mut state) => {
                state.io.server = Server::new(config);
                state.io.start = 0;
                state.io.end = 0;
                state.request = None;
                state
            }
            None => Box::new(Handshake {
                io: HandshakeIo {
                    server: Server::new(config),
                    buf: [0; READ_BUF],
                    start: 0,
                    end: 0,
                },
                request: None,
            }),
        };
        Self(Some(state))
    }
}

impl Deref for Lease {
    type Target = Handshake;

    fn deref(&self) -> &Handshake {
        // Only `drop` empties the option.
        self.0.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Handshake {
        self.0.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(state) = self.0.take() else { return };
        // During thread teardown the spares are gone; the state is then simply freed.
        let _ = SPARES.try_with(|s| {
            let mut spares = s.borrow_mut();
            if spares.len() < SPARES_PER_THREAD {
                spares.push(state);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_state_is_reused_fresh() {
        let config = server::Config::default();
        let mut first = Lease::take(config);
        first.io.end = 7;
        let _ = first.io.server.feed(&[5, 1, 0]);
        let addr: *const Handshake = &*first;
        drop(first);
        let second = Lease::take(config);
        assert_eq!(&*second as *const Handshake, addr, "the spare is reused");
        assert_eq!((second.io.start, second.io.end), (0, 0));
        assert!(
            second.io.server.pending_transmit().is_empty(),
            "the server is reset"
        );
        assert!(second.request.is_none());
    }

    #[test]
    fn spares_are_bounded() {
        let config = server::Config::default();
        let leases: Vec<Lease> = (0..SPARES_PER_THREAD + 5)
            .map(|_| Lease::take(config))
            .collect();
        drop(leases);
        assert_eq!(SPARES.with(|s| s.borrow().len()), SPARES_PER_THREAD);
    }
}
