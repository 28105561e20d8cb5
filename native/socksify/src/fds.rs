//! The per-descriptor state table: what the shim did with each of the program's sockets.
//!
//! Hooks record a socket's [`FdState`] when they take it over (a proxied CONNECT, a UDP
//! association, a BIND) and look it up on later calls on the same descriptor; the `close`
//! hook forgets it. Descriptors the shim never touched have no entry, and calls on them go
//! straight to libc.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, OnceLock};

use socksgate_core::Target;

/// What the shim knows about one descriptor. Add a variant for a new kind of takeover.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum FdState {
    /// A TCP socket connected through the proxy with CONNECT.
    Connected {
        /// What the program asked for (a name when it connected to a placeholder).
        destination: Target,
        /// The proxy's BND.ADDR/BND.PORT.
        bound: Target,
    },
}

type Table = HashMap<RawFd, FdState>;

fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    // A hook that panicked while holding the lock leaves the table as it was; keep using it.
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records `state` for `fd`, replacing what was there.
pub(crate) fn insert(fd: RawFd, state: FdState) {
    table().insert(fd, state);
}

/// The state of `fd`, if the shim took it over.
pub(crate) fn get(fd: RawFd) -> Option<FdState> {
    table().get(&fd).cloned()
}

/// Runs `f` on the state of `fd` (for hooks that update it in place).
#[allow(dead_code, reason = "for the UDP and BIND hooks")]
pub(crate) fn with<R>(fd: RawFd, f: impl FnOnce(Option<&mut FdState>) -> R) -> R {
    f(table().get_mut(&fd))
}

/// Forgets `fd` (it was closed) and returns what was recorded.
pub(crate) fn remove(fd: RawFd) -> Option<FdState> {
    table().remove(&fd)
}
