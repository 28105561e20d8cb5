//! Starting the server in-process for the integration tests, and the echo servers behind it.

use std::net::SocketAddr;
use std::sync::Arc;

use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate::server;
use socksgate::shared::Shared;
use socksgate::users::{self, Users};

/// A server on a free loopback port, serving until the test's runtime ends.
#[allow(dead_code)] // each test crate uses its own part
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

/// Starts a server with `config`, the `users` (name, password) if any, and `resolver`.
pub(crate) async fn start_with(
    config: Config,
    users: Option<&[(&str, &str)]>,
    resolver: Resolver,
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let users = users.map(|list| {
        let path = dir.path().join("users");
        for (u, p) in list {
            users::set_password(&path, u, p.as_bytes()).unwrap();
        }
        Arc::new(Users::load(&path).unwrap())
    });
    let listener = server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared::new(config, users, resolver).unwrap());
    tokio::spawn(server::serve(
        vec![listener],
        Arc::clone(&shared),
        std::future::pending(),
    ));
    Proxy {
        addr,
        shared,
        _dir: dir,
    }
}

/// A TCP echo server on loopback for many connections, each echoed until the client closes.
#[allow(dead_code)] // each test crate uses its own part
pub(crate) async fn tcp_echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A UDP echo server on loopback, for datagrams up to the largest UDP payload.
#[allow(dead_code)] // each test crate uses its own part
pub(crate) async fn udp_echo() -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}
