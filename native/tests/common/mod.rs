//! Starting the server in-process for the integration tests.

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
