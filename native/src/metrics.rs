//! Prometheus metrics (`serve --metrics ADDR`): counters kept with atomics by the sessions,
//! rendered in the text exposition format at `GET /metrics`; beside them, the health checks
//! `GET /healthz` (the process answers) and `GET /readyz` (it takes new sessions: 503 from the
//! moment a drain starts, so a load balancer stops sending new ones while open ones finish).
//!
//! Per-user counters exist only for users who authenticated — a password of the users file
//! (RFC 1929), a Kerberos principal (GSS-API), a client certificate's CN — so their number is
//! bounded by who can authenticate, not by what clients send.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use socksgate_core::wire::{Command, ReplyCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The commands of the request counters, in index order (the core's names); unknown commands
/// share the last counter, labelled `unknown`.
const COMMANDS: [Option<&str>; 4] = [
    Command::Connect.name(),
    Command::Bind.name(),
    Command::UdpAssociate.name(),
    None,
];

/// The labels of `socksgate_gssapi_failures_total`: the binding's causes
/// ([`crate::gssapi::Cause`]), then `protocol` (the client broke RFC 1961's framing or
/// exchange: an oversized or truncated message, an abort, a bad protection level).
pub const GSSAPI_FAILURES: [&str; 8] = [
    "no_credentials",
    "expired",
    "wrong_service",
    "defective_token",
    "integrity",
    "sequence",
    "other",
    "protocol",
];

/// Every counter the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicU64,
    active: AtomicI64,
    handshake_failures: AtomicU64,
    auth_failures: AtomicU64,
    auth_delayed: AtomicU64,
    auth_refused: AtomicU64,
    /// GSS-API failures by [`GSSAPI_FAILURES`] label.
    gssapi_failures: [AtomicU64; GSSAPI_FAILURES.len()],
    /// GSS-API sessions established, by protection level (none, integrity, confidentiality).
    gssapi_sessions: [AtomicU64; 3],
    /// Protected UDP datagrams dropped, by [`GSSAPI_FAILURES`] label.
    gssapi_datagrams_dropped: [AtomicU64; GSSAPI_FAILURES.len()],
    requests: [AtomicU64; 4],
    replies: [AtomicU64; 9],
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    udp_datagrams_up: AtomicU64,
    udp_datagrams_down: AtomicU64,
    per_user: Mutex<HashMap<String, UserCounters>>,
    sessions: Mutex<HashMap<(Cow<'static, str>, &'static str), u64>>,
    handshake_seconds: Histogram,
    connect_seconds: Histogram,
    draining: AtomicBool,
    /// Traffic limits: quota counts and limit counters (kept across reloads with the rest).
    pub(crate) traffic: crate::traffic::Usage,
}

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A Prometheus histogram of durations with the fixed [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, o: &mut String, name: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match BUCKETS.get(i) {
                Some(b) => {
                    let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct UserCounters {
    sessions: u64,
    up: u64,
    down: u64,
}

/// Decrements the active-connection gauge when dropped.
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a Metrics);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A connection was accepted; the guard keeps it counted as active.
    pub fn accepted(&self) -> ActiveGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    /// A drain started (SIGTERM/SIGINT): `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    pub fn connections_accepted(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A session ended: its command (`none` before a request) and outcome.
    pub fn session(&self, command: Cow<'static, str>, outcome: &'static str) {
        if let Ok(mut map) = self.sessions.lock() {
            *map.entry((command, outcome)).or_insert(0) += 1;
        }
    }

    /// A handshake completed (accept → request received) in `d`.
    pub fn handshake_done(&self, d: Duration) {
        self.handshake_seconds.observe(d);
    }

    /// Resolving and connecting a CONNECT destination took `d` (success or failure).
    pub fn connect_done(&self, d: Duration) {
        self.connect_seconds.observe(d);
    }

    /// The handshake failed (malformed, timed out, closed early).
    pub fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// RFC 1929 credentials were rejected.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A login was delayed (`refused == false`) or refused unchecked (`true`) by the per-client
    /// back-off ([`crate::throttle`]).
    pub fn auth_throttled(&self, refused: bool) {
        let c = if refused {
            &self.auth_refused
        } else {
            &self.auth_delayed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A GSS-API session failed for `cause` (one of [`GSSAPI_FAILURES`]; others count as
    /// `other`).
    pub fn gssapi_failed(&self, cause: &str) {
        let i = GSSAPI_FAILURES
            .iter()
            .position(|c| *c == cause)
            .or_else(|| GSSAPI_FAILURES.iter().position(|c| *c == "other"));
        if let Some(c) = i.and_then(|i| self.gssapi_failures.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A protected UDP datagram was dropped for `cause` (one of [`GSSAPI_FAILURES`]; others
    /// count as `other`); its association goes on.
    pub fn gssapi_datagram_dropped(&self, cause: &str) {
        let i = GSSAPI_FAILURES
            .iter()
            .position(|c| *c == cause)
            .or_else(|| GSSAPI_FAILURES.iter().position(|c| *c == "other"));
        if let Some(c) = i.and_then(|i| self.gssapi_datagrams_dropped.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A GSS-API context was established with `protection` (0 none, 1 integrity,
    /// 2 confidentiality).
    pub fn gssapi_established(&self, protection: crate::config::ProtectionLevel) {
        let i = protection as usize;
        if let Some(c) = self.gssapi_sessions.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request arrived.
    pub fn request(&self, command: Command) {
        let i = match command {
            Command::Connect => 0,
            Command::Bind => 1,
            Command::UdpAssociate => 2,
            Command::Unknown(_) => 3,
        };
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reply was sent (SOCKS5 numbering; SOCKS4 replies are counted by their cause).
    pub fn reply(&self, code: ReplyCode) {
        if let Some(c) = self.replies.get(usize::from(u8::from(code))) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Relayed TCP bytes of a finished session, for `user` if one authenticated.
    pub fn relayed(&self, user: Option<&[u8]>, up: u64, down: u64) {
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
        self.for_user(user, |c| {
            c.up += up;
            c.down += down;
        });
    }

    /// A session of an authenticated user began.
    pub fn user_session(&self, user: Option<&[u8]>) {
        self.for_user(user, |c| c.sessions += 1);
    }

    /// UDP datagrams relayed (client → destination, destination → client) and their bytes.
    pub fn udp(
        &self,
        user: Option<&[u8]>,
        datagrams_up: u64,
        datagrams_down: u64,
        up: u64,
        down: u64,
    ) {
        self.udp_datagrams_up
            .fetch_add(datagrams_up, Ordering::Relaxed);
        self.udp_datagrams_down
            .fetch_add(datagrams_down, Ordering::Relaxed);
        self.relayed(user, up, down);
    }

    fn for_user(&self, user: Option<&[u8]>, f: impl FnOnce(&mut UserCounters)) {
        let Some(user) = user else { return };
        if let Ok(mut map) = self.per_user.lock() {
            f(map
                .entry(String::from_utf8_lossy(user).into_owned())
                .or_default());
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "socksgate_connections_total",
            "Accepted client connections.",
            get(&self.connections),
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_connections_active Client connections open now.\n# TYPE socksgate_connections_active gauge\nsocksgate_connections_active {}",
            self.active.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_draining 1 once shutdown started: no new sessions, open ones finishing.\n# TYPE socksgate_draining gauge\nsocksgate_draining {}",
            u8::from(self.is_draining())
        );
        counter(
            &mut o,
            "socksgate_handshake_failures_total",
            "Handshakes that failed or timed out.",
            get(&self.handshake_failures),
        );
        counter(
            &mut o,
            "socksgate_auth_failures_total",
            "Rejected username/password logins.",
            get(&self.auth_failures),
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_auth_throttled_total Logins delayed or refused unchecked by the per-client back-off.\n# TYPE socksgate_auth_throttled_total counter\nsocksgate_auth_throttled_total{{action=\"delayed\"}} {}\nsocksgate_auth_throttled_total{{action=\"refused\"}} {}",
            get(&self.auth_delayed),
            get(&self.auth_refused)
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_gssapi_failures_total GSS-API authentications or protected sessions that failed, by cause.\n# TYPE socksgate_gssapi_failures_total counter"
        );
        for (cause, c) in GSSAPI_FAILURES.iter().zip(&self.gssapi_failures) {
            let _ = writeln!(
                o,
                "socksgate_gssapi_failures_total{{cause=\"{cause}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_gssapi_datagrams_dropped_total Protected UDP datagrams dropped (failed to unwrap, replayed, not one message), by cause; their associations go on.\n# TYPE socksgate_gssapi_datagrams_dropped_total counter"
        );
        for (cause, c) in GSSAPI_FAILURES.iter().zip(&self.gssapi_datagrams_dropped) {
            let _ = writeln!(
                o,
                "socksgate_gssapi_datagrams_dropped_total{{cause=\"{cause}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_gssapi_sessions_total GSS-API authentications that succeeded, by the protection level granted.\n# TYPE socksgate_gssapi_sessions_total counter"
        );
        for (level, c) in ["none", "integrity", "confidentiality"]
            .iter()
            .zip(&self.gssapi_sessions)
        {
            let _ = writeln!(
                o,
                "socksgate_gssapi_sessions_total{{protection=\"{level}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_requests_total Requests by command.\n# TYPE socksgate_requests_total counter"
        );
        for (name, c) in COMMANDS.iter().zip(&self.requests) {
            let name = name.unwrap_or("unknown");
            let _ = writeln!(
                o,
                "socksgate_requests_total{{command=\"{name}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_replies_total Replies by SOCKS5 reply code.\n# TYPE socksgate_replies_total counter"
        );
        for (code, c) in self.replies.iter().enumerate() {
            let v = get(c);
            {
                let _ = writeln!(o, "socksgate_replies_total{{code=\"{code}\"}} {v}");
            }
        }
        let _ = writeln!(
            o,
            "# HELP socksgate_bytes_total Relayed payload bytes (TCP and UDP).\n# TYPE socksgate_bytes_total counter"
        );
        let _ = writeln!(
            o,
            "socksgate_bytes_total{{direction=\"up\"}} {}",
            get(&self.bytes_up)
        );
        let _ = writeln!(
            o,
            "socksgate_bytes_total{{direction=\"down\"}} {}",
            get(&self.bytes_down)
        );
        let _ = writeln!(
            o,
            "# HELP socksgate_udp_datagrams_total Relayed UDP datagrams.\n# TYPE socksgate_udp_datagrams_total counter"
        );
        let _ = writeln!(
            o,
            "socksgate_udp_datagrams_total{{direction=\"up\"}} {}",
            get(&self.udp_datagrams_up)
        );
        let _ = writeln!(
            o,
            "socksgate_udp_datagrams_total{{direction=\"down\"}} {}",
            get(&self.udp_datagrams_down)
        );
        if let Ok(map) = self.sessions.lock() {
            let mut rows: Vec<_> = map.iter().collect();
            rows.sort();
            let _ = writeln!(
                o,
                "# HELP socksgate_sessions_total Finished sessions by command (none: no request) and outcome.\n# TYPE socksgate_sessions_total counter"
            );
            for ((command, outcome), n) in rows {
                let _ = writeln!(
                    o,
                    "socksgate_sessions_total{{command=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(command)
                );
            }
        }
        self.handshake_seconds.render(
            &mut o,
            "socksgate_handshake_duration_seconds",
            "From accept to the complete request (authentication included).",
        );
        self.connect_seconds.render(
            &mut o,
            "socksgate_connect_duration_seconds",
            "Resolving and connecting CONNECT destinations, successful or not.",
        );
        if let Ok(map) = self.per_user.lock()
            && !map.is_empty()
        {
            let mut users: Vec<_> = map.iter().collect();
            users.sort_by(|a, b| a.0.cmp(b.0));
            let _ = writeln!(
                o,
                "# HELP socksgate_user_sessions_total Sessions per authenticated user.\n# TYPE socksgate_user_sessions_total counter"
            );
            for (u, c) in &users {
                let _ = writeln!(
                    o,
                    "socksgate_user_sessions_total{{user=\"{}\"}} {}",
                    escape(u),
                    c.sessions
                );
            }
            let _ = writeln!(
                o,
                "# HELP socksgate_user_bytes_total Relayed bytes per authenticated user.\n# TYPE socksgate_user_bytes_total counter"
            );
            for (u, c) in &users {
                let _ = writeln!(
                    o,
                    "socksgate_user_bytes_total{{user=\"{}\",direction=\"up\"}} {}",
                    escape(u),
                    c.up
                );
                let _ = writeln!(
                    o,
                    "socksgate_user_bytes_total{{user=\"{}\",direction=\"down\"}} {}",
                    escape(u),
                    c.down
                );
            }
        }
        self.traffic.render(&mut o);
        o
    }
}

/// Label value escaping of the exposition format.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` (anything else: 404) until the task is
/// dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = req
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let response = match (method, path) {
        (b"GET", b"/metrics" | b"/") => {
            let body = metrics.render();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        (b"GET", b"/healthz") => plain("200 OK", "ok\n"),
        (b"GET", b"/readyz") if metrics.is_draining() => {
            plain("503 Service Unavailable", "draining\n")
        }
        (b"GET", b"/readyz") => plain("200 OK", "ready\n"),
        _ => plain("404 Not Found", ""),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A `text/plain` response closing the connection.
fn plain(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_users() {
        let m = Metrics::default();
        let g = m.accepted();
        m.request(Command::Connect);
        m.reply(ReplyCode::Succeeded);
        m.reply(ReplyCode::ConnectionRefused);
        m.user_session(Some(b"al\"ice"));
        m.relayed(Some(b"al\"ice"), 10, 20);
        m.auth_failed();
        m.auth_throttled(true);
        let text = m.render();
        assert!(text.contains("socksgate_auth_failures_total 1\n"), "{text}");
        m.gssapi_failed("wrong_service");
        m.gssapi_failed("not a label");
        m.gssapi_established(crate::config::ProtectionLevel::Confidentiality);
        m.gssapi_datagram_dropped("integrity");
        m.gssapi_datagram_dropped("sequence");
        m.gssapi_datagram_dropped("sequence");
        let text = m.render();
        for line in [
            "socksgate_gssapi_failures_total{cause=\"wrong_service\"} 1\n",
            "socksgate_gssapi_failures_total{cause=\"other\"} 1\n",
            "socksgate_gssapi_failures_total{cause=\"integrity\"} 0\n",
            "socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 1\n",
            "socksgate_gssapi_sessions_total{protection=\"none\"} 0\n",
            "socksgate_gssapi_datagrams_dropped_total{cause=\"integrity\"} 1\n",
            "socksgate_gssapi_datagrams_dropped_total{cause=\"sequence\"} 2\n",
            "socksgate_gssapi_datagrams_dropped_total{cause=\"protocol\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.contains("socksgate_auth_throttled_total{action=\"refused\"} 1\n"));
        assert!(text.contains("socksgate_auth_throttled_total{action=\"delayed\"} 0\n"));
        assert!(text.contains("socksgate_connections_total 1\n"), "{text}");
        assert!(text.contains("socksgate_connections_active 1\n"));
        assert!(text.contains("socksgate_requests_total{command=\"connect\"} 1\n"));
        assert!(text.contains("socksgate_replies_total{code=\"5\"} 1\n"));
        assert!(text.contains("socksgate_bytes_total{direction=\"down\"} 20\n"));
        assert!(
            text.contains("socksgate_user_bytes_total{user=\"al\\\"ice\",direction=\"up\"} 10\n"),
            "{text}"
        );
        drop(g);
        assert!(m.render().contains("socksgate_connections_active 0\n"));
    }

    #[tokio::test]
    async fn http_endpoints() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let m = std::sync::Arc::new(Metrics::default());
        tokio::spawn(serve(l, std::sync::Arc::clone(&m)));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let out = get("/metrics").await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("socksgate_connections_total 0"));
        assert!(out.contains("socksgate_draining 0\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200 OK"));
        m.start_draining();
        let out = get("/readyz").await;
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.ends_with("\r\n\r\ndraining\n"), "{out}");
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get("/metrics").await.contains("socksgate_draining 1\n"));
    }
}
