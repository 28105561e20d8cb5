//! Traffic limits (`[[traffic]]`): bandwidth per session, per user or per client address,
//! and byte quotas per user and period.
//!
//! The core decides ([`socksgate_core::traffic`]): the first `[[traffic]]` entry matching a
//! session's user and client applies, `per` says who shares its token buckets, a quota is
//! counted per user and calendar period (UTC), and a spent quota refuses new requests with
//! REP 2 / CD 91. This module parses the entries, keeps the shared buckets ([`Buckets`],
//! behind a mutex each, kept across reloads) and the quota counts ([`Usage`], kept with the
//! metrics), and hands each limited session its `SessionLimits`: what the relay, in both
//! its splice and copy paths, and the UDP relay spend from. Unlimited sessions get `None` and
//! their relay pays one branch per direction.
//!
//! ```toml
//! [[traffic]]
//! users = ["alice"]       # optional: these users
//! from = ["10.0.0.0/8"]   # optional: clients in these networks
//! per = "user"            # "session" (the default), "user" or "client"
//! up = "1M"               # bytes/s client → destination (K M G T = 1000s, Ki Mi Gi Ti = 1024s)
//! down = "8M"             # bytes/s destination → client
//! burst = "256K"          # default: one second's worth of each direction
//! quota = "10G"           # per = "user" only: bytes (both directions) per quota_period
//! quota_period = "day"    # "hour", "day", "week" or "month" (UTC calendar)
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use socksgate_core::rate::{Rate, TokenBucket};
use socksgate_core::rules::{Cidr, UserName};
use socksgate_core::traffic::{
    self as decide, BucketKey, Limits, Period, Quota, QuotaUsage, Sharing, TrafficRule,
};
use toml::Spanned;
use tracing::warn;

use crate::clock;
use crate::config::ConfigError;
use crate::metrics::Metrics;

/// One `[[traffic]]` entry as written in the file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// Authenticated users this entry is for (none: any session).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Spanned<String>>,
    /// Client networks this entry is for (none: any client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Spanned<String>>,
    /// Who shares one bucket: `session` (the default, which `check-config` shows), `user` or
    /// `client`.
    #[serde(default, serialize_with = "serialize_per")]
    pub per: Option<Spanned<String>>,
    /// Bytes per second from the client to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<Spanned<toml::Value>>,
    /// Bytes per second from the destination to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Spanned<toml::Value>>,
    /// The most bytes a bucket holds (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Spanned<toml::Value>>,
    /// Bytes per user and `quota_period`, both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Spanned<toml::Value>>,
    /// `hour`, `day`, `week` or `month`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_period: Option<Spanned<String>>,
}

fn serialize_per<S: serde::Serializer>(
    per: &Option<Spanned<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(
        per.as_ref()
            .map_or(Sharing::Session.as_str(), |p| p.get_ref()),
    )
}

// `toml::Value` holds floats, so only `PartialEq` is derived; the entries hold none that
// compare unequal to themselves (sizes are integers or strings).
impl Eq for TrafficConfig {}

/// One compiled entry: the core's matchers and limits, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compiled {
    users: Vec<UserName>,
    from: Vec<Cidr>,
    limits: Limits,
}

/// The `[[traffic]]` entries, compiled (first match applies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficRules(Vec<Compiled>);

/// A `[[traffic]]` value that cannot be used: where (byte offsets in the file) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficError {
    span: Range<usize>,
    message: String,
}

impl TrafficError {
    /// Names the file, line and column.
    pub fn locate(self, text: &str, path: &Path) -> ConfigError {
        ConfigError::at(text, path, self.span, self.message)
    }
}

/// A size in bytes: a non-negative integer, or a string of digits with an optional unit —
/// `K`, `M`, `G`, `T` (powers of 1000), `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) — and an
/// optional `B`: `"512K"`, `"8MB"`, `"1GiB"`.
pub fn parse_size(value: &toml::Value) -> Result<u64, String> {
    let text = match value {
        toml::Value::Integer(n) => {
            return u64::try_from(*n).map_err(|_| format!("{n} is negative"));
        }
        toml::Value::String(s) => s.trim(),
        other => {
            return Err(format!(
                "expected a size such as \"8M\" or a number of bytes, not {}",
                other.type_str()
            ));
        }
    };
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: expected digits and an optional unit K, M, G, T (powers of 1000) or \
                 Ki, Mi, Gi, Ti (powers of 1024), such as \"8M\""
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes such as \"8M\""))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Compiles the entries, refusing bad values with their position: a malformed size, a
/// rate, burst or quota of 0, an unknown `per` or period, a quota not counted per user.
pub fn compile(entries: &[TrafficConfig]) -> Result<TrafficRules, TrafficError> {
    let err = |span: Range<usize>, message: String| TrafficError { span, message };
    let size = |key: &str, v: &Spanned<toml::Value>| -> Result<u64, TrafficError> {
        let n = parse_size(v.get_ref())
            .map_err(|m| err(v.span(), format!("[[traffic]] {key}: {m}")))?;
        if n == 0 {
            return Err(err(
                v.span(),
                format!(
                    "[[traffic]] {key}: {}",
                    socksgate_core::traffic::TrafficError::Zero
                ),
            ));
        }
        Ok(n)
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let users = e
            .users
            .iter()
            .map(|u| {
                UserName::new(u.get_ref().as_bytes()).map_err(|x| {
                    err(
                        u.span(),
                        format!("[[traffic]] users {:?}: {x}", u.get_ref()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from = e
            .from
            .iter()
            .map(|f| {
                f.get_ref()
                    .parse::<Cidr>()
                    .map_err(|x| err(f.span(), format!("[[traffic]] from {:?}: {x}", f.get_ref())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let per: Sharing = match &e.per {
            None => Sharing::Session,
            Some(p) => p
                .get_ref()
                .parse()
                .map_err(|x| err(p.span(), format!("[[traffic]] per {:?}: {x}", p.get_ref())))?,
        };
        let up = e.up.as_ref().map(|v| size("up", v)).transpose()?;
        let down = e.down.as_ref().map(|v| size("down", v)).transpose()?;
        let burst = e.burst.as_ref().map(|v| size("burst", v)).transpose()?;
        if let Some(b) = &e.burst
            && up.is_none()
            && down.is_none()
        {
            return Err(err(
                b.span(),
                "[[traffic]] burst: meaningful only with up or down".into(),
            ));
        }
        let rate = |per_second: u64| Rate {
            per_second,
            burst: burst.unwrap_or(per_second),
        };
        let quota_bytes = e.quota.as_ref().map(|v| size("quota", v)).transpose()?;
        let period = match &e.quota_period {
            Some(p) => Some(p.get_ref().parse::<Period>().map_err(|x| {
                err(
                    p.span(),
                    format!("[[traffic]] quota_period {:?}: {x}", p.get_ref()),
                )
            })?),
            None => None,
        };
        let quota = match (quota_bytes, period, &e.quota, &e.quota_period) {
            (Some(bytes), Some(period), _, _) => Some(Quota { bytes, period }),
            (None, None, _, _) => None,
            (Some(_), None, Some(q), _) => {
                return Err(err(
                    q.span(),
                    "[[traffic]] quota needs quota_period = \"hour\", \"day\", \"week\" or \"month\""
                        .into(),
                ));
            }
            (_, _, _, Some(p)) => {
                return Err(err(
                    p.span(),
                    "[[traffic]] quota_period is meaningful only with quota".into(),
                ));
            }
            _ => None,
        };
        let limits = Limits {
            up: up.map(rate),
            down: down.map(rate),
            per,
            quota,
        };
        if let Err(x) = limits.check() {
            // Only a quota on a rule not counted per user is left to find here.
            let span = e.quota.as_ref().map_or(0..0, Spanned::span);
            return Err(err(span, format!("[[traffic]] {x}")));
        }
        out.push(Compiled {
            users,
            from,
            limits,
        });
    }
    Ok(TrafficRules(out))
}

impl TrafficRules {
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The limits of a session of `user` (when authenticated) from `client`: the first
    /// matching entry's, `None` when none matches.
    pub fn select(&self, user: Option<&[u8]>, client: IpAddr) -> Option<Limits> {
        let rules = self.0.iter().map(|c| TrafficRule {
            users: &c.users,
            from: &c.from,
            limits: c.limits,
        });
        decide::select(rules, user, client).map(|(_, l)| l)
    }
}

/// A direction: index into per-direction counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dir {
    /// Client → destination.
    Up = 0,
    /// Destination → client.
    Down = 1,
}

/// A token bucket that several tasks spend from.
#[derive(Debug)]
pub(crate) struct Bucket(Mutex<TokenBucket>);

/// Waiting for tokens, a direction asks for at least this share of a second's worth, so
/// that a busy direction wakes about 50 times a second rather than for every few bytes.
const WAKEUPS_PER_SECOND: u64 = 50;

impl Bucket {
    fn new(rate: Rate) -> Self {
        Self(Mutex::new(TokenBucket::new(rate, clock::now())))
    }

    fn lock(&self) -> MutexGuard<'_, TokenBucket> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes between 1 and `max` tokens (`max` ≥ 1), waiting until some are available.
    /// Returns them and whether it had to wait.
    async fn take(&self, max: u64) -> (u64, bool) {
        let mut waited = false;
        loop {
            let ready = {
                let mut b = self.lock();
                let now = clock::now();
                let got = b.take_up_to(now, max);
                if got > 0 {
                    return (got, waited);
                }
                // At most a quarter of the burst: tokens that arrive while the waiters wake
                // up must fit in the bucket, or they are lost and the rate falls short.
                let rate = b.rate();
                let want = max
                    .min(rate.per_second / WAKEUPS_PER_SECOND)
                    .min(rate.burst / 4)
                    .max(1);
                // A rate of 0 is refused by the configuration; were it here, retry slowly.
                b.ready_at(now, want)
                    .unwrap_or(now + std::time::Duration::from_secs(1))
            };
            waited = true;
            // Boxed: only limited directions that wait pay for the timer's memory.
            Box::pin(tokio::time::sleep_until(clock::deadline(ready))).await;
        }
    }

    fn try_take(&self, n: u64) -> bool {
        self.lock().try_take(clock::now(), n)
    }

    fn give_back(&self, n: u64) {
        if n > 0 {
            self.lock().give_back(n);
        }
    }

    fn set_rate(&self, rate: Rate) {
        let mut b = self.lock();
        if b.rate() != rate {
            b.set_rate(rate, clock::now());
        }
    }
}

/// Who owns a shared bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    User(Vec<u8>),
    Client(IpAddr),
}

/// The buckets shared by the sessions of a user or a client address (kept across reloads,
/// so a reload neither refills nor resets them).
#[derive(Debug, Default)]
pub struct Buckets(Mutex<BucketMap>);

#[derive(Debug, Default)]
struct BucketMap {
    shared: HashMap<(Owner, Dir), SharedBucket>,
    /// The map's size after the last sweep of unused buckets.
    swept: usize,
}

/// A shared bucket and the latest session that took it, whose user and client a reload
/// matches against the new entries.
#[derive(Debug)]
struct SharedBucket {
    bucket: Arc<Bucket>,
    user: Option<Vec<u8>>,
    client: IpAddr,
}

impl Buckets {
    /// The bucket a session of `user` from `client` spends from in `dir`: its own, or the
    /// shared one of its user or client (`key`), which takes `rate` if it had another.
    fn get(
        &self,
        key: BucketKey<'_>,
        dir: Dir,
        rate: Rate,
        user: Option<&[u8]>,
        client: IpAddr,
    ) -> Arc<Bucket> {
        let owner = match key {
            BucketKey::Session => return Arc::new(Bucket::new(rate)),
            BucketKey::User(u) => Owner::User(u.to_vec()),
            BucketKey::Client(ip) => Owner::Client(ip),
        };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Buckets no session holds any more are dropped once the map has doubled.
        if map.shared.len() >= (2 * map.swept).max(64) {
            map.shared.retain(|_, b| Arc::strong_count(&b.bucket) > 1);
            map.swept = map.shared.len();
        }
        let entry = map
            .shared
            .entry((owner, dir))
            .or_insert_with(|| SharedBucket {
                bucket: Arc::new(Bucket::new(rate)),
                user: None,
                client,
            });
        entry.bucket.set_rate(rate);
        entry.user = user.map(<[u8]>::to_vec);
        entry.client = client;
        Arc::clone(&entry.bucket)
    }

    /// After a reload: each shared bucket takes the rate that `rules` give the latest
    /// session that took it, when they still share it the same way, so running sessions
    /// of a user or client move at the new rate at once.
    pub fn retune(&self, rules: &TrafficRules) {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for ((owner, dir), entry) in &map.shared {
            let user = entry.user.as_deref();
            let Some(limits) = rules.select(user, entry.client) else {
                continue;
            };
            let same_owner = match (limits.per.key(user, entry.client), owner) {
                (BucketKey::User(u), Owner::User(o)) => u == o.as_slice(),
                (BucketKey::Client(ip), Owner::Client(o)) => ip == *o,
                _ => false,
            };
            let rate = match dir {
                Dir::Up => limits.up,
                Dir::Down => limits.down,
            };
            if let (true, Some(rate)) = (same_owner, rate) {
                entry.bucket.set_rate(rate);
            }
        }
    }
}

/// A spent quota, as the error that ends a relay direction.
#[derive(Debug, thiserror::Error)]
#[error("traffic quota of user {user:?} spent ({quota})")]
pub(crate) struct QuotaSpent {
    user: String,
    quota: String,
}

/// Whether `e` is a relay's end because of a spent quota.
pub(crate) fn is_quota_spent(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<QuotaSpent>())
}

/// One user's quota count.
#[derive(Debug)]
pub(crate) struct UserQuota {
    user: String,
    state: Mutex<QuotaState>,
}

#[derive(Debug)]
struct QuotaState {
    usage: QuotaUsage,
    /// The quota in force (the newest configuration's).
    quota: Quota,
    /// The start of the period whose exhaustion was logged.
    logged: Option<u64>,
}

/// Seconds since the Unix epoch, for quota periods.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A quota as the log and the metrics show it: `10000000000 bytes per day`.
fn describe(quota: Quota) -> String {
    format!("{} bytes per {}", quota.bytes, quota.period)
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(unix: u64) -> String {
    let (y, m, d) = socksgate_core::traffic::civil_from_days(unix / 86_400);
    let s = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

impl UserQuota {
    fn lock(&self) -> MutexGuard<'_, QuotaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes left now, or the error that ends the session (logged once per period).
    fn remaining(&self) -> Result<u64, QuotaSpent> {
        let now = unix_now();
        let mut s = self.lock();
        let quota = s.quota;
        let left = s.usage.remaining(quota, now);
        if left > 0 {
            return Ok(left);
        }
        let period = quota.period.start(now);
        if s.logged != Some(period) {
            s.logged = Some(period);
            warn!(
                user = %self.user,
                "traffic quota spent: {} used of {}; the user's sessions end and new requests \
                 are refused until {}",
                s.usage.used(quota, now),
                describe(quota),
                utc(quota.period.end(now))
            );
        }
        Err(QuotaSpent {
            user: self.user.clone(),
            quota: describe(quota),
        })
    }

    fn charge(&self, n: u64) {
        let mut s = self.lock();
        let quota = s.quota;
        s.usage.charge(quota, unix_now(), n);
    }
}

/// Traffic counters and quota counts (kept with the metrics, so across reloads).
#[derive(Debug, Default)]
pub struct Usage {
    quotas: Mutex<HashMap<Vec<u8>, Arc<UserQuota>>>,
    limited_sessions: AtomicU64,
    limited_active: AtomicI64,
    limited_bytes: [AtomicU64; 2],
    waits: [AtomicU64; 2],
    udp_dropped: [AtomicU64; 2],
    udp_dropped_bytes: [AtomicU64; 2],
    quota_refusals: AtomicU64,
    quota_ended: AtomicU64,
}

impl Usage {
    /// `user`'s quota count, now under `quota`.
    fn quota(&self, user: &[u8], quota: Quota) -> Arc<UserQuota> {
        let mut map = self.quotas.lock().unwrap_or_else(PoisonError::into_inner);
        let q = map.entry(user.to_vec()).or_insert_with(|| {
            Arc::new(UserQuota {
                user: String::from_utf8_lossy(user).into_owned(),
                state: Mutex::new(QuotaState {
                    usage: QuotaUsage::new(),
                    quota,
                    logged: None,
                }),
            })
        });
        q.lock().quota = quota;
        Arc::clone(q)
    }

    /// A session ended because its user's quota is spent.
    pub(crate) fn quota_ended(&self) {
        self.quota_ended.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus lines.
    pub(crate) fn render(&self, o: &mut String) {
        use std::fmt::Write as _;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_limited_sessions_total Sessions that got bandwidth limits or a quota.\n# TYPE socksgate_traffic_limited_sessions_total counter\nsocksgate_traffic_limited_sessions_total {}",
            get(&self.limited_sessions)
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_limited_sessions Sessions with bandwidth limits or a quota open now.\n# TYPE socksgate_traffic_limited_sessions gauge\nsocksgate_traffic_limited_sessions {}",
            self.limited_active.load(Ordering::Relaxed)
        );
        let per_direction = |o: &mut String, name: &str, help: &str, v: &[AtomicU64; 2]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (dir, c) in ["up", "down"].iter().zip(v) {
                let _ = writeln!(o, "{name}{{direction=\"{dir}\"}} {}", get(c));
            }
        };
        per_direction(
            o,
            "socksgate_traffic_limited_bytes_total",
            "Bytes relayed by limited sessions (TCP).",
            &self.limited_bytes,
        );
        per_direction(
            o,
            "socksgate_traffic_waits_total",
            "Times a limited TCP direction waited for its bandwidth limit.",
            &self.waits,
        );
        per_direction(
            o,
            "socksgate_traffic_udp_dropped_datagrams_total",
            "UDP datagrams dropped over a bandwidth limit or a spent quota.",
            &self.udp_dropped,
        );
        per_direction(
            o,
            "socksgate_traffic_udp_dropped_bytes_total",
            "Payload bytes of the UDP datagrams dropped over a limit.",
            &self.udp_dropped_bytes,
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_quota_refusals_total Requests refused because the user's quota is spent.\n# TYPE socksgate_traffic_quota_refusals_total counter\nsocksgate_traffic_quota_refusals_total {}",
            get(&self.quota_refusals)
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_quota_ended_sessions_total Sessions ended when the user's quota was spent.\n# TYPE socksgate_traffic_quota_ended_sessions_total counter\nsocksgate_traffic_quota_ended_sessions_total {}",
            get(&self.quota_ended)
        );
        let Ok(map) = self.quotas.lock() else { return };
        if map.is_empty() {
            return;
        }
        let now = unix_now();
        let mut rows: Vec<(String, u64, u64)> = map
            .values()
            .map(|q| {
                let mut s = q.lock();
                let quota = s.quota;
                (q.user.clone(), s.usage.used(quota, now), quota.bytes)
            })
            .collect();
        drop(map);
        rows.sort();
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_quota_used_bytes Bytes each user has used of their quota this period.\n# TYPE socksgate_traffic_quota_used_bytes gauge"
        );
        for (user, used, _) in &rows {
            let _ = writeln!(
                o,
                "socksgate_traffic_quota_used_bytes{{user=\"{}\"}} {used}",
                crate::metrics::escape(user)
            );
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_traffic_quota_bytes Each user's quota per period.\n# TYPE socksgate_traffic_quota_bytes gauge"
        );
        for (user, _, limit) in &rows {
            let _ = writeln!(
                o,
                "socksgate_traffic_quota_bytes{{user=\"{}\"}} {limit}",
                crate::metrics::escape(user)
            );
        }
    }
}

/// What one direction of a limited session spends from: a bucket, a quota, or both.
#[derive(Debug)]
pub(crate) struct DirectionLimit {
    dir: Dir,
    bucket: Option<Arc<Bucket>>,
    quota: Option<Arc<UserQuota>>,
    metrics: Arc<Metrics>,
}

impl DirectionLimit {
    /// How many bytes (1 to `max`) the direction may move now, waiting for the bandwidth
    /// limit; an error once the quota is spent. Report what was moved with [`Self::used`].
    pub(crate) async fn grant(&self, max: usize) -> std::io::Result<usize> {
        let mut max = u64::try_from(max).unwrap_or(u64::MAX).max(1);
        if let Some(q) = &self.quota {
            max = max.min(q.remaining().map_err(std::io::Error::other)?);
        }
        let Some(bucket) = &self.bucket else {
            return Ok(usize::try_from(max).unwrap_or(usize::MAX));
        };
        let (got, waited) = bucket.take(max).await;
        if waited {
            self.metrics.traffic.waits[self.dir as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(usize::try_from(got).unwrap_or(usize::MAX))
    }

    /// `moved` of the `granted` bytes were moved: the rest go back to the bucket, the
    /// moved ones count against the quota.
    pub(crate) fn used(&self, granted: usize, moved: usize) {
        if let Some(b) = &self.bucket {
            b.give_back(granted.saturating_sub(moved) as u64);
        }
        if moved > 0 {
            if let Some(q) = &self.quota {
                q.charge(moved as u64);
            }
            self.metrics.traffic.limited_bytes[self.dir as usize]
                .fetch_add(moved as u64, Ordering::Relaxed);
        }
    }

    /// Counts a session ended by its user's spent quota.
    pub(crate) fn quota_ended(&self) {
        self.metrics.traffic.quota_ended();
    }

    /// Whether a datagram of `len` payload bytes may pass now (counted if so, counted as
    /// dropped if not); an error once the quota is spent.
    pub(crate) fn datagram(&self, len: usize) -> Result<bool, QuotaSpent> {
        let n = len as u64;
        let quota_ok = match &self.quota {
            Some(q) => q.remaining()? >= n,
            None => true,
        };
        let pass = quota_ok && self.bucket.as_ref().is_none_or(|b| b.try_take(n));
        if pass {
            if let Some(q) = &self.quota {
                q.charge(n);
            }
        } else {
            let t = &self.metrics.traffic;
            t.udp_dropped[self.dir as usize].fetch_add(1, Ordering::Relaxed);
            t.udp_dropped_bytes[self.dir as usize].fetch_add(n, Ordering::Relaxed);
        }
        Ok(pass)
    }
}

/// A limited session's two directions (each `None` when that direction is free).
#[derive(Debug)]
pub(crate) struct SessionLimits {
    pub(crate) up: Option<DirectionLimit>,
    pub(crate) down: Option<DirectionLimit>,
}

impl Drop for SessionLimits {
    fn drop(&mut self) {
        let m = self.up.as_ref().or(self.down.as_ref());
        if let Some(d) = m {
            d.metrics
                .traffic
                .limited_active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The limits of a session of `user` (when authenticated) from `client` under `rules`, with
/// the shared buckets in `buckets` and the quota counts in `metrics`; `None` for a session
/// without limits. Boxed: an unlimited session's task holds one word for them.
pub(crate) fn session_limits(
    rules: &TrafficRules,
    buckets: &Buckets,
    metrics: &Arc<Metrics>,
    user: Option<&[u8]>,
    client: IpAddr,
) -> Option<Box<SessionLimits>> {
    let limits = rules.select(user, client)?;
    let quota = match (limits.quota_for(user), user) {
        (Some(q), Some(u)) => Some(metrics.traffic.quota(u, q)),
        _ => None,
    };
    if limits.up.is_none() && limits.down.is_none() && quota.is_none() {
        return None;
    }
    let key = limits.per.key(user, client);
    let direction = |dir: Dir, rate: Option<Rate>| {
        let bucket = rate.map(|r| buckets.get(key, dir, r, user, client));
        (bucket.is_some() || quota.is_some()).then(|| DirectionLimit {
            dir,
            bucket,
            quota: quota.clone(),
            metrics: Arc::clone(metrics),
        })
    };
    let out = Box::new(SessionLimits {
        up: direction(Dir::Up, limits.up),
        down: direction(Dir::Down, limits.down),
    });
    let t = &metrics.traffic;
    t.limited_sessions.fetch_add(1, Ordering::Relaxed);
    t.limited_active.fetch_add(1, Ordering::Relaxed);
    Some(out)
}

/// Whether a new request of `user` from `client` may start: refused (counted, logged with
/// the user and quota) once the user's quota for this period is spent.
pub(crate) fn admit(
    rules: &TrafficRules,
    metrics: &Metrics,
    user: Option<&[u8]>,
    client: IpAddr,
) -> Result<(), socksgate_core::Failure> {
    let Some(limits) = rules.select(user, client) else {
        return Ok(());
    };
    let (Some(quota), Some(name)) = (limits.quota_for(user), user) else {
        return Ok(());
    };
    let q = metrics.traffic.quota(name, quota);
    let now = unix_now();
    let mut s = q.lock();
    let refused = decide::admit(&limits, user, &mut s.usage, now);
    if refused.is_err() {
        metrics
            .traffic
            .quota_refusals
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            user = %q.user,
            "request refused: traffic quota spent ({} used of {}) until {}",
            s.usage.used(quota, now),
            describe(quota),
            utc(quota.period.end(now))
        );
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<TrafficRules, String> {
        let c: crate::config::Config = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => return Err(e.to_string()),
        };
        compile(&c.traffic).map_err(|e| e.locate(text, Path::new("t.toml")).to_string())
    }

    #[test]
    fn sizes() {
        let s = |t: &str| parse_size(&toml::Value::String(t.into()));
        assert_eq!(s("0"), Ok(0));
        assert_eq!(s("512"), Ok(512));
        assert_eq!(s("8M"), Ok(8_000_000));
        assert_eq!(s("8MB"), Ok(8_000_000));
        assert_eq!(s("256K"), Ok(256_000));
        assert_eq!(s("256k"), Ok(256_000));
        assert_eq!(s("1Gi"), Ok(1 << 30));
        assert_eq!(s("1GiB"), Ok(1 << 30));
        assert_eq!(s("10 G"), Ok(10_000_000_000));
        assert_eq!(parse_size(&toml::Value::Integer(4096)), Ok(4096));
        for bad in ["", "M", "1.5M", "8X", "-1", "1MM", "99999999999999T"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert!(parse_size(&toml::Value::Integer(-1)).is_err());
        assert!(parse_size(&toml::Value::Boolean(true)).is_err());
    }

    #[test]
    fn entries_compile_and_first_match_applies() {
        let r = rules(
            "[[traffic]]\nusers = [\"root\"]\nper = \"session\"\n\
             [[traffic]]\nusers = [\"alice\"]\nfrom = [\"10.0.0.0/8\"]\nper = \"user\"\nup = \"1M\"\ndown = \"8Mi\"\nburst = \"256K\"\nquota = \"10G\"\nquota_period = \"day\"\n\
             [[traffic]]\nper = \"client\"\ndown = 1000\n",
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let alice = r.select(Some(b"alice"), ip("10.1.1.1")).unwrap();
        assert_eq!(
            alice.up,
            Some(Rate {
                per_second: 1_000_000,
                burst: 256_000
            })
        );
        assert_eq!(alice.down.unwrap().per_second, 8 << 20);
        assert_eq!(
            alice.quota,
            Some(Quota {
                bytes: 10_000_000_000,
                period: Period::Day
            })
        );
        assert!(
            r.select(Some(b"root"), ip("10.1.1.1"))
                .unwrap()
                .is_unlimited()
        );
        let other = r.select(Some(b"alice"), ip("192.0.2.1")).unwrap();
        assert_eq!(
            other.down,
            Some(Rate::per_second(1000)),
            "burst: a second's worth"
        );
        assert_eq!(other.per, Sharing::Client);
        assert!(rules("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_name_file_line_and_column() {
        let cases = [
            (
                "[[traffic]]\nper = \"user\"\nup = \"0\"\n",
                "t.toml:3:6:",
                "more than 0",
            ),
            (
                "[[traffic]]\nper = \"user\"\ndown = 0\n",
                "t.toml:3:8:",
                "more than 0",
            ),
            (
                "[[traffic]]\nper = \"user\"\nup = \"1M\"\nburst = \"0K\"\n",
                "t.toml:4:9:",
                "more than 0",
            ),
            (
                "[[traffic]]\nper = \"user\"\nup = \"8X\"\n",
                "t.toml:3:6:",
                "unit",
            ),
            (
                "[[traffic]]\nper = \"user\"\nup = \"1.5M\"\n",
                "t.toml:3:6:",
                "up",
            ),
            (
                "[[traffic]]\nper = \"user\"\nup = true\n",
                "t.toml:3:6:",
                "not boolean",
            ),
            (
                "[[traffic]]\nper = \"everyone\"\nup = \"1M\"\n",
                "t.toml:2:7:",
                "\"session\", \"user\" or \"client\"",
            ),
            (
                "[[traffic]]\nper = \"session\"\nquota = \"1G\"\nquota_period = \"day\"\n",
                "t.toml:3:9:",
                "per = \"user\"",
            ),
            (
                "[[traffic]]\nper = \"user\"\nquota = \"1G\"\nquota_period = \"fortnight\"\n",
                "t.toml:4:16:",
                "\"hour\", \"day\"",
            ),
            (
                "[[traffic]]\nper = \"user\"\nquota = \"1G\"\n",
                "t.toml:3:9:",
                "quota_period",
            ),
            (
                "[[traffic]]\nper = \"user\"\nquota_period = \"day\"\n",
                "t.toml:3:16:",
                "only with quota",
            ),
            (
                "[[traffic]]\nper = \"user\"\nquota = \"0\"\nquota_period = \"day\"\n",
                "t.toml:3:9:",
                "more than 0",
            ),
            (
                "[[traffic]]\nper = \"user\"\nburst = \"1M\"\n",
                "t.toml:3:9:",
                "only with up or down",
            ),
            (
                "[[traffic]]\nper = \"user\"\nfrom = [\"10.0.0.1/8\"]\n",
                "t.toml:3:9:",
                "from",
            ),
            (
                "[[traffic]]\nper = \"user\"\nusers = [\"\"]\n",
                "t.toml:3:10:",
                "users",
            ),
        ];
        for (text, at, why) in cases {
            let e = rules(text).unwrap_err();
            assert!(e.starts_with(at) && e.contains(why), "{text:?}: {e}");
        }
        let unknown = rules("[[traffic]]\nper = \"user\"\nrate = \"1M\"\n").unwrap_err();
        assert!(
            unknown.contains("rate") && unknown.contains("line 3"),
            "{unknown}"
        );
        // Without `per`, each session has its own buckets; without limits, an exemption.
        let r = rules("[[traffic]]\nup = \"1M\"\n[[traffic]]\nusers = [\"x\"]\n").unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(r.select(None, ip).unwrap().per, Sharing::Session);
        // The configuration reference's example (its `[[traffic]]` part) parses as documented.
        let readme = include_str!("../README.md");
        let example = readme
            .split("# Traffic limits:")
            .nth(1)
            .and_then(|rest| rest.split_once('\n'))
            .and_then(|(_, rest)| rest.split("```").next())
            .unwrap();
        let c = crate::config::Config::parse(example, Path::new("README.md")).unwrap();
        assert_eq!(c.traffic.len(), 3);
        let backup = c.traffic_rules.select(Some(b"backup"), ip).unwrap();
        assert!(backup.is_unlimited(), "an exemption");
        let alice = c
            .traffic_rules
            .select(Some(b"alice"), "10.0.0.1".parse().unwrap());
        assert_eq!(alice.unwrap().per, Sharing::User);
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_256_000 + 3661), "2026-12-03T01:01:01Z");
    }

    // Paused time: the wait below is measured on tokio's clock, which moves only when every
    // task sleeps, so a slow machine cannot refill the bucket between the two grants.
    #[tokio::test(start_paused = true)]
    async fn shared_buckets_per_user_and_client() {
        let r = rules(
            "[[traffic]]\nusers = [\"a\", \"b\"]\nper = \"user\"\ndown = \"1M\"\n\
             [[traffic]]\nper = \"session\"\nup = \"1M\"\n",
        )
        .unwrap();
        let buckets = Buckets::default();
        let metrics = Arc::new(Metrics::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = session_limits(&r, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let a2 = session_limits(&r, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let b1 = session_limits(&r, &buckets, &metrics, Some(b"b"), ip).unwrap();
        assert!(a1.up.is_none(), "no up limit");
        let bucket =
            |l: &SessionLimits| Arc::clone(l.down.as_ref().unwrap().bucket.as_ref().unwrap());
        assert!(
            Arc::ptr_eq(&bucket(&a1), &bucket(&a2)),
            "one bucket per user"
        );
        assert!(!Arc::ptr_eq(&bucket(&a1), &bucket(&b1)));
        let s1 = session_limits(&r, &buckets, &metrics, Some(b"c"), ip).unwrap();
        let s2 = session_limits(&r, &buckets, &metrics, Some(b"c"), ip).unwrap();
        let up = |l: &SessionLimits| Arc::clone(l.up.as_ref().unwrap().bucket.as_ref().unwrap());
        assert!(!Arc::ptr_eq(&up(&s1), &up(&s2)), "per session: their own");
        let per_client = rules("[[traffic]]\nper = \"client\"\nup = \"1M\"\n").unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let c1 = session_limits(&per_client, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let c2 = session_limits(&per_client, &buckets, &metrics, Some(b"b"), mapped).unwrap();
        let c3 = session_limits(&per_client, &buckets, &metrics, None, other).unwrap();
        assert!(
            Arc::ptr_eq(&up(&c1), &up(&c2)),
            "one bucket per client address"
        );
        assert!(!Arc::ptr_eq(&up(&c1), &up(&c3)));
        drop((c1, c2, c3));
        assert!(
            metrics
                .render()
                .contains("socksgate_traffic_limited_sessions 5\n")
        );
        drop((a1, a2, b1, s1, s2));
        assert!(
            metrics
                .render()
                .contains("socksgate_traffic_limited_sessions 0\n")
        );
        // The shared bucket: 1 MB/s with a burst of 1 MB, spent by two sessions.
        let a1 = session_limits(&r, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let a2 = session_limits(&r, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let (d1, d2) = (a1.down.as_ref().unwrap(), a2.down.as_ref().unwrap());
        let g = d1.grant(1_000_000).await.unwrap();
        d1.used(g, g);
        let started = tokio::time::Instant::now();
        let g2 = d2.grant(100_000).await.unwrap();
        assert!(g2 > 0);
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(15),
            "the other session waits for the shared bucket"
        );
    }

    #[test]
    fn reload_retunes_shared_buckets() {
        let old = rules(
            "[[traffic]]\nusers = [\"a\"]\nper = \"user\"\ndown = \"1M\"\n\
             [[traffic]]\nper = \"client\"\ndown = \"1M\"\n",
        )
        .unwrap();
        let buckets = Buckets::default();
        let metrics = Arc::new(Metrics::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = session_limits(&old, &buckets, &metrics, Some(b"a"), ip).unwrap();
        let c = session_limits(&old, &buckets, &metrics, Some(b"c"), ip).unwrap();
        let rate = |l: &SessionLimits| {
            l.down
                .as_ref()
                .unwrap()
                .bucket
                .as_ref()
                .unwrap()
                .lock()
                .rate()
        };
        let new = rules(
            "[[traffic]]\nusers = [\"a\"]\nper = \"user\"\ndown = \"2M\"\n\
             [[traffic]]\nper = \"session\"\ndown = \"3M\"\n",
        )
        .unwrap();
        buckets.retune(&new);
        assert_eq!(
            rate(&a),
            Rate::per_second(2_000_000),
            "the user's bucket takes the new rate"
        );
        assert_eq!(
            rate(&c),
            Rate::per_second(1_000_000),
            "no longer shared per client: the running sessions keep theirs"
        );
    }

    #[tokio::test]
    async fn quota_refuses_and_ends() {
        let r = rules("[[traffic]]\nper = \"user\"\nquota = \"1000\"\nquota_period = \"month\"\n")
            .unwrap();
        let buckets = Buckets::default();
        let metrics = Arc::new(Metrics::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            session_limits(&r, &buckets, &metrics, None, ip).is_none(),
            "no user: no quota"
        );
        let l = session_limits(&r, &buckets, &metrics, Some(b"q"), ip).unwrap();
        let up = l.up.as_ref().unwrap();
        assert_eq!(up.grant(5000).await.unwrap(), 1000, "at most what is left");
        up.used(1000, 600);
        assert!(admit(&r, &metrics, Some(b"q"), ip).is_ok());
        let down = l.down.as_ref().unwrap();
        assert!(matches!(down.datagram(300), Ok(true)));
        assert!(
            matches!(up.datagram(200), Ok(false)),
            "more than is left: dropped"
        );
        assert!(matches!(up.datagram(100), Ok(true)));
        let e = up.grant(1).await.unwrap_err();
        assert!(is_quota_spent(&e), "{e}");
        assert_eq!(
            admit(&r, &metrics, Some(b"q"), ip),
            Err(socksgate_core::Failure::QuotaSpent)
        );
        let text = metrics.render();
        assert!(
            text.contains("socksgate_traffic_quota_used_bytes{user=\"q\"} 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("socksgate_traffic_quota_refusals_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("socksgate_traffic_udp_dropped_datagrams_total{direction=\"up\"} 1\n"),
            "{text}"
        );
    }
}
