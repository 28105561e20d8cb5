//! The TCP relay: both directions at once, with half-close, and buffers only while data flows.
//!
//! When one side finishes sending (EOF), the relay shuts down the write side of the other
//! connection and keeps copying the opposite direction until it ends too, so a client that
//! shuts down its write side still receives the whole response. An error in either direction
//! ends both.
//!
//! On Linux, in [`Mode::Auto`], each direction is moved by [`splice`]: short messages are
//! copied through a stack buffer, transfers go socket → pipe → socket without passing through
//! user space. Elsewhere, in [`Mode::Copy`], or when the kernel refuses splice for a socket
//! (EINVAL, ENOSYS, …), the direction uses the buffered copy below.
//!
//! An abort is passed on: when either connection is reset, both are closed with a reset.
//!
//! With an idle timeout ([`relay_with`]) the relay ends once no byte has moved in either
//! direction for that long. The [`Totals`] count every byte written, the early bytes included.
//!
//! Traffic limits ([`crate::traffic`]): a limited direction asks its limit for a grant before
//! each read or splice and moves at most that many bytes, waiting for tokens when there are
//! none; its user's spent quota ends the relay like the idle timeout does (both directions,
//! with the bytes moved so far). The limited loops are instances of their own (the buffered
//! copy is generic over its `Pace`, splice has a limited loop): an unlimited direction runs
//! the unpaced ones, chosen by one branch on a `None` per direction, and its session task is
//! no larger.
//!
//! Fairness: a direction that has data waiting on every pass yields to its worker's other
//! tasks after [`TURN`] of running, so a bulk transfer delays the sessions that share its
//! worker by a few milliseconds, not for as long as it has data. A limited direction takes
//! turns too: a limit above what the link moves never makes it wait for tokens.
//!
//! Memory: a direction holds no buffer (and no pipe) while its source is idle. A buffer is
//! allocated when the socket becomes readable and released once the socket is drained, so an
//! idle session costs only its sockets and a few words of state. That is the design constraint:
//! an idle session must stay within 4 KiB of user-space memory, so thousands of mostly idle
//! connections cost little (measured by `socksbench`, see tests/README.md#benchmark). Buffers
//! start at [`SMALL`] and a direction that fills one switches to [`LARGE`] (fewer syscalls for
//! bulk transfers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ErrorKind};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::clock;
use crate::stream::Stream;
use crate::traffic::{DirectionLimit, SessionLimits};

// Also keeps the module's former path, `relay::splice`.
#[cfg(target_os = "linux")]
pub use crate::splice;

/// First buffer size of a direction.
pub const SMALL: usize = 16 * 1024;
/// Buffer size once a direction has filled a small buffer.
pub const LARGE: usize = 64 * 1024;

/// How long a direction with data always waiting may keep its worker thread before it gives
/// the thread's other tasks a turn.
///
/// Nothing else bounds it: a direction whose source never runs dry and whose destination
/// always takes more awaits nothing that returns `Pending` (readiness that is already set
/// does not count against tokio's cooperative budget), so it would keep the worker — and
/// the sessions queued behind it there — until its source paused. Counted in time, which is
/// what the queued sessions wait, rather than bytes, whose time varies with the load; each
/// yield costs a poll of the runtime's events.
pub const TURN: Duration = Duration::from_millis(2);

/// A direction's running time since it last waited or yielded (see [`TURN`]): when its turn
/// started, in µs on [`turn_clock`] (wrapping; odd, so never zero), or `None` while waiting.
/// Four bytes rather than an `Instant`'s sixteen: it lives in every session task.
#[derive(Debug, Default)]
pub(crate) struct Turn(Option<std::num::NonZeroU32>);

/// Microseconds since the first turn of the process, wrapping every 71 minutes (a turn is
/// milliseconds long, so the wrapping difference is exact).
fn turn_clock() -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Truncation is the wrapping the comparison expects.
    #[allow(clippy::cast_possible_truncation)]
    let us = EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u32;
    us
}

impl Turn {
    /// Called after each chunk moved: whether the direction has been running for [`TURN`]
    /// and should now yield to its worker's other tasks (`tokio::task::yield_now`), which
    /// starts its next turn.
    pub(crate) fn over(&mut self) -> bool {
        let now = turn_clock();
        let start = *self
            .0
            .get_or_insert(std::num::NonZeroU32::MIN.saturating_add(now & !1));
        let over = u128::from(now.wrapping_sub(start.get())) >= TURN.as_micros();
        if over {
            self.0 = None;
        }
        over
    }

    /// The direction is about to wait for its source: its next chunk starts a new turn.
    pub(crate) fn waiting(&mut self) {
        self.0 = None;
    }
}

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
    relay_limited(mode, idle, None, client, upstream, early).await
}

/// [`relay_with`] under a session's traffic limits (`None`: unlimited).
pub(crate) async fn relay_limited(
    mode: Mode,
    idle: Option<Duration>,
    limits: Option<Box<SessionLimits>>,
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    early: &[u8],
) -> std::io::Result<Totals> {
    if !early.is_empty() {
        upstream.write_all(early).await?;
    }
    let activity = Activity::with_limits(limits);
    let ended = {
        let (client_rd, client_wr) = client.split();
        let (up_rd, up_wr) = upstream.split();
        let both = async {
            tokio::try_join!(
                direction(mode, client_rd, up_wr, activity.meter(&activity.up)),
                direction(mode, up_rd, client_wr, activity.meter(&activity.down))
            )
        };
        // The select is written out rather than `until_idle`'s: a pinned future there makes
        // every session task larger.
        match idle {
            None => both.await,
            Some(idle) => tokio::select! {
                r = both => r,
                () = activity.idle_for(idle) => Ok(activity.idle_ended(idle)),
            },
        }
    };
    match ended_totals(ended, &activity, early) {
        Err(e) => {
            if is_abort(&e) {
                pass_abort_on(client, upstream);
            }
            Err(e)
        }
        ok => ok,
    }
}

/// Runs `both` directions until they end or, with `idle`, until nothing has moved for that
/// long (then the bytes moved so far).
async fn until_idle(
    both: std::pin::Pin<&mut impl Future<Output = std::io::Result<(u64, u64)>>>,
    idle: Option<Duration>,
    activity: &Activity,
) -> std::io::Result<(u64, u64)> {
    match idle {
        None => both.await,
        Some(idle) => tokio::select! {
            r = both => r,
            () = activity.idle_for(idle) => Ok(activity.idle_ended(idle)),
        },
    }
}

/// The totals of an ended relay; a spent quota ends it like the idle timeout (logged, with
/// the bytes moved so far).
fn ended_totals(
    ended: std::io::Result<(u64, u64)>,
    activity: &Activity,
    early: &[u8],
) -> std::io::Result<Totals> {
    let (up, down) = match ended {
        Ok(totals) => totals,
        Err(e) if crate::traffic::is_quota_spent(&e) => {
            let up = activity.up.load(Ordering::Relaxed);
            let down = activity.down.load(Ordering::Relaxed);
            tracing::info!(up, down, "session ended: {e}");
            if let Some(l) = &activity.limits
                && let Some(d) = l.up.as_ref().or(l.down.as_ref())
            {
                d.quota_ended();
            }
            (up, down)
        }
        Err(e) => return Err(e),
    };
    Ok(Totals {
        up: up + early.len() as u64,
        down,
    })
}

/// [`relay_limited`] between two [`Stream`]s: two plain sockets are relayed as before
/// (splice on Linux); when either side is TLS or GSS-API-protected, both directions use the
/// buffered copy over the streams ([`copy_direction`]), with the same idle timeout, traffic
/// limits, half-close and totals. (A TLS direction holds its 16 KiB buffer for the session's
/// life, on top of rustls's own buffers; a protected session's directions grow theirs to a
/// message's 63 KiB once data flows in bulk, on top of the protection's two message buffers.)
pub(crate) async fn relay_streams(
    idle: Option<Duration>,
    limits: Option<Box<SessionLimits>>,
    client: &mut Stream,
    upstream: &mut Stream,
    early: &[u8],
) -> std::io::Result<Totals> {
    if let (Stream::Plain(c), Stream::Plain(u)) = (&mut *client, &mut *upstream) {
        return relay_limited(Mode::Auto, idle, limits, c, u, early).await;
    }
    Box::pin(relay_copy(idle, limits, client, upstream, early)).await
}

async fn relay_copy(
    idle: Option<Duration>,
    limits: Option<Box<SessionLimits>>,
    client: &mut Stream,
    upstream: &mut Stream,
    early: &[u8],
) -> std::io::Result<Totals> {
    if !early.is_empty() {
        upstream.write_all(early).await?;
        upstream.flush().await?;
    }
    let activity = Activity::with_limits(limits);
    // A GSS-API message per read: reads as large as a message holds make fewer, larger
    // messages (each costs a wrap call, its header and checksum, and system calls).
    let largest =
        if matches!(client, Stream::Protected(_)) || matches!(upstream, Stream::Protected(_)) {
            crate::protected::MAX_PLAIN_PER_MESSAGE
        } else {
            SMALL
        };
    let ended = {
        let (client_rd, client_wr) = tokio::io::split(&mut *client);
        let (up_rd, up_wr) = tokio::io::split(&mut *upstream);
        let both = async {
            tokio::try_join!(
                copy_direction(client_rd, up_wr, activity.meter(&activity.up), largest),
                copy_direction(up_rd, client_wr, activity.meter(&activity.down), largest)
            )
        };
        tokio::pin!(both);
        until_idle(both, idle, &activity).await
    };
    match ended_totals(ended, &activity, early) {
        Err(e) => {
            if is_abort(&e) {
                pass_abort_on(client.socket(), upstream.socket());
            }
            Err(e)
        }
        ok => ok,
    }
}

/// One direction of [`relay_copy`]: reads `from`, writes (and flushes, for TLS) `to`, until
/// EOF, then shuts `to` down (a TLS close_notify, then the socket's write side). A traffic
/// limit is paid before writing what was read. A TLS peer that closes its socket without a
/// close_notify ends its direction like an EOF: the SOCKS payload has its own framing.
///
/// The buffer starts at [`SMALL`] and grows to `largest` once a read fills it (what is read
/// is written at once either way).
async fn copy_direction<R, W>(
    mut from: R,
    mut to: W,
    meter: Meter<'_>,
    largest: usize,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limit = meter.limit();
    let mut buf = vec![0u8; SMALL.min(largest)];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return match to.shutdown().await {
                Ok(()) => Ok(total),
                Err(e) if e.kind() == ErrorKind::NotConnected => Ok(total),
                Err(e) => Err(e),
            };
        }
        let chunk = buf.get(..n).unwrap_or_default();
        match limit {
            None => to.write_all(chunk).await?,
            Some(limit) => {
                let mut sent = 0;
                while sent < n {
                    let granted = limit.grant(n - sent).await?;
                    let part = chunk.get(sent..sent + granted).unwrap_or_default();
                    to.write_all(part).await?;
                    limit.used(granted, part.len());
                    sent += part.len().max(1);
                }
            }
        }
        to.flush().await?;
        total += n as u64;
        meter.add(n);
        if n == buf.len() && buf.len() < largest {
            buf = vec![0u8; largest];
        }
    }
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

/// When data last moved and how much, shared by both directions (for the idle timeout), and
/// the session's traffic limits.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When data last moved, on the process clock ([`crate::clock`], milliseconds): an
    /// absolute time, so that no start time needs storing.
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Kept here rather than passed to each direction: an unlimited session's relay then
    /// holds one word for them, not one per direction and call level.
    limits: Option<Box<SessionLimits>>,
}

impl Activity {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_limits(None)
    }

    pub(crate) fn with_limits(limits: Option<Box<SessionLimits>>) -> Self {
        Self {
            last_ms: AtomicU64::new(clock::now().as_millis()),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            limits,
        }
    }

    pub(crate) fn meter<'a>(&'a self, counter: &'a AtomicU64) -> Meter<'a> {
        Meter {
            activity: self,
            counter,
        }
    }

    /// The bytes moved so far, as totals of a relay the idle timeout `idle` ended (logged).
    fn idle_ended(&self, idle: Duration) -> (u64, u64) {
        let up = self.up.load(Ordering::Relaxed);
        let down = self.down.load(Ordering::Relaxed);
        tracing::info!(up, down, "idle timeout: no data for {}s", idle.as_secs());
        (up, down)
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = socksgate_core::Instant::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = clock::deadline(last) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One direction's view of the [`Activity`]: its byte counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meter<'a> {
    activity: &'a Activity,
    /// `activity.up` or `activity.down`.
    counter: &'a AtomicU64,
}

impl<'a> Meter<'a> {
    /// This direction's traffic limit; `None` for an unlimited session (one branch).
    pub(crate) fn limit(&self) -> Option<&'a DirectionLimit> {
        let limits = self.activity.limits.as_deref()?;
        if std::ptr::eq(self.counter, &self.activity.up) {
            limits.up.as_ref()
        } else {
            limits.down.as_ref()
        }
    }

    /// Records `n` bytes written by this direction.
    pub(crate) fn add(&self, n: usize) {
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        self.activity
            .last_ms
            .store(clock::now().as_millis(), Ordering::Relaxed);
    }
}

/// One direction, by `mode`; `meter` is told about every chunk. A direction with a traffic
/// limit runs [`direction_limited`]: the one branch unlimited sessions pay.
async fn direction(
    mode: Mode,
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    meter: Meter<'_>,
) -> std::io::Result<u64> {
    if let Some(limit) = meter.limit() {
        return Box::pin(direction_limited(mode, from, to, meter, limit)).await;
    }
    #[cfg(target_os = "linux")]
    if mode == Mode::Auto {
        let mut from = from;
        let spliced = splice::pump(&mut from, to.as_ref(), meter).await;
        return after_splice(spliced, from, to, meter, &Unpaced).await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mode;
    pump(from, to, meter, &Unpaced).await
}

/// Ends a direction that splice moved: passes its EOF on, or goes on with the buffered
/// [`pump`] where splice cannot be used for these sockets.
#[cfg(target_os = "linux")]
async fn after_splice<P: Pace>(
    spliced: splice::Outcome,
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    meter: Meter<'_>,
    pace: &P,
) -> std::io::Result<u64> {
    match spliced {
        splice::Outcome::Done(moved) => {
            shutdown(to).await?;
            Ok(moved.total)
        }
        splice::Outcome::Failed(e) => Err(e),
        splice::Outcome::Unsupported(moved) => Ok(moved.total + pump(from, to, meter, pace).await?),
    }
}

/// Passes EOF on as a half-close. The peer may already be gone.
async fn shutdown(mut to: WriteHalf<'_>) -> std::io::Result<()> {
    match to.shutdown().await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(()),
        Err(e) => Err(e),
    }
}

/// How a [`pump`] paces its reads: not at all ([`Unpaced`]), or by a traffic limit's grants.
/// Each is a `pump` of its own, so an unlimited direction carries no limit state or branch.
trait Pace {
    /// How many of `want` bytes the next read may take, waiting for tokens if need be.
    async fn take(&self, want: usize) -> std::io::Result<usize>;
    /// `moved` of the `granted` bytes were read; the rest are given back.
    fn settle(&self, granted: usize, moved: usize);
}

/// Reads as much as there is room for.
struct Unpaced;

impl Pace for Unpaced {
    async fn take(&self, want: usize) -> std::io::Result<usize> {
        Ok(want)
    }
    fn settle(&self, _granted: usize, _moved: usize) {}
}

impl Pace for DirectionLimit {
    async fn take(&self, want: usize) -> std::io::Result<usize> {
        self.grant(want).await
    }
    fn settle(&self, granted: usize, moved: usize) {
        self.used(granted, moved);
    }
}

/// Copies `from` to `to` until EOF, each read as large as `pace` grants, then shuts down
/// `to`'s write side.
async fn pump<P: Pace>(
    from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    meter: Meter<'_>,
    pace: &P,
) -> std::io::Result<u64> {
    let source: &TcpStream = from.as_ref();
    let mut size = SMALL;
    let mut total = 0u64;
    let mut turn = Turn::default();
    loop {
        turn.waiting();
        source.readable().await?;
        // Only now that there is data is the buffer allocated (it is dropped when drained)
        // and are tokens taken (an idle session holds none).
        let mut buf = vec![0u8; size];
        loop {
            let granted = pace.take(buf.len()).await?;
            let read = source.try_read(buf.get_mut(..granted).unwrap_or_default());
            pace.settle(granted, *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    shutdown(to).await?;
                    return Ok(total);
                }
                Ok(n) => {
                    to.write_all(buf.get(..n).unwrap_or_default()).await?;
                    total += n as u64;
                    meter.add(n);
                    if turn.over() {
                        tokio::task::yield_now().await;
                    }
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

/// [`direction`] under a traffic limit (boxed by the caller, so that unlimited sessions do
/// not carry its state).
async fn direction_limited(
    mode: Mode,
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    meter: Meter<'_>,
    limit: &DirectionLimit,
) -> std::io::Result<u64> {
    #[cfg(target_os = "linux")]
    if mode == Mode::Auto {
        let mut from = from;
        let spliced = splice::pump_limited(&mut from, to.as_ref(), meter, limit).await;
        return after_splice(spliced, from, to, meter, limit).await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mode;
    pump(from, to, meter, limit).await
}

/// A connected pair of loopback sockets, for the relay's and splice's tests.
#[cfg(test)]
pub(crate) async fn pair() -> (TcpStream, TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::io::AsyncReadExt;

    use super::*;

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

    /// A session limited to 2 MB/s each way with a 64 KB burst.
    fn limited() -> Option<Box<SessionLimits>> {
        let text = "[[traffic]]\nper = \"session\"\nup = \"2M\"\ndown = \"2M\"\nburst = \"64K\"\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        crate::traffic::session_limits(
            &config.traffic_rules,
            &crate::traffic::Buckets::default(),
            &Arc::new(crate::metrics::Metrics::default()),
            None,
            "127.0.0.1".parse().unwrap(),
        )
    }

    /// Reads `from` for 5 s from its first byte: bytes per second.
    async fn rate_over_five_seconds(mut from: impl AsyncRead + Unpin) -> f64 {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut started = None;
        loop {
            let n = from.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            let t0 = *started.get_or_insert_with(Instant::now);
            total += n as u64;
            if t0.elapsed() >= Duration::from_secs(5) {
                return total as f64 / t0.elapsed().as_secs_f64();
            }
        }
    }

    /// Writes zeros to `to` until it fails.
    async fn flood(mut to: impl AsyncWrite + Unpin) {
        let zeros = vec![0u8; 64 * 1024];
        while to.write_all(&zeros).await.is_ok() {}
    }

    /// How long `limited()`'s bucket lasts its waiters past their wake-up: a grant waits for a
    /// quarter of the 64 KB burst, so the other 48 KB (24 ms at 2 MB/s) fill while a woken
    /// relay waits for its worker; tokens that arrive later are lost.
    const SLACK: Duration = Duration::from_millis(24);

    /// Sums, in µs into `starved`, how much later than [`SLACK`] (plus the timer's 1 ms
    /// resolution) this runtime ran a task whose 1 ms timer had fired: the time a loaded
    /// machine kept the runtime's workers off the CPU, during which a limited relay's tokens
    /// overflowed its bucket.
    async fn starvation(starved: Arc<AtomicU64>) {
        loop {
            let asked = Instant::now();
            tokio::time::sleep(Duration::from_millis(1)).await;
            let late = asked
                .elapsed()
                .saturating_sub(SLACK + Duration::from_millis(2));
            starved.fetch_add(
                u64::try_from(late.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Both directions of a limited relay, in `mode`, each measured over 5 s, stay within
    /// 10 % of the limit. Below it, the share of the 5 s that the machine kept the runtime
    /// off the CPU beyond the bucket's slack ([`starvation`]) is allowed on top: those
    /// tokens were lost to the machine's load, not to the relay.
    async fn limited_relay_keeps_the_rate(mode: Mode) {
        let starved = Arc::new(AtomicU64::new(0));
        let watch = tokio::spawn(starvation(Arc::clone(&starved)));
        let (client, mut c_in) = pair().await;
        let (mut u_out, server) = pair().await;
        let relay = tokio::spawn(async move {
            relay_limited(mode, None, limited(), &mut c_in, &mut u_out, b"").await
        });
        let (client_rd, client_wr) = client.into_split();
        let (server_rd, server_wr) = server.into_split();
        let up = tokio::spawn(rate_over_five_seconds(server_rd));
        let down = tokio::spawn(rate_over_five_seconds(client_rd));
        let floods = (
            tokio::spawn(flood(client_wr)),
            tokio::spawn(flood(server_wr)),
        );
        let rates = [("up", up.await.unwrap()), ("down", down.await.unwrap())];
        watch.abort();
        let lost = Duration::from_micros(starved.load(Ordering::Relaxed)).as_secs_f64() / 5.0;
        for (what, rate) in rates {
            let off = (rate - 2e6) / 2e6;
            eprintln!(
                "{mode:?} {what}: {rate:.0} B/s, {:+.1} %, starved {:.1} %",
                off * 100.0,
                lost * 100.0
            );
            assert!(
                (-0.10 - lost..=0.10).contains(&off),
                "{mode:?} {what}: {rate:.0} B/s, {:+.1} % (the machine starved the runtime for \
                 {:.1} % of the time)",
                off * 100.0,
                lost * 100.0
            );
        }
        relay.abort();
        floods.0.abort();
        floods.1.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limited_copy_relay_keeps_the_rate() {
        limited_relay_keeps_the_rate(Mode::Copy).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limited_splice_relay_keeps_the_rate() {
        limited_relay_keeps_the_rate(Mode::Auto).await;
    }

    mod auto {
        use super::*;
        suite!(Mode::Auto);
    }

    mod copy {
        use super::*;
        suite!(Mode::Copy);
    }
}
