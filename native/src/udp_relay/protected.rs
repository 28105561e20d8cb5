//! The relay's protected datagram path (RFC 1961 §5), taken only by associations whose
//! control connection agreed integrity or confidentiality: the client's datagrams are
//! unwrapped before the association sees them, its datagrams to the client are wrapped.
//!
//! Which datagrams are unwrapped and which are dropped is the core's
//! ([`socksgate_core::udp::protected`]): strangers are dropped unopened, a datagram that is
//! not one message or fails to unwrap is dropped, counted in
//! `socksgate_gssapi_datagrams_dropped_total{cause}` and logged once per burst; the
//! association goes on.

use std::net::SocketAddr;

use socksgate_core::udp::protected::{DropBursts, DropReport, ProtectedDrop, client_token};
use tracing::{debug, warn};

use super::{Association, Relay};
use crate::clock;
use crate::metrics::Metrics;
use crate::protected::Protection;
use crate::protected_datagram::{DatagramError, DatagramProtection};

/// One association's protection and what its drops need.
pub(super) struct Protected<'a> {
    datagrams: DatagramProtection,
    metrics: &'a Metrics,
    bursts: DropBursts,
    /// A client's datagram, copied to be unwrapped in place.
    opened: Vec<u8>,
    /// A datagram for the client, wrapped and framed.
    sealed: Vec<u8>,
}

impl<'a> Protected<'a> {
    pub(super) fn new(protection: Protection, metrics: &'a Metrics) -> Self {
        Self {
            datagrams: DatagramProtection::new(protection),
            metrics,
            bursts: DropBursts::new(),
            opened: Vec::new(),
            sealed: Vec::new(),
        }
    }

    /// The plaintext of a client's `datagram` from `src`, or `None` when it is dropped.
    fn open(
        &mut self,
        association: &Association,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Option<&[u8]> {
        self.opened.clear();
        self.opened.extend_from_slice(datagram);
        let token = match client_token(association, src, &mut self.opened) {
            Ok(token) => token,
            Err(ProtectedDrop::Stranger) => {
                debug!(%src, "udp: {}", ProtectedDrop::Stranger);
                return None;
            }
            Err(ProtectedDrop::Framing(e)) => {
                self.dropped(src, &DatagramError::Framing(e));
                return None;
            }
            Err(other) => {
                debug!(%src, "udp: {other}");
                return None;
            }
        };
        match self.datagrams.open_token(token) {
            // `token` borrows `opened` from its fifth octet.
            Ok(range) => self.opened.get(range.start + 4..range.end + 4),
            Err(e) => {
                self.dropped(src, &e);
                None
            }
        }
    }

    /// Wraps a datagram for the client; `None` (logged) when it cannot be.
    fn seal(&mut self, plain: &[u8]) -> Option<&[u8]> {
        match self.datagrams.seal(plain, &mut self.sealed) {
            Ok(()) => Some(&self.sealed),
            Err(e) => {
                debug!("udp: to client: cannot wrap: {e}");
                None
            }
        }
    }

    /// Counts a client's datagram that failed, and logs it when it starts a burst.
    fn dropped(&mut self, src: SocketAddr, e: &DatagramError) {
        self.metrics.gssapi_datagram_dropped(e.cause());
        if let DropReport::Log { ended } = self.bursts.dropped(clock::now()) {
            if let Some(b) = ended {
                warn!(
                    dropped = b.dropped,
                    "udp: an earlier burst of protected datagrams dropped, over {:?}", b.lasted
                );
            }
            warn!(%src, cause = e.cause(), "udp: protected datagram dropped (later ones of this burst are counted only): {e}");
        }
    }

    /// The association ends: the last burst's size, if it was more than one datagram.
    pub(super) fn finish(&mut self) {
        if let Some(b) = self.bursts.finish() {
            warn!(
                dropped = b.dropped,
                "udp: a burst of protected datagrams dropped, over {:?}", b.lasted
            );
        }
    }
}

impl Relay<'_> {
    /// [`Relay::forward_up`] for a protected association: the datagram is opened first.
    pub(super) async fn forward_up_protected(&mut self, src: SocketAddr, datagram: &[u8]) {
        let Some(mut protected) = self.protected.take() else {
            return;
        };
        if let Some(plain) = protected.open(&self.association, src, datagram) {
            self.forward_up(src, plain).await;
        }
        self.protected = Some(protected);
    }

    /// The datagram to send to the client for `plain`, which the association built: `plain`
    /// itself, or wrapped when the association is protected (`None`: not sendable).
    pub(super) fn to_client_datagram<'d>(
        protected: Option<&'d mut Protected<'_>>,
        plain: &'d [u8],
    ) -> Option<&'d [u8]> {
        match protected {
            None => Some(plain),
            Some(p) => p.seal(plain),
        }
    }
}
