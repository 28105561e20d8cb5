//! The SOCKS exchange on the program's socket, driven by the core's client state machine
//! ([`socksgate_core::client::Client`]): the shim only moves bytes.
//!
//! Works on blocking and non-blocking descriptors alike: every wait is a `poll` with what is
//! left of the deadline, so a proxy that stops answering costs at most the connect timeout.
//! Replies are read with `MSG_PEEK` and only the bytes the state machine consumed are taken
//! off the socket, so data the destination sends right after the reply (an SSH banner) stays
//! queued for the program.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use socksgate_core::client::{Client, ClientConfig, ClientEvent};

use crate::failure::Failure;
use crate::sys;

/// One handshake on one socket.
#[derive(Debug)]
pub(crate) struct Handshake {
    fd: RawFd,
    client: Client,
    deadline: Instant,
}

impl Handshake {
    /// Starts the handshake for `config` on `fd`, which is connected to the proxy.
    pub(crate) fn new(
        fd: RawFd,
        config: ClientConfig<'_>,
        deadline: Instant,
    ) -> Result<Self, Failure> {
        let client = Client::new(config).map_err(Failure::Proxy)?;
        Ok(Self {
            fd,
            client,
            deadline,
        })
    }

    /// Exchanges messages until the proxy's next reply: [`ClientEvent::Replied`] first,
    /// then (BIND) [`ClientEvent::BindPeer`]. Call again for BIND's second reply, with
    /// [`Self::extend_deadline`] first if that may take longer.
    pub(crate) fn next_event(&mut self) -> Result<ClientEvent, Failure> {
        let mut out = [0u8; 513];
        let mut input = [0u8; 512];
        loop {
            let n = self.client.poll_transmit(&mut out);
            self.send_all(out.get(..n).unwrap_or_default())?;
            if let Some(event) = self.client.poll_event() {
                return Ok(event);
            }
            self.wait(libc::POLLIN)?;
            let peeked = match sys::recv(self.fd, &mut input, true) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => n,
                Err(libc::EAGAIN | libc::EINTR) => continue,
                Err(e) => return Err(Failure::Io(e)),
            };
            let used = self
                .client
                .feed(input.get(..peeked).unwrap_or_default())
                .map_err(Failure::Proxy)?;
            self.discard(used)?;
        }
    }

    /// Moves the deadline (BIND's second reply comes when the peer connects).
    #[allow(dead_code, reason = "for the BIND hook")]
    pub(crate) fn extend_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    fn send_all(&self, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            match sys::send(self.fd, bytes) {
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(libc::EAGAIN | libc::EINTR) => self.wait(libc::POLLOUT)?,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        Ok(())
    }

    /// Takes `n` already peeked bytes off the socket.
    fn discard(&self, mut n: usize) -> Result<(), Failure> {
        let mut sink = [0u8; 512];
        while n > 0 {
            let chunk = sink.len().min(n);
            match sys::recv(self.fd, sink.get_mut(..chunk).unwrap_or_default(), false) {
                Ok(0) => return Err(Failure::Closed),
                Ok(got) => n -= got,
                Err(libc::EAGAIN | libc::EINTR) => self.wait(libc::POLLIN)?,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        Ok(())
    }

    fn wait(&self, events: i16) -> Result<(), Failure> {
        wait(self.fd, events, self.deadline)
    }
}

/// Waits for `events` on `fd` until `deadline`.
pub(crate) fn wait(fd: RawFd, events: i16, deadline: Instant) -> Result<(), Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
    match sys::poll(fd, events, ms) {
        Ok(0) => Err(Failure::TimedOut),
        // POLLERR/POLLHUP: the next call reports the error.
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Io(e)),
    }
}

/// Connects `fd` to the proxy at `proxy` with libc's `connect`, waiting (on a non-blocking
/// socket too) until the connection is up or `deadline` passes.
pub(crate) fn connect_to_proxy(
    fd: RawFd,
    proxy: SocketAddr,
    deadline: Instant,
) -> Result<(), Failure> {
    match sys::connect(fd, proxy) {
        Ok(()) => Ok(()),
        Err(libc::EINPROGRESS | libc::EINTR) => {
            wait(fd, libc::POLLOUT, deadline)?;
            match sys::take_socket_error(fd) {
                Ok(0) => Ok(()),
                Ok(e) | Err(e) => Err(Failure::Io(e)),
            }
        }
        Err(e) => Err(Failure::Io(e)),
    }
}
