//! Safe wrappers over the few system calls the shim makes on the program's file
//! descriptors, and the conversions between C socket addresses and [`SocketAddr`].
//!
//! Part of the interposition layer: the only place besides [`crate::interpose`] (and its
//! UDP and BIND siblings [`crate::interpose_udp`], [`crate::interpose_bind`]) and
//! [`crate::real`] with `unsafe` code. Errors are raw errno values, which is what the hooks
//! hand back to the program.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use libc::{sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// An errno value.
pub(crate) type Errno = c_int;

/// The calling thread's errno.
pub(crate) fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Sets the calling thread's errno (what a hook returning -1 leaves for the program).
pub(crate) fn set_errno(value: Errno) {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the
    // thread's lifetime.
    unsafe { *libc::__errno_location() = value };
}

/// Reads a C socket address of `len` bytes at `addr`; `None` for families other than
/// AF_INET/AF_INET6 or a length too short for the family.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
pub(crate) unsafe fn read_sockaddr(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above).
    let family = c_int::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: the caller's buffer holds a whole sockaddr_in (checked above); it may be
            // unaligned, hence read_unaligned.
            let sin = unsafe { addr.cast::<sockaddr_in>().read_unaligned() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { addr.cast::<sockaddr_in6>().read_unaligned() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `addr` as a C socket address and its length.
pub(crate) fn to_sockaddr(addr: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are valid.
    let mut storage: sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { (&raw mut storage).cast::<sockaddr_in>().write(sin) };
            size_of::<sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<sockaddr_in6>().write(sin6) };
            size_of::<sockaddr_in6>()
        }
    };
    (storage, len as socklen_t)
}

fn getsockopt_int(fd: RawFd, level: c_int, name: c_int) -> Result<c_int, Errno> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given.
    let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
    if r == 0 { Ok(value) } else { Err(errno()) }
}

/// The socket's type (SOCK_STREAM, SOCK_DGRAM, …); an error if `fd` is not a socket.
pub(crate) fn socket_type(fd: RawFd) -> Result<c_int, Errno> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
}

/// The socket's family (AF_INET, AF_INET6, AF_UNIX, …).
pub(crate) fn socket_family(fd: RawFd) -> Result<c_int, Errno> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
}

/// The pending error of a socket (SO_ERROR), which reading clears.
pub(crate) fn take_socket_error(fd: RawFd) -> Result<c_int, Errno> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// Whether O_NONBLOCK is set on the file description.
pub(crate) fn is_nonblocking(fd: RawFd) -> Result<bool, Errno> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        Err(errno())
    } else {
        Ok(flags & libc::O_NONBLOCK != 0)
    }
}

/// libc's own `connect` (not our hook).
pub(crate) fn connect(fd: RawFd, addr: SocketAddr) -> Result<(), Errno> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: storage holds a valid socket address of `len` bytes.
    let r = unsafe { crate::real::connect(fd, (&raw const storage).cast(), len) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Waits until `fd` is ready for `events` (POLLIN/POLLOUT) or `timeout_ms` passes (negative:
/// forever). Returns the revents; 0 on timeout. Restarts on EINTR.
pub(crate) fn poll(fd: RawFd, events: i16, timeout_ms: c_int) -> Result<i16, Errno> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: pfd is one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        match r {
            0 => return Ok(0),
            r if r > 0 => return Ok(pfd.revents),
            _ if errno() == libc::EINTR => {}
            _ => return Err(errno()),
        }
    }
}

/// One `send` (MSG_NOSIGNAL: a closed proxy connection is an error, not SIGPIPE).
pub(crate) fn send(fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
    // SAFETY: bytes is valid for reads of its length.
    let r = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(r).map_err(|_| errno())
}

/// One `recv` into `buf`; with `peek` the bytes stay queued (MSG_PEEK).
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], peek: bool) -> Result<usize, Errno> {
    let flags = if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: buf is valid for writes of its length.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(r).map_err(|_| errno())
}

/// The addresses and prefix lengths of the machine's interfaces (getifaddrs), for the
/// "local networks" default of `--direct`.
pub(crate) fn interface_networks() -> Vec<(IpAddr, u8)> {
    let mut head: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: head is a valid out-pointer.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Vec::new();
    }
    let mut networks = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*cursor };
        // SAFETY: ifa_addr/ifa_netmask are null or point to a socket address of their
        // family's size (getifaddrs's contract).
        let (address, netmask) = unsafe {
            (
                read_sockaddr(node.ifa_addr, size_of::<sockaddr_storage>() as socklen_t),
                read_sockaddr(node.ifa_netmask, size_of::<sockaddr_storage>() as socklen_t),
            )
        };
        if let (Some(address), Some(netmask)) = (address, netmask) {
            let prefix = match netmask.ip() {
                IpAddr::V4(m) => u32::from(m).count_ones(),
                IpAddr::V6(m) => u128::from(m).count_ones(),
            };
            networks.push((address.ip(), prefix as u8));
        }
        cursor = node.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    networks
}

// Calls of the UDP ([`crate::udp`]) and BIND ([`crate::bind`]) modules.

/// The socket's local address (getsockname), for AF_INET/AF_INET6 sockets.
pub(crate) fn local_address(fd: RawFd) -> Result<SocketAddr, Errno> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: storage and len are valid for writes of the sizes given.
    let r = unsafe { crate::real::getsockname(fd, (&raw mut storage).cast(), &raw mut len) };
    if r != 0 {
        return Err(errno());
    }
    // SAFETY: the kernel wrote `len` bytes of address into storage.
    unsafe { read_sockaddr((&raw const storage).cast(), len) }.ok_or(libc::EAFNOSUPPORT)
}

/// A new close-on-exec socket of `family` and `kind` (SOCK_STREAM, SOCK_DGRAM).
pub(crate) fn socket_of(family: c_int, kind: c_int) -> Result<RawFd, Errno> {
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

/// A new close-on-exec TCP socket of the family of `peer`.
pub(crate) fn stream_socket(peer: SocketAddr) -> Result<RawFd, Errno> {
    let family = if peer.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    socket_of(family, libc::SOCK_STREAM)
}

/// libc's own `close` (not our hook); errors are of no use to the callers.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: fd is a descriptor the shim owns.
    unsafe { crate::real::close(fd) };
}

/// libc's own `bind` (not our hook).
pub(crate) fn bind(fd: RawFd, addr: SocketAddr) -> Result<(), Errno> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: storage holds a valid socket address of `len` bytes.
    let r = unsafe { crate::real::bind(fd, (&raw const storage).cast(), len) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// A descriptor's file status flags (O_NONBLOCK, …) and descriptor flags (FD_CLOEXEC).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DescriptorFlags {
    status: c_int,
    descriptor: c_int,
}

/// The flags of `fd`.
pub(crate) fn descriptor_flags(fd: RawFd) -> Result<DescriptorFlags, Errno> {
    // SAFETY: F_GETFL and F_GETFD take no argument.
    let (status, descriptor) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    if status < 0 || descriptor < 0 {
        return Err(errno());
    }
    Ok(DescriptorFlags { status, descriptor })
}

/// Sets the flags of `fd` to `flags`.
pub(crate) fn set_descriptor_flags(fd: RawFd, flags: DescriptorFlags) -> Result<(), Errno> {
    // SAFETY: F_SETFL and F_SETFD take an int.
    let r = unsafe {
        libc::fcntl(fd, libc::F_SETFL, flags.status)
            | libc::fcntl(fd, libc::F_SETFD, flags.descriptor)
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Puts the socket `fresh` at descriptor number `fd` (dup2; the old socket there is closed)
/// with `flags`, and closes `fresh`'s own number.
pub(crate) fn replace(fd: RawFd, fresh: RawFd, flags: DescriptorFlags) -> Result<(), Errno> {
    // SAFETY: both are open descriptors; dup2 atomically closes what fd referred to.
    let r = unsafe { libc::dup2(fresh, fd) };
    let failed = (r < 0).then(errno);
    close(fresh);
    if let Some(e) = failed {
        return Err(e);
    }
    set_descriptor_flags(fd, flags)
}

/// A new descriptor for the same open socket as `fd`, close-on-exec if asked.
pub(crate) fn duplicate(fd: RawFd, close_on_exec: bool) -> Result<RawFd, Errno> {
    let command = if close_on_exec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: F_DUPFD(_CLOEXEC) takes the lowest acceptable descriptor number.
    let new = unsafe { libc::fcntl(fd, command, 0) };
    if new < 0 { Err(errno()) } else { Ok(new) }
}

/// Sets or clears O_NONBLOCK on the file description of `fd`.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no argument, F_SETFL an int.
    let r = unsafe {
        let status = libc::fcntl(fd, libc::F_GETFL);
        if status < 0 {
            status
        } else if on {
            libc::fcntl(fd, libc::F_SETFL, status | libc::O_NONBLOCK)
        } else {
            libc::fcntl(fd, libc::F_SETFL, status & !libc::O_NONBLOCK)
        }
    };
    if r < 0 { Err(errno()) } else { Ok(()) }
}
