//! Destination resolution through the stack's DNS client.

use core::net::{IpAddr, SocketAddr};

use embassy_net::Stack;
use embassy_net::dns::DnsQueryType;
use socksgate_core::{Addr, Domain};

/// Why a destination has no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) enum ResolveError {
    /// The name is not UTF-8, so it cannot be a DNS name.
    NotText,
    /// No A (nor AAAA) record, or no DNS server answered.
    NotFound,
}

/// Resolves `target`: IP targets and IP literals sent as names need no query; names ask for
/// A records first, then AAAA.
pub(crate) async fn resolve(
    stack: Stack<'_>,
    target: Addr<'_>,
) -> Result<SocketAddr, ResolveError> {
    match target {
        Addr::Ip(sa) => Ok(sa),
        Addr::Domain(name, port) => resolve_name(stack, name, port).await,
    }
}

async fn resolve_name(
    stack: Stack<'_>,
    name: Domain<'_>,
    port: u16,
) -> Result<SocketAddr, ResolveError> {
    if let Some(ip) = name.ip_literal() {
        return Ok(SocketAddr::new(ip, port));
    }
    let text = name.as_str().ok_or(ResolveError::NotText)?;
    for qtype in [DnsQueryType::A, DnsQueryType::Aaaa] {
        if let Ok(addrs) = stack.dns_query(text, qtype).await
            && let Some(first) = addrs.first()
        {
            return Ok(SocketAddr::new(IpAddr::from(*first), port));
        }
    }
    Err(ResolveError::NotFound)
}
