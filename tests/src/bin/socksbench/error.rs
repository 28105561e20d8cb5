//! What can break a measurement (as opposed to a slow result, which is just a number).

use std::io;

/// A failure that makes a measurement meaningless: the run exits non-zero.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The proxy answered with something that is not a successful SOCKS exchange.
    #[error("SOCKS: {0}")]
    Socks(String),
    /// Bytes arrived, but not the ones that were sent.
    #[error("data corrupted: {0}")]
    Corrupt(String),
    /// A process could not be started, found or measured.
    #[error("{0}")]
    Setup(String),
}

/// Shorthand for results in this binary.
pub(crate) type Result<T> = core::result::Result<T, BenchError>;

/// Adds context to I/O errors.
pub(crate) trait Context<T> {
    /// Wraps the error with `what` (evaluated only on failure).
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| BenchError::Io {
            what: what(),
            source,
        })
    }
}
