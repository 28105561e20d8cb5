//! The TCP relay: both directions at once, with half-close, and buffers only while data flows.
//!
//! When one side finishes sending (EOF), the relay shuts down the write side of the other
//! connection and keeps copying the opposite direction until it ends too, so a client that
//! shuts down its write side still receives the whole response. An error in either direction
//! ends both.
//!
//! On Linux each direction copies short messages through a stack buffer and moves transfers
//! with splice(2) through its own pipe (zero copy: socket → pipe → socket, never through user
//! space), see [`splice`]. Elsewhere, or when the kernel refuses splice for a socket (EINVAL,
//! ENOSYS, …), the direction falls back to the buffered copy below.
//!
//! An abort is passed on: when either connection is reset, both are closed with a reset.
//!
//! Memory: a direction holds no buffer (and no pipe) while its source is idle. A buffer is
//! allocated when the socket becomes readable and released once the socket is drained, so an
//! idle session costs only its sockets and a few words of state. That is the design constraint:
//! an idle session must stay within 4 KiB of user-space memory, so thousands of mostly idle
//! connections cost little (measured by `socksbench`, see tests/README.md#benchmark). Buffers
//! start at [`SMALL`] and a direction that fills one switches to [`LARGE`] (fewer syscalls for
//! bulk transfers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, ErrorKind};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// First buffer size of a direction.
pub const SMALL: usize = 16 * 1024;
/// Buffer size once a direction has filled a small buffer.
pub const LARGE: usize = 64 * 1024;

/// Bytes moved by a finished relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
}

/// How the relay moves bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// splice(2) on Linux, the buffered copy elsewhere or when splice is refused.
    #[default]
    Auto,
    /// Always the buffered copy (read into a user-space buffer, write it out).
    Copy,
}

/// Writes `early` (client bytes that arrived with the handshake) upstream, then relays until
/// both directions have ended.
pub async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    early: &[u8],
) -> std::io::Result<Totals> {
    relay_with(Mode::Auto, None, client, upstream, early).await
}

/// [`relay`] with an explicit [`Mode`] and an idle timeout: when no byte has moved in either
/// direction for `idle`, the relay ends (logged, with the bytes moved so far) and the caller
/// closes both connections by dropping them.
pub async fn relay_with(
    mode: Mode,
    idle: Option<Duration>,
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    early: &[u8],
) -> std::io::Result<Totals> {
    if !early.is_empty() {
        upstream.write_all(early).await?;
    }
    let activity = Activity::new();
    let (client_rd, client_wr) = client.split();
    let (up_rd, up_wr) = upstream.split();
    let both = async {
        tokio::try_join!(
            direction(mode, client_rd, up_wr, activity.meter(&activity.up)),
            direction(mode, up_rd, client_wr, activity.meter(&activity.down))
        )
    };
    let ended = match idle {
        None => both.await,
        Some(idle) => tokio::select! {
            r = both => r,
            () = activity.idle_for(idle) => {
                let up = activity.up.load(Ordering::Relaxed);
                let down = activity.down.load(Ordering::Relaxed);
                tracing::info!(up, down, "idle timeout: no data for {}s", idle.as_secs());
                Ok((up, down))
            }
        },
    };
    let (up, down) = match ended {
        Ok(totals) => totals,
        Err(e) => {
            if is_abort(&e) {
                pass_abort_on(client, upstream);
            }
            return Err(e);
        }
    };
    Ok(Totals {
        up: up + early.len() as u64,
        down,
    })
}

/// Whether `e` means a peer aborted its connection (a reset) rather than closing it.
fn is_abort(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Makes both connections close with a reset when they are dropped (SO_LINGER 0), so the
/// side still open sees the other's abort as an abort: a FIN would make a transfer cut off
/// by a reset look complete to it. The aborted side is gone already and ignores it.
fn pass_abort_on(client: &TcpStream, upstream: &TcpStream) {
    for s in [client, upstream] {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
}

/// When data last moved and how much, shared by both directions (for the idle timeout).
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn meter<'a>(&'a self, counter: &'a AtomicU64) -> Meter<'a> {
        Meter {
            activity: self,
            counter,
        }
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// One direction's view of the [`Activity`]: its byte counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meter<'a> {
    activity: &'a Activity,
    counter: &'a AtomicU64,
}

impl Meter<'_> {
    /// Records `n` bytes written by this direction.
    pub(crate) fn add(&self, n: usize) {
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        let ms = u64::try_from(self.activity.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// One direction, by `mode`; `meter` is told about every chunk.
async fn direction(
    mode: Mode,
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    meter: Meter<'_>,
) -> std::io::Result<u64> {
    #[cfg(target_os = "linux")]
    if mode == Mode::Auto {
        let mut from = from;
        return match splice::pump(&mut from, to.as_ref(), meter).await {
            splice::Outcome::Done(moved) => {
                shutdown(to).await?;
                Ok(moved.total)
            }
            splice::Outcome::Failed(e) => Err(e),
            splice::Outcome::Unsupported(moved) => Ok(moved.total + pump(from, to, meter).await?),
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mode;
    pump(from, to, meter).await
}

/// Passes EOF on as a half-close. The peer may already be gone.
async fn shutdown(mut to: WriteHalf<'_>) -> std::io::Result<()> {
    match to.shutdown().await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies `from` to `to` until EOF, then shuts down `to`'s write side.
async fn pump(from: ReadHalf<'_>, mut to: WriteHalf<'_>, meter: Meter<'_>) -> std::io::Result<u64> {
    let source: &TcpStream = from.as_ref();
    let mut size = SMALL;
    let mut total = 0u64;
    loop {
        source.readable().await?;
        // Allocated only now that there is something to read; dropped when drained.
        let mut buf = vec![0u8; size];
        loop {
            match source.try_read(&mut buf) {
                Ok(0) => {
                    shutdown(to).await?;
                    return Ok(total);
                }
                Ok(n) => {
                    to.write_all(buf.get(..n).unwrap_or_default()).await?;
                    total += n as u64;
                    meter.add(n);
                    if n == buf.len() && size < LARGE {
                        size = LARGE;
                        buf = vec![0u8; size];
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Zero-copy relaying with splice(2) through a pipe (Linux).
///
/// A direction starts by copying through a [`COPY_FIRST`]-byte stack buffer: short messages
/// (a request, an echo, interactive typing) cost one read and one write, where a pipe would
/// cost its creation, two splices and two closes. The first read that fills the buffer marks
/// a transfer, and the direction creates its pipe and splices from then on. It closes the
/// pipe again after [`IDLE_RELEASE`] without data and goes back to copying, so long-idle
/// sessions cost 2 fds, not 6. Bytes go socket → pipe (at most the pipe's capacity per call)
/// and then pipe → socket until the pipe is empty, so nothing is left in the pipe when it is
/// closed. Both splices use `SPLICE_F_MOVE | SPLICE_F_NONBLOCK` and tokio's readiness
/// (`try_io`), so a full destination or an empty source clears readiness exactly as a
/// `try_read`/`try_write` would.
///
/// Pipes start at [`CHUNK`]; a direction that keeps filling its pipe (a bulk transfer) grows
/// it to [`BULK`], which moves more per syscall and wake-up and costs about a third less CPU
/// per byte. Few pipes may be grown at once ([`BULK_PIPES`]), so bulk transfers never use up
/// the user's pipe quota that every other session's pipe counts against.
#[cfg(target_os = "linux")]
pub mod splice {
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

    use super::Meter;

    /// A new pipe's capacity (the kernel's default). Each splice is a system call with a
    /// fixed cost, so moving 64 KiB per call rather than 16 KiB about halves the CPU per byte.
    pub const CHUNK: usize = 64 * 1024;

    /// The capacity of a bulk direction's pipe: the largest an unprivileged process may set
    /// (`/proc/sys/fs/pipe-max-size`). A bigger pipe moves more per splice, so a long transfer
    /// needs fewer system calls and less CPU per byte (about a quarter less than with
    /// [`CHUNK`]).
    pub const BULK: usize = 1024 * 1024;

    /// Consecutive splices that fill at least half the pipe before it grows to [`BULK`].
    const BULK_AFTER: u32 = 8;

    /// Pipes grown to [`BULK`] at once, process-wide. Each counts 256 pages against the
    /// user's pipe quota (`fs.pipe-user-pages-soft`, 16384 by default), past which the kernel
    /// hands every new pipe a page or two; 16 of them take a quarter of it.
    pub const BULK_PIPES: usize = 16;

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
        // turn is two splices and no timer.
        let mut drained = true;
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
                Err(e) => {
                    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
                    if moved.spliced == 0 && errno.is_some_and(unsupported) {
                        return Ok(false);
                    }
                    return Err(e);
                }
            };
            drained = false;
            pipe.filled(n);
            // Pipe → socket, until the pipe is empty.
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
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

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
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// The same tests for each relay mode.
    macro_rules! suite {
        ($mode:expr) => {
            #[tokio::test]
            async fn half_close_client_still_gets_the_whole_response() {
                // client <-> (c_in | relay | u_out) <-> server
                let (mut client, mut c_in) = pair().await;
                let (mut u_out, mut server) = pair().await;
                let relay = tokio::spawn(async move {
                    relay_with($mode, None, &mut c_in, &mut u_out, b"early:").await
                });

                // The server reads the whole request (until EOF), then answers with a large body.
                let server = tokio::spawn(async move {
                    let mut req = Vec::new();
                    server.read_to_end(&mut req).await.unwrap();
                    let body: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
                    server.write_all(&body).await.unwrap();
                    server.shutdown().await.unwrap();
                    (req, body)
                });

                client.write_all(b"request").await.unwrap();
                client.shutdown().await.unwrap(); // half-close: no more requests
                let mut resp = Vec::new();
                client.read_to_end(&mut resp).await.unwrap();
                let (req, body) = server.await.unwrap();
                assert_eq!(req, b"early:request");
                assert!(resp == body, "the response arrives whole and in order");
                let totals = relay.await.unwrap().unwrap();
                assert_eq!(
                    totals,
                    Totals {
                        up: 13,
                        down: 4 << 20
                    }
                );
            }

            #[tokio::test]
            async fn half_close_from_the_server_side() {
                let (mut client, mut c_in) = pair().await;
                let (mut u_out, mut server) = pair().await;
                let relay = tokio::spawn(async move {
                    relay_with($mode, None, &mut c_in, &mut u_out, b"").await
                });
                // The server speaks first and closes its write side; the client keeps sending.
                server.write_all(b"banner").await.unwrap();
                server.shutdown().await.unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, b"banner");
                client.write_all(b"after").await.unwrap();
                client.shutdown().await.unwrap();
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"after");
                relay.await.unwrap().unwrap();
            }

            #[tokio::test]
            async fn interactive_ping_pong() {
                let (mut client, mut c_in) = pair().await;
                let (mut u_out, mut server) = pair().await;
                let relay = tokio::spawn(async move {
                    relay_with($mode, None, &mut c_in, &mut u_out, b"").await
                });
                for i in 0..100u8 {
                    client.write_all(&[i]).await.unwrap();
                    let mut b = [0u8; 1];
                    server.read_exact(&mut b).await.unwrap();
                    server.write_all(&[b[0].wrapping_add(1)]).await.unwrap();
                    client.read_exact(&mut b).await.unwrap();
                    assert_eq!(b[0], i.wrapping_add(1));
                }
                drop(client);
                drop(server);
                let _ = relay.await.unwrap();
            }

            #[tokio::test]
            async fn reset_ends_both_directions() {
                let (client, mut c_in) = pair().await;
                let (mut u_out, server) = pair().await;
                let relay = tokio::spawn(async move {
                    relay_with($mode, None, &mut c_in, &mut u_out, b"").await
                });
                // The destination vanishes with a reset; the client never sends or closes.
                let s2 = socket2::SockRef::from(&server);
                s2.set_linger(Some(std::time::Duration::ZERO)).unwrap();
                drop(server);
                let r = tokio::time::timeout(std::time::Duration::from_secs(5), relay).await;
                assert!(r.is_ok(), "the relay must end when one side resets");
                // The client sees the abort as an abort, not as the end of a complete response.
                let mut client = client;
                let mut buf = [0u8; 16];
                let got = client.read(&mut buf).await;
                assert_eq!(
                    got.map_err(|e| e.kind()),
                    Err(ErrorKind::ConnectionReset),
                    "the reset is passed on"
                );
            }

            #[tokio::test]
            async fn idle_timeout_ends_a_silent_session_only() {
                let (mut client, mut c_in) = pair().await;
                let (mut u_out, mut server) = pair().await;
                let idle = Some(std::time::Duration::from_millis(400));
                let relay = tokio::spawn(async move {
                    relay_with($mode, idle, &mut c_in, &mut u_out, b"").await
                });
                // Traffic every 100 ms for 1.2 s keeps it open…
                for i in 0..12u8 {
                    client.write_all(&[i]).await.unwrap();
                    let mut b = [0u8; 1];
                    server.read_exact(&mut b).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                assert!(!relay.is_finished(), "an active session must stay open");
                // …silence ends it, with the bytes counted so far.
                let totals = tokio::time::timeout(std::time::Duration::from_secs(5), relay)
                    .await
                    .expect("the idle timeout must end the relay")
                    .unwrap()
                    .unwrap();
                assert_eq!(totals, Totals { up: 12, down: 0 });
            }
        };
    }

    mod auto {
        use super::*;
        suite!(Mode::Auto);
    }

    mod copy {
        use super::*;
        suite!(Mode::Copy);
    }

    /// Runs the spliced direction from `c_in` to `u_out` on a task, which closes both when
    /// it ends; yields how it ended and the bytes its meter counted.
    #[cfg(target_os = "linux")]
    fn spawn_pump(
        mut c_in: TcpStream,
        u_out: TcpStream,
    ) -> tokio::task::JoinHandle<(splice::Outcome, u64)> {
        tokio::spawn(async move {
            let activity = Activity::new();
            let (mut from, _) = c_in.split();
            let out = splice::pump(&mut from, &u_out, activity.meter(&activity.up)).await;
            (out, activity.up.load(Ordering::Relaxed))
        })
    }

    /// splice really is used on Linux for TCP sockets (no silent fallback).
    #[cfg(target_os = "linux")]
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
            (splice::Outcome::Done(moved), metered) => {
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
    #[cfg(target_os = "linux")]
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
            (splice::Outcome::Done(moved), _) => {
                assert_eq!(moved.total, 5000);
                assert_eq!(moved.spliced, 0, "a pipe was used for short messages");
            }
            other => panic!("{other:?}"),
        }
    }
}
