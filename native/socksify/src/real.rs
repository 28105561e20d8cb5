//! The C library's own implementations of the functions this library replaces, found with
//! `dlsym(RTLD_NEXT, name)`: the next definition after ours in the lookup order, i.e. libc's.
//!
//! Every call the shim itself makes to a replaced function goes through here; calling the
//! plain symbol would land in our own hook again.
#![allow(unsafe_code)]

use core::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{addrinfo, hostent, sockaddr, socklen_t};

/// One lazily resolved libc function.
pub(crate) struct Symbol {
    name: &'static CStr,
    address: AtomicPtr<c_void>,
}

impl Symbol {
    const fn new(name: &'static CStr) -> Self {
        Self {
            name,
            address: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The address of the next definition of the symbol, or null if there is none.
    fn address(&self) -> *mut c_void {
        let cached = self.address.load(Ordering::Acquire);
        if !cached.is_null() {
            return cached;
        }
        // SAFETY: `name` is a NUL-terminated string; RTLD_NEXT is a valid pseudo-handle in a
        // shared object. dlsym is thread-safe; racing threads store the same value.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        self.address.store(found, Ordering::Release);
        found
    }
}

macro_rules! real_functions {
    ($($name:ident: fn($($arg:ident: $ty:ty),*) -> $ret:ty = $failed:expr;)*) => {
        $(
            /// Calls libc's own function of this name (see the module docs). Fails with
            /// ENOSYS (and the C function's failure value) if the C library has none.
            ///
            /// # Safety
            /// The same contract as the C function.
            pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
                static SYMBOL: Symbol = Symbol::new(
                    match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(name) => name,
                        Err(_) => panic!("a C function name has no NUL inside"),
                    },
                );
                let address = SYMBOL.address();
                if address.is_null() {
                    crate::sys::set_errno(libc::ENOSYS);
                    return $failed;
                }
                // SAFETY: dlsym returned libc's definition of this symbol, whose C signature
                // is the one spelled here (from the C library's headers, as in the libc crate).
                let function: unsafe extern "C" fn($($ty),*) -> $ret =
                    unsafe { core::mem::transmute(address) };
                // SAFETY: the caller upholds the C function's contract.
                unsafe { function($($arg),*) }
            }
        )*
    };
}

real_functions! {
    connect: fn(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = -1;
    close: fn(fd: c_int) -> c_int = -1;
    getaddrinfo: fn(
        node: *const c_char,
        service: *const c_char,
        hints: *const addrinfo,
        res: *mut *mut addrinfo
    ) -> c_int = libc::EAI_SYSTEM;
    gethostbyname: fn(name: *const c_char) -> *mut hostent = core::ptr::null_mut();
}

// The UDP ([`crate::interpose_udp`]) and BIND ([`crate::interpose_bind`]) hooks' functions.
real_functions! {
    sendto: fn(
        fd: c_int,
        buf: *const c_void,
        len: usize,
        flags: c_int,
        addr: *const sockaddr,
        addrlen: socklen_t
    ) -> libc::ssize_t = -1;
    sendmsg: fn(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> libc::ssize_t = -1;
    sendmmsg: fn(
        fd: c_int,
        vec: *mut libc::mmsghdr,
        vlen: core::ffi::c_uint,
        flags: c_int
    ) -> c_int = -1;
    send: fn(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> libc::ssize_t = -1;
    write: fn(fd: c_int, buf: *const c_void, len: usize) -> libc::ssize_t = -1;
    recvfrom: fn(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        flags: c_int,
        addr: *mut sockaddr,
        addrlen: *mut socklen_t
    ) -> libc::ssize_t = -1;
    recvmsg: fn(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> libc::ssize_t = -1;
    recvmmsg: fn(
        fd: c_int,
        vec: *mut libc::mmsghdr,
        vlen: core::ffi::c_uint,
        flags: c_int,
        timeout: *mut libc::timespec
    ) -> c_int = -1;
    recv: fn(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> libc::ssize_t = -1;
    read: fn(fd: c_int, buf: *mut c_void, len: usize) -> libc::ssize_t = -1;
    __read_chk: fn(fd: c_int, buf: *mut c_void, len: usize, buflen: usize) -> libc::ssize_t = -1;
    __recv_chk: fn(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        buflen: usize,
        flags: c_int
    ) -> libc::ssize_t = -1;
    __recvfrom_chk: fn(
        fd: c_int,
        buf: *mut c_void,
        len: usize,
        buflen: usize,
        flags: c_int,
        addr: *mut sockaddr,
        addrlen: *mut socklen_t
    ) -> libc::ssize_t = -1;
    syscall: fn(
        number: core::ffi::c_long,
        a1: core::ffi::c_long,
        a2: core::ffi::c_long,
        a3: core::ffi::c_long,
        a4: core::ffi::c_long,
        a5: core::ffi::c_long,
        a6: core::ffi::c_long
    ) -> core::ffi::c_long = -1;
    bind: fn(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = -1;
    listen: fn(fd: c_int, backlog: c_int) -> c_int = -1;
    accept: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
    accept4: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int = -1;
    getsockname: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
    getpeername: fn(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
}
