//! Session limits: at most `max_sessions` at once, `max_sessions_per_ip` from one client
//! address and `max_sessions_per_user` for one authenticated user (0 = no limit).
//!
//! A session holds a [`Slot`] from accept to close; dropping it frees the place. The global
//! and per-address limits are checked before the handshake (the connection is closed at once);
//! the per-user limit after authentication (the client gets reply 1 / SOCKS4 91).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// `[limits]` in the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sessions at once, over all clients (0 = no limit).
    pub max_sessions: usize,
    /// Sessions at once from one client IP address (0 = no limit).
    pub max_sessions_per_ip: usize,
    /// Sessions at once for one authenticated user (0 = no limit).
    pub max_sessions_per_user: usize,
}

/// Which limit refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `max_sessions`.
    #[error("max_sessions ({0}) reached")]
    Global(usize),
    /// `max_sessions_per_ip`.
    #[error("max_sessions_per_ip ({0}) reached for this client address")]
    PerIp(usize),
    /// `max_sessions_per_user`.
    #[error("max_sessions_per_user ({0}) reached for this user")]
    PerUser(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<Vec<u8>, usize>,
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
    ip: IpAddr,
    user: Option<Vec<u8>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for a new connection from `ip`.
    pub fn admit(&self, ip: IpAddr, limits: &LimitSettings) -> Result<Slot<'_>, LimitError> {
        let mut c = self.lock();
        if limits.max_sessions > 0 && c.total >= limits.max_sessions {
            return Err(LimitError::Global(limits.max_sessions));
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if limits.max_sessions_per_ip > 0 && from_ip >= limits.max_sessions_per_ip {
            return Err(LimitError::PerIp(limits.max_sessions_per_ip));
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            sessions: self,
            ip,
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
        decrement(&mut c.per_ip, &self.ip);
        if let Some(user) = &self.user {
            decrement(&mut c.per_user, user);
        }
        drop(c);
        self.sessions.ended.notify_waiters();
    }
}

/// Decrements a count, removing the entry at zero (the maps hold only open sessions).
fn decrement<K: Eq + std::hash::Hash>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_and_released() {
        let s = Sessions::default();
        let l = LimitSettings {
            max_sessions: 3,
            max_sessions_per_ip: 2,
            max_sessions_per_user: 1,
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
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
        assert!(s.lock().per_ip.is_empty() && s.lock().per_user.is_empty());
    }

    #[tokio::test]
    async fn all_ended_waits_for_the_last_session() {
        let s = std::sync::Arc::new(Sessions::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
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
