//! SOCKS gateway over embassy-net.
#![no_std]
#![forbid(unsafe_code)]
