//! Name resolution through the stack's DNS client.
//!
//! Only real names come here: the core hands over a name that spells an IP address as that
//! address.

use core::net::IpAddr;

use embassy_net::Stack;
use embassy_net::dns::DnsQueryType;
use socksgate_core::{Domain, Failure};

/// How many addresses of a name are kept: smoltcp's default `DNS_MAX_RESULT_COUNT`, so one
/// query returns at most this many; further ones (with a larger smoltcp setting) are ignored.
const MAX_ADDRESSES: usize = 1;

/// Addresses of one name, in the order to try them.
pub(crate) type Addresses = heapless::Vec<IpAddr, MAX_ADDRESSES>;

/// The addresses of `name`: its A records, or if it has none its AAAA records. Every way of
/// not getting one (not a DNS name, NXDOMAIN, no record, no server answering) is
/// [`Failure::NameNotFound`]: embassy-net does not tell them apart.
pub(crate) async fn resolve(stack: Stack<'_>, name: Domain<'_>) -> Result<Addresses, Failure> {
    let text = name.as_str().ok_or(Failure::NameNotFound)?;
    for qtype in [DnsQueryType::A, DnsQueryType::Aaaa] {
        if let Ok(found) = stack.dns_query(text, qtype).await
            && !found.is_empty()
        {
            let mut addrs = Addresses::new();
            for &ip in &found {
                let _ = addrs.push(IpAddr::from(ip));
            }
            return Ok(addrs);
        }
    }
    Err(Failure::NameNotFound)
}
