//! Destination addresses: an IP socket address or a domain name with a port.
//!
//! [`Addr`] borrows the name from a parsed message; [`Target`] owns it (in a fixed
//! 255-byte buffer) so it can cross an `.await` or a JS boundary.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::wire::WireError;

/// Longest domain name SOCKS can carry: its length is one octet.
pub const MAX_DOMAIN_LEN: usize = 255;

/// A validated domain name as sent on the wire: 1–255 octets, no NUL.
///
/// The octets are kept as sent (not necessarily UTF-8, not case-folded).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain<'a>(&'a [u8]);

impl<'a> Domain<'a> {
    /// Validates `name`: 1–255 octets and no NUL (C peers copy names into NUL-terminated
    /// buffers, so an embedded NUL would make the checked and the resolved name differ).
    #[expect(
        clippy::manual_contains,
        reason = "slice::contains on bytes links memchr, large on small targets; names are short"
    )]
    pub fn new(name: &'a [u8]) -> Result<Self, WireError> {
        if name.is_empty() {
            Err(WireError::EmptyDomain)
        } else if name.len() > MAX_DOMAIN_LEN {
            Err(WireError::DomainTooLong)
        } else if name.iter().any(|&b| b == 0) {
            Err(WireError::NulInDomain)
        } else {
            Ok(Self(name))
        }
    }

    /// The name's octets.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The name as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.0).ok()
    }

    /// The IP address this name spells, if it is an IP literal (`"127.0.0.1"`, `"::1"`).
    ///
    /// Access rules compare addresses, so literals sent as names must be normalised first.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.as_str()?.parse().ok()
    }
}

impl fmt::Debug for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl fmt::Display for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Domain<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=[u8]:a}", self.0)
    }
}

/// A destination as carried by a message: borrowed from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Addr<'a> {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A domain name and port, to be resolved by the proxy.
    Domain(Domain<'a>, u16),
}

impl<'a> Addr<'a> {
    /// The port.
    pub const fn port(&self) -> u16 {
        match self {
            Self::Ip(sa) => sa.port(),
            Self::Domain(_, port) => *port,
        }
    }

    /// Replaces a domain that spells an IP literal with the IP address itself.
    #[must_use]
    pub fn normalized(self) -> Self {
        match self {
            Self::Domain(name, port) => match name.ip_literal() {
                Some(ip) => Self::Ip(SocketAddr::new(ip, port)),
                None => self,
            },
            Self::Ip(_) => self,
        }
    }

    /// Copies the address into an owned [`Target`].
    pub fn to_target(&self) -> Target {
        match *self {
            Self::Ip(sa) => Target::Ip(sa),
            Self::Domain(name, port) => Target::Domain(DomainBuf::from(name), port),
        }
    }
}

impl From<SocketAddr> for Addr<'_> {
    fn from(sa: SocketAddr) -> Self {
        Self::Ip(sa)
    }
}

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(sa) => write!(f, "{sa}"),
            Self::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// An owned, validated domain name (1–255 octets, no NUL).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainBuf(heapless::Vec<u8, MAX_DOMAIN_LEN>);

impl DomainBuf {
    /// Validates and copies `name`.
    pub fn new(name: &[u8]) -> Result<Self, WireError> {
        Domain::new(name).map(Self::from)
    }

    /// Borrows the name.
    pub fn as_domain(&self) -> Domain<'_> {
        Domain(&self.0)
    }
}

impl From<Domain<'_>> for DomainBuf {
    fn from(name: Domain<'_>) -> Self {
        // A `Domain` is at most MAX_DOMAIN_LEN octets, so this cannot truncate.
        let mut buf = heapless::Vec::new();
        let _ = buf.extend_from_slice(name.as_bytes());
        Self(buf)
    }
}

impl fmt::Debug for DomainBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_domain(), f)
    }
}

impl fmt::Display for DomainBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_domain(), f)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for DomainBuf {
    fn format(&self, f: defmt::Formatter<'_>) {
        self.as_domain().format(f)
    }
}

/// A destination that owns its name: what events carry.
///
/// The name is stored inline (no allocator in core), so the domain variant is 256 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Target {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A domain name and port.
    Domain(DomainBuf, u16),
}

impl Target {
    /// Borrows the destination as an [`Addr`].
    pub fn as_addr(&self) -> Addr<'_> {
        match self {
            Self::Ip(sa) => Addr::Ip(*sa),
            Self::Domain(name, port) => Addr::Domain(name.as_domain(), *port),
        }
    }

    /// The port.
    pub const fn port(&self) -> u16 {
        match self {
            Self::Ip(sa) => sa.port(),
            Self::Domain(_, port) => *port,
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(sa: SocketAddr) -> Self {
        Self::Ip(sa)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_addr(), f)
    }
}
