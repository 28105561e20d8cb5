//! Why the outbound side of a request failed, and the one table of reply codes for it.
//!
//! Drivers classify their own errors (an `io::Error`, an embassy-net `ConnectError`, a
//! resolver's answer) into a [`Failure`] and hand it to the [session](crate::session); the
//! reply code is chosen here and nowhere else. SOCKS4 has a single failure code (CD 91), to
//! which every [`ReplyCode`] but success converts.
//!
//! | cause | [`Failure`] | SOCKS5 REP |
//! |---|---|---|
//! | refused by the destination (ECONNREFUSED, a reset) | [`Refused`](Failure::Refused) | 5 connection refused |
//! | no route to the network (ENETUNREACH, ENETDOWN) | [`NetworkUnreachable`](Failure::NetworkUnreachable) | 3 network unreachable |
//! | no route to the host (EHOSTUNREACH, EHOSTDOWN) | [`HostUnreachable`](Failure::HostUnreachable) | 4 host unreachable |
//! | the name does not resolve (NXDOMAIN, no A/AAAA) | [`NameNotFound`](Failure::NameNotFound) | 4 host unreachable |
//! | the name has no address of the family in use ([`family`](crate::family)) | [`NoAddressInFamily`](Failure::NoAddressInFamily) | 4 host unreachable |
//! | unusable destination address (EADDRNOTAVAIL) | [`AddressUnusable`](Failure::AddressUnusable) | 4 host unreachable |
//! | resolving or connecting timed out | [`TimedOut`](Failure::TimedOut) | 6 TTL expired |
//! | a local firewall refused (EACCES, EPERM) | [`PermissionDenied`](Failure::PermissionDenied) | 2 not allowed |
//! | the resolver could not answer at all | [`ResolverFailed`](Failure::ResolverFailed) | 1 general failure |
//! | anything else (EMFILE, …) | [`Other`](Failure::Other) | 1 general failure |
//! | a per-user session-rate limit refused the request | [`RateLimited`](Failure::RateLimited) | 2 not allowed |
//! | an upstream SOCKS proxy refused with REP *n* | [`Upstream`](Failure::Upstream) | *n*, passed on (1 for a nonsensical 0) |
//! | the user's traffic quota is spent | [`QuotaSpent`](Failure::QuotaSpent) | 2 not allowed by ruleset |
//!
//! No reply code exists for DNS failures; like Dante and most peers, a name that does not
//! resolve is "host unreachable", while a resolver that cannot answer is a failure of the
//! proxy itself. Access rules are not failures: a denial is always REP 2.

use core::fmt;

use crate::wire::ReplyCode;

/// Why resolving, connecting, listening or opening a relay failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Failure {
    /// The destination refused (or reset) the connection.
    Refused,
    /// No route to the destination's network.
    NetworkUnreachable,
    /// No route to the destination host.
    HostUnreachable,
    /// The name has no address, or does not exist.
    NameNotFound,
    /// The name has addresses, but none of the [address family](crate::family) in use.
    NoAddressInFamily,
    /// A session-rate limit refused the request (the driver's decision, made once the
    /// request and its user are known).
    RateLimited,
    /// The destination address cannot be used from here.
    AddressUnusable,
    /// Resolving or connecting took too long.
    TimedOut,
    /// The host's own firewall or permissions refused.
    PermissionDenied,
    /// The resolver could not answer (no server reachable, SERVFAIL, …).
    ResolverFailed,
    /// Any other local failure (out of sockets, out of memory, …).
    Other,
    /// The upstream SOCKS proxy a request was chained through refused with this code.
    Upstream(ReplyCode),
    /// The user's traffic quota for this period is spent ([`traffic`](crate::traffic)).
    QuotaSpent,
}

impl Failure {
    /// The SOCKS5 reply code for this failure (see the [module table](self)).
    pub const fn reply(self) -> ReplyCode {
        match self {
            Self::Refused => ReplyCode::ConnectionRefused,
            Self::NetworkUnreachable => ReplyCode::NetworkUnreachable,
            Self::HostUnreachable
            | Self::NameNotFound
            | Self::NoAddressInFamily
            | Self::AddressUnusable => ReplyCode::HostUnreachable,
            Self::TimedOut => ReplyCode::TtlExpired,
            Self::PermissionDenied | Self::QuotaSpent | Self::RateLimited => ReplyCode::NotAllowed,
            Self::ResolverFailed | Self::Other | Self::Upstream(ReplyCode::Succeeded) => {
                ReplyCode::GeneralFailure
            }
            Self::Upstream(code) => code,
        }
    }

    /// Of two failures of attempts at the same destination (one per address), the one worth
    /// reporting: a destination that answered (refused) tells more than a missing route,
    /// which tells more than a timeout.
    #[must_use]
    pub const fn most_telling(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    const fn rank(self) -> u8 {
        match self {
            Self::Refused => 4,
            Self::HostUnreachable
            | Self::NetworkUnreachable
            | Self::AddressUnusable
            | Self::NameNotFound
            | Self::NoAddressInFamily => 3,
            Self::PermissionDenied | Self::RateLimited => 2,
            Self::TimedOut => 1,
            Self::ResolverFailed | Self::Other | Self::Upstream(_) | Self::QuotaSpent => 0,
        }
    }

    /// A short lower-case description, as logs show it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "connection refused",
            Self::NetworkUnreachable => "network unreachable",
            Self::HostUnreachable => "host unreachable",
            Self::NameNotFound => "name not found",
            Self::AddressUnusable => "address not usable",
            Self::NoAddressInFamily => "no address of the address family in use",
            Self::RateLimited => "session rate exceeded",
            Self::TimedOut => "timed out",
            Self::PermissionDenied => "permission denied",
            Self::ResolverFailed => "resolver failed",
            Self::Other => "failed",
            Self::Upstream(_) => "refused by the upstream proxy",
            Self::QuotaSpent => "traffic quota spent",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_reply_table() {
        let table = [
            (Failure::Refused, 5),
            (Failure::NetworkUnreachable, 3),
            (Failure::HostUnreachable, 4),
            (Failure::NameNotFound, 4),
            (Failure::AddressUnusable, 4),
            (Failure::NoAddressInFamily, 4),
            (Failure::RateLimited, 2),
            (Failure::TimedOut, 6),
            (Failure::PermissionDenied, 2),
            (Failure::ResolverFailed, 1),
            (Failure::Other, 1),
            (Failure::Upstream(ReplyCode::HostUnreachable), 4),
            (Failure::Upstream(ReplyCode::Succeeded), 1),
            (Failure::QuotaSpent, 2),
        ];
        for (failure, rep) in table {
            assert_eq!(u8::from(failure.reply()), rep, "{failure:?}");
        }
    }

    #[test]
    fn test_most_telling() {
        use Failure::*;
        assert_eq!(TimedOut.most_telling(Refused), Refused);
        assert_eq!(Refused.most_telling(TimedOut), Refused);
        assert_eq!(TimedOut.most_telling(HostUnreachable), HostUnreachable);
        assert_eq!(Other.most_telling(TimedOut), TimedOut);
        // Ties keep the first.
        assert_eq!(
            HostUnreachable.most_telling(NetworkUnreachable),
            HostUnreachable
        );
    }
}
