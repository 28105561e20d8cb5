//! Bidirectional relay between two connected TCP sockets, and their orderly close.
//!
//! One loop moves bytes in both directions through a single scratch buffer, so a session
//! costs one buffer here, not one per direction. A direction ends when its source reaches
//! EOF: the FIN is passed on with `close()` on the destination (half-close), and the other
//! direction keeps flowing until it ends too.

use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::{Context, Poll};

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::{State, TcpSocket};
use embassy_time::{Duration, Instant, Timer, with_timeout};

use crate::monitor::LiveTraffic;

/// Scratch buffer per session for the relay.
pub(crate) const RELAY_CHUNK: usize = 1024;

/// How a relay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RelayEnd {
    /// Both sides sent FIN; every byte was passed on.
    Finished,
    /// No byte moved for the idle timeout.
    Idle,
    /// A socket was reset or timed out.
    Reset,
}

/// Bytes relayed each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Client to destination.
    pub(crate) up: u64,
    /// Destination to client.
    pub(crate) down: u64,
}

/// Progress of one direction.
enum Step {
    Moved(usize),
    Eof,
    Blocked,
    Reset,
}

/// Moves what is available from `src` to `dst` without waiting. `src_closed` tells whether
/// we already sent `src` our FIN (then a `Closed` state is the end of an orderly close, not a
/// reset).
async fn pump(
    src: &mut TcpSocket<'_>,
    dst: &mut TcpSocket<'_>,
    chunk: &mut [u8],
    src_closed: bool,
) -> Step {
    if src.can_recv() {
        let room = dst.send_capacity() - dst.send_queue();
        if room == 0 {
            return if dst.may_send() {
                Step::Blocked
            } else {
                Step::Reset
            };
        }
        let want = room.min(chunk.len());
        // Data is queued, so neither call waits.
        let Ok(n) = src.read(&mut chunk[..want]).await else {
            return Step::Reset;
        };
        match dst.write(&chunk[..n]).await {
            Ok(written) => Step::Moved(written),
            Err(_) => Step::Reset,
        }
    } else if src.may_recv() {
        Step::Blocked
    } else if src.state() == State::Closed && !src_closed {
        Step::Reset
    } else {
        Step::Eof
    }
}

/// Polls a fresh future once (the readiness futures of embassy-net only register a waker).
fn poll_once<F: Future>(future: F, cx: &mut Context<'_>) -> Poll<F::Output> {
    let mut future = pin!(future);
    future.as_mut().poll(cx)
}

/// Waits until `src` → `dst` can make progress: data and room, or EOF on `src`, or `dst`
/// unable to send. (`TcpSocket::wait_read_ready` alone never reports EOF, but every state
/// change wakes its waker, so the conditions are checked again on each poll.)
async fn ready(src: &TcpSocket<'_>, dst: &TcpSocket<'_>, done: bool) {
    if done {
        return core::future::pending().await;
    }
    poll_fn(|cx| {
        if src.can_recv() {
            if dst.may_send() {
                poll_once(dst.wait_write_ready(), cx)
            } else {
                Poll::Ready(())
            }
        } else if src.may_recv() {
            poll_once(src.wait_read_ready(), cx)
        } else {
            Poll::Ready(())
        }
    })
    .await
}

/// Relays until both directions reached EOF, a socket failed, or nothing moved for `idle`,
/// adding what it moved to `traffic` and publishing the totals to `live` as they grow.
pub(crate) async fn relay<const N: usize>(
    client: &mut TcpSocket<'_>,
    upstream: &mut TcpSocket<'_>,
    chunk: &mut [u8],
    idle: Duration,
    traffic: &mut Traffic,
    live: LiveTraffic<'_, N>,
) -> RelayEnd {
    let mut up_done = false;
    let mut down_done = false;
    let mut last = Instant::now();
    loop {
        let mut moved = false;
        if !up_done {
            match pump(client, upstream, chunk, down_done).await {
                Step::Moved(n) => {
                    moved = true;
                    traffic.up += n as u64;
                }
                Step::Eof => {
                    upstream.close();
                    up_done = true;
                }
                Step::Blocked => {}
                Step::Reset => return RelayEnd::Reset,
            }
        }
        if !down_done {
            match pump(upstream, client, chunk, up_done).await {
                Step::Moved(n) => {
                    moved = true;
                    traffic.down += n as u64;
                }
                Step::Eof => {
                    client.close();
                    down_done = true;
                }
                Step::Blocked => {}
                Step::Reset => return RelayEnd::Reset,
            }
        }
        if up_done && down_done {
            return RelayEnd::Finished;
        }
        if moved {
            last = Instant::now();
            // At most a chunk each way since the last publication.
            live.publish(traffic, last);
            continue;
        }
        match select3(
            ready(client, upstream, up_done),
            ready(upstream, client, down_done),
            Timer::at(last + idle),
        )
        .await
        {
            Either3::Third(()) => return RelayEnd::Idle,
            Either3::First(()) | Either3::Second(()) => {}
        }
    }
}

/// Closes `socket` the orderly way: FIN, wait until it is acknowledged and the peer's FIN
/// arrived (bounded by `timeout`), discarding late input; aborts only when that fails.
///
/// Dropping an open embassy-net socket removes it at once and the peer sees a reset, so
/// every socket goes through here before it is dropped.
pub(crate) async fn close(socket: &mut TcpSocket<'_>, timeout: Duration) {
    socket.close();
    let orderly = with_timeout(timeout, async {
        let _ = socket.flush().await;
        let mut sink = [0u8; 64];
        loop {
            match socket.state() {
                State::Closed | State::TimeWait => break,
                _ if socket.can_recv() => {
                    let _ = socket.read(&mut sink).await;
                }
                _ => {
                    // Waiting for the peer's FIN: wakes on FIN or data.
                    let _ = with_timeout(Duration::from_millis(50), socket.wait_read_ready()).await;
                }
            }
        }
    })
    .await;
    if orderly.is_err() {
        socket.abort();
        let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
    }
}
