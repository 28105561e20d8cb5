//! `socksgate`: the native SOCKS4/4a/5 server, the SOCKS client library ([`client`]), the
//! `connect` command and the password tool.
//!
//! Modules, one per concept:
//! * [`cli`] — command-line definitions; [`config`] — the TOML file and the effective settings;
//! * [`gssapi`] — GSS-API/Kerberos contexts, keytab and wrap/unwrap (RFC 1961's cryptography);
//! * [`users`] — the Argon2 users file, `login` — password checks with back-off;
//!   [`access`] — access rules from the config (the core evaluates them);
//! * [`shared`] — what all sessions of one configuration share, and its core policy;
//! * [`session`] — one connection, from accept to its access record; `conn` — the tokio
//!   driver of the core's session, which makes every decision; `pool` — sessions recycled
//!   across connections; `clock` — the core's time; [`access_log`] — the access record;
//! * the commands: [`connect`], `chain` (through an upstream proxy), `bind`, `udp_relay`
//!   (`udp_recv`: datagrams two per call; `udp_socket`: sockets registered for reading
//!   only); [`failure`] — errno → the core's failure cause;
//! * [`resolve`] — hickory resolver and Happy Eyeballs; [`egress`] — source address,
//!   interface and mark of outbound sockets;
//! * `gssapi_session` — the server's GSS-API exchange; [`protected`] — the GSS-API-protected
//!   stream and its relay (RFC 1961 §5);
//! * [`relay`] — TCP relay with half-close; [`stream`] — a plain or TLS connection;
//!   [`tls`] — SOCKS over TLS (listeners, client certificates, `+tls` proxies);
//!   [`server`] — listeners and the accept loop;
//!   [`balancer`] — PROXY protocol headers from trusted load balancers;
//!   [`client`] — the SOCKS client library (CONNECT, BIND, UDP ASSOCIATE, chains);
//!   [`connect_command`] — `socksgate connect` on top of it;
//!   [`socksify`] — `socksgate socksify` (the library it preloads is native/socksify);
//! * [`limits`] — session limits (global, per client network, per user); [`session_rate`] —
//!   new sessions per second per client network and per user; [`burst_log`] — one log line
//!   per burst of refusals; [`authentication`] — `[[auth]]`, methods by network and listener;
//!   [`traffic`] — bandwidth limits and byte quotas (`[[traffic]]`);
//! * [`reload`] — SIGHUP reloads; [`systemd`] — `sd_notify` readiness;
//! * [`logging`] — text or JSON logs; [`metrics`] — Prometheus counters and endpoint;
//! * [`memory`] — freed memory back to the system after bursts of sessions.
// Denied everywhere but in `memory` and `gssapi`'s keytab store, whose foreign calls carry
// their SAFETY comments.
#![deny(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod authentication;
pub mod balancer;
mod bind;
pub mod burst_log;
mod chain;
pub mod cli;
pub mod client;
mod clock;
pub mod config;
mod conn;
pub mod connect;
pub mod connect_command;
pub mod egress;
pub mod failure;
pub mod gssapi;
mod gssapi_session;
pub mod limits;
pub mod logging;
mod login;
pub mod memory;
pub mod metrics;
mod pool;
#[cfg(target_os = "linux")]
pub mod privdrop;
pub mod protected;
pub mod protected_datagram;
pub mod relay;
pub mod reload;
pub mod resolve;
pub mod server;
pub mod session;
pub mod session_rate;
pub mod shared;
pub mod socksify;
pub mod splice;
pub mod stream;
pub mod systemd;
pub mod throttle;
pub mod tls;
pub mod traffic;
mod udp_recv;
mod udp_relay;
mod udp_socket;
mod udp_threads;
pub mod users;
