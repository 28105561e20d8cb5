//! Name resolution through the stack's DNS client.
//!
//! Only real names come here: the core hands over a name that spells an IP address as that
//! address.

use core::net::IpAddr;

use embassy_net::Stack;
use embassy_net::dns::DnsQueryType;
use socksgate_core::{Domain, Failure};

/// The address of `name`: its first A record, or if it has none its first AAAA record.
/// (smoltcp keeps one record per query by default: `DNS_MAX_RESULT_COUNT`.) Every way of
/// not getting one (not a DNS name, NXDOMAIN, no record, no server answering) is
/// [`Failure::NameNotFound`]: embassy-net does not tell them apart.
pub(crate) async fn resolve(stack: Stack<'_>, name: Domain<'_>) -> Result<IpAddr, Failure> {
    let text = name.as_str().ok_or(Failure::NameNotFound)?;
    for qtype in [DnsQueryType::A, DnsQueryType::Aaaa] {
        if let Ok(found) = stack.dns_query(text, qtype).await
            && let Some(&first) = found.first()
        {
            return Ok(IpAddr::from(first));
        }
    }
    Err(Failure::NameNotFound)
}
