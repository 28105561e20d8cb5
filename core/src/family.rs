//! Which address family a name's addresses are used in: prefer IPv6 (Happy Eyeballs' own
//! order), prefer IPv4, IPv4 only or IPv6 only — globally and per access rule.
//!
//! The family applies to names only: a request that gives an address is taken as given.
//! The [session](crate::session) applies it to resolved addresses (dropping those of an
//! excluded family, putting the preferred family first); a driver asks
//! [`Session::address_family`](crate::session::Session::address_family) before resolving so
//! that it does not even query for an excluded family. A name with no address of the
//! allowed family is answered REP 4 (SOCKS4: CD 91), as [`Failure::NoAddressInFamily`].
//!
//! [`Failure::NoAddressInFamily`]: crate::failure::Failure::NoAddressInFamily

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use crate::rules::{Decision, ParseError};

/// The address family for names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AddressFamily {
    /// Both families, IPv6 first (RFC 8305 Happy Eyeballs).
    #[default]
    PreferIpv6,
    /// Both families, IPv4 first.
    PreferIpv4,
    /// IPv4 addresses only.
    Ipv4Only,
    /// IPv6 addresses only.
    Ipv6Only,
}

impl AddressFamily {
    /// Every family, in the order of [`as_str`](Self::as_str)'s names.
    pub const ALL: [Self; 4] = [
        Self::PreferIpv6,
        Self::PreferIpv4,
        Self::Ipv4Only,
        Self::Ipv6Only,
    ];

    /// Whether IPv4 addresses are used (an A query is worth sending).
    pub const fn uses_ipv4(self) -> bool {
        !matches!(self, Self::Ipv6Only)
    }

    /// Whether IPv6 addresses are used (an AAAA query is worth sending).
    pub const fn uses_ipv6(self) -> bool {
        !matches!(self, Self::Ipv4Only)
    }

    /// Whether IPv6 addresses go first.
    pub const fn prefers_ipv6(self) -> bool {
        matches!(self, Self::PreferIpv6 | Self::Ipv6Only)
    }

    /// Whether `ip` may be used (an IPv4-mapped IPv6 address counts as IPv4).
    pub const fn allows(self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(_) => self.uses_ipv4(),
            IpAddr::V6(_) => self.uses_ipv6(),
        }
    }

    /// Whether `ip` is of the preferred family.
    const fn preferred(self, ip: IpAddr) -> bool {
        ip.to_canonical().is_ipv6() == self.prefers_ipv6()
    }

    /// Keeps the allowed addresses of `addrs` at its front, the preferred family first, each
    /// family in its original order; returns how many were kept (use `addrs[..n]`).
    pub fn order(self, addrs: &mut [IpAddr]) -> usize {
        let mut kept = 0;
        let mut preferred = 0;
        for i in 0..addrs.len() {
            let Some(&ip) = addrs.get(i) else { break };
            if !self.allows(ip) {
                continue;
            }
            // Move it down to its place, shifting the others up (stable, no allocation).
            let at = if self.preferred(ip) { preferred } else { kept };
            if let Some(span) = addrs.get_mut(at..=i) {
                span.rotate_right(1);
            }
            if self.preferred(ip) {
                preferred += 1;
            }
            kept += 1;
        }
        kept
    }

    /// The configuration name: `prefer_ipv6`, `prefer_ipv4`, `ipv4_only`, `ipv6_only`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PreferIpv6 => "prefer_ipv6",
            Self::PreferIpv4 => "prefer_ipv4",
            Self::Ipv4Only => "ipv4_only",
            Self::Ipv6Only => "ipv6_only",
        }
    }
}

impl FromStr for AddressFamily {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or(ParseError::AddressFamily)
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The family for each request: the deciding rule's, or the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddressFamilies<'r> {
    /// The family when the deciding rule sets none (or no rule decided).
    pub default: AddressFamily,
    /// For each rule of the policy's [`Rules`](crate::rules::Rules), by index, its own
    /// family if it sets one. Shorter than the rules: the rest set none.
    pub per_rule: &'r [Option<AddressFamily>],
}

impl<'r> AddressFamilies<'r> {
    /// `default` for every rule.
    pub const fn new(default: AddressFamily) -> Self {
        Self {
            default,
            per_rule: &[],
        }
    }

    /// The same default, with per-rule families.
    #[must_use]
    pub const fn with_rules(mut self, per_rule: &'r [Option<AddressFamily>]) -> Self {
        self.per_rule = per_rule;
        self
    }

    /// The family for a request `decision` allowed (`None`: not decided yet).
    pub fn for_decision(&self, decision: Option<Decision>) -> AddressFamily {
        decision
            .and_then(|d| d.rule)
            .and_then(|i| self.per_rule.get(i).copied().flatten())
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::rules::Action;

    fn ips<const N: usize>(list: [&str; N]) -> [IpAddr; N] {
        list.map(|s| s.parse().unwrap())
    }

    #[test]
    fn test_order_and_filter() {
        let mixed = ips(["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"]);
        let cases = [
            (
                AddressFamily::PreferIpv6,
                &["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"][..],
            ),
            (
                AddressFamily::PreferIpv4,
                &["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"][..],
            ),
            (AddressFamily::Ipv4Only, &["192.0.2.1", "192.0.2.2"][..]),
            (AddressFamily::Ipv6Only, &["2001:db8::1", "2001:db8::2"][..]),
        ];
        for (family, want) in cases {
            let mut addrs = mixed;
            let n = family.order(&mut addrs);
            let want: heapless::Vec<IpAddr, 4> = want.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(&addrs[..n], &want[..], "{family}");
        }
        let mut v4 = ips(["192.0.2.1", "::ffff:192.0.2.2"]);
        assert_eq!(AddressFamily::Ipv6Only.order(&mut v4), 0);
        assert_eq!(AddressFamily::Ipv4Only.order(&mut v4), 2, "mapped is IPv4");
        assert_eq!(AddressFamily::PreferIpv4.order(&mut []), 0);
    }

    #[test]
    fn test_names_round_trip() {
        for f in AddressFamily::ALL {
            assert_eq!(f.as_str().parse::<AddressFamily>(), Ok(f));
        }
        assert!("ipv4".parse::<AddressFamily>().is_err());
        assert_eq!(AddressFamily::default(), AddressFamily::PreferIpv6);
        assert!(!AddressFamily::Ipv4Only.uses_ipv6() && AddressFamily::Ipv4Only.uses_ipv4());
        assert!(!AddressFamily::Ipv6Only.uses_ipv4() && AddressFamily::Ipv6Only.uses_ipv6());
    }

    #[test]
    fn test_per_rule_family() {
        let per_rule = [None, Some(AddressFamily::Ipv4Only)];
        let f = AddressFamilies::new(AddressFamily::PreferIpv4).with_rules(&per_rule);
        let by = |rule| {
            Some(Decision {
                action: Action::Allow,
                rule,
            })
        };
        assert_eq!(f.for_decision(None), AddressFamily::PreferIpv4);
        assert_eq!(f.for_decision(by(None)), AddressFamily::PreferIpv4);
        assert_eq!(f.for_decision(by(Some(0))), AddressFamily::PreferIpv4);
        assert_eq!(f.for_decision(by(Some(1))), AddressFamily::Ipv4Only);
        assert_eq!(f.for_decision(by(Some(7))), AddressFamily::PreferIpv4);
    }
}
