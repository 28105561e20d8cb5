//! What every session of one configuration shares, and the core policy it implies.

use std::sync::Arc;

use socksgate_core::policy::Timeouts;
use socksgate_core::{Authentication, Policy};

use crate::access::AccessRules;
use crate::config::Config;
use crate::limits::Sessions;
use crate::metrics::Metrics;
use crate::resolve::Resolver;
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
}

impl Shared {
    /// The core's policy for these settings: with users, every client authenticates (and
    /// SOCKS4, which cannot, is refused by construction).
    pub fn policy(&self) -> Policy<'_> {
        let authentication = if self.users.is_some() {
            Authentication::PASSWORD
        } else {
            Authentication::None {
                socks4: self.config.socks4,
            }
        };
        let t = &self.config.timeouts;
        Policy {
            bind_any_peer: self.config.bind.any_peer,
            timeouts: Timeouts {
                handshake: t.handshake(),
                connect: t.connect(),
                bind: t.bind(),
                udp_idle: t.udp_idle(),
            },
            ..Policy::new(authentication, self.rules.rules())
        }
    }
}
