//! The C library's datagram calls, replaced: `sendto`, `sendmsg`, `sendmmsg`, `recvfrom`,
//! `recvmsg`, `recvmmsg`, and `send`, `recv`, `write`, `read` (with their `_FORTIFY_SOURCE`
//! variants `__recv_chk`, `__recvfrom_chk`, `__read_chk`) for connected UDP sockets; also
//! `syscall(SYS_sendmmsg/SYS_recvmmsg, …)`, which libuv 1.44 (Debian 12's, under BIND 9's
//! `dig` and `host`) calls instead of the libc functions.
//!
//! Part of the interposition layer (unsafe: C pointers in, C pointers out). Every hook first
//! asks whether the descriptor is one of [`crate::udp`]'s (one atomic load), and otherwise
//! calls libc's own function with the program's arguments unchanged. The decisions are
//! [`crate::udp`]'s; this module copies bytes between the program's buffers and the
//! datagrams.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_long, c_uint, c_void};
use core::mem::{size_of, zeroed};
use core::ptr::null_mut;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use libc::{iovec, mmsghdr, msghdr, sockaddr, sockaddr_storage, socklen_t, ssize_t, timespec};

use crate::real;
use crate::sys::{self, Errno};
use crate::udp::{self, Incoming, MAX_HEADER, MAX_PAYLOAD, Send};

/// Returns -1 with `errno` set.
fn fail(errno: Errno) -> ssize_t {
    sys::set_errno(errno);
    -1
}

/// The total length of the program's buffers.
///
/// # Safety
/// `iov` points to `count` valid iovecs (or `count` is 0).
unsafe fn capacity(iov: *const iovec, count: usize) -> usize {
    if iov.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract.
    let slots = unsafe { core::slice::from_raw_parts(iov, count) };
    slots.iter().map(|v| v.iov_len).sum()
}

/// The program's buffers gathered into one.
///
/// # Safety
/// As [`capacity`], and each iovec points to `iov_len` readable bytes.
unsafe fn gather(iov: *const iovec, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if iov.is_null() {
        return out;
    }
    // SAFETY: the caller's contract.
    let slots = unsafe { core::slice::from_raw_parts(iov, count) };
    for v in slots {
        if !v.iov_base.is_null() {
            // SAFETY: the caller's contract.
            out.extend_from_slice(unsafe {
                core::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
    }
    out
}

/// Copies `bytes` into the program's buffers; returns how many fitted.
///
/// # Safety
/// As [`capacity`], and each iovec points to `iov_len` writable bytes.
unsafe fn scatter(bytes: &[u8], iov: *const iovec, count: usize) -> usize {
    if iov.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract.
    let slots = unsafe { core::slice::from_raw_parts(iov, count) };
    let mut done = 0;
    for v in slots {
        let rest = bytes.get(done..).unwrap_or_default();
        let n = rest.len().min(v.iov_len);
        if n == 0 || v.iov_base.is_null() {
            continue;
        }
        // SAFETY: the caller's contract: iov_base holds iov_len ≥ n writable bytes, which
        // cannot overlap our own buffer.
        unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), v.iov_base.cast::<u8>(), n) };
        done += n;
    }
    done
}

/// Writes `addr` to a program's (name, length) pair, truncating as the kernel does.
///
/// # Safety
/// `name` is null or points to `*len` writable bytes; `len` is null or valid.
unsafe fn write_name(addr: SocketAddr, name: *mut sockaddr, len: *mut socklen_t) {
    if name.is_null() || len.is_null() {
        return;
    }
    let (storage, full) = sys::to_sockaddr(addr);
    // SAFETY: the caller's contract.
    let room = unsafe { *len } as usize;
    let n = room.min(full as usize);
    // SAFETY: storage holds `full` ≥ n bytes; name has room for n.
    unsafe {
        core::ptr::copy_nonoverlapping((&raw const storage).cast::<u8>(), name.cast::<u8>(), n);
        *len = full;
    }
}

/// What one receive gave the program.
struct Received {
    /// The call's return value.
    value: usize,
    /// MSG_TRUNC when the payload did not fit.
    flags: c_int,
    /// The control data's length (recvmsg).
    controllen: usize,
}

/// Receives one datagram for the program on the associated socket `fd` into its buffers,
/// its sender into (`name`, `namelen`) and ancillary data into `control`.
///
/// # Safety
/// The pointers are the program's, valid as for recvmsg(2).
unsafe fn receive(
    fd: RawFd,
    iov: *const iovec,
    iovlen: usize,
    flags: c_int,
    (name, namelen): (*mut sockaddr, *mut socklen_t),
    control: (*mut c_void, usize),
    call: &str,
) -> Result<Received, Errno> {
    // SAFETY: the caller's contract.
    let room = unsafe { capacity(iov, iovlen) };
    let mut buffer = vec![0u8; room.min(MAX_PAYLOAD) + MAX_HEADER];
    // The kernel's MSG_TRUNC would report lengths past our buffer: we compute our own.
    let real_flags = flags & !libc::MSG_TRUNC;
    loop {
        // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
        let mut from: sockaddr_storage = unsafe { zeroed() };
        let mut one = iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: as above.
        let mut msg: msghdr = unsafe { zeroed() };
        msg.msg_name = (&raw mut from).cast();
        msg.msg_namelen = size_of::<sockaddr_storage>() as socklen_t;
        msg.msg_iov = &raw mut one;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0;
        msg.msg_controllen = control.1;
        // SAFETY: msg points to our buffer, our address storage and the program's control
        // buffer (valid by the caller's contract).
        let n = unsafe { real::recvmsg(fd, &raw mut msg, real_flags) };
        let Ok(n) = usize::try_from(n) else {
            return Err(sys::errno());
        };
        let got = n.min(buffer.len());
        let cut = msg.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel wrote msg_namelen bytes of address.
        let src = unsafe { sys::read_sockaddr((&raw const from).cast(), msg.msg_namelen) };
        let datagram = buffer.get(..got).unwrap_or_default();
        let (payload, shown) = match udp::incoming(fd, src, datagram) {
            Incoming::Relayed { from, payload } => {
                let payload = datagram.get(payload).unwrap_or_default();
                crate::log::event(format_args!(
                    "{call}(fd {fd}): {} bytes from {from} via relay",
                    payload.len()
                ));
                (payload, Some(from))
            }
            Incoming::Direct => (datagram, src),
            Incoming::Drop => {
                if flags & libc::MSG_PEEK != 0 {
                    // Take the peeked datagram off the queue so the next peek sees another.
                    // SAFETY: a zero-length read into a valid pointer.
                    unsafe { real::recv(fd, buffer.as_mut_ptr().cast(), 0, libc::MSG_DONTWAIT) };
                }
                continue;
            }
        };
        // SAFETY: the caller's contract.
        let copied = unsafe { scatter(payload, iov, iovlen) };
        let truncated = cut || copied < payload.len();
        match shown {
            // SAFETY: the caller's contract.
            Some(addr) => unsafe { write_name(addr, name, namelen) },
            None if !namelen.is_null() => {
                // SAFETY: the caller's contract.
                unsafe { *namelen = 0 };
            }
            None => {}
        }
        let value = if flags & libc::MSG_TRUNC != 0 {
            payload.len()
        } else {
            copied
        };
        return Ok(Received {
            value,
            flags: if truncated { libc::MSG_TRUNC } else { 0 },
            controllen: msg.msg_controllen,
        });
    }
}

/// recvfrom on an associated socket.
///
/// # Safety
/// As recvfrom(2).
unsafe fn receive_from(
    fd: RawFd,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
    call: &str,
) -> ssize_t {
    let one = iovec {
        iov_base: buf,
        iov_len: len,
    };
    // SAFETY: `one` describes the program's buffer; the rest is the caller's contract.
    match unsafe {
        receive(
            fd,
            &raw const one,
            1,
            flags,
            (addr, addrlen),
            (null_mut(), 0),
            call,
        )
    } {
        Ok(r) => r.value as ssize_t,
        Err(e) => fail(e),
    }
}

/// recvmsg on an associated socket.
///
/// # Safety
/// As recvmsg(2).
unsafe fn receive_msg(fd: RawFd, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller's contract: msg is a valid msghdr.
    let m = unsafe { &mut *msg };
    let mut namelen = m.msg_namelen;
    let name = m.msg_name.cast::<sockaddr>();
    // SAFETY: the program's buffers, valid by the caller's contract.
    let r = unsafe {
        receive(
            fd,
            m.msg_iov,
            m.msg_iovlen,
            flags,
            (
                name,
                if name.is_null() {
                    null_mut()
                } else {
                    &raw mut namelen
                },
            ),
            (m.msg_control, m.msg_controllen),
            "recvmsg",
        )
    };
    match r {
        Ok(r) => {
            m.msg_namelen = if name.is_null() { 0 } else { namelen };
            m.msg_controllen = r.controllen;
            m.msg_flags = r.flags;
            r.value as ssize_t
        }
        Err(e) => fail(e),
    }
}

/// Sends `payload` for the program; `None` when libc should do it with the program's
/// arguments.
///
/// # Safety
/// `control` is the program's ancillary data, valid as for sendmsg(2).
unsafe fn relay(
    fd: RawFd,
    to: Option<SocketAddr>,
    payload: &[u8],
    flags: c_int,
    control: (*mut c_void, usize),
    call: &str,
) -> Option<ssize_t> {
    match udp::send(fd, to, payload, call) {
        Send::Libc => None,
        Send::Fail(e) => Some(fail(e)),
        Send::Relay(out) => {
            let (storage, len) = sys::to_sockaddr(out.relay);
            let mut one = iovec {
                iov_base: out.datagram.as_ptr().cast_mut().cast(),
                iov_len: out.datagram.len(),
            };
            // SAFETY: all-zero is a valid msghdr.
            let mut msg: msghdr = unsafe { zeroed() };
            msg.msg_name = (&raw const storage).cast_mut().cast();
            msg.msg_namelen = len;
            msg.msg_iov = &raw mut one;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0;
            msg.msg_controllen = control.1;
            // SAFETY: msg points to our datagram and address and the program's control data.
            let n = unsafe { real::sendmsg(fd, &raw const msg, flags) };
            Some(if n < 0 { -1 } else { payload.len() as ssize_t })
        }
    }
}

/// The destination of a send call: `Ok(None)` for "the connected peer", `Err(())` for an
/// address family this shim leaves alone.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
unsafe fn destination(addr: *const sockaddr, len: socklen_t) -> Result<Option<SocketAddr>, ()> {
    if addr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    unsafe { sys::read_sockaddr(addr, len) }.map(Some).ok_or(())
}

/// sendmsg's logic, shared by `sendmsg` and `sendmmsg`.
///
/// # Safety
/// As sendmsg(2).
unsafe fn send_msg(fd: RawFd, msg: *const msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        // SAFETY: libc reports the bad pointer.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's contract.
    let m = unsafe { &*msg };
    // SAFETY: the caller's contract.
    let Ok(to) = (unsafe { destination(m.msg_name.cast(), m.msg_namelen) }) else {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::sendmsg(fd, msg, flags) };
    };
    if to.is_none() && !udp::is_associated(fd) {
        // SAFETY: as above.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's contract.
    let payload = unsafe { gather(m.msg_iov, m.msg_iovlen) };
    // SAFETY: the program's control data.
    match unsafe {
        relay(
            fd,
            to,
            &payload,
            flags,
            (m.msg_control, m.msg_controllen),
            "sendmsg",
        )
    } {
        Some(r) => r,
        // SAFETY: as above.
        None => unsafe { real::sendmsg(fd, msg, flags) },
    }
}

/// Replaces libc's `sendto`: datagrams to proxied destinations go to the relay with the
/// UDP request header.
///
/// # Safety
/// As sendto(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    // SAFETY: the caller's contract.
    let Ok(to) = (unsafe { destination(addr, addrlen) }) else {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::sendto(fd, buf, len, flags, addr, addrlen) };
    };
    if (to.is_none() && !udp::is_associated(fd)) || buf.is_null() && len > 0 {
        // SAFETY: as above.
        return unsafe { real::sendto(fd, buf, len, flags, addr, addrlen) };
    }
    let payload = if len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's contract: buf holds len readable bytes.
        unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    // SAFETY: no control data.
    match unsafe { relay(fd, to, payload, flags, (null_mut(), 0), "sendto") } {
        Some(r) => r,
        // SAFETY: as above.
        None => unsafe { real::sendto(fd, buf, len, flags, addr, addrlen) },
    }
}

/// Replaces libc's `sendmsg` (see [`sendto`]); ancillary data is passed on.
///
/// # Safety
/// As sendmsg(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's contract.
    unsafe { send_msg(fd, msg, flags) }
}

/// `sendmmsg` for the hook and for `syscall(SYS_sendmmsg)`.
///
/// # Safety
/// As sendmmsg(2).
unsafe fn send_mmsg(fd: c_int, vec: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    let ours = udp::is_associated(fd)
        || (!vec.is_null() && udp::is_inet_datagram(fd) && {
            // SAFETY: the caller's contract: vec holds vlen entries.
            let all = unsafe { core::slice::from_raw_parts(vec, vlen as usize) };
            all.iter().any(|m| !m.msg_hdr.msg_name.is_null())
        });
    if !ours {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::sendmmsg(fd, vec, vlen, flags) };
    }
    let mut sent: c_int = 0;
    for i in 0..vlen as usize {
        // SAFETY: i < vlen.
        let entry = unsafe { &mut *vec.add(i) };
        // SAFETY: the caller's contract.
        let n = unsafe { send_msg(fd, &raw const entry.msg_hdr, flags) };
        if n < 0 {
            return if sent == 0 { -1 } else { sent };
        }
        entry.msg_len = n as c_uint;
        sent += 1;
    }
    sent
}

/// Replaces libc's `sendmmsg`: each message as [`sendmsg`] would send it.
///
/// # Safety
/// As sendmmsg(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { send_mmsg(fd, vec, vlen, flags) }
}

/// Replaces libc's `send`: on a socket connected through an association, the datagram
/// goes to the relay for the connected destination.
///
/// # Safety
/// As send(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> ssize_t {
    if !udp::is_associated(fd) || (buf.is_null() && len > 0) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::send(fd, buf, len, flags) };
    }
    // SAFETY: the caller's contract (checked non-null above when len > 0).
    let payload = if len == 0 {
        &[][..]
    } else {
        unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    // SAFETY: no control data.
    match unsafe { relay(fd, None, payload, flags, (null_mut(), 0), "send") } {
        Some(r) => r,
        // SAFETY: as above.
        None => unsafe { real::send(fd, buf, len, flags) },
    }
}

/// Replaces libc's `write`: as [`send`] on an associated connected socket, libc's
/// otherwise.
///
/// # Safety
/// As write(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: usize) -> ssize_t {
    if !udp::is_associated(fd) || (buf.is_null() && len > 0) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::write(fd, buf, len) };
    }
    // SAFETY: the caller's contract.
    let payload = if len == 0 {
        &[][..]
    } else {
        unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    // SAFETY: no control data.
    match unsafe { relay(fd, None, payload, 0, (null_mut(), 0), "write") } {
        Some(r) => r,
        // SAFETY: as above.
        None => unsafe { real::write(fd, buf, len) },
    }
}

/// Replaces libc's `recvfrom`: on an associated socket, relayed datagrams lose their
/// header and come from their destination.
///
/// # Safety
/// As recvfrom(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if !udp::is_associated(fd) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::recvfrom(fd, buf, len, flags, addr, addrlen) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, flags, addr, addrlen, "recvfrom") }
}

/// Replaces libc's `recv` (see [`recvfrom`]).
///
/// # Safety
/// As recv(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> ssize_t {
    if !udp::is_associated(fd) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::recv(fd, buf, len, flags) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, flags, null_mut(), null_mut(), "recv") }
}

/// Replaces libc's `read` (see [`recvfrom`]).
///
/// # Safety
/// As read(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: usize) -> ssize_t {
    if !udp::is_associated(fd) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::read(fd, buf, len) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, 0, null_mut(), null_mut(), "read") }
}

/// Replaces glibc's `_FORTIFY_SOURCE` `read` (which calls the system call itself).
///
/// # Safety
/// As read(2); `len` ≤ `buflen` is checked by glibc's own function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buflen: usize,
) -> ssize_t {
    if !udp::is_associated(fd) || len > buflen {
        // SAFETY: the program's arguments, unchanged (glibc aborts on len > buflen).
        return unsafe { real::__read_chk(fd, buf, len, buflen) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, 0, null_mut(), null_mut(), "read") }
}

/// Replaces glibc's `_FORTIFY_SOURCE` `recv`.
///
/// # Safety
/// As recv(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buflen: usize,
    flags: c_int,
) -> ssize_t {
    if !udp::is_associated(fd) || len > buflen {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::__recv_chk(fd, buf, len, buflen, flags) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, flags, null_mut(), null_mut(), "recv") }
}

/// Replaces glibc's `_FORTIFY_SOURCE` `recvfrom`.
///
/// # Safety
/// As recvfrom(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buflen: usize,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    if !udp::is_associated(fd) || len > buflen {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::__recvfrom_chk(fd, buf, len, buflen, flags, addr, addrlen) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_from(fd, buf, len, flags, addr, addrlen, "recvfrom") }
}

/// Replaces libc's `recvmsg` (see [`recvfrom`]); ancillary data is the kernel's.
///
/// # Safety
/// As recvmsg(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !udp::is_associated(fd) {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::recvmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's contract.
    unsafe { receive_msg(fd, msg, flags) }
}

/// `recvmmsg` for the hook and for `syscall(SYS_recvmmsg)`. On an associated socket the
/// first message is received as `flags` say and the others only if already queued (as
/// with MSG_WAITFORONE); `timeout` is not applied.
///
/// # Safety
/// As recvmmsg(2).
unsafe fn recv_mmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut timespec,
) -> c_int {
    if !udp::is_associated(fd) || vec.is_null() {
        // SAFETY: the program's arguments, unchanged.
        return unsafe { real::recvmmsg(fd, vec, vlen, flags, timeout) };
    }
    let mut got: c_int = 0;
    for i in 0..vlen as usize {
        let these = if i == 0 {
            flags & !libc::MSG_WAITFORONE
        } else {
            (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT
        };
        // SAFETY: i < vlen.
        let entry = unsafe { &mut *vec.add(i) };
        // SAFETY: the caller's contract.
        let n = unsafe { receive_msg(fd, &raw mut entry.msg_hdr, these) };
        if n < 0 {
            return if got == 0 { -1 } else { got };
        }
        entry.msg_len = n as c_uint;
        got += 1;
    }
    got
}

/// Replaces libc's `recvmmsg` (see [`recvfrom`] and `recv_mmsg`).
///
/// # Safety
/// As recvmmsg(2).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut timespec,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { recv_mmsg(fd, vec, vlen, flags, timeout) }
}

/// Replaces libc's `syscall` for `SYS_sendmmsg`, `SYS_recvmmsg` and `SYS_close` only (libuv
/// before 1.45 sends, receives and closes this way: without the last, a descriptor number
/// it reuses would still carry the closed socket's association); every other number goes to
/// libc's `syscall` with the six argument registers unchanged.
///
/// `syscall` is variadic in C; on x86-64 and AArch64 Linux a variadic call passes its
/// integer arguments in the same registers as a fixed one, and glibc's `syscall` reads
/// exactly six, which is why this fixed signature is the same function to the caller.
///
/// # Safety
/// As syscall(2) for the number given.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn syscall(
    number: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    match number {
        libc::SYS_sendmmsg
            if udp::is_associated(a1 as c_int) || udp::is_inet_datagram(a1 as c_int) =>
        {
            // SAFETY: the caller passed sendmmsg's arguments in these registers.
            c_long::from(unsafe {
                send_mmsg(a1 as c_int, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int)
            })
        }
        libc::SYS_recvmmsg if udp::is_associated(a1 as c_int) => {
            // SAFETY: as above, for recvmmsg.
            c_long::from(unsafe {
                recv_mmsg(
                    a1 as c_int,
                    a2 as *mut mmsghdr,
                    a3 as c_uint,
                    a4 as c_int,
                    a5 as *mut timespec,
                )
            })
        }
        libc::SYS_close => {
            if let Ok(fd) = c_int::try_from(a1) {
                udp::forget(fd);
                crate::bind::forget(fd);
                crate::fds::remove(fd);
            }
            // SAFETY: the program's arguments, unchanged.
            unsafe { real::syscall(number, a1, a2, a3, a4, a5, a6) }
        }
        // SAFETY: the program's arguments, unchanged.
        _ => unsafe { real::syscall(number, a1, a2, a3, a4, a5, a6) },
    }
}

/// The `connect` hook's part for UDP sockets: `Some` with the return value for an
/// AF_INET/AF_INET6 datagram socket whose destination goes through the proxy (the socket is
/// connected to the relay, see [`crate::udp`]), `None` for libc.
///
/// # Safety
/// `addr` points to `len` readable bytes (connect's contract).
pub(crate) unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Option<c_int> {
    if addr.is_null() || !(udp::is_associated(fd) || udp::is_inet_datagram(fd)) {
        return None;
    }
    // SAFETY: the caller's contract: at least the family is readable when len allows.
    let unspec = len as usize >= size_of::<libc::sa_family_t>()
        && c_int::from(unsafe { (*addr).sa_family }) == libc::AF_UNSPEC;
    // SAFETY: the caller's contract.
    let to = unsafe { sys::read_sockaddr(addr, len) };
    if to.is_none() && !unspec {
        return None;
    }
    match udp::connect(fd, to) {
        udp::Connect::Libc => None,
        udp::Connect::Fail(errno) => {
            sys::set_errno(errno);
            Some(-1)
        }
        udp::Connect::Relay(relay) => Some(match sys::connect(fd, relay) {
            Ok(()) => 0,
            Err(errno) => {
                sys::set_errno(errno);
                -1
            }
        }),
    }
}
