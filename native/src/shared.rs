//! What every session of one configuration shares, and the core policy it implies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socksgate_core::Policy;
use socksgate_core::family::AddressFamilies;
use socksgate_core::policy::{
    AuthenticationRule, AuthenticationRules, GssapiPolicy, MethodPreference, ProtectionLevels,
    Timeouts,
};
use socksgate_core::rules::ProtectedDestinations;

use crate::access::AccessRules;
use crate::balancer::Balancers;
use crate::config::Config;
use crate::limits::Sessions;
use crate::metrics::Metrics;
use crate::resolve::Resolver;
use crate::session_rate::SessionRates;
use crate::throttle::AuthThrottle;
use crate::users::Users;

/// Everything connections share.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration.
    pub config: Config,
    /// Users, when username/password authentication is required.
    pub users: Option<Arc<Users>>,
    /// Compiled access rules.
    pub rules: AccessRules,
    /// The resolver.
    pub resolver: Resolver,
    /// Counters for `--metrics`.
    pub metrics: Arc<Metrics>,
    /// Per-client back-off after failed logins (kept across reloads).
    pub auth_throttle: Arc<AuthThrottle>,
    /// Open sessions, for the `[limits]` and draining (kept across reloads).
    pub sessions: Arc<Sessions>,
    /// The token buckets shared by a user's or a client's sessions (`[[traffic]]`, kept
    /// across reloads).
    pub traffic_buckets: Arc<crate::traffic::Buckets>,
    /// Session-rate buckets and refusal bursts (kept across reloads).
    pub session_rates: Arc<SessionRates>,
    /// Compiled `[[auth]]` entries.
    pub auth_rules: Vec<AuthenticationRule>,
    /// This host's addresses, protected destinations when `[access]` protects them
    /// ([`own_addresses`], gathered at start and on reload).
    pub own_addresses: Vec<IpAddr>,
    /// Listeners that take PROXY protocol headers, and from whom.
    pub balancers: Balancers,
    /// `[[egress]]` profiles (empty: the kernel chooses how sessions leave).
    pub egress: crate::egress::Profiles,
    /// `[[tls]]` listeners and `+tls` upstreams, their files loaded (empty until
    /// [`crate::tls::Contexts::load`] fills it).
    pub tls: crate::tls::Contexts,
    /// The `[gssapi]` acceptor, its keytab read (`None` without `[gssapi]`, and until
    /// [`crate::gssapi::load`] fills it).
    pub gssapi: Option<crate::gssapi::Acceptor>,
}

impl Shared {
    /// The state of a first start with `config`: its rules compiled, new counters, this
    /// host's addresses read. (A reload keeps the counters: see `reload`.)
    pub fn new(
        config: Config,
        users: Option<Arc<Users>>,
        resolver: Resolver,
    ) -> Result<Self, crate::access::RuleError> {
        let rules =
            crate::access::compile(&config.rules, config.default_action, &config.rule_lines)?;
        let auth_rules = crate::authentication::compile(
            &config.auth,
            users.is_some(),
            config.gssapi.is_some(),
            config.socks4,
        )?;
        Ok(Self {
            balancers: Balancers::new(&config.proxy_protocol),
            egress: crate::egress::Profiles::compile(&config),
            tls: crate::tls::Contexts::default(),
            gssapi: None,
            config,
            users,
            rules,
            resolver,
            metrics: Default::default(),
            auth_throttle: Default::default(),
            sessions: Default::default(),
            traffic_buckets: Default::default(),
            session_rates: Default::default(),
            auth_rules,
            own_addresses: own_addresses(),
        })
    }
}

/// This host's interface addresses (getifaddrs), for protected destinations; empty when
/// they cannot be listed (loopback, link-local and the other ranges stay protected).
pub fn own_addresses() -> Vec<IpAddr> {
    #[cfg(unix)]
    {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            tracing::warn!(
                "cannot list this host's addresses: only loopback, link-local, unspecified and multicast destinations are protected"
            );
            return Vec::new();
        };
        let mut out: Vec<IpAddr> = addrs
            .filter_map(|a| {
                let a = a.address?;
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
    #[cfg(not(unix))]
    Vec::new()
}

impl Shared {
    /// The core's policy for these settings, for a session from `peer` accepted on `local`:
    /// the first `[[auth]]` entry matching them decides how the client authenticates, else
    /// with users every client authenticates (and SOCKS4, which cannot, is refused by
    /// construction); destinations are protected per `[access]` (by default on non-loopback
    /// listeners); names use the deciding rule's address family, else `address_family`.
    pub fn policy(&self, peer: SocketAddr, local: SocketAddr) -> Policy<'_> {
        let default = crate::authentication::default_authentication(
            self.users.is_some(),
            self.config.gssapi.is_some(),
            self.config.socks4,
        );
        let authentication = AuthenticationRules::new(default)
            .with_rules(&self.auth_rules)
            .for_client(peer.ip(), local);
        let t = &self.config.timeouts;
        let mut rules = self.rules.rules();
        if self.config.access.protects(local.ip()) {
            rules = rules.with_protected(ProtectedDestinations::on(&self.own_addresses));
        }
        Policy {
            bind_any_peer: self.config.bind.any_peer,
            timeouts: Timeouts {
                handshake: t.handshake(),
                connect: t.connect(),
                bind: t.bind(),
                udp_idle: t.udp_idle(),
            },
            address_families: AddressFamilies::new(self.config.address_family.0)
                .with_rules(self.rules.families()),
            gssapi: self
                .config
                .gssapi
                .as_ref()
                .map(gssapi_policy)
                .unwrap_or_default(),
            ..Policy::new(authentication, rules)
        }
    }
}

/// The core's GSS-API policy for `[gssapi]`.
fn gssapi_policy(g: &crate::config::GssapiConfig) -> GssapiPolicy {
    use crate::config::{PreferredMethod, ProtectionLevel};
    GssapiPolicy {
        protection: ProtectionLevels {
            none: g.grants(ProtectionLevel::None),
            integrity: g.grants(ProtectionLevel::Integrity),
            confidentiality: g.grants(ProtectionLevel::Confidentiality),
        },
        accept_nec: g.accept_nec,
        prefer: match g.prefer {
            PreferredMethod::Gssapi => MethodPreference::Gssapi,
            PreferredMethod::Password => MethodPreference::Password,
        },
    }
}

impl Shared {
    /// The `[[traffic]]` limits of a session of `user` (when authenticated) from `client`;
    /// `None` when it has none.
    pub(crate) fn traffic_limits(
        &self,
        user: Option<&[u8]>,
        client: IpAddr,
    ) -> Option<Box<crate::traffic::SessionLimits>> {
        crate::traffic::session_limits(
            &self.config.traffic_rules,
            &self.traffic_buckets,
            &self.metrics,
            user,
            client,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Resolver;

    const PEER: SocketAddr =
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 99)), 40000);

    fn shared(text: &str) -> Shared {
        let config = Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        Shared {
            own_addresses: vec!["192.0.2.10".parse().unwrap()],
            ..Shared::new(config, None, Resolver::with_hosts(Default::default())).unwrap()
        }
    }

    #[test]
    fn non_loopback_listeners_protect_destinations() {
        let auto = shared("");
        let p = auto
            .policy(PEER, "192.0.2.10:1080".parse().unwrap())
            .rules
            .protected;
        assert!(p.is_on());
        assert_eq!(p.own(), &["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert!(
            auto.policy(PEER, "[::]:1080".parse().unwrap())
                .rules
                .protected
                .is_on()
        );
        for loopback in ["127.0.0.1:1080", "[::1]:1080", "[::ffff:127.0.0.1]:1080"] {
            let p = auto.policy(PEER, loopback.parse().unwrap()).rules.protected;
            assert!(!p.is_on(), "{loopback}");
        }
        let on = shared("[access]\nprotect_local_destinations = true\n");
        assert!(
            on.policy(PEER, "127.0.0.1:1080".parse().unwrap())
                .rules
                .protected
                .is_on()
        );
        let off = shared("[access]\nprotect_local_destinations = false\n");
        assert!(
            !off.policy(PEER, "192.0.2.10:1080".parse().unwrap())
                .rules
                .protected
                .is_on()
        );
    }

    #[test]
    fn auth_entries_and_families_reach_the_policy() {
        use socksgate_core::Authentication;
        use socksgate_core::family::AddressFamily;
        let config = Config::parse(
            "address_family = \"prefer_ipv4\"\n[[auth]]\nfrom = [\"127.0.0.2\"]\nmethods = [\"none\"]\n[[rule]]\naction = \"allow\"\naddress_family = \"ipv6_only\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        crate::users::set_password(&path, "alice", b"pw").unwrap();
        let users = Arc::new(Users::load(&path).unwrap());
        let s = Shared::new(
            config,
            Some(users),
            Resolver::with_hosts(Default::default()),
        )
        .unwrap();
        let local = "127.0.0.1:1080".parse().unwrap();
        let p = s.policy("127.0.0.2:5000".parse().unwrap(), local);
        assert_eq!(p.authentication, Authentication::None { socks4: true });
        let p = s.policy("127.0.0.3:5000".parse().unwrap(), local);
        assert_eq!(p.authentication, Authentication::PASSWORD);
        assert_eq!(p.address_families.default, AddressFamily::PreferIpv4);
        assert_eq!(p.address_families.per_rule, [Some(AddressFamily::Ipv6Only)]);
    }

    #[test]
    fn own_addresses_include_loopback() {
        #[cfg(unix)]
        assert!(own_addresses().iter().any(IpAddr::is_loopback));
    }
}
