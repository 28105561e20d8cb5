//! `--direct NETS`: the destinations the program reaches without the proxy.
#![forbid(unsafe_code)]

use std::net::IpAddr;

/// A list of networks; an address inside one of them is connected to directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DirectNetworks {
    networks: Vec<(IpAddr, u8)>,
}

impl DirectNetworks {
    /// Everything through the proxy.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// The default: loopback and the networks of the machine's interfaces.
    pub(crate) fn default_networks() -> Self {
        Self::parse("loopback,local").unwrap_or_default()
    }

    /// Parses a comma-separated list of `none`, `loopback`, `local` (the networks of the
    /// machine's interfaces when the program starts) and CIDR networks or single addresses.
    pub(crate) fn parse(list: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "none" => {}
                "loopback" => {
                    networks.push(("127.0.0.0".parse().map_err(|_| "")?, 8));
                    networks.push(("::1".parse().map_err(|_| "")?, 128));
                }
                "local" => networks.extend(crate::sys::interface_networks()),
                cidr => networks.push(parse_cidr(cidr)?),
            }
        }
        Ok(Self { networks })
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address) is direct.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .any(|&(net, prefix)| in_network(ip, net.to_canonical(), prefix))
    }
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| {
        format!("{s:?} is not a network (loopback, local, none, 10.0.0.0/8, fd00::/8)")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        None => max,
    };
    Ok((ip, prefix))
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let d = DirectNetworks::parse("loopback, 10.0.0.0/8,fd00::/8").unwrap();
        assert!(d.contains("127.0.0.2".parse().unwrap()));
        assert!(d.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(d.contains("::1".parse().unwrap()));
        assert!(d.contains("10.9.8.7".parse().unwrap()));
        assert!(d.contains("fd12::1".parse().unwrap()));
        assert!(!d.contains("11.0.0.1".parse().unwrap()));
        assert!(
            !DirectNetworks::parse("none")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            DirectNetworks::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(DirectNetworks::parse("10.0.0.0/33").is_err());
        assert!(DirectNetworks::parse("lan").is_err());
    }
}
