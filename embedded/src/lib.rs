//! # socksgate-embedded
//!
//! A SOCKS4/4a/5 gateway over embassy-net (smoltcp) for microcontrollers: `#![no_std]`, no
//! allocator, every socket and buffer allocated up front.
//!
//! * [`config`] — the static configuration: port, users, access rules, timeouts; it builds
//!   the core's [`Policy`](socksgate_core::Policy).
//! * [`pool`] — the fixed pool of sessions ([`pool::Gateway`]) and its storage
//!   ([`pool::GatewayStorage`]); one extra "refusal" slot answers clients that arrive while
//!   every session is busy with a SOCKS failure reply instead of a TCP reset.
//! * `session` — one client: an embassy driver of the core's
//!   [`Session`](socksgate_core::Session) (resolution through embassy-net DNS, upstream
//!   connect), then the relay and the orderly close.
//! * `udp` — UDP ASSOCIATE from a fixed pool of relay sockets, each association decided by
//!   the core's [`udp::Association`](socksgate_core::udp::Association).
//!
//! The core decides everything about the protocol — methods, versions, access rules, reply
//! codes, deadlines, which datagrams are relayed; this crate owns sockets, DNS, the clock and
//! the relay. The same code runs in firmware and in the host tests (which join two
//! embassy-net stacks by an in-memory wire).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod console;
pub mod link;
pub mod live;
pub mod monitor;
pub mod password;
pub mod pool;
mod relay;
mod resolve;
mod session;
pub mod settings;
pub mod store;
mod udp;

pub use config::{Configuration, GatewayConfig, User};
pub use pool::{Gateway, GatewayStorage, SessionBuffers, UdpRefusalBuffers};
pub use relay::RelayEnd;
pub use session::{Refusal, SessionEnd};
