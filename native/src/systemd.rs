//! systemd integration without a crate: readiness notifications (`sd_notify`).
//!
//! When started by systemd with `Type=notify`, `$NOTIFY_SOCKET` names a Unix datagram socket
//! (a path, or an abstract name written with a leading `@`); each state change is one datagram
//! such as `READY=1` or `STOPPING=1`. Without the variable nothing is sent.

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`, if set. Errors are returned for
/// logging; they never stop the server.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    send(&path, state)
}

#[cfg(unix)]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        return Ok(());
    }
    let _ = bytes;
    socket.send_to(state.as_bytes(), path)?;
    Ok(())
}

#[cfg(not(unix))]
fn send(_path: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

static ACTIVATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Listening sockets passed by systemd socket activation (`LISTEN_FDS` descriptors from fd 3,
/// for this process when `LISTEN_PID` is set), or `None` when there are none. Call it once,
/// before starting threads: it removes the variables from the environment, so children do
/// not inherit them.
pub fn listeners() -> std::io::Result<Option<Vec<std::net::TcpListener>>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        if let Some(l) = fds.take_tcp_listener(i)? {
            l.set_nonblocking(true)?;
            out.push(l);
        }
    }
    ACTIVATED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Some(out))
}

/// Whether the listeners came from socket activation.
pub fn socket_activated() -> bool {
    ACTIVATED.load(std::sync::atomic::Ordering::Relaxed)
}
