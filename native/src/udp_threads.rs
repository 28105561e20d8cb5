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

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

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
