//! BIND between its two replies.

use socksgate_core::Target;
use socksgate_core::client::Client;

use super::io::Io;
use super::{Error, SocksStream, handshake};

/// A BIND the proxy has answered once: it listens at [`listen_addr`](Self::listen_addr)
/// for the peer, and [`accept`](Self::accept) waits for the second reply. Made by
/// [`Connector::bind`](super::Connector::bind); dropping it closes the request.
#[derive(Debug)]
pub struct BindListener {
    io: Io,
    client: Client,
    proxy: String,
    listening: Target,
    pending: Vec<u8>,
}

impl BindListener {
    pub(super) fn new(
        io: Io,
        client: Client,
        proxy: String,
        listening: Target,
        pending: Vec<u8>,
    ) -> Self {
        Self {
            io,
            client,
            proxy,
            listening,
            pending,
        }
    }

    /// The first reply's address: where the proxy listens for the peer (an unspecified
    /// address is replaced by the proxy's own, as RFC 1928 §6 asks).
    pub fn listen_addr(&self) -> &Target {
        &self.listening
    }

    /// Waits for the second reply: the peer's connection, as a stream, and the peer's
    /// address. A refusal (the wrong peer connected, the proxy's timeout) is an
    /// [`Error::Handshake`] at [`Stage::BindPeer`](super::Stage::BindPeer). Unbounded: wrap
    /// in `tokio::time::timeout` to limit the wait.
    pub async fn accept(mut self) -> Result<(SocksStream, Target), Error> {
        let (peer, early) = handshake::drive(
            &mut self.client,
            &self.proxy,
            &mut self.io,
            self.pending,
            false,
        )
        .await?;
        Ok((SocksStream::new(self.io, early, peer.clone()), peer))
    }
}
