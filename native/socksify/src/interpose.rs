//! The C library functions this library replaces: each converts the C arguments, asks a
//! safe module what to do, and either answers the program or calls libc's own function
//! ([`crate::real`]).
//!
//! Together with [`crate::real`], [`crate::sys`] and the UDP and BIND hooks
//! ([`crate::interpose_udp`], [`crate::interpose_bind`]) this is the only `unsafe` code of the
//! crate. The exported names are plain C symbols (`#[unsafe(no_mangle)]`); the dynamic
//! linker resolves the program's calls to them because the library is preloaded. Test
//! builds export nothing, so the unit-test binary keeps libc's functions.
#![allow(unsafe_code)]

use core::ffi::{CStr, c_char, c_int};
use std::cell::RefCell;
use std::ffi::CString;

use libc::{addrinfo, hostent, sockaddr, socklen_t};

use crate::names::{self, Answer};
use crate::{fds, log, real, sys, tcp};

/// `connect(2)`: TCP sockets to non-direct destinations go through the proxy.
///
/// # Safety
/// The C contract of `connect`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // UDP sockets and sockets bound for a BIND: see crate::udp, crate::bind.
    crate::bind::before_connect(fd);
    // SAFETY: connect's contract, as the program called us.
    if let Some(r) = unsafe { crate::interpose_udp::connect(fd, addr, len) } {
        return r;
    }
    // SAFETY: the program passes `len` readable bytes at `addr` (connect's contract).
    let destination = unsafe { sys::read_sockaddr(addr, len) };
    if let Some(destination) = destination
        && sys::socket_type(fd) == Ok(libc::SOCK_STREAM)
    {
        match tcp::connect(fd, destination) {
            tcp::Outcome::Proxied(Ok(())) => return 0,
            tcp::Outcome::Proxied(Err(errno)) => {
                sys::set_errno(errno);
                return -1;
            }
            tcp::Outcome::Libc => {}
        }
    }
    // SAFETY: the program's own arguments, passed on unchanged.
    unsafe { real::connect(fd, addr, len) }
}

/// `close(2)`: forgets the descriptor's state.
///
/// # Safety
/// The C contract of `close`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // A UDP association's control connection, a BIND's state: see crate::udp, crate::bind.
    crate::udp::forget(fd);
    crate::bind::forget(fd);
    if fds::remove(fd).is_some() {
        log::event(format_args!("close(fd {fd})"));
    }
    // SAFETY: the program's own argument, passed on unchanged.
    unsafe { real::close(fd) }
}

/// `getaddrinfo(3)`: names the proxy resolves get a placeholder address (see
/// [`crate::placeholder`]); the answer is built by libc's own getaddrinfo from the
/// placeholder as a numeric host, so services, socket types, flags and the memory layout
/// `freeaddrinfo` expects are libc's.
///
/// # Safety
/// The C contract of `getaddrinfo`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // SAFETY: hints is null or points to an addrinfo (getaddrinfo's contract).
    let hints_value = unsafe { hints.as_ref() }.copied();
    let numeric = hints_value.is_some_and(|h| h.ai_flags & libc::AI_NUMERICHOST != 0);
    // SAFETY: node is null or a NUL-terminated string (getaddrinfo's contract).
    let name = (!node.is_null() && !numeric)
        .then(|| unsafe { CStr::from_ptr(node) }.to_str().ok())
        .flatten();
    let Some(name) = name else {
        // SAFETY: the program's own arguments, passed on unchanged.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    };
    match names::answer(name) {
        // SAFETY: as above.
        Answer::Libc => unsafe { real::getaddrinfo(node, service, hints, res) },
        Answer::Exhausted => {
            log::event(format_args!(
                "getaddrinfo({name}): placeholder addresses exhausted"
            ));
            libc::EAI_FAIL
        }
        Answer::Placeholder(v4) => {
            // glibc's defaults for NULL hints: any family and type, AI_V4MAPPED|AI_ADDRCONFIG.
            // SAFETY: addrinfo is plain data; all-zero is a valid value (null pointers).
            let mut placeholder_hints: addrinfo =
                hints_value.unwrap_or_else(|| unsafe { core::mem::zeroed() });
            let want_canonical = placeholder_hints.ai_flags & libc::AI_CANONNAME != 0;
            // AI_ADDRCONFIG would drop the placeholder's family on a host without an IPv4
            // address; the canonical name is set below.
            placeholder_hints.ai_flags = (placeholder_hints.ai_flags
                & !(libc::AI_ADDRCONFIG | libc::AI_CANONNAME))
                | libc::AI_NUMERICHOST;
            let literal = if placeholder_hints.ai_family == libc::AF_INET6 {
                v4.to_ipv6_mapped().to_string()
            } else {
                v4.to_string()
            };
            let Ok(literal) = CString::new(literal) else {
                return libc::EAI_FAIL;
            };
            // SAFETY: literal is NUL-terminated, the hints a valid addrinfo, service and res
            // the program's own.
            let r = unsafe {
                real::getaddrinfo(literal.as_ptr(), service, &raw const placeholder_hints, res)
            };
            if r == 0 && want_canonical {
                // SAFETY: on success *res is the first node libc allocated; its
                // ai_canonname (null here) may hold a malloc'd string, which freeaddrinfo
                // frees.
                unsafe {
                    let first = *res;
                    if !first.is_null() && (*first).ai_canonname.is_null() {
                        (*first).ai_canonname = libc::strdup(node);
                    }
                }
            }
            log::event(format_args!(
                "getaddrinfo({name}): placeholder {v4} (the proxy resolves)"
            ));
            r
        }
    }
}

/// The `hostent` gethostbyname returns: one per thread, valid until the thread's next call
/// (glibc's is one per process, so this is no stricter).
struct HostEntry {
    entry: hostent,
    name: CString,
    address: [u8; 4],
    addresses: [*mut c_char; 2],
    aliases: [*mut c_char; 1],
}

thread_local! {
    static HOST_ENTRY: RefCell<Option<Box<HostEntry>>> = const { RefCell::new(None) };
}

/// `gethostbyname(3)`: as [`getaddrinfo`], for programs that use the old interface.
///
/// # Safety
/// The C contract of `gethostbyname`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    // SAFETY: name is null or a NUL-terminated string (gethostbyname's contract).
    let text = (!name.is_null())
        .then(|| unsafe { CStr::from_ptr(name) }.to_str().ok())
        .flatten();
    let Some(Answer::Placeholder(v4)) = text.map(names::answer) else {
        // SAFETY: the program's own argument, passed on unchanged.
        return unsafe { real::gethostbyname(name) };
    };
    log::event(format_args!(
        "gethostbyname({}): placeholder {v4} (the proxy resolves)",
        text.unwrap_or_default()
    ));
    // SAFETY: name is a NUL-terminated string (checked non-null above).
    let owned = unsafe { CStr::from_ptr(name) }.to_owned();
    HOST_ENTRY.with(|slot| {
        let mut entry = Box::new(HostEntry {
            // SAFETY: hostent is plain data; all-zero is a valid value (null pointers).
            entry: unsafe { core::mem::zeroed() },
            name: owned,
            address: v4.octets(),
            addresses: [core::ptr::null_mut(); 2],
            aliases: [core::ptr::null_mut(); 1],
        });
        // The pointers point into the boxed entry, which stays put until the next call
        // replaces it.
        entry.addresses[0] = entry.address.as_mut_ptr().cast();
        entry.entry.h_name = entry.name.as_ptr().cast_mut();
        entry.entry.h_aliases = entry.aliases.as_mut_ptr();
        entry.entry.h_addrtype = libc::AF_INET;
        entry.entry.h_length = 4;
        entry.entry.h_addr_list = entry.addresses.as_mut_ptr();
        let pointer = &raw mut entry.entry;
        *slot.borrow_mut() = Some(entry);
        pointer
    })
}
