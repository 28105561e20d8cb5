//! # socksgate-core
//!
//! The protocol core of socksgate: `#![no_std]`, no allocator, no I/O.
//!
//! * [`wire`] — every SOCKS4, SOCKS4a, SOCKS5, RFC 1929 and RFC 1961 message as a typed view
//!   with an incremental `parse` (a short buffer is [`Status::Partial`], not an error) and an
//!   `emit` into caller storage.
//! * [`server`] and [`client`] — sans-IO handshake state machines: bytes in, events and bytes
//!   out. The caller owns sockets, DNS, clocks and the relay.
//! * [`rules`] — the allocation-free access-rule evaluator every front end shares.
//! * [`family`] — the address family names are used in (prefer IPv6 or IPv4, one only).
//! * [`rate`] — token buckets for bandwidth and session-rate limits.
//! * [`client_limits`] — the per-client session cap; [`login_throttle`] — the failed-login
//!   back-off or lockout; both keyed by client network in a [`client_table`] the caller
//!   provides.
//! * [`egress`] — which egress profile a session uses and which source address it gets.
//! * [`traffic`] — which bandwidth limits and byte quotas apply to a session, quota periods.
//! * [`gssapi`] — RFC 1961 GSS-API: how the state machines run it, §5 encapsulation.
//! * [`udp`] — UDP ASSOCIATE encapsulation and RFC 1928 §7 fragment reassembly.
//! * [`balancer`] — which sources may send a PROXY protocol header, and the client it names.
//! * [`addr`] — destination addresses (IP or domain name), borrowed and owned.
//!
//! Nothing here panics on any input; every length is checked before use.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]
// Owned names live inline (no allocator here), so enums holding a `Target` are large by
// design; boxing is not available.
#![allow(clippy::large_enum_variant)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod addr;
pub mod balancer;
mod buffers;
pub mod client;
pub mod client_limits;
pub mod client_table;
pub mod egress;
pub mod failure;
pub mod family;
pub mod gssapi;
pub mod login_throttle;
pub mod observe;
pub mod policy;
pub mod rate;
pub mod rules;
pub mod server;
pub mod session;
pub mod time;
pub mod traffic;
pub mod udp;
pub mod wire;

pub use addr::{Addr, Domain, DomainBuf, Target};
pub use failure::Failure;
pub use policy::{Authentication, GssapiPolicy, Policy};
pub use session::Session;
pub use time::Instant;
pub use wire::{BufferTooSmall, Status, WireError};
