//! `--direct NETS`: the destinations the program reaches without the proxy.
#![forbid(unsafe_code)]

use std::net::IpAddr;

use socksgate_socksify_config::{DirectItem, DirectList, in_network};

/// The networks of a `--direct` list, `local` expanded to the interfaces' networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DirectNetworks {
    networks: Vec<(IpAddr, u8)>,
}

impl DirectNetworks {
    /// Expands `list` (reading the interfaces now for `local`).
    pub(crate) fn new(list: &DirectList) -> Self {
        let mut networks = Vec::new();
        for item in &list.0 {
            match *item {
                DirectItem::Loopback => {
                    networks.push((IpAddr::from([127, 0, 0, 0]), 8));
                    networks.push((IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128));
                }
                DirectItem::Local => networks.extend(crate::sys::interface_networks()),
                DirectItem::Network(ip, prefix) => networks.push((ip, prefix)),
            }
        }
        Self { networks }
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address) is direct.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .any(|&(net, prefix)| in_network(ip, net.to_canonical(), prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let d = DirectNetworks::new(&DirectList::parse("loopback, 10.0.0.0/8,fd00::/8").unwrap());
        assert!(d.contains("127.0.0.2".parse().unwrap()));
        assert!(d.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(d.contains("::1".parse().unwrap()));
        assert!(d.contains("10.9.8.7".parse().unwrap()));
        assert!(d.contains("fd12::1".parse().unwrap()));
        assert!(!d.contains("11.0.0.1".parse().unwrap()));
        let none = DirectNetworks::new(&DirectList::parse("none").unwrap());
        assert!(!none.contains("127.0.0.1".parse().unwrap()));
    }
}
