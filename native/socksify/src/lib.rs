//! `libsocksgate_socksify.so`: the library `socksgate socksify -- PROGRAM` preloads
//! (`LD_PRELOAD`) so that an unmodified, dynamically linked program's sockets go through a
//! SOCKS proxy.
//!
//! # How it works
//!
//! The library defines C functions with the names of the C library's socket and resolver
//! calls ([`interpose`]). Because it is preloaded, the dynamic linker binds the program's
//! calls to these definitions; each hook decides what to do and either answers the program
//! itself or calls libc's own function, found with `dlsym(RTLD_NEXT, …)` ([`real`]).
//! Statically linked programs have no dynamic linker and cannot be socksified
//! (`socksgate socksify` says so before starting one).
//!
//! - [`tcp`]: `connect` on TCP sockets → SOCKS CONNECT (blocking and non-blocking sockets;
//!   the technique is explained there).
//! - [`names`] and [`placeholder`]: when the proxy resolves (socks5h, socks4a),
//!   `getaddrinfo`/`gethostbyname` answer with placeholder addresses that `connect` maps back
//!   to the name, so no DNS query leaves the machine.
//! - [`udp`] (hooks in [`interpose_udp`]): `sendto`/`sendmsg`/`sendmmsg`/`recvfrom`/
//!   `recvmsg`/`recvmmsg` and connected UDP (`connect`, then `send`/`write`/`recv`/`read`)
//!   → SOCKS5 UDP ASSOCIATE, one association per program socket.
//! - [`bind`] (hooks in [`interpose_bind`]): `bind`+`getsockname`+`listen`+`accept` of an
//!   active-mode data connection → SOCKS BIND, both replies.
//! - [`fds`]: the per-descriptor state table.
//! - [`handshake`]: the SOCKS exchange on a socket, driven by `socksgate_core::client` (the
//!   protocol bytes and decisions are the core's; this crate only does I/O).
//! - [`settings`], [`direct`], [`log`]: configuration from the environment (variables and
//!   grammar shared with the command in `socksgate_socksify_config`), the `--direct`
//!   networks, the `--verbose` log.
//! - [`failure`]: reply codes → errno.
//!
//! # Adding a hook
//!
//! 1. Add libc's function to the list in [`real`] (`name: fn(args) -> ret = failure value;`).
//! 2. Export the hook from [`interpose`] with `#[cfg_attr(not(test), unsafe(no_mangle))]
//!    pub unsafe extern "C" fn name(...)`, the same C signature. Keep it thin: convert the
//!    raw arguments with [`sys`] (each `unsafe` block with a `// SAFETY:` comment), then call
//!    a function in a safe module of its own (`#![forbid(unsafe_code)]` at its top), and fall
//!    back to `real::name` for anything that is not yours.
//! 3. Talk to the proxy with [`tcp::open`] (connect a socket to the proxy and get the first
//!    reply; keep the returned [`handshake::Handshake`] for BIND's second reply) and map
//!    failures with [`failure::Failure::errno`].
//! 4. Record what you did to a descriptor as an [`fds::FdState`] variant, so later calls on
//!    it (and `close`) can find it; log each call with [`log::event`].
//! 5. The `connect` hook sends AF_INET/AF_INET6 datagram sockets to [`udp`] (through
//!    [`interpose_udp`]) and stream sockets to [`tcp`], after [`bind`] has undone a BIND
//!    that a `connect` follows.
//!
//! Everything the hooks allocate lives in the process; a lock is held only for a table
//! lookup, never across a system call.
// `unsafe` is allowed only in `interpose`, `interpose_udp`, `interpose_bind`, `real` and
// `sys` (each says so at its top); the other modules forbid it.
// The crate has no Rust API (it is loaded with LD_PRELOAD): these docs are for its
// developers and link its private modules (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod interpose;
mod real;
mod sys;

mod direct;
mod failure;
mod fds;
mod handshake;
mod log;
mod names;
mod placeholder;
mod settings;
mod tcp;

// UDP ASSOCIATE and BIND: the safe modules and their hooks.
mod bind;
pub mod interpose_bind;
pub mod interpose_udp;
mod udp;
