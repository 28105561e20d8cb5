//! Listeners and the accept loop: one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::session::{self, Shared};

/// Opens a listener. IPv6 listeners are IPv6-only, so `0.0.0.0:1080` and `[::]:1080` can
/// both be configured; SO_REUSEADDR lets a restart rebind at once.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on every listener until `shutdown` completes.
pub async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let mut tasks = JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, Arc::clone(&shared)));
    }
    shutdown.await;
    info!("shutting down");
    tasks.abort_all();
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(session::handle(stream, peer, Arc::clone(&shared)));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
