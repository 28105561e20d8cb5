//! Name resolution when the proxy resolves (socks5h, socks4a): which names get a
//! placeholder ([`crate::placeholder`]) and which go to libc.
//!
//! Names libc answers: IP literals, `localhost` and names under `.localhost`, and names in
//! `/etc/hosts` (which libc reads without a query on the network). Every other name gets a
//! placeholder, so no DNS query leaves the machine. With socks5:// or socks4:// (the program's
//! side resolves) every name goes to libc.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use crate::{placeholder, settings};

/// How to answer a lookup of one name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Let libc resolve it.
    Libc,
    /// Hand out this placeholder.
    Placeholder(Ipv4Addr),
    /// The placeholder table is full.
    Exhausted,
}

/// How to answer a lookup of `name`.
pub(crate) fn answer(name: &str) -> Answer {
    let remote = matches!(&settings::get().proxy, Ok(proxy) if proxy.remote_dns);
    if !remote || resolved_locally(name) {
        return Answer::Libc;
    }
    match placeholder::address_for(name) {
        Some(address) => Answer::Placeholder(address),
        None => Answer::Exhausted,
    }
}

fn resolved_locally(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.is_empty()
        || name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || hosts_file().contains(&name)
}

fn hosts_file() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        std::fs::read_to_string("/etc/hosts")
            .map(|text| hosts_names(&text))
            .unwrap_or_default()
    })
}

/// The names (lower-cased) of an /etc/hosts file.
fn hosts_names(text: &str) -> HashSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split_whitespace().skip(1))
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let names = hosts_names(
            "127.0.0.1 localhost\n# 10.0.0.1 hidden\n::1 ip6-localhost ip6-loopback # c\n",
        );
        assert!(names.contains("ip6-loopback"));
        assert!(names.contains("localhost"));
        assert!(!names.contains("hidden"));
        assert!(!names.contains("127.0.0.1"));
    }
}
