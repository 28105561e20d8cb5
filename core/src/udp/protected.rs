//! UDP ASSOCIATE under GSS-API protection (RFC 1961 §5): the decisions a relay makes about a
//! protected datagram before and after the [`Association`] sees its plaintext.
//!
//! With integrity or confidentiality agreed, every datagram between the client and the relay
//! is one `VER=1 MTYP=3 LEN TOKEN` message whose token is one `gss_wrap` of the whole RFC 1928
//! UDP request header and data. The relay:
//!
//! 1. takes a datagram from the client-facing socket to [`client_token`]: a datagram from
//!    anyone but the association's client is dropped **before** it is unwrapped (a stranger
//!    costs no cryptography and cannot disturb the context's replay window), and one that is
//!    not exactly one encapsulated message is dropped as [`ProtectedDrop::Framing`];
//! 2. unwraps the token (the caller's GSS-API library, in place); a token that fails — its
//!    integrity check, a replay, a defective token — is dropped ([`ProtectedDrop::Unwrap`]);
//! 3. hands the plaintext to [`Association::handle_client_datagram`], which applies the same
//!    policy as to an unprotected datagram;
//! 4. wraps each datagram the association builds for the client and writes it with
//!    [`encapsulate_datagram`](crate::gssapi::encapsulate_datagram).
//!
//! A dropped datagram never ends the association: UDP may lose datagrams anyway, and a
//! forged or damaged one must not let a third party end someone else's association.
//! [`DropBursts`] says when a drop is worth a log line, so that a flood of bad datagrams
//! writes one line per burst, not one per datagram.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use super::association::{Association, Contacted};
use crate::gssapi::{GssapiError, decapsulate_datagram_mut};
use crate::time::Instant;

/// Why a protected datagram from the client's side was dropped before the association saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProtectedDrop {
    /// Not from the association's client: not unwrapped.
    Stranger,
    /// Not exactly one `MTYP=3` message (wrong version or type, the abort message, a length
    /// that does not match the datagram).
    Framing(GssapiError),
    /// The caller's unwrap failed (integrity, replay, a defective token).
    Unwrap,
}

impl fmt::Display for ProtectedDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stranger => f.write_str("protected datagram from a stranger"),
            Self::Framing(e) => write!(f, "protected datagram not one message: {e}"),
            Self::Unwrap => f.write_str("protected datagram failed to unwrap"),
        }
    }
}

/// The wrapped token of a datagram that arrived from `src` on a protected association's
/// client-facing socket, to be unwrapped in place; or why it is dropped unopened. Changes
/// nothing in the association: the datagram's plaintext goes to
/// [`Association::handle_client_datagram`] once unwrapped.
pub fn client_token<'d, C: Contacted, const R: usize>(
    association: &Association<C, R>,
    src: SocketAddr,
    datagram: &'d mut [u8],
) -> Result<&'d mut [u8], ProtectedDrop> {
    if !association.is_client(src) {
        return Err(ProtectedDrop::Stranger);
    }
    decapsulate_datagram_mut(datagram).map_err(ProtectedDrop::Framing)
}

/// A burst ends after this long without a drop.
pub const QUIET: Duration = Duration::from_secs(10);

/// What to do about one dropped datagram's log line ([`DropBursts::dropped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReport {
    /// The first drop of a burst: log it (and the summary of the burst before, if any).
    Log {
        /// The burst this drop closed (it was quiet for [`QUIET`]), when it dropped more than
        /// its first datagram.
        ended: Option<BurstSummary>,
    },
    /// A later drop of the same burst: count it only.
    Counted,
}

/// A finished burst of drops: how many were dropped and over how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BurstSummary {
    /// Datagrams dropped in the burst, the first (already logged) included.
    pub dropped: u64,
    /// From the first drop to the last.
    pub lasted: Duration,
}

/// One association's bursts of dropped datagrams: the first drop of a burst is logged, later
/// ones are counted until [`QUIET`] passes without a drop; the burst's size is logged then
/// (at the next drop) or when the association ends ([`finish`](Self::finish)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropBursts {
    open: Option<Burst>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Burst {
    dropped: u64,
    first: Instant,
    last: Instant,
}

impl Burst {
    fn summary(self) -> Option<BurstSummary> {
        (self.dropped > 1).then(|| BurstSummary {
            dropped: self.dropped,
            lasted: self.last.saturating_duration_since(self.first),
        })
    }
}

impl DropBursts {
    /// No burst yet.
    pub const fn new() -> Self {
        Self { open: None }
    }

    /// A datagram was dropped at `now`: whether to log it.
    pub fn dropped(&mut self, now: Instant) -> DropReport {
        match &mut self.open {
            Some(b) if now.saturating_duration_since(b.last) < QUIET => {
                b.dropped += 1;
                b.last = now;
                DropReport::Counted
            }
            open => {
                let ended = open.and_then(Burst::summary);
                *open = Some(Burst {
                    dropped: 1,
                    first: now,
                    last: now,
                });
                DropReport::Log { ended }
            }
        }
    }

    /// The association ends: the open burst's summary, when it dropped more than its first
    /// datagram.
    pub fn finish(&mut self) -> Option<BurstSummary> {
        self.open.take().and_then(Burst::summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Addr;
    use crate::gssapi::encapsulate_datagram;
    use crate::udp::PeerList;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn strangers_are_not_unwrapped_and_framing_is_checked() {
        let client: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let a = Association::<PeerList<4>, 1024>::new(
            client.ip(),
            Addr::Ip(client),
            None,
            PeerList::new(),
            Duration::from_secs(60),
            at(0),
        );
        let mut d = [0u8; 16];
        let n = encapsulate_datagram(b"wrapped", &mut d).unwrap();
        let other_port: SocketAddr = "192.0.2.10:4001".parse().unwrap();
        let other_ip: SocketAddr = "192.0.2.11:4000".parse().unwrap();
        for src in [other_port, other_ip] {
            assert_eq!(
                client_token(&a, src, &mut d[..n]),
                Err(ProtectedDrop::Stranger)
            );
        }
        assert_eq!(
            client_token(&a, client, &mut d[..n]).map(|t| t.to_vec()),
            Ok(b"wrapped".to_vec())
        );
        // One octet short, one too many: not one message.
        assert!(matches!(
            client_token(&a, client, &mut d[..n - 1]),
            Err(ProtectedDrop::Framing(_))
        ));
        assert!(matches!(
            client_token(&a, client, &mut d[..n + 1]),
            Err(ProtectedDrop::Framing(_))
        ));
        // An unprotected SOCKS UDP header is not a §5 message.
        let mut plain = [0u8, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'x'];
        assert!(matches!(
            client_token(&a, client, &mut plain),
            Err(ProtectedDrop::Framing(_))
        ));
        // The association learnt nothing from any of it: a port-less request still has no
        // client port.
        let b = Association::<PeerList<4>, 1024>::new(
            client.ip(),
            Addr::Ip("0.0.0.0:0".parse().unwrap()),
            None,
            PeerList::new(),
            Duration::from_secs(60),
            at(0),
        );
        assert!(client_token(&b, client, &mut d[..n]).is_ok());
        assert_eq!(b.client(), None);
    }

    #[test]
    fn one_line_per_burst() {
        let mut b = DropBursts::new();
        assert_eq!(b.finish(), None);
        assert_eq!(b.dropped(at(0)), DropReport::Log { ended: None });
        for ms in [100, 5_000, 14_000] {
            assert_eq!(b.dropped(at(ms)), DropReport::Counted);
        }
        // Quiet for 10 s: the next drop starts a burst and reports the last one.
        assert_eq!(
            b.dropped(at(24_000)),
            DropReport::Log {
                ended: Some(BurstSummary {
                    dropped: 4,
                    lasted: Duration::from_secs(14)
                })
            }
        );
        // A burst of one has nothing to add to its line.
        assert_eq!(b.dropped(at(40_000)), DropReport::Log { ended: None });
        assert_eq!(b.finish(), None);
        b.dropped(at(50_000));
        b.dropped(at(50_001));
        assert_eq!(
            b.finish(),
            Some(BurstSummary {
                dropped: 2,
                lasted: Duration::from_millis(1)
            })
        );
    }
}
