//! Session limits: at most `max_sessions` at once, `max_sessions_per_ip` from one client
//! network and `max_sessions_per_user` for one authenticated user (0 = no limit); and the
//! settings of the session-rate limits ([`crate::session_rate`]).
//!
//! A client is keyed by its network: IPv4 /32 and IPv6 /64 unless `client_prefix_ipv4` /
//! `client_prefix_ipv6` say otherwise (the core's [`ClientPrefixes`]), so a client rotating
//! addresses inside its IPv6 /64 is one client.
//!
//! A session holds a [`Slot`] from accept to close; dropping it frees the place. The global
//! and per-client limits are checked before the handshake (the connection is closed at once);
//! the per-user limit after authentication (the client gets reply 1 / SOCKS4 91). The
//! per-client decision is the core's ([`ClientSessions`], the firmware's too); this module
//! holds its table under a lock.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use socksgate_core::client_limits::{CapRefusal, ClientSessions};
use socksgate_core::client_table::Place;
use socksgate_core::policy::ClientPrefixes;
use socksgate_core::rate::Rate;
use socksgate_core::rules::Cidr;
use toml::Spanned;

/// `[limits]` in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sessions at once, over all clients (0 = no limit).
    pub max_sessions: usize,
    /// Sessions at once from one client network (0 = no limit).
    pub max_sessions_per_ip: usize,
    /// Sessions at once for one authenticated user (0 = no limit).
    pub max_sessions_per_user: usize,
    /// New sessions per second from one client network (unset: no limit); over it, new
    /// connections are closed before the handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_per_second_per_client: Option<Spanned<u64>>,
    /// New sessions a client network may open at once after a quiet period (default: one
    /// second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_burst_per_client: Option<Spanned<u64>>,
    /// New sessions per second for one authenticated user (unset: no limit); over it, the
    /// request gets reply 2 (SOCKS4 has no users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_per_second_per_user: Option<Spanned<u64>>,
    /// New sessions a user may open at once after a quiet period (default: one second's
    /// worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_burst_per_user: Option<Spanned<u64>>,
    /// IPv4 clients are keyed by this many leading bits (1-32).
    pub client_prefix_ipv4: Spanned<u8>,
    /// IPv6 clients are keyed by this many leading bits (1-128).
    pub client_prefix_ipv6: Spanned<u8>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let prefixes = ClientPrefixes::DEFAULT;
        Self {
            max_sessions: 0,
            max_sessions_per_ip: 0,
            max_sessions_per_user: 0,
            sessions_per_second_per_client: None,
            sessions_burst_per_client: None,
            sessions_per_second_per_user: None,
            sessions_burst_per_user: None,
            client_prefix_ipv4: Spanned::new(0..0, prefixes.ipv4()),
            client_prefix_ipv6: Spanned::new(0..0, prefixes.ipv6()),
        }
    }
}

/// A `[limits]` value that cannot be used, with its place in the file.
#[derive(Debug, thiserror::Error)]
#[error("[limits] {message}")]
pub struct LimitValueError {
    /// Byte range in the config text.
    pub span: core::ops::Range<usize>,
    /// What is wrong.
    pub message: String,
}

impl LimitSettings {
    /// How clients are keyed (the defaults if the prefixes are invalid, which
    /// [`check`](Self::check) refuses).
    pub fn prefixes(&self) -> ClientPrefixes {
        ClientPrefixes::new(
            *self.client_prefix_ipv4.get_ref(),
            *self.client_prefix_ipv6.get_ref(),
        )
        .unwrap_or_default()
    }

    /// The per-client session rate, if set.
    pub fn client_rate(&self) -> Option<Rate> {
        rate(
            self.sessions_per_second_per_client.as_ref(),
            self.sessions_burst_per_client.as_ref(),
        )
    }

    /// The per-user session rate, if set.
    pub fn user_rate(&self) -> Option<Rate> {
        rate(
            self.sessions_per_second_per_user.as_ref(),
            self.sessions_burst_per_user.as_ref(),
        )
    }

    /// What `check-config` says about the session rates: a TOML comment line.
    pub fn describe(&self) -> String {
        let show = |r: Option<Rate>| {
            r.map_or_else(
                || "no limit".to_owned(),
                |r| format!("{} per second, burst {}", r.per_second, r.burst),
            )
        };
        format!(
            "# session rates: per client network (IPv4 /{}, IPv6 /{}): {}; per user: {}\n",
            self.client_prefix_ipv4.get_ref(),
            self.client_prefix_ipv6.get_ref(),
            show(self.client_rate()),
            show(self.user_rate()),
        )
    }

    /// Rates and bursts are at least 1, a burst comes with its rate, prefixes are in range.
    pub fn check(&self) -> Result<(), LimitValueError> {
        let at = |s: &Spanned<u64>, message: String| LimitValueError {
            span: s.span(),
            message,
        };
        for (name, value) in [
            (
                "sessions_per_second_per_client",
                &self.sessions_per_second_per_client,
            ),
            ("sessions_burst_per_client", &self.sessions_burst_per_client),
            (
                "sessions_per_second_per_user",
                &self.sessions_per_second_per_user,
            ),
            ("sessions_burst_per_user", &self.sessions_burst_per_user),
        ] {
            if let Some(v) = value
                && *v.get_ref() == 0
            {
                return Err(at(
                    v,
                    format!("{name} = 0: must be at least 1 (leave it out for no limit)"),
                ));
            }
        }
        for (burst, name, rate) in [
            (
                &self.sessions_burst_per_client,
                "sessions_per_second_per_client",
                &self.sessions_per_second_per_client,
            ),
            (
                &self.sessions_burst_per_user,
                "sessions_per_second_per_user",
                &self.sessions_per_second_per_user,
            ),
        ] {
            if let (Some(b), None) = (burst, rate) {
                return Err(at(b, format!("a burst needs its rate: set {name} too")));
            }
        }
        for (name, value, max) in [
            ("client_prefix_ipv4", &self.client_prefix_ipv4, 32),
            ("client_prefix_ipv6", &self.client_prefix_ipv6, 128),
        ] {
            let v = *value.get_ref();
            if v == 0 || v > max {
                return Err(LimitValueError {
                    span: value.span(),
                    message: format!("{name} = {v}: expected a prefix length from 1 to {max}"),
                });
            }
        }
        Ok(())
    }
}

fn rate(per_second: Option<&Spanned<u64>>, burst: Option<&Spanned<u64>>) -> Option<Rate> {
    let per_second = *per_second?.get_ref();
    Some(Rate {
        per_second,
        burst: burst.map_or(per_second, |b| *b.get_ref()).max(1),
    })
}

/// Which limit refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `max_sessions`.
    #[error("max_sessions ({0}) reached")]
    Global(usize),
    /// `max_sessions_per_ip`.
    #[error("max_sessions_per_ip ({0}) reached for this client network")]
    PerIp(usize),
    /// `max_sessions_per_user`.
    #[error("max_sessions_per_user ({0}) reached for this user")]
    PerUser(usize),
    /// [`CLIENT_NETWORKS`] networks hold sessions already and this one is new.
    #[error("{0} client networks hold sessions already")]
    Networks(usize),
}

/// Client networks that can hold sessions at once (the per-client table's places, about
/// 1.5 MiB); a connection from a further network is closed before the handshake.
pub const CLIENT_NETWORKS: usize = 65_536;

/// A random key for a per-client table's hash, so that clients, who choose their
/// addresses, cannot pick ones that crowd one probe sequence.
pub(crate) fn random_hash_key() -> [u64; 2] {
    use std::hash::BuildHasher;
    // std's `RandomState` is seeded from the OS's random source.
    let state = std::collections::hash_map::RandomState::new();
    [state.hash_one(0u8), state.hash_one(1u8)]
}

#[derive(Debug)]
struct Counts {
    total: usize,
    per_client: ClientSessions<Box<[Place<u32>]>>,
    per_user: HashMap<Vec<u8>, usize>,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            total: 0,
            per_client: ClientSessions::new(
                vec![Place::EMPTY; CLIENT_NETWORKS].into_boxed_slice(),
                random_hash_key(),
            ),
            per_user: HashMap::new(),
        }
    }
}

/// The open sessions, counted.
#[derive(Debug, Default)]
pub struct Sessions {
    counts: Mutex<Counts>,
    /// Woken whenever a session ends (for draining).
    ended: tokio::sync::Notify,
}

/// A place taken by one session; freed when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    sessions: &'a Sessions,
    key: Cidr,
    user: Option<Vec<u8>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for a new connection from the client network `key`
    /// ([`LimitSettings::prefixes`]).
    pub fn admit(&self, key: Cidr, limits: &LimitSettings) -> Result<Slot<'_>, LimitError> {
        let mut c = self.lock();
        if limits.max_sessions > 0 && c.total >= limits.max_sessions {
            return Err(LimitError::Global(limits.max_sessions));
        }
        match c.per_client.admit(key, limits.max_sessions_per_ip) {
            Ok(()) => {}
            Err(CapRefusal::AtCap) => return Err(LimitError::PerIp(limits.max_sessions_per_ip)),
            Err(CapRefusal::TableFull) => {
                return Err(LimitError::Networks(c.per_client.capacity()));
            }
        }
        c.total += 1;
        Ok(Slot {
            sessions: self,
            key,
            user: None,
        })
    }

    /// Sessions open now.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// Completes when no session is open.
    pub async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Slot<'_> {
    /// Counts this session for `user` too.
    pub fn admit_user(&mut self, user: &[u8], limits: &LimitSettings) -> Result<(), LimitError> {
        let mut c = self.sessions.lock();
        let current = c.per_user.get(user).copied().unwrap_or(0);
        if limits.max_sessions_per_user > 0 && current >= limits.max_sessions_per_user {
            return Err(LimitError::PerUser(limits.max_sessions_per_user));
        }
        *c.per_user.entry(user.to_vec()).or_insert(0) += 1;
        self.user = Some(user.to_vec());
        Ok(())
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.sessions.lock();
        c.total = c.total.saturating_sub(1);
        c.per_client.release(&self.key);
        if let Some(user) = &self.user
            && let Some(n) = c.per_user.get_mut(user)
        {
            // The map holds only users with open sessions.
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
        drop(c);
        self.sessions.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn limits_are_enforced_and_released() {
        let s = Sessions::default();
        let l = LimitSettings {
            max_sessions: 3,
            max_sessions_per_ip: 2,
            max_sessions_per_user: 1,
            ..LimitSettings::default()
        };
        let a = l.prefixes().key("127.0.0.1".parse().unwrap());
        let b = l.prefixes().key("127.0.0.2".parse().unwrap());
        let mut s1 = s.admit(a, &l).unwrap();
        let s2 = s.admit(a, &l).unwrap();
        assert_eq!(s.admit(a, &l).unwrap_err(), LimitError::PerIp(2));
        let mut s3 = s.admit(b, &l).unwrap();
        assert_eq!(s.admit(b, &l).unwrap_err(), LimitError::Global(3));
        s1.admit_user(b"alice", &l).unwrap();
        assert_eq!(
            s3.admit_user(b"alice", &l).unwrap_err(),
            LimitError::PerUser(1)
        );
        drop(s1);
        s3.admit_user(b"alice", &l).unwrap();
        drop((s2, s3));
        assert_eq!(s.active(), 0);
        assert!(s.lock().per_client.clients() == 0 && s.lock().per_user.is_empty());
    }

    #[test]
    fn per_ip_cap_is_per_client_network() {
        let s = Sessions::default();
        let l = LimitSettings {
            max_sessions_per_ip: 1,
            ..LimitSettings::default()
        };
        let key = |a: &str| l.prefixes().key(a.parse::<IpAddr>().unwrap());
        let _first = s.admit(key("2001:db8::1"), &l).unwrap();
        assert_eq!(
            s.admit(key("2001:db8::2:3"), &l).unwrap_err(),
            LimitError::PerIp(1),
            "same /64"
        );
        let _other = s.admit(key("2001:db8:0:1::1"), &l).unwrap();
    }

    #[test]
    fn rates_and_prefixes_are_checked() {
        let c = |text: &str| {
            let c: crate::config::Config = toml::from_str(text).unwrap();
            c.limits.check().map_err(|e| e.to_string())
        };
        assert!(c("[limits]\nsessions_per_second_per_client = 5\n").is_ok());
        for (text, needle) in [
            (
                "[limits]\nsessions_per_second_per_client = 0\n",
                "at least 1",
            ),
            (
                "[limits]\nsessions_per_second_per_user = 3\nsessions_burst_per_user = 0\n",
                "at least 1",
            ),
            (
                "[limits]\nsessions_burst_per_client = 4\n",
                "needs its rate",
            ),
            ("[limits]\nclient_prefix_ipv4 = 33\n", "1 to 32"),
            ("[limits]\nclient_prefix_ipv6 = 0\n", "1 to 128"),
        ] {
            let e = c(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let l: crate::config::Config =
            toml::from_str("[limits]\nsessions_per_second_per_client = 5\n").unwrap();
        assert_eq!(
            l.limits.client_rate(),
            Some(Rate {
                per_second: 5,
                burst: 5
            })
        );
        assert_eq!(l.limits.user_rate(), None);
        assert_eq!(
            l.limits.describe(),
            "# session rates: per client network (IPv4 /32, IPv6 /64): 5 per second, burst 5; \
             per user: no limit\n"
        );
    }

    #[tokio::test]
    async fn all_ended_waits_for_the_last_session() {
        let s = std::sync::Arc::new(Sessions::default());
        let ip = Cidr::host("127.0.0.1".parse().unwrap());
        let slot = s.admit(ip, &LimitSettings::default()).unwrap();
        let s2 = std::sync::Arc::clone(&s);
        let waiter = tokio::spawn(async move { s2.all_ended().await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(slot);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("drain completes when the last session ends")
            .unwrap();
    }
}
