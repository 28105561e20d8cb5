//! The threads that run UDP relays: one single-threaded runtime per core, each association
//! served whole by one of them.
//!
//! A UDP association wakes for every datagram, and on the session runtime (multi-threaded,
//! work-stealing) every wake-up paid for the scheduler's bookkeeping between tasks — idle
//! and searching states taken under a lock, a poll-time average with a `powf` per batch,
//! four clock reads per park — and for entering and leaving the session's `tracing` span.
//! Measured on one association's round trips that was most of the relay's user time, which
//! was the whole of its CPU gap to hev-socks5-server. Here an association's sockets, its
//! timer and its task live on one thread that parks in its own `epoll_wait`, as a
//! thread-per-core server's do. Associations are handed out round-robin; the session task
//! stays on the session runtime and keeps watching the control connection.
//!
//! Busy polling (`[udp] busy_poll`, off by default): a wake-up from `epoll_wait` costs more
//! than the relaying of a datagram, and most on a VM, where a halted vCPU takes tens of µs
//! to run again. An association reports each of its wake-ups ([`busy_poll`]) with its
//! window; until that long has passed without another, its thread polls its sockets
//! without sleeping (a task that yields, so the runtime checks for events with a zero
//! timeout instead of parking), then parks again. The report is a thread-local counter, no
//! system call and no traffic between threads.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Runs `task` on one of the UDP threads (started on first use), or on the caller's runtime
/// if none could be started.
pub(crate) fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static THREADS: OnceLock<Vec<Handle>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let threads = THREADS.get_or_init(start);
    let next = NEXT.fetch_add(1, Ordering::Relaxed);
    match threads.get(next % threads.len().max(1)) {
        Some(handle) => handle.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Starts one thread per available core, each driving a single-threaded runtime forever.
fn start() -> Vec<Handle> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (0..cores)
        .filter_map(|i| {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("udp: cannot start a relay runtime: {e}");
                    return None;
                }
            };
            let handle = runtime.handle().clone();
            handle.spawn(keep_awake());
            match std::thread::Builder::new()
                .name(format!("socksgate-udp-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
            {
                Ok(_) => Some(handle),
                Err(e) => {
                    tracing::warn!("udp: cannot start a relay thread: {e}");
                    None
                }
            }
        })
        .collect()
}

/// A UDP thread's busy-polling state, touched only on that thread.
struct Busy {
    /// Wake-ups reported by the thread's associations (wrapping).
    reports: Cell<u64>,
    /// The window of the last report.
    window: Cell<Duration>,
    /// [`keep_awake`]'s waker while it waits for a report.
    waiting: Cell<Option<Waker>>,
}

thread_local! {
    static BUSY: Busy = const {
        Busy {
            reports: Cell::new(0),
            window: Cell::new(Duration::ZERO),
            waiting: Cell::new(None),
        }
    };
}

/// Reports that an association on this thread woke up: the thread keeps polling without
/// sleeping until `window` has passed without another report. A zero window (busy polling
/// off) costs nothing; off a UDP thread it is recorded and never acted on.
pub(crate) fn busy_poll(window: Duration) {
    if window.is_zero() {
        return;
    }
    BUSY.with(|b| {
        b.reports.set(b.reports.get().wrapping_add(1));
        b.window.set(window);
        // A task on this thread: woken into the local queue, no system call.
        if let Some(waker) = b.waiting.take() {
            waker.wake();
        }
    });
}

/// Runs forever on each UDP thread: parked (no CPU) until an association reports a wake-up
/// with a window, then yielding to the runtime — each yield is a zero-timeout poll of the
/// sockets — and to the kernel's scheduler until the window has passed without a report.
async fn keep_awake() {
    let mut seen = 0u64;
    loop {
        std::future::poll_fn(|cx| {
            BUSY.with(|b| {
                if b.reports.get() == seen {
                    b.waiting.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
        })
        .await;
        let mut since = Instant::now();
        loop {
            let (reports, window) = BUSY.with(|b| (b.reports.get(), b.window.get()));
            if reports != seen {
                seen = reports;
                since = Instant::now();
            } else if since.elapsed() >= window {
                break;
            }
            // Where every core is taken, hand this one to a thread that waits for it — often
            // the client or server whose datagram this thread is polling for — rather than
            // hold it for a whole time slice; on an idle core this returns at once.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_udp_threads_in_turn() {
        let mut names = Vec::new();
        for _ in 0..4 {
            let name = spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            names.push(name.unwrap_or_default());
        }
        assert!(
            names.iter().all(|n| n.starts_with("socksgate-udp-")),
            "{names:?}"
        );
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if cores > 1 {
            assert_ne!(names[0], names[1], "round-robin: {names:?}");
        }
    }
}
