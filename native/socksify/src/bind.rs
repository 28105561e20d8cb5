//! `bind` + `listen` + `accept` for an active-mode data connection: SOCKS BIND.
//!
//! A classic FTP client in active mode opens a socket, binds it to its own address with
//! port 0, asks `getsockname` where it is listening, sends that address to the server
//! (PORT/EPRT) and waits in `accept` for the server to connect. Through a firewall the
//! server cannot reach the client, so the shim asks the proxy to listen instead, the way
//! Dante's socksify does (its `Rbind`): when a TCP socket is bound to port 0 on an address
//! other than loopback, and the program's most recent `connect` went through the proxy, the
//! shim sends a BIND request naming that connection's destination (port 0: any port of that
//! host) — the peer that is expected to connect back, which is what RFC 1928 says the
//! server evaluates a BIND by. Then:
//!
//! * `bind` returns when the proxy's first reply came: the program's descriptor is now the
//!   control connection to the proxy (its own socket is swapped for it with `dup2`, keeping
//!   its O_NONBLOCK and close-on-exec flags), so poll/select/epoll on the "listening"
//!   socket report it readable exactly when the second reply — the peer connected —
//!   arrives;
//! * `getsockname` answers the address the proxy listens on (BND.ADDR/BND.PORT of the first
//!   reply; the proxy's own address when that is unspecified), which the program announces;
//! * `listen` succeeds without doing anything;
//! * `accept` reads the second reply and returns a new descriptor for the same connection,
//!   which from then on carries the peer's bytes; its address (and `getpeername`) is the
//!   peer the proxy reported. `accept4`'s SOCK_NONBLOCK applies to the connection's file
//!   description, which the two descriptors share: it changes the listening descriptor's
//!   O_NONBLOCK too (programs close it right after). There is one connection per BIND: a
//!   second `accept` fails with EINVAL.
//! * `connect` on such a socket before `listen` (a program that binds port 0 to choose its
//!   source address) undoes all this: the socket is put back as it was, bound to the same
//!   address, and connected as usual.
//!
//! A proxy that refuses the BIND makes `bind` fail with the errno of [`Failure::errno`].
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use socksgate_core::client::ClientEvent;
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Target};

use crate::failure::Failure;
use crate::fds::{self, FdState};
use crate::handshake::Handshake;
use crate::sys::{self, Errno};
use crate::udp::in_family;
use crate::{log, settings, tcp};

/// The longest a blocking `accept` waits for the proxy's second reply (the proxy's own BIND
/// timeout normally answers first, with reply 6: ETIMEDOUT).
const ACCEPT_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug)]
enum State {
    /// Bound through the proxy, waiting for the peer.
    Listening {
        /// The program socket's family.
        family: i32,
        /// The address the program bound (to put the socket back).
        local: SocketAddr,
        /// Where the proxy listens, in the program's family.
        bound: SocketAddr,
        /// The exchange, for the second reply; `None` while an `accept` reads it.
        handshake: Option<Box<Handshake>>,
        /// Whether the program called `listen`.
        listening: bool,
    },
    /// The listening descriptor after its one `accept`, or the accepted descriptor.
    Accepted {
        /// The peer the proxy reported.
        peer: SocketAddr,
        /// Where the proxy listened.
        bound: SocketAddr,
        /// Whether this is the accepted descriptor (the other one can accept no more).
        connection: bool,
    },
}

fn table() -> MutexGuard<'static, HashMap<RawFd, State>> {
    static TABLE: OnceLock<Mutex<HashMap<RawFd, State>>> = OnceLock::new();
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn last_peer() -> MutexGuard<'static, Option<Target>> {
    static LAST: OnceLock<Mutex<Option<Target>>> = OnceLock::new();
    LAST.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records the destination of a connection the proxy just made for the program: a later
/// BIND names it as the peer expected to connect back.
pub(crate) fn remember_peer(destination: &Target) {
    *last_peer() = Some(destination.clone());
}

/// Called after libc's `bind` of `fd` to `local` succeeded: takes a data-connection socket
/// over with a SOCKS BIND (see the module docs). `Err` is the errno `bind` fails with.
pub(crate) fn after_bind(fd: RawFd, local: SocketAddr) -> Result<(), Errno> {
    if local.port() != 0 || local.ip().to_canonical().is_loopback() {
        // A local listener (a fixed port, or loopback): not a data connection.
        return Ok(());
    }
    if sys::socket_type(fd) != Ok(libc::SOCK_STREAM) {
        return Ok(());
    }
    let Some(peer) = last_peer().clone() else {
        return Ok(());
    };
    let settings = settings::get();
    let Ok(proxy) = &settings.proxy else {
        return Err(Failure::NoProxy.errno());
    };
    let family = sys::socket_family(fd).map_err(|_| libc::EBADF)?;
    let expected = match &peer {
        Target::Ip(ip) => Addr::Ip(SocketAddr::new(ip.ip(), 0)),
        Target::Domain(name, _) => Addr::Domain(name.as_domain(), 0),
    };
    let saved = sys::descriptor_flags(fd)?;
    let fresh = sys::stream_socket(proxy.address)?;
    sys::replace(fd, fresh, saved)?;
    let opened = tcp::open(fd, proxy, Command::Bind, expected, settings.connect_timeout);
    let (bound, handshake) = match opened {
        Ok(ok) => ok,
        Err(failure) => {
            log::event(format_args!(
                "bind(fd {fd}, {local}): BIND via {} for {}: {failure} -> {}",
                proxy.address,
                expected,
                std::io::Error::from_raw_os_error(failure.errno())
            ));
            restore(fd, family, local, saved);
            return Err(failure.errno());
        }
    };
    let shown = match bound {
        Target::Ip(ip) if ip.ip().is_unspecified() => {
            in_family(SocketAddr::new(proxy.address.ip(), ip.port()), family)
        }
        Target::Ip(ip) => in_family(ip, family),
        Target::Domain(..) => None,
    };
    let Some(shown) = shown else {
        restore(fd, family, local, saved);
        return Err(libc::EAFNOSUPPORT);
    };
    sys::set_descriptor_flags(fd, saved)?;
    log::event(format_args!(
        "bind(fd {fd}, {local}): BIND via {} for {expected}: proxy listens on {shown}",
        proxy.address
    ));
    table().insert(
        fd,
        State::Listening {
            family,
            local,
            bound: shown,
            handshake: Some(Box::new(handshake)),
            listening: false,
        },
    );
    Ok(())
}

/// Puts a socket of `family` bound to `local` back at `fd` (a failed or undone BIND).
fn restore(fd: RawFd, family: i32, local: SocketAddr, saved: sys::DescriptorFlags) {
    if let Ok(fresh) = sys::socket_of(family, libc::SOCK_STREAM) {
        let _ = sys::bind(fresh, local);
        let _ = sys::replace(fd, fresh, saved);
    }
}

/// The address `getsockname` answers for `fd`, if it is one of ours.
pub(crate) fn local_name(fd: RawFd) -> Option<SocketAddr> {
    match table().get(&fd)? {
        State::Listening { bound, .. } | State::Accepted { bound, .. } => Some(*bound),
    }
}

/// The address `getsockname` answers for a TCP connection made through the proxy: the
/// proxy's address for it (BND.ADDR/BND.PORT of the CONNECT reply), in the socket's family.
pub(crate) fn connected_name(fd: RawFd) -> Option<SocketAddr> {
    let Some(FdState::Connected {
        bound: Target::Ip(bound),
        ..
    }) = fds::get(fd)
    else {
        return None;
    };
    in_family(bound, sys::socket_family(fd).ok()?)
}

/// The wildcard address to bind instead of `local`, when libc's `bind` failed with `errno`
/// because `local` is the proxy's address of a proxied connection (see
/// [`connected_name`]) and a BIND will follow.
pub(crate) fn wildcard_for(fd: RawFd, local: SocketAddr, errno: Errno) -> Option<SocketAddr> {
    if errno != libc::EADDRNOTAVAIL || local.port() != 0 || last_peer().is_none() {
        return None;
    }
    if sys::socket_type(fd) != Ok(libc::SOCK_STREAM) {
        return None;
    }
    let any = match local {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    Some(SocketAddr::new(any, 0))
}

/// The address `getpeername` answers for `fd` (ENOTCONN while listening), if it is ours.
pub(crate) fn peer_name(fd: RawFd) -> Option<Result<SocketAddr, Errno>> {
    match table().get(&fd)? {
        State::Listening { .. } => Some(Err(libc::ENOTCONN)),
        State::Accepted {
            peer, connection, ..
        } => Some(if *connection {
            Ok(*peer)
        } else {
            Err(libc::ENOTCONN)
        }),
    }
}

/// `listen` on `fd`: `Some(0)` for ours (the proxy already listens).
pub(crate) fn listen(fd: RawFd) -> Option<i32> {
    match table().get_mut(&fd)? {
        State::Listening { listening, .. } => {
            *listening = true;
            log::event(format_args!("listen(fd {fd}): the proxy listens"));
            Some(0)
        }
        State::Accepted { .. } => Some(0),
    }
}

/// `accept` on `fd`: for ours, waits for the second reply (or, non-blocking, EAGAIN until
/// it is there) and returns the connection's new descriptor and the peer.
pub(crate) fn accept(
    fd: RawFd,
    close_on_exec: bool,
    nonblocking: bool,
) -> Option<Result<(RawFd, SocketAddr), Errno>> {
    let (family, bound, handshake) = {
        let mut table = table();
        match table.get_mut(&fd)? {
            State::Listening {
                family,
                bound,
                handshake,
                ..
            } => match handshake.take() {
                Some(h) => (*family, *bound, h),
                // Another thread is in accept already.
                None => return Some(Err(libc::EAGAIN)),
            },
            State::Accepted { .. } => return Some(Err(libc::EINVAL)),
        }
    };
    Some(second_reply(
        fd,
        family,
        bound,
        handshake,
        close_on_exec,
        nonblocking,
    ))
}

fn second_reply(
    fd: RawFd,
    family: i32,
    bound: SocketAddr,
    mut handshake: Box<Handshake>,
    close_on_exec: bool,
    nonblocking: bool,
) -> Result<(RawFd, SocketAddr), Errno> {
    let put_back = |handshake: Box<Handshake>| {
        if let Some(State::Listening {
            handshake: slot, ..
        }) = table().get_mut(&fd)
        {
            *slot = Some(handshake);
        }
    };
    if sys::is_nonblocking(fd).unwrap_or(false) && sys::poll(fd, libc::POLLIN, 0) == Ok(0) {
        put_back(handshake);
        return Err(libc::EAGAIN);
    }
    // Non-blocking: the reply has started to arrive, its rest follows at once.
    let wait = if sys::is_nonblocking(fd).unwrap_or(false) {
        settings::get().connect_timeout
    } else {
        ACCEPT_WAIT
    };
    handshake.extend_deadline(Instant::now() + wait);
    let peer = match handshake.next_event() {
        Ok(ClientEvent::BindPeer { peer }) => peer,
        Ok(_) => {
            table().remove(&fd);
            return Err(libc::EPROTO);
        }
        Err(failure) => {
            log::event(format_args!(
                "accept(fd {fd}): BIND's second reply: {failure} -> {}",
                std::io::Error::from_raw_os_error(failure.errno())
            ));
            table().insert(
                fd,
                State::Accepted {
                    peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    bound,
                    connection: false,
                },
            );
            return Err(failure.errno());
        }
    };
    let peer = match peer {
        Target::Ip(ip) => in_family(ip, family).unwrap_or(ip),
        Target::Domain(..) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let connection = sys::duplicate(fd, close_on_exec)?;
    sys::set_nonblocking(connection, nonblocking)?;
    log::event(format_args!(
        "accept(fd {fd}): the proxy accepted {peer}: fd {connection}"
    ));
    let mut table = table();
    table.insert(
        fd,
        State::Accepted {
            peer,
            bound,
            connection: false,
        },
    );
    table.insert(
        connection,
        State::Accepted {
            peer,
            bound,
            connection: true,
        },
    );
    Ok((connection, peer))
}

/// Before `connect` on `fd`: a socket bound through the proxy but never listened on is put
/// back as the program made it, so the connect proceeds as usual.
pub(crate) fn before_connect(fd: RawFd) {
    let undo = match table().get(&fd) {
        Some(State::Listening {
            family,
            local,
            listening: false,
            ..
        }) => Some((*family, *local)),
        _ => None,
    };
    if let Some((family, local)) = undo {
        table().remove(&fd);
        if let Ok(saved) = sys::descriptor_flags(fd) {
            restore(fd, family, local, saved);
        }
        log::event(format_args!(
            "connect(fd {fd}): bound with port 0 but connecting: BIND dropped, local socket restored"
        ));
    }
}

/// Forgets `fd` (closed by the program).
pub(crate) fn forget(fd: RawFd) {
    if let Some(state) = table().remove(&fd)
        && matches!(state, State::Listening { .. })
    {
        log::event(format_args!("close(fd {fd}): BIND ended"));
    }
}
