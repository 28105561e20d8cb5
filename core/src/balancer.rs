//! Connections that arrive through a load balancer speaking the PROXY protocol: who may put a
//! [PROXY header](crate::wire::proxy) in front of a connection, and which client the
//! connection then stands for.
//!
//! A listener that takes PROXY headers trusts some source networks (the balancers). A header
//! from any other source would let a client claim any address, so it closes the connection;
//! so does a missing header where one is required. The client a header names is the
//! session's client everywhere: rules, limits, the login throttle, logs and the UDP
//! ASSOCIATE client check.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::rules::Cidr;
use crate::wire::proxy::ProxyHeader;

/// A listener's PROXY protocol settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BalancerTrust<'a> {
    /// The balancers' networks: the only sources whose PROXY headers are believed.
    pub trusted: &'a [Cidr],
    /// Every connection must come from a trusted source with a header (a listener only
    /// the balancers reach). Otherwise trusted sources may send one, and other sources
    /// connect directly without one.
    pub required: bool,
}

/// What a connection from a given source must begin with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Expectation {
    /// A PROXY header, then the SOCKS greeting.
    Header,
    /// A PROXY header or directly the SOCKS greeting.
    Optional,
    /// The SOCKS greeting: a header is refused.
    NoHeader,
    /// Nothing: the source may not connect to this listener.
    Refused,
}

/// Why a connection is closed before its SOCKS greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BalancerRefusal {
    /// The listener requires a header, and the source is not a trusted balancer.
    UntrustedSource,
    /// A PROXY header from a source that is not a trusted balancer.
    UntrustedHeader,
    /// No PROXY header where one is required.
    MissingHeader,
}

impl fmt::Display for BalancerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UntrustedSource => {
                "source is not a trusted balancer of this PROXY protocol listener"
            }
            Self::UntrustedHeader => "PROXY protocol header from a source that is not trusted",
            Self::MissingHeader => "no PROXY protocol header from a trusted balancer",
        })
    }
}

impl BalancerTrust<'_> {
    /// What a connection from `source` must begin with.
    pub fn expect(&self, source: IpAddr) -> Expectation {
        let trusted = self.trusted.iter().any(|net| net.contains(source));
        match (trusted, self.required) {
            (true, true) => Expectation::Header,
            (true, false) => Expectation::Optional,
            (false, true) => Expectation::Refused,
            (false, false) => Expectation::NoHeader,
        }
    }

    /// The client a connection from `source` stands for, given the header it began with
    /// (if any). A header without addresses (a balancer's own `LOCAL` connection, such as a
    /// health check) leaves the source as the client.
    pub fn client(
        &self,
        source: SocketAddr,
        header: Option<&ProxyHeader>,
    ) -> Result<SocketAddr, BalancerRefusal> {
        match (self.expect(source.ip()), header) {
            (Expectation::Refused, _) => Err(BalancerRefusal::UntrustedSource),
            (Expectation::NoHeader, Some(_)) => Err(BalancerRefusal::UntrustedHeader),
            (Expectation::Header, None) => Err(BalancerRefusal::MissingHeader),
            (_, None) => Ok(source),
            (_, Some(h)) => Ok(h.addresses.map_or(source, |a| a.source)),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::proxy::ProxiedAddresses;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const BALANCER: &str = "10.0.0.5:40000";
    const CLIENT: &str = "192.0.2.7:51000";

    fn header(addresses: bool) -> ProxyHeader {
        ProxyHeader {
            version: 2,
            addresses: addresses.then(|| ProxiedAddresses {
                source: addr(CLIENT),
                destination: addr("10.0.0.5:1080"),
            }),
        }
    }

    #[test]
    fn test_required_listener() {
        let nets = ["10.0.0.0/24".parse().unwrap()];
        let t = BalancerTrust {
            trusted: &nets,
            required: true,
        };
        assert_eq!(t.expect(addr(BALANCER).ip()), Expectation::Header);
        assert_eq!(
            t.client(addr(BALANCER), Some(&header(true))),
            Ok(addr(CLIENT))
        );
        assert_eq!(
            t.client(addr(BALANCER), Some(&header(false))),
            Ok(addr(BALANCER)),
            "a LOCAL connection is the balancer's own"
        );
        assert_eq!(
            t.client(addr(BALANCER), None),
            Err(BalancerRefusal::MissingHeader)
        );
        assert_eq!(t.expect(addr(CLIENT).ip()), Expectation::Refused);
        assert_eq!(
            t.client(addr(CLIENT), None),
            Err(BalancerRefusal::UntrustedSource)
        );
        assert_eq!(
            t.client(addr(CLIENT), Some(&header(true))),
            Err(BalancerRefusal::UntrustedSource)
        );
    }

    #[test]
    fn test_optional_listener() {
        let nets = ["10.0.0.5".parse().unwrap()];
        let t = BalancerTrust {
            trusted: &nets,
            required: false,
        };
        assert_eq!(t.expect(addr(BALANCER).ip()), Expectation::Optional);
        assert_eq!(
            t.client(addr(BALANCER), Some(&header(true))),
            Ok(addr(CLIENT))
        );
        assert_eq!(t.client(addr(BALANCER), None), Ok(addr(BALANCER)));
        assert_eq!(t.expect(addr(CLIENT).ip()), Expectation::NoHeader);
        assert_eq!(t.client(addr(CLIENT), None), Ok(addr(CLIENT)));
        assert_eq!(
            t.client(addr(CLIENT), Some(&header(true))),
            Err(BalancerRefusal::UntrustedHeader),
            "a client cannot claim another address"
        );
        // IPv4-mapped sources match IPv4 networks.
        assert_eq!(
            t.expect(addr("[::ffff:10.0.0.5]:1").ip()),
            Expectation::Optional
        );
    }
}
