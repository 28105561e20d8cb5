//! Zero-copy relaying of one direction with splice(2) through a pipe (Linux only).
//!
//! The [`relay`](crate::relay) in its default mode hands each direction to `pump`, which moves
//! the source socket's bytes to the destination socket until EOF. The relay keeps everything
//! else: the half-close after EOF, the idle timeout, the totals and passing a reset on.
//!
//! What `pump` guarantees:
//! * Every byte read from the source is written to the destination, in order, before it
//!   returns, and each write is reported to the direction's meter. It never shuts the
//!   destination down.
//! * Short messages are copied. A direction starts by copying through a [`COPY_FIRST`]-byte
//!   stack buffer: a short message (a request, an echo, interactive typing) then costs one
//!   read and one write, where a pipe would cost its creation, two splices and two closes. The
//!   first read that fills the buffer marks a transfer, and the direction creates its pipe and
//!   splices from then on: socket → pipe (at most the pipe's capacity per call), then pipe →
//!   socket until the pipe is empty. The bytes never pass through user space, and nothing is
//!   left in the pipe when it is closed.
//! * A pipe is held only while data flows. After [`IDLE_RELEASE`] without data the direction
//!   closes it and goes back to copying, so a long-idle session costs 2 fds, not 6.
//! * Both splices use `SPLICE_F_MOVE | SPLICE_F_NONBLOCK` under tokio's readiness (`try_io`),
//!   so a full destination or an empty source clears readiness exactly as a
//!   `try_read`/`try_write` would.
//!
//! Fallbacks:
//! * When the kernel refuses splice for these sockets (EINVAL, ENOSYS, EOPNOTSUPP, EPERM)
//!   before any byte has gone through a pipe, `pump` ends with `Outcome::Unsupported`, every
//!   byte so far written, and the relay goes on with its buffered copy. Once splice has
//!   worked, the same errors are connection errors (`Outcome::Failed`).
//! * Failing to create a pipe (out of file descriptors) is an error for the direction, not a
//!   fallback.
//!
//! Traffic limits: a limited direction runs `pump_limited` instead, which skips the copy
//! phase (a read of whatever has arrived could not be bounded) and splices at most the bytes
//! its limit grants per call (socket → pipe), waiting for tokens when there are none;
//! unspent grants go back. The unlimited loop has no limit code at all: the relay chooses
//! between the two with one branch per direction.
//!
//! Pipe sizing: pipes start at [`CHUNK`], the kernel's default, so creating one needs no
//! further system call. A direction that keeps filling its pipe (a bulk transfer) grows it to
//! [`BULK`], which moves more per splice and per wake-up and so costs less CPU per byte. At
//! most [`BULK_PIPES`] pipes are grown at once, process-wide, because every session's pipes
//! count against the user's pipe quota, past which the kernel gives new pipes only a page or
//! two. A grow the kernel refuses leaves the pipe as it was; a pipe created past the quota is
//! smaller, moves less per splice and never looks full enough to grow.
#![cfg(target_os = "linux")]

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;

use crate::relay::{Meter, Turn};
use crate::traffic::DirectionLimit;

/// A new pipe's capacity (the kernel's default). Each splice is a system call with a
/// fixed cost, so moving 64 KiB per call rather than 16 KiB about halves the CPU per byte.
pub const CHUNK: usize = 64 * 1024;

/// The capacity of a bulk direction's pipe. A bigger pipe moves more per splice, so a long
/// transfer needs fewer system calls and less CPU per byte than with [`CHUNK`]; but a pipe
/// that takes everything the source holds in one splice drains it and the direction sleeps
/// until more comes. At 1 MiB (`/proc/sys/fs/pipe-max-size`) the relay's thread slept twice
/// as often per GiB as at 256 KiB for the same CPU per byte, and on two busy cores every
/// sleep is a wake-up to wait for (tests/README.md, "TCP throughput against hev").
pub const BULK: usize = 256 * 1024;

/// Consecutive splices that fill at least half the pipe before it grows to [`BULK`].
const BULK_AFTER: u32 = 8;

/// Pipes grown to [`BULK`] at once, process-wide. Each counts 64 pages against the
/// user's pipe quota (`fs.pipe-user-pages-soft`, 16384 by default), past which the kernel
/// hands every new pipe a page or two; 64 of them take a quarter of it.
pub const BULK_PIPES: usize = 64;

static BULK_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// A direction without data for this long closes its pipe.
pub const IDLE_RELEASE: Duration = Duration::from_secs(5);

/// The stack buffer a direction copies through before it has a pipe; a read that fills it
/// switches the direction to splice.
pub const COPY_FIRST: usize = 16 * 1024;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// How a spliced direction ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// EOF from the source; everything was written.
    Done(Moved),
    /// An I/O error.
    Failed(std::io::Error),
    /// splice is not available for these sockets; the caller goes on with the buffered
    /// copy after the bytes moved so far (all of them written).
    Unsupported(Moved),
}

/// Bytes a direction has moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    /// All of them.
    pub(crate) total: u64,
    /// Those that went through a pipe.
    pub(crate) spliced: u64,
}

/// What one [`copy_step`] did.
enum Copied {
    /// EOF from the source.
    Eof,
    /// Read and wrote this many bytes; `full` when the read filled the buffer.
    Moved { n: usize, full: bool },
    /// Wrote `written` bytes of a read; the destination is full and `rest` is left over.
    Blocked {
        written: usize,
        rest: Vec<u8>,
        full: bool,
    },
}

/// A direction's pipe.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes one splice into it asks for.
    capacity: usize,
    /// Holds one of the [`BULK_PIPES`].
    bulk: bool,
    /// Consecutive splices that filled half of it or more.
    full_runs: u32,
}

impl Pipe {
    fn new() -> std::io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // No F_SETPIPE_SZ: new pipes already have the default 64 KiB (one syscall less per
        // direction of every session). A user past the pipe quota gets less, and then the
        // splices just move less per call and the pipe never looks full enough to grow.
        Ok(Self {
            read,
            write,
            capacity: CHUNK,
            bulk: false,
            full_runs: 0,
        })
    }

    /// Notes that a splice moved `n` bytes into the pipe; grows it once the direction
    /// looks like a bulk transfer and a [`BULK_PIPES`] slot is free.
    fn filled(&mut self, n: usize) {
        if self.bulk || n < self.capacity / 2 {
            self.full_runs = 0;
            return;
        }
        self.full_runs += 1;
        if self.full_runs < BULK_AFTER {
            return;
        }
        self.full_runs = 0;
        let taken = BULK_IN_USE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            (used < BULK_PIPES).then_some(used + 1)
        });
        if taken.is_err() {
            return;
        }
        // Growing keeps what the pipe holds; refused (EPERM) when the quota is short.
        match fcntl_setpipe_size(&self.write, BULK) {
            Ok(size) => {
                self.capacity = size;
                self.bulk = true;
            }
            Err(_) => {
                BULK_IN_USE.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.bulk {
            BULK_IN_USE.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Errors meaning "splice cannot be used here" rather than "the connection failed".
fn unsupported(e: Errno) -> bool {
    e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP || e == Errno::PERM
}

/// Moves `from` to `to` until EOF. Does not shut `to` down.
pub(crate) async fn pump(from: &mut ReadHalf<'_>, to: &TcpStream, meter: Meter<'_>) -> Outcome {
    let mut moved = Moved::default();
    match run(from, to, meter, &mut moved).await {
        Ok(true) => Outcome::Done(moved),
        Ok(false) => Outcome::Unsupported(moved),
        Err(e) => Outcome::Failed(e),
    }
}

/// Waits for data on `from`, reads it into a stack buffer and writes as much of it as `to`
/// takes now. The buffer lives only inside one poll, never in the session's future.
///
/// The read is tokio's `poll_read`, which treats a short read as "drained" and clears the
/// socket's readiness (safely: an edge that came in meanwhile sets it again), so a short
/// message costs one read, not a second one that finds the socket empty.
async fn copy_step(from: &mut ReadHalf<'_>, to: &TcpStream) -> std::io::Result<Copied> {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; COPY_FIRST];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *from).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => Poll::Ready(write_now(read.filled(), to)),
        }
    })
    .await
}

/// Writes as much of `data` (one read's worth; empty at EOF) as `to` takes now.
fn write_now(data: &[u8], to: &TcpStream) -> std::io::Result<Copied> {
    if data.is_empty() {
        return Ok(Copied::Eof);
    }
    let full = data.len() == COPY_FIRST;
    let mut written = 0;
    while let Some(rest) = data.get(written..).filter(|r| !r.is_empty()) {
        match to.try_write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(m) => written += m,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Copied::Blocked {
                    written,
                    rest: rest.to_vec(),
                    full,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Copied::Moved {
        n: data.len(),
        full,
    })
}

/// Writes all of `data` to `to`, waiting for room.
async fn write_all(to: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(m) => data = data.get(m..).unwrap_or_default(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splices at most `len` bytes from `from` into the (empty) pipe, under tokio's readiness.
fn splice_in(from: &TcpStream, pipe: &Pipe, len: usize) -> std::io::Result<usize> {
    from.try_io(Interest::READABLE, || {
        splice(from, None, &pipe.write, None, len, FLAGS).map_err(std::io::Error::from)
    })
}

/// [`pump`] for a direction with a traffic limit: splices only, at most what `limit`
/// grants per call. Does not shut `to` down.
pub(crate) async fn pump_limited(
    from: &mut ReadHalf<'_>,
    to: &TcpStream,
    meter: Meter<'_>,
    limit: &DirectionLimit,
) -> Outcome {
    let mut moved = Moved::default();
    match run_limited(from, to, meter, limit, &mut moved).await {
        Ok(true) => Outcome::Done(moved),
        Ok(false) => Outcome::Unsupported(moved),
        Err(e) => Outcome::Failed(e),
    }
}

/// [`run`] under a limit: wait for data, take a grant (waiting for tokens), splice at most
/// that into the pipe, give back the rest, empty the pipe into `to`.
async fn run_limited(
    from_half: &mut ReadHalf<'_>,
    to: &TcpStream,
    meter: Meter<'_>,
    limit: &DirectionLimit,
    moved: &mut Moved,
) -> std::io::Result<bool> {
    let from: &TcpStream = from_half.as_ref();
    let mut pipe: Option<Pipe> = None;
    // A limit above what the link moves never makes this loop wait for tokens, so it takes
    // turns like `run` does.
    let mut turn = Turn::default();
    loop {
        // Tokens are taken only once there is data, so an idle session holds none of a
        // shared bucket's; the pipe is closed when no data comes for a while.
        if tokio::time::timeout(IDLE_RELEASE, from.readable())
            .await
            .is_err()
        {
            pipe = None;
            continue;
        }
        let pipe = match &mut pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        let len = limit.grant(pipe.capacity).await?;
        let spliced = splice_in(from, pipe, len);
        limit.used(len, *spliced.as_ref().unwrap_or(&0));
        let n = match spliced {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            // Readiness is cleared: the next pass waits for data.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                turn.waiting();
                continue;
            }
            Err(e) => return unsupported_or(e, moved),
        };
        pipe.filled(n);
        drain_pipe(pipe, n, to, meter, moved).await?;
        if turn.over() {
            tokio::task::yield_now().await;
        }
    }
}

/// Splices the `n` bytes in `pipe` into `to`, counting them as they go.
async fn drain_pipe(
    pipe: &Pipe,
    n: usize,
    to: &TcpStream,
    meter: Meter<'_>,
    moved: &mut Moved,
) -> std::io::Result<()> {
    let mut left = n;
    while left > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || {
            splice(&pipe.read, None, to, None, left, FLAGS).map_err(std::io::Error::from)
        }) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(m) => {
                left -= m;
                moved.total += m as u64;
                moved.spliced += m as u64;
                meter.add(m);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A failed splice from the socket: `Ok(false)` (splice unsupported) when nothing has been
/// spliced yet and the kernel refuses splice for these sockets, else the error.
fn unsupported_or(e: std::io::Error, moved: &Moved) -> std::io::Result<bool> {
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    if moved.spliced == 0 && errno.is_some_and(unsupported) {
        return Ok(false);
    }
    Err(e)
}

/// The direction's loop; `Ok(false)` when splice turned out to be unsupported.
async fn run(
    from_half: &mut ReadHalf<'_>,
    to: &TcpStream,
    meter: Meter<'_>,
    moved: &mut Moved,
) -> std::io::Result<bool> {
    let mut pipe: Option<Pipe> = None;
    // Whether this direction carries a transfer (it has filled the copy buffer since it
    // last had a pipe).
    let mut bulk = false;
    // Readiness is awaited only when the socket is drained: while data keeps coming, each
    // pass is two splices and no timer, and the direction yields after each turn
    // ([`crate::relay::TURN`]).
    let mut drained = true;
    let mut turn = Turn::default();
    loop {
        if !bulk {
            let n = match copy_step(from_half, to).await? {
                Copied::Eof => return Ok(true),
                Copied::Moved { n, full } => {
                    bulk = full;
                    n
                }
                Copied::Blocked {
                    written,
                    rest,
                    full,
                } => {
                    bulk = full;
                    write_all(to, &rest).await?;
                    written + rest.len()
                }
            };
            moved.total += n as u64;
            meter.add(n);
            continue;
        }
        let from: &TcpStream = from_half.as_ref();
        if drained {
            turn.waiting();
            // Wait for data; the pipe is closed if none comes for a while, and the
            // direction goes back to copying.
            if tokio::time::timeout(IDLE_RELEASE, from.readable())
                .await
                .is_err()
            {
                pipe = None;
                bulk = false;
                continue;
            }
        }
        let pipe = match &mut pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        // Socket → pipe. The pipe is empty here, so EAGAIN means the socket is drained.
        let n = match from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe.write, None, pipe.capacity, FLAGS)
                .map_err(std::io::Error::from)
        }) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                drained = true;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return unsupported_or(e, moved),
        };
        drained = false;
        pipe.filled(n);
        // Pipe → socket, until the pipe is empty.
        drain_pipe(pipe, n, to, meter, moved).await?;
        if turn.over() {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::relay::{Activity, pair};

    #[test]
    fn a_pipe_that_keeps_filling_grows_to_bulk() {
        let mut pipe = Pipe::new().unwrap();
        assert_eq!(pipe.capacity, CHUNK);
        pipe.filled(CHUNK / 4); // a small read resets the run
        for _ in 0..BULK_AFTER - 1 {
            pipe.filled(CHUNK);
        }
        assert_eq!(
            pipe.capacity, CHUNK,
            "not before {BULK_AFTER} full splices in a row"
        );
        pipe.filled(CHUNK);
        assert!(pipe.bulk);
        assert_eq!(pipe.capacity, BULK);
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&pipe.write).unwrap(), BULK);
    }

    #[test]
    fn at_most_bulk_pipes_grow_at_once() {
        let mut pipes: Vec<Pipe> = (0..BULK_PIPES + 4).map(|_| Pipe::new().unwrap()).collect();
        for pipe in &mut pipes {
            for _ in 0..BULK_AFTER {
                pipe.filled(pipe.capacity);
            }
        }
        let grown = pipes.iter().filter(|p| p.bulk).count();
        assert!(grown <= BULK_PIPES, "{grown} pipes grown");
        assert!(
            pipes
                .iter()
                .filter(|p| !p.bulk)
                .all(|p| p.capacity == CHUNK)
        );
        // Slots come back when grown pipes close.
        pipes.retain(|p| !p.bulk);
        let mut late = pipes.pop().unwrap();
        for _ in 0..BULK_AFTER {
            late.filled(late.capacity);
        }
        assert!(late.bulk, "a freed slot is used again");
    }

    /// Runs the spliced direction from `c_in` to `u_out` on a task, which closes both when
    /// it ends; yields how it ended and the bytes its meter counted.
    fn spawn_pump(
        mut c_in: TcpStream,
        u_out: TcpStream,
    ) -> tokio::task::JoinHandle<(Outcome, u64)> {
        tokio::spawn(async move {
            let activity = Activity::new();
            let metered = AtomicU64::new(0);
            let (mut from, _) = c_in.split();
            let out = pump(&mut from, &u_out, activity.meter(&metered)).await;
            (out, metered.load(Ordering::Relaxed))
        })
    }

    /// splice really is used on Linux for TCP sockets (no silent fallback).
    #[tokio::test]
    async fn splice_is_supported_for_tcp() {
        let (mut client, c_in) = pair().await;
        let (u_out, mut server) = pair().await;
        let pump = spawn_pump(c_in, u_out);
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
        client.write_all(&data).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        match pump.await.unwrap() {
            (Outcome::Done(moved), metered) => {
                assert_eq!(metered, 1 << 20);
                assert_eq!(moved.total, 1 << 20);
                assert!(
                    moved.spliced >= 1 << 19,
                    "splice not used once the transfer started: {moved:?}"
                );
            }
            other => panic!("splice not used: {other:?}"),
        }
    }

    /// Short messages are copied: a ping-pong never creates a pipe.
    #[tokio::test]
    async fn short_messages_are_copied_without_a_pipe() {
        let (mut client, c_in) = pair().await;
        let (u_out, mut server) = pair().await;
        let pump = spawn_pump(c_in, u_out);
        let mut got = [0u8; 100];
        for round in 0..50u8 {
            let msg = [round; 100];
            client.write_all(&msg).await.unwrap();
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
        }
        client.shutdown().await.unwrap();
        assert_eq!(server.read(&mut got).await.unwrap(), 0, "EOF passed on");
        match pump.await.unwrap() {
            (Outcome::Done(moved), _) => {
                assert_eq!(moved.total, 5000);
                assert_eq!(moved.spliced, 0, "a pipe was used for short messages");
            }
            other => panic!("{other:?}"),
        }
    }
}
