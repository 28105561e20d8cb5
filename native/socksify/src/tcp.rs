//! `connect` on TCP sockets: SOCKS CONNECT through the proxy, or libc's own for the
//! destinations `--direct` lists.
//!
//! The connection to the proxy and the handshake happen on the program's own socket, in the
//! calling thread, with every wait bounded by the connect timeout ([`crate::handshake`]).
//!
//! **Non-blocking sockets** (programs built on poll, epoll or select): the shim connects to
//! the proxy and completes the handshake before `connect` returns, waiting with `poll` on
//! the socket itself (its O_NONBLOCK flag is never changed), and then returns -1 with
//! EINPROGRESS, as libc would for a remote destination. The socket is already connected end
//! to end at that point, so the program's poll/epoll/select reports it writable at once,
//! `getsockopt(SO_ERROR)` gives 0, and a second `connect` gives EISCONN. No byte the program
//! writes can interleave with the handshake, and no helper thread or descriptor swap is
//! needed (a swap would break an epoll registration made before `connect`). The price: the
//! calling thread waits one proxy round trip per handshake message (three for SOCKS5 with a
//! password, two without, one for SOCKS4) inside `connect` — proxychains and Dante's
//! socksify make the same trade. A failed handshake is reported by `connect` itself with
//! the errno of [`Failure::errno`].
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Instant;

use socksgate_core::client::{ClientConfig, ClientEvent, Credentials};
use socksgate_core::server::Version;
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Domain, Target};

use crate::failure::Failure;
use crate::fds::{self, FdState};
use crate::handshake::{self, Handshake};
use crate::settings::{self, Proxy};
use crate::sys::{self, Errno};
use crate::{log, placeholder};

/// What the `connect` hook does with a TCP socket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not ours: call libc's `connect` with the program's arguments.
    Libc,
    /// Done through the proxy: return this to the program.
    Proxied(Result<(), Errno>),
}

/// Connects the stream socket `fd` to `destination` as the settings say.
pub(crate) fn connect(fd: RawFd, destination: SocketAddr) -> Outcome {
    let settings = settings::get();
    let name = placeholder::name_of(destination.ip());
    if name.is_none() && placeholder::is_placeholder(destination.ip()) {
        // A placeholder another process handed out: there is no name to send.
        log::event(format_args!(
            "connect(fd {fd}, {destination}): placeholder address unknown to this process"
        ));
        return Outcome::Proxied(Err(libc::EHOSTUNREACH));
    }
    if name.is_none() && settings.direct.contains(destination.ip()) {
        log::event(format_args!("connect(fd {fd}, {destination}): direct"));
        return Outcome::Libc;
    }
    let Ok(proxy) = &settings.proxy else {
        return Outcome::Proxied(Err(fail(fd, destination, &name, Failure::NoProxy)));
    };
    if name.is_none()
        && destination.ip().to_canonical() == proxy.address.ip().to_canonical()
        && destination.port() == proxy.address.port()
    {
        // The program talks to the proxy itself (e.g. a SOCKS-aware program): leave it be.
        return Outcome::Libc;
    }
    if matches!(fds::get(fd), Some(FdState::Connected { .. })) {
        return Outcome::Proxied(Err(libc::EISCONN));
    }
    let target = match &name {
        Some(name) => match Domain::new(name.as_bytes()) {
            Ok(domain) => Addr::Domain(domain, destination.port()),
            Err(_) => return Outcome::Proxied(Err(libc::EHOSTUNREACH)),
        },
        None => Addr::Ip(SocketAddr::new(
            destination.ip().to_canonical(),
            destination.port(),
        )),
    };
    let nonblocking = sys::is_nonblocking(fd).unwrap_or(false);
    match through_proxy(fd, proxy, target, settings.connect_timeout) {
        Ok(bound) => {
            log::event(format_args!(
                "connect(fd {fd}, {}) via {}: succeeded, proxy bound {bound}{}",
                shown(destination, &name),
                proxy.address,
                if nonblocking {
                    " (non-blocking: EINPROGRESS)"
                } else {
                    ""
                }
            ));
            // A later BIND names this destination as the peer that connects back.
            crate::bind::remember_peer(&target.to_target());
            fds::insert(
                fd,
                FdState::Connected {
                    destination: target.to_target(),
                    bound,
                },
            );
            Outcome::Proxied(if nonblocking {
                Err(libc::EINPROGRESS)
            } else {
                Ok(())
            })
        }
        Err(failure) => Outcome::Proxied(Err(fail(fd, destination, &name, failure))),
    }
}

fn fail(fd: RawFd, destination: SocketAddr, name: &Option<String>, failure: Failure) -> Errno {
    let errno = failure.errno();
    log::event(format_args!(
        "connect(fd {fd}, {}): {failure} -> {}",
        shown(destination, name),
        std::io::Error::from_raw_os_error(errno)
    ));
    errno
}

fn shown(destination: SocketAddr, name: &Option<String>) -> String {
    match name {
        Some(name) => format!("{destination} = {name}:{}", destination.port()),
        None => destination.to_string(),
    }
}

/// Connects `fd` to the proxy and asks it for `target` with `command`; returns the first
/// reply's address and the handshake (for BIND's second reply).
pub(crate) fn open(
    fd: RawFd,
    proxy: &Proxy,
    command: Command,
    target: Addr<'_>,
    timeout: std::time::Duration,
) -> Result<(Target, Handshake), Failure> {
    let deadline = Instant::now() + timeout;
    // An AF_INET6 socket reaches an IPv4 proxy at its IPv4-mapped address.
    let proxy_address = match (sys::socket_family(fd), proxy.address) {
        (Ok(libc::AF_INET6), SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        (Ok(libc::AF_INET), SocketAddr::V6(_)) => return Err(Failure::Io(libc::EAFNOSUPPORT)),
        (_, address) => address,
    };
    handshake::connect_to_proxy(fd, proxy_address, deadline)?;
    let mut config = ClientConfig::new(proxy.version, command, target);
    if let Some((user, password)) = &proxy.credentials {
        match proxy.version {
            Version::Socks5 => {
                config.credentials = Some(Credentials {
                    username: user,
                    password,
                });
            }
            Version::Socks4 | Version::Socks4a => config.user_id = user,
        }
    }
    let mut handshake = Handshake::new(fd, config, deadline)?;
    match handshake.next_event()? {
        ClientEvent::Replied { bound } => Ok((bound, handshake)),
        // The first reply of any command is `Replied`; anything else is a broken proxy.
        _ => Err(Failure::Closed),
    }
}

fn through_proxy(
    fd: RawFd,
    proxy: &Proxy,
    target: Addr<'_>,
    timeout: std::time::Duration,
) -> Result<Target, Failure> {
    open(fd, proxy, Command::Connect, target, timeout).map(|(bound, _)| bound)
}
