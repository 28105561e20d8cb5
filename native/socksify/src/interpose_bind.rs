//! The C library's listening calls, replaced for SOCKS BIND ([`crate::bind`]): `bind`,
//! `listen`, `accept`, `accept4`, `getsockname`, and `getpeername` (which also answers a
//! connected UDP socket's destination, [`crate::udp::peer`]).
//!
//! Part of the interposition layer: each hook converts the C arguments, asks the safe
//! module, and calls libc's own function for every descriptor that is not the shim's.
#![allow(unsafe_code)]

use core::ffi::c_int;
use std::net::SocketAddr;

use libc::{sockaddr, socklen_t};

use crate::{bind, real, sys, udp};

/// Writes `addr` to a program's (name, length) pair, truncating as the kernel does.
///
/// # Safety
/// `name` is null or points to `*len` writable bytes; `len` is null or valid.
unsafe fn write_name(addr: SocketAddr, name: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if name.is_null() || len.is_null() {
        sys::set_errno(libc::EFAULT);
        return -1;
    }
    let (storage, full) = sys::to_sockaddr(addr);
    // SAFETY: the caller's contract.
    let room = unsafe { *len } as usize;
    let n = room.min(full as usize);
    // SAFETY: storage holds `full` ≥ n bytes; name has room for n; len is valid.
    unsafe {
        core::ptr::copy_nonoverlapping((&raw const storage).cast::<u8>(), name.cast::<u8>(), n);
        *len = full;
    }
    0
}

/// `bind(2)`: libc's, then a TCP socket bound to port 0 after a proxied connect becomes a
/// SOCKS BIND (see [`crate::bind`]).
///
/// # Safety
/// The C contract of `bind`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the program's own arguments, passed on unchanged.
    let r = unsafe { real::bind(fd, addr, len) };
    // SAFETY: the program passes `len` readable bytes at `addr` (bind's contract).
    let Some(mut local) = (unsafe { sys::read_sockaddr(addr, len) }) else {
        return r;
    };
    if r != 0 {
        // A program binding to the address getsockname gave for a proxied connection (the
        // proxy's): like Dante, bind the wildcard address locally and BIND at the proxy.
        let errno = sys::errno();
        let Some(wildcard) = bind::wildcard_for(fd, local, errno) else {
            sys::set_errno(errno);
            return r;
        };
        if let Err(e) = sys::bind(fd, wildcard) {
            sys::set_errno(e);
            return -1;
        }
        local = wildcard;
    }
    match bind::after_bind(fd, local) {
        Ok(()) => 0,
        Err(errno) => {
            sys::set_errno(errno);
            -1
        }
    }
}

/// `listen(2)`: nothing to do on a socket the proxy listens for.
///
/// # Safety
/// The C contract of `listen`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    match bind::listen(fd) {
        Some(r) => r,
        // SAFETY: the program's own arguments, passed on unchanged.
        None => unsafe { real::listen(fd, backlog) },
    }
}

/// accept and accept4 on a BIND socket.
///
/// # Safety
/// `addr`/`len` as for accept(2).
unsafe fn accept_bound(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Option<c_int> {
    let outcome = bind::accept(
        fd,
        flags & libc::SOCK_CLOEXEC != 0,
        flags & libc::SOCK_NONBLOCK != 0,
    )?;
    Some(match outcome {
        Ok((connection, peer)) => {
            if !addr.is_null() {
                // SAFETY: the caller's contract.
                unsafe { write_name(peer, addr, len) };
            }
            connection
        }
        Err(errno) => {
            sys::set_errno(errno);
            -1
        }
    })
}

/// `accept(2)`: on a BIND socket, the connection the proxy accepted (second reply).
///
/// # Safety
/// The C contract of `accept`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { accept_bound(fd, addr, len, 0) } {
        Some(r) => r,
        // SAFETY: the program's own arguments, passed on unchanged.
        None => unsafe { real::accept(fd, addr, len) },
    }
}

/// `accept4(2)`: as [`accept`], with SOCK_NONBLOCK and SOCK_CLOEXEC.
///
/// # Safety
/// The C contract of `accept4`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { accept_bound(fd, addr, len, flags) } {
        Some(r) => r,
        // SAFETY: the program's own arguments, passed on unchanged.
        None => unsafe { real::accept4(fd, addr, len, flags) },
    }
}

/// `getsockname(2)`: a BIND socket is where the proxy listens; a TCP connection made
/// through the proxy is at the proxy's address for it (BND.ADDR of the CONNECT reply), as
/// Dante's socksify answers too: FTP clients announce that address (with a BIND socket's
/// port) in PORT/EPRT, and the server can only reach the proxy's side.
///
/// # Safety
/// The C contract of `getsockname`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match bind::local_name(fd).or_else(|| bind::connected_name(fd)) {
        // SAFETY: the caller's contract.
        Some(bound) => unsafe { write_name(bound, addr, len) },
        // SAFETY: the program's own arguments, passed on unchanged.
        None => unsafe { real::getsockname(fd, addr, len) },
    }
}

/// `getpeername(2)`: a connected UDP socket's destination, a BIND connection's peer.
///
/// # Safety
/// The C contract of `getpeername`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let answer = match udp::peer(fd) {
        Some(peer) => Some(Ok(peer)),
        None => bind::peer_name(fd),
    };
    match answer {
        // SAFETY: the caller's contract.
        Some(Ok(peer)) => unsafe { write_name(peer, addr, len) },
        Some(Err(errno)) => {
            sys::set_errno(errno);
            -1
        }
        // SAFETY: the program's own arguments, passed on unchanged.
        None => unsafe { real::getpeername(fd, addr, len) },
    }
}
