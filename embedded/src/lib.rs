//! # socksgate-embedded
//!
//! A SOCKS4/4a/5 gateway over embassy-net (smoltcp) for microcontrollers: `#![no_std]`, no
//! allocator, every socket and buffer allocated up front.
//!
//! * [`config`] — the static configuration: port, users, access rules, timeouts.
//! * [`pool`] — the fixed pool of sessions ([`pool::Gateway`]) and its storage
//!   ([`pool::GatewayStorage`]); one extra "refusal" slot answers clients that arrive while
//!   every session is busy with a SOCKS failure reply instead of a TCP reset.
//! * `session` — one client: handshake through the core's sans-IO [`socksgate_core::server`],
//!   access rules, resolution (embassy-net DNS), upstream connect, relay and orderly close.
//! * `udp` — UDP ASSOCIATE from a fixed pool of relay sockets, with the core's RFC 1928 §7
//!   header and fragment reassembly.
//!
//! All protocol bytes go through `socksgate-core`; this crate owns sockets, DNS, timeouts
//! and the relay. The same code runs in firmware and in the host tests (which join two
//! embassy-net stacks by an in-memory wire).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod pool;
mod relay;
mod resolve;
mod session;
mod udp;

pub use config::{GatewayConfig, User};
pub use pool::{Gateway, GatewayStorage, SessionBuffers};
pub use relay::RelayEnd;
pub use session::SessionEnd;
