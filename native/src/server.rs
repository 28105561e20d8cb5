//! Listeners and the accept loop: one task per connection.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::memory;
use crate::session;
use crate::shared::Shared;

/// Opens a listener. IPv6 listeners are IPv6-only, so `0.0.0.0:1080` and `[::]:1080` can
/// both be configured; SO_REUSEADDR lets a restart rebind at once.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    listen_with(addr, false)
}

/// [`listen`], with SO_REUSEPORT when `reuse_port` is set: several socksgate processes can
/// then listen on the same address and the kernel spreads connections over them.
pub fn listen_with(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on every listener until `shutdown` completes, then drains.
pub async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let (_keep, current) = watch::channel(shared);
    serve_reloadable(listeners, current, shutdown).await;
}

/// [`serve`], handing each new session the newest [`Shared`] of `current` (SIGHUP reloads);
/// sessions already running keep theirs.
pub async fn serve_reloadable(
    listeners: Vec<TcpListener>,
    current: watch::Receiver<Arc<Shared>>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(false);
    let mut accepting = JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(listener, current.clone(), stopping.clone()));
    }
    // The metrics (and their connection count) are kept across reloads.
    let trim = tokio::spawn(memory::trim_after_bursts(Arc::clone(
        &current.borrow().metrics,
    )));
    shutdown.await;
    // Stop accepting (each loop takes what is queued, then closes its listener), then let
    // open sessions finish.
    let _ = stop.send(true);
    while accepting.join_next().await.is_some() {}
    trim.abort();
    let shared = Arc::clone(&current.borrow());
    let open = shared.sessions.active();
    let deadline = Duration::from_secs(shared.config.drain_timeout);
    info!(
        sessions = open,
        "shutting down: listeners closed, draining for up to {}s",
        deadline.as_secs()
    );
    match tokio::time::timeout(deadline, shared.sessions.all_ended()).await {
        Ok(()) => info!("all sessions ended"),
        Err(_) => warn!(
            sessions = shared.sessions.active(),
            "drain timeout: closing the remaining sessions"
        ),
    }
}

/// Longest pause between accept attempts while the process is out of file descriptors.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accept failures this close to the previous one belong to the same episode (not logged
/// again): at the descriptor limit every closing session lets one accept through, and the
/// log must not get a pair of lines per connection.
const EPISODE_QUIET: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `stopping` turns true, then starts the sessions of the
/// connections already queued and returns, closing the listener.
async fn accept_loop(
    listener: TcpListener,
    current: watch::Receiver<Arc<Shared>>,
    mut stopping: watch::Receiver<bool>,
) {
    // Linux hands TCP_NODELAY on from the listener to each accepted socket, which saves a
    // system call per session; elsewhere each accepted socket gets its own.
    let inherited_nodelay = cfg!(target_os = "linux")
        && socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .is_ok();
    // A listener on a specific address is every session's local address; only a wildcard
    // listener needs getsockname per session.
    let bound = listener.local_addr().ok();
    let local = bound.filter(|a| !a.ip().is_unspecified());
    // While accept keeps failing: the current pause (10 ms doubling up to 1 s).
    let mut delay: Option<Duration> = None;
    // Time of the last failure of the current episode; whether its recovery was logged.
    let mut last_failure: Option<Instant> = None;
    let mut recovery_logged = true;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => {
                take_queued(&listener, &current, local, bound);
                return;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if delay.take().is_some() && !recovery_logged {
                    info!("accepting connections again");
                    recovery_logged = true;
                }
                if !inherited_nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let shared = Arc::clone(&current.borrow());
                tokio::spawn(session::handle(stream, peer, local, bound, shared));
            }
            // The client gave up before we accepted it: nothing to wait for.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                        | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning; sessions
                // that end free descriptors and accepting resumes.
                let now = Instant::now();
                if last_failure.is_none_or(|t| now.duration_since(t) > EPISODE_QUIET) {
                    error!("accept failed: {e}; backing off until it succeeds again");
                    recovery_logged = false;
                }
                last_failure = Some(now);
                let pause = delay.map_or(Duration::from_millis(10), |d| {
                    (d * 2).min(MAX_ACCEPT_BACKOFF)
                });
                delay = Some(pause);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Starts the sessions of the connections queued on `listener`, without waiting for more.
/// Closing a listener resets the connections in its queue, and a balancer that saw them
/// established may already have sent a client's bytes on them: that client would fail.
fn take_queued(
    listener: &TcpListener,
    current: &watch::Receiver<Arc<Shared>>,
    local: Option<SocketAddr>,
    bound: Option<SocketAddr>,
) {
    // The listener is non-blocking: accept returns WouldBlock once the queue is empty.
    let socket = socket2::SockRef::from(listener);
    loop {
        let (accepted, peer) = match socket.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let stream = std::net::TcpStream::from(accepted);
        let started = peer.as_socket().and_then(|peer| {
            stream.set_nonblocking(true).ok()?;
            let _ = stream.set_nodelay(true);
            Some((tokio::net::TcpStream::from_std(stream).ok()?, peer))
        });
        if let Some((stream, peer)) = started {
            let shared = Arc::clone(&current.borrow());
            tokio::spawn(session::handle(stream, peer, local, bound, shared));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reuse_port_lets_two_listeners_share_an_address() {
        let first = listen_with("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen_with(addr, true);
        assert!(second.is_ok(), "{second:?}");
        // Without it the address is taken.
        assert!(listen(addr).is_err());
    }

    /// The accept loop relies on this to skip a setsockopt per session.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
