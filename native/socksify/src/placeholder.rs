//! Placeholder addresses for names the proxy resolves (SOCKS5h, SOCKS4a).
//!
//! `getaddrinfo`/`gethostbyname` answer a name with an address from
//! [`PLACEHOLDER_NETWORK`] (240.0.0.0/8, reserved "for future use" by RFC 1112 and never
//! routed) instead of asking DNS; `connect` to such an address sends the name to the proxy.
//! This is the technique proxychains documents (its `remote_dns_subnet`). Each process keeps
//! its own table (children started with fork inherit it); the same name always gets the same
//! address within a process. Programs that ask for IPv6 only get the IPv4-mapped form.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, OnceLock};

/// The first octet of every placeholder address.
pub(crate) const PLACEHOLDER_NETWORK: u8 = 240;
/// How many names one process can hold (the low 24 bits; 0 is never handed out).
const CAPACITY: usize = (1 << 24) - 1;

#[derive(Default)]
struct Table {
    names: Vec<String>,
    by_name: HashMap<String, u32>,
}

fn table() -> std::sync::MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The placeholder for `name` (case-insensitive), allocating one on first use; `None` when
/// the process has used up all 16 million.
pub(crate) fn address_for(name: &str) -> Option<Ipv4Addr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut table = table();
    if let Some(&index) = table.by_name.get(&name) {
        return Some(placeholder(index));
    }
    if table.names.len() >= CAPACITY {
        return None;
    }
    table.names.push(name.clone());
    let index = u32::try_from(table.names.len()).ok()?;
    table.by_name.insert(name, index);
    Some(placeholder(index))
}

/// The name behind a placeholder address, if `ip` is one this process handed out.
pub(crate) fn name_of(ip: IpAddr) -> Option<String> {
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return None;
    };
    let [first, a, b, c] = v4.octets();
    if first != PLACEHOLDER_NETWORK {
        return None;
    }
    let index = u32::from_be_bytes([0, a, b, c]);
    let table = table();
    table.names.get((index as usize).checked_sub(1)?).cloned()
}

/// Whether `ip` lies in the placeholder network (handed out by this process or not).
pub(crate) fn is_placeholder(ip: IpAddr) -> bool {
    matches!(ip.to_canonical(), IpAddr::V4(v4) if v4.octets()[0] == PLACEHOLDER_NETWORK)
}

fn placeholder(index: u32) -> Ipv4Addr {
    let [_, a, b, c] = index.to_be_bytes();
    Ipv4Addr::new(PLACEHOLDER_NETWORK, a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let a = address_for("Example.COM.").unwrap();
        assert_eq!(a.octets()[0], PLACEHOLDER_NETWORK);
        assert_eq!(address_for("example.com"), Some(a));
        assert_ne!(address_for("other.example"), Some(a));
        assert_eq!(name_of(IpAddr::V4(a)).as_deref(), Some("example.com"));
        let mapped = IpAddr::V6(a.to_ipv6_mapped());
        assert_eq!(name_of(mapped).as_deref(), Some("example.com"));
        assert!(is_placeholder(mapped));
        assert_eq!(name_of("240.255.255.255".parse().unwrap()), None);
        assert_eq!(name_of("10.0.0.1".parse().unwrap()), None);
    }
}
