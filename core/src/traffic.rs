//! Traffic limits: which bandwidth limit and byte quota apply to a session, who shares its
//! token buckets, and when a quota period rolls over.
//!
//! * An operator lists [`TrafficRule`]s; the first one whose matchers (users, client
//!   networks) match a session decides its [`Limits`] ([`select`]). A rule with no limits
//!   exempts the sessions it matches from the rules after it.
//! * [`Limits::up`] and [`Limits::down`] are [`Rate`]s in bytes per second, enforced by
//!   [`TokenBucket`](crate::rate::TokenBucket)s that the driver keeps. [`Sharing`] says which
//!   sessions spend from one bucket: each session its own, all sessions of a user, or all
//!   sessions from one client address ([`Sharing::key`]).
//! * A [`Quota`] counts the bytes (both directions) of one user per calendar [`Period`]
//!   (UTC). [`QuotaUsage`] is the count; it starts again at zero when the period rolls over.
//!   Once it is spent, [`admit`] refuses new requests with [`Failure::QuotaSpent`]
//!   (SOCKS5 REP 2 "not allowed by ruleset", SOCKS4 CD 91) and the driver ends the user's
//!   running sessions.
//!
//! The core has no clock of calendar time: quota calls take the driver's Unix time in
//! seconds.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use crate::Failure;
use crate::rate::Rate;
use crate::rules::{Cidr, UserName};

/// Which sessions spend from one token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Sharing {
    /// Every session has its own buckets.
    Session,
    /// All sessions of one authenticated user share them. Sessions without a user share
    /// their client address's buckets instead, so that not logging in never lifts a limit.
    User,
    /// All sessions from one client address share them.
    Client,
}

impl Sharing {
    /// The configuration name: `session`, `user` or `client`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
            Self::Client => "client",
        }
    }

    /// The bucket a session of `user` (when authenticated) from `client` spends from.
    pub fn key(self, user: Option<&[u8]>, client: IpAddr) -> BucketKey<'_> {
        let client = client.to_canonical();
        match (self, user) {
            (Self::Session, _) => BucketKey::Session,
            (Self::User, Some(user)) => BucketKey::User(user),
            (Self::User | Self::Client, _) => BucketKey::Client(client),
        }
    }
}

impl FromStr for Sharing {
    type Err = TrafficError;

    fn from_str(s: &str) -> Result<Self, TrafficError> {
        match s {
            "session" => Ok(Self::Session),
            "user" => Ok(Self::User),
            "client" => Ok(Self::Client),
            _ => Err(TrafficError::UnknownSharing),
        }
    }
}

/// Which bucket a session spends from (see [`Sharing::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BucketKey<'a> {
    /// The session's own.
    Session,
    /// The user's.
    User(&'a [u8]),
    /// The client address's (canonical: IPv4-mapped IPv6 is IPv4).
    Client(IpAddr),
}

/// A quota period: a calendar hour, day, week (Monday to Sunday) or month, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Period {
    /// From minute 0 of each hour.
    Hour,
    /// From 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC.
    Week,
    /// From the first of the month, 00:00 UTC.
    Month,
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// 1970-01-01 was a Thursday: days since the Unix epoch, plus this, modulo 7, counts from
/// Monday.
const EPOCH_WEEKDAY_FROM_MONDAY: u64 = 3;

impl Period {
    /// The configuration name: `hour`, `day`, `week` or `month`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// When the period containing `unix` (seconds since the Unix epoch) began.
    pub fn start(self, unix: u64) -> u64 {
        match self {
            Self::Hour => unix - unix % HOUR,
            Self::Day => unix - unix % DAY,
            Self::Week => {
                let days = unix / DAY;
                // The epoch's own week began before it: it starts at 0 here.
                days.saturating_sub((days + EPOCH_WEEKDAY_FROM_MONDAY) % 7) * DAY
            }
            Self::Month => {
                let (y, m, _) = civil_from_days(unix / DAY);
                days_from_civil(y, m, 1).saturating_mul(DAY)
            }
        }
    }

    /// When the period containing `unix` ends (the next one begins).
    pub fn end(self, unix: u64) -> u64 {
        let start = self.start(unix);
        match self {
            Self::Hour => start.saturating_add(HOUR),
            Self::Day => start.saturating_add(DAY),
            Self::Week => start.saturating_add(7 * DAY),
            Self::Month => {
                let (y, m, _) = civil_from_days(start / DAY);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1).saturating_mul(DAY)
            }
        }
    }
}

impl FromStr for Period {
    type Err = TrafficError;

    fn from_str(s: &str) -> Result<Self, TrafficError> {
        match s {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            _ => Err(TrafficError::UnknownPeriod),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (proleptic Gregorian).
/// Howard Hinnant's `civil_from_days`, for days on or after the epoch.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days from 1970-01-01 to `y`-`m`-`d` (on or after the epoch; earlier dates give 0).
pub fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = y.saturating_sub(u64::from(m <= 2));
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d.saturating_sub(1);
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era.saturating_mul(146_097) + doe).saturating_sub(719_468)
}

/// At most `bytes` bytes (both directions together) per [`Period`], per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Quota {
    /// Bytes per period.
    pub bytes: u64,
    /// The period.
    pub period: Period,
}

/// The bytes a user has moved in the current quota period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuotaUsage {
    /// When the counted period began (Unix seconds).
    start: u64,
    /// Bytes counted in it.
    used: u64,
}

impl QuotaUsage {
    /// Nothing used yet.
    pub const fn new() -> Self {
        Self { start: 0, used: 0 }
    }

    /// Starts counting again if `unix` is in a later period than the one counted.
    fn roll(&mut self, period: Period, unix: u64) {
        let start = period.start(unix);
        if start != self.start {
            self.start = start;
            self.used = 0;
        }
    }

    /// Bytes used in the period containing `unix`.
    pub fn used(&mut self, quota: Quota, unix: u64) -> u64 {
        self.roll(quota.period, unix);
        self.used
    }

    /// Bytes left in the period containing `unix`; 0 once spent.
    pub fn remaining(&mut self, quota: Quota, unix: u64) -> u64 {
        self.roll(quota.period, unix);
        quota.bytes.saturating_sub(self.used)
    }

    /// Counts `n` bytes moved at `unix`.
    pub fn charge(&mut self, quota: Quota, unix: u64, n: u64) {
        self.roll(quota.period, unix);
        self.used = self.used.saturating_add(n);
    }

    /// Whether the quota is spent at `unix`.
    pub fn is_spent(&mut self, quota: Quota, unix: u64) -> bool {
        self.remaining(quota, unix) == 0
    }
}

/// The limits of the sessions a [`TrafficRule`] matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// Client → destination, bytes per second.
    pub up: Option<Rate>,
    /// Destination → client, bytes per second.
    pub down: Option<Rate>,
    /// Who shares the buckets.
    pub per: Sharing,
    /// Bytes per period, for `per` = [`Sharing::User`] only.
    pub quota: Option<Quota>,
}

impl Limits {
    /// No limit at all (an exemption).
    pub const NONE: Self = Self {
        up: None,
        down: None,
        per: Sharing::Session,
        quota: None,
    };

    /// Whether nothing is limited.
    pub const fn is_unlimited(&self) -> bool {
        self.up.is_none() && self.down.is_none() && self.quota.is_none()
    }

    /// The quota that counts the bytes of `user`'s session: only a per-user rule's, and only
    /// for an authenticated user.
    pub const fn quota_for(&self, user: Option<&[u8]>) -> Option<Quota> {
        match (self.per, user) {
            (Sharing::User, Some(_)) => self.quota,
            _ => None,
        }
    }

    /// Checks the rule's own consistency (what a configuration must be refused for).
    pub const fn check(&self) -> Result<(), TrafficError> {
        if let Some(up) = self.up
            && (up.per_second == 0 || up.burst == 0)
        {
            return Err(TrafficError::Zero);
        }
        if let Some(down) = self.down
            && (down.per_second == 0 || down.burst == 0)
        {
            return Err(TrafficError::Zero);
        }
        if let Some(q) = self.quota {
            if q.bytes == 0 {
                return Err(TrafficError::Zero);
            }
            if !matches!(self.per, Sharing::User) {
                return Err(TrafficError::QuotaNotPerUser);
            }
        }
        Ok(())
    }
}

/// One traffic rule: matchers (absent ones match every session) and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficRule<'a> {
    /// The session's authenticated user must be one of these (empty: any session).
    pub users: &'a [UserName],
    /// The client address must be in one of these networks (empty: any client).
    pub from: &'a [Cidr],
    /// What applies to matching sessions.
    pub limits: Limits,
}

impl TrafficRule<'_> {
    /// Whether a session of `user` (when authenticated) from `client` matches.
    pub fn matches(&self, user: Option<&[u8]>, client: IpAddr) -> bool {
        let user_ok = self.users.is_empty()
            || user.is_some_and(|u| self.users.iter().any(|want| want.as_bytes() == u));
        let client_ok = self.from.is_empty() || self.from.iter().any(|net| net.contains(client));
        user_ok && client_ok
    }
}

/// The first rule matching a session of `user` from `client`: its index and limits.
/// `None` when no rule matches (the session is unlimited).
pub fn select<'a>(
    rules: impl IntoIterator<Item = TrafficRule<'a>>,
    user: Option<&[u8]>,
    client: IpAddr,
) -> Option<(usize, Limits)> {
    rules
        .into_iter()
        .enumerate()
        .find(|(_, r)| r.matches(user, client))
        .map(|(i, r)| (i, r.limits))
}

/// Whether a new request of `user` may start under `limits`, given the user's quota usage
/// at `unix`: refused with [`Failure::QuotaSpent`] once the quota is spent.
pub fn admit(
    limits: &Limits,
    user: Option<&[u8]>,
    usage: &mut QuotaUsage,
    unix: u64,
) -> Result<(), Failure> {
    match limits.quota_for(user) {
        Some(quota) if usage.is_spent(quota, unix) => Err(Failure::QuotaSpent),
        _ => Ok(()),
    }
}

/// Why traffic settings are unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TrafficError {
    /// A rate, burst or quota of 0 (leave the key out for no limit).
    Zero,
    /// A quota on a rule whose buckets are not per user.
    QuotaNotPerUser,
    /// `per` is not `session`, `user` or `client`.
    UnknownSharing,
    /// The period is not `hour`, `day`, `week` or `month`.
    UnknownPeriod,
}

impl fmt::Display for TrafficError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zero => "must be more than 0 (leave the key out for no limit)",
            Self::QuotaNotPerUser => "a quota is counted per user: it needs per = \"user\"",
            Self::UnknownSharing => "expected \"session\", \"user\" or \"client\"",
            Self::UnknownPeriod => "expected \"hour\", \"day\", \"week\" or \"month\"",
        })
    }
}

impl core::error::Error for TrafficError {}

#[cfg(test)]
mod test {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Unix seconds of `y-m-d h:00:00` UTC.
    fn at(y: u64, m: u64, d: u64, h: u64) -> u64 {
        days_from_civil(y, m, d) * DAY + h * HOUR
    }

    #[test]
    fn test_civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2000-03-01 (after a leap day in a year divisible by 400), 2026-12-03.
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(at(2026, 12, 3, 0), 1_796_256_000);
        for days in (0..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn test_period_boundaries() {
        let t = at(2026, 12, 3, 12) + 1234; // a Thursday
        assert_eq!(Period::Hour.start(t), at(2026, 12, 3, 12));
        assert_eq!(Period::Hour.end(t), at(2026, 12, 3, 13));
        assert_eq!(Period::Day.start(t), at(2026, 12, 3, 0));
        assert_eq!(Period::Day.end(t), at(2026, 12, 4, 0));
        assert_eq!(Period::Week.start(t), at(2026, 11, 30, 0), "Monday");
        assert_eq!(Period::Week.end(t), at(2026, 12, 7, 0));
        assert_eq!(Period::Month.start(t), at(2026, 12, 1, 0));
        assert_eq!(
            Period::Month.end(t),
            at(2027, 1, 1, 0),
            "December rolls into January"
        );
        let feb = at(2028, 2, 29, 23);
        assert_eq!(Period::Month.start(feb), at(2028, 2, 1, 0));
        assert_eq!(Period::Month.end(feb), at(2028, 3, 1, 0));
        // A Monday starts its own week; the epoch (a Thursday) belongs to the week before.
        assert_eq!(Period::Week.start(at(2026, 11, 30, 0)), at(2026, 11, 30, 0));
        assert_eq!(Period::Week.start(0), 0);
        let _ = Period::Month.end(u64::MAX);
        let _ = Period::Week.end(u64::MAX);
    }

    #[test]
    fn test_quota_rolls_over_with_the_period() {
        let q = Quota {
            bytes: 1000,
            period: Period::Day,
        };
        let day1 = at(2026, 12, 3, 10);
        let mut u = QuotaUsage::new();
        assert_eq!(u.remaining(q, day1), 1000);
        u.charge(q, day1, 600);
        u.charge(q, day1 + HOUR, 500);
        assert_eq!(u.used(q, day1 + HOUR), 1100);
        assert!(u.is_spent(q, day1 + 2 * HOUR));
        assert_eq!(u.remaining(q, at(2026, 12, 3, 23) + 3599), 0);
        // Midnight UTC: a new day, a new count.
        assert_eq!(u.remaining(q, at(2026, 12, 4, 0)), 1000);
        assert_eq!(u.used(q, at(2026, 12, 4, 0)), 0);
    }

    fn limits(per: Sharing, quota: Option<Quota>) -> Limits {
        Limits {
            up: Some(Rate::per_second(1000)),
            down: None,
            per,
            quota,
        }
    }

    #[test]
    fn test_first_matching_rule_applies() {
        let alice = [UserName::new(b"alice").unwrap()];
        let lan = ["10.0.0.0/8".parse::<Cidr>().unwrap()];
        let exempt = TrafficRule {
            users: &alice,
            from: &lan,
            limits: Limits::NONE,
        };
        let alice_anywhere = TrafficRule {
            users: &alice,
            from: &[],
            limits: limits(Sharing::User, None),
        };
        let everyone = TrafficRule {
            users: &[],
            from: &[],
            limits: limits(Sharing::Client, None),
        };
        let rules = [exempt, alice_anywhere, everyone];
        let pick = |user: Option<&[u8]>, client: &str| select(rules, user, ip(client));
        assert_eq!(
            pick(Some(b"alice"), "10.1.2.3"),
            Some((0, Limits::NONE)),
            "exempt on the LAN"
        );
        assert_eq!(pick(Some(b"alice"), "192.0.2.1").unwrap().0, 1);
        assert_eq!(
            pick(Some(b"alice"), "::ffff:10.1.2.3").unwrap().0,
            0,
            "mapped"
        );
        assert_eq!(pick(Some(b"bob"), "10.1.2.3").unwrap().0, 2);
        assert_eq!(
            pick(None, "10.1.2.3").unwrap().0,
            2,
            "no user: no user rule"
        );
        assert_eq!(
            select(rules.into_iter().take(2), None, ip("10.1.2.3")),
            None
        );
    }

    #[test]
    fn test_bucket_keys() {
        let c = ip("::ffff:192.0.2.7");
        let v4 = ip("192.0.2.7");
        assert_eq!(Sharing::Session.key(Some(b"a"), c), BucketKey::Session);
        assert_eq!(Sharing::User.key(Some(b"a"), c), BucketKey::User(b"a"));
        assert_eq!(
            Sharing::User.key(None, c),
            BucketKey::Client(v4),
            "no user: the client's bucket"
        );
        assert_eq!(Sharing::Client.key(Some(b"a"), c), BucketKey::Client(v4));
    }

    #[test]
    fn test_spent_quota_refuses_with_rep_2() {
        let q = Quota {
            bytes: 10,
            period: Period::Hour,
        };
        let l = limits(Sharing::User, Some(q));
        let mut u = QuotaUsage::new();
        assert_eq!(admit(&l, Some(b"alice"), &mut u, 100), Ok(()));
        u.charge(q, 100, 10);
        assert_eq!(
            admit(&l, Some(b"alice"), &mut u, 200),
            Err(Failure::QuotaSpent)
        );
        assert_eq!(
            Failure::QuotaSpent.reply(),
            crate::wire::ReplyCode::NotAllowed
        );
        assert_eq!(admit(&l, None, &mut u, 200), Ok(()), "no user, no quota");
        assert_eq!(admit(&l, Some(b"alice"), &mut u, 3600), Ok(()), "next hour");
    }

    #[test]
    fn test_check_refuses_zero_and_misplaced_quota() {
        let q = Some(Quota {
            bytes: 1,
            period: Period::Day,
        });
        assert_eq!(limits(Sharing::User, q).check(), Ok(()));
        assert_eq!(
            limits(Sharing::Session, q).check(),
            Err(TrafficError::QuotaNotPerUser)
        );
        let mut zero = limits(Sharing::Client, None);
        zero.down = Some(Rate {
            per_second: 0,
            burst: 1,
        });
        assert_eq!(zero.check(), Err(TrafficError::Zero));
        let zero_quota = limits(
            Sharing::User,
            Some(Quota {
                bytes: 0,
                period: Period::Day,
            }),
        );
        assert_eq!(zero_quota.check(), Err(TrafficError::Zero));
        assert_eq!("week".parse(), Ok(Period::Week));
        assert_eq!(
            "fortnight".parse::<Period>(),
            Err(TrafficError::UnknownPeriod)
        );
        assert_eq!(
            "everyone".parse::<Sharing>(),
            Err(TrafficError::UnknownSharing)
        );
    }
}
