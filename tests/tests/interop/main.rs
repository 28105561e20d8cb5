//! Black-box interop tests: the `socksgate` binary against real SOCKS clients (curl, PySocks,
//! Dante's socksify, ncat, proxychains4), against peer servers (danted, microsocks) and a
//! scripted byte-exact client; a fleet of nodes behind HAProxy. Everything stays on loopback.
#![forbid(unsafe_code)]

mod cli;
mod clients;
mod connect_cli;
mod curl;
mod fleet;
mod fleet_faults;
mod negative;
mod raw;

/// A user every authenticating test registers.
pub(crate) const USER: &str = "alice";
/// Alice's password.
pub(crate) const PASS: &str = "s3cret-pw";
/// The body size the data tests move (1 MiB).
pub(crate) const MB: usize = 1 << 20;
