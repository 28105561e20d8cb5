//! `socksgate`: the native SOCKS4/4a/5 server, the `connect` client and the password tool.
//!
//! Modules, one per concept:
//! * [`cli`] — command-line definitions; [`config`] — the TOML file and the effective settings;
//! * [`users`] — the Argon2 users file; [`access`] — access rules (core evaluator);
//! * [`resolve`] — hickory resolver and Happy Eyeballs; [`connect`] — errno → reply codes;
//! * [`relay`] — TCP relay with half-close; [`server`] — listeners and the accept loop;
//! * [`session`] — one connection: handshake through `socksgate_core::server`, CONNECT;
//!   `pool` — handshake state recycled across connections;
//!   `bind` and `udp_relay` — the other commands (`udp_recv`: datagrams two per call);
//!   [`client`] — `socksgate connect`;
//! * [`limits`] — session limits (global, per client IP, per user);
//! * [`reload`] — SIGHUP reloads; [`systemd`] — `sd_notify` readiness;
//! * [`logging`] — text or JSON logs; [`metrics`] — Prometheus counters and endpoint;
//! * [`memory`] — freed memory back to the system after bursts of sessions.
// Denied everywhere but in `memory`, whose one libc call carries its SAFETY comment.
#![deny(unsafe_code)]

pub mod access;
mod bind;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metrics;
mod pool;
#[cfg(target_os = "linux")]
pub mod privdrop;
pub mod relay;
pub mod reload;
pub mod resolve;
pub mod server;
pub mod session;
pub mod systemd;
pub mod throttle;
mod udp_recv;
mod udp_relay;
pub mod users;
