//! Name resolution (hickory-resolver: `/etc/resolv.conf` and `/etc/hosts`, never blocking
//! `getaddrinfo`) and Happy Eyeballs v2 connects (RFC 8305).
//!
//! Like glibc's `files dns` order, a name found in `/etc/hosts` is answered from there only
//! (both families), so a hosts-file name never waits for a DNS server.
//!
//! Happy Eyeballs, as implemented by [`happy_eyeballs`]:
//! * AAAA and A queries start together (§3). An AAAA answer starts connecting at once; an A
//!   answer that comes first waits up to the *resolution delay* (50 ms) for the AAAA answer.
//! * Addresses are interleaved by family, IPv6 first (§4); answers that arrive later join
//!   the list.
//! * One attempt starts, then another every *connection attempt delay* (250 ms) or as soon as
//!   the previous attempt failed (§5); the first connection to succeed wins and the others
//!   are cancelled.
//! * The whole operation runs under the connect timeout (the caller's).
//!
//! The [address family](socksgate_core::family) in use changes this: a family that is not
//! used is not even queried (no AAAA query under `ipv4_only`, no A query under `ipv6_only`),
//! and under `prefer_ipv4` the roles swap — A and IPv4 first, AAAA waits the resolution
//! delay.

use core::future::Future;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use socksgate_core::Target;
use socksgate_core::family::AddressFamily;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::egress::Egress;
use crate::failure::{ConnectError, io_failure};

/// RFC 8305 timing parameters.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// How long an A answer waits for the AAAA answer (RFC 8305 §3: 50 ms).
    pub resolution_delay: Duration,
    /// Delay between starting connection attempts (RFC 8305 §5: 250 ms).
    pub attempt_delay: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            resolution_delay: Duration::from_millis(50),
            attempt_delay: Duration::from_millis(250),
        }
    }
}

/// The resolver every connection shares.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// `None` when there are no name servers: only the hosts table answers.
    dns: Option<TokioResolver>,
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
    params: Params,
}

impl Resolver {
    /// Reads `/etc/resolv.conf` and `/etc/hosts`. A missing or broken resolv.conf leaves only
    /// the hosts file (a warning is logged) rather than querying someone else's servers.
    pub fn from_system() -> Self {
        let dns = match TokioResolver::builder_tokio() {
            Ok(b) => {
                let r = b.build();
                if r.config().name_servers().is_empty() {
                    tracing::warn!(
                        "/etc/resolv.conf lists no name servers; only /etc/hosts will resolve names"
                    );
                    None
                } else {
                    Some(r)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /etc/resolv.conf; only /etc/hosts will resolve names");
                None
            }
        };
        let hosts = std::fs::read_to_string("/etc/hosts")
            .map(|t| parse_hosts(&t))
            .unwrap_or_default();
        Self {
            dns,
            hosts: Arc::new(hosts),
            params: Params::default(),
        }
    }

    /// A resolver that answers only from the given hosts table (for tests).
    pub fn with_hosts(hosts: HashMap<String, Vec<IpAddr>>) -> Self {
        Self {
            dns: None,
            hosts: Arc::new(hosts),
            params: Params::default(),
        }
    }

    fn hosts_entry(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The DNS query name for `name`, or why none is sent. Special-use names (RFC 6761) are
    /// answered here: `.invalid` never exists, and `localhost` names not in the hosts file
    /// are loopback (handled by the callers), so neither ever reaches a name server.
    fn query_name(
        &self,
        name: &str,
    ) -> Result<(&TokioResolver, hickory_resolver::Name), ConnectError> {
        let not_found = || ConnectError::NameNotFound(name.to_owned());
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if lower == "invalid" || lower.ends_with(".invalid") {
            return Err(not_found());
        }
        let dns = self.dns.as_ref().ok_or_else(not_found)?;
        // A name DNS cannot carry (a label over 63 octets, …) does not exist.
        let fqdn = hickory_resolver::Name::from_utf8(name).map_err(|_| not_found())?;
        Ok((dns, fqdn))
    }

    /// Whether `name` is `localhost` or under it (RFC 6761 §6.3: always loopback).
    fn is_localhost(name: &str) -> bool {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        lower == "localhost" || lower.ends_with(".localhost")
    }

    /// IPv6 addresses of `name`.
    pub async fn lookup_v6(&self, name: &str) -> Result<Vec<IpAddr>, ConnectError> {
        self.lookup_family(name, true).await
    }

    /// IPv4 addresses of `name`.
    pub async fn lookup_v4(&self, name: &str) -> Result<Vec<IpAddr>, ConnectError> {
        self.lookup_family(name, false).await
    }

    /// The addresses of `name` in one family: from the hosts table, `localhost`'s loopback,
    /// or AAAA (`v6`) or A records.
    async fn lookup_family(&self, name: &str, v6: bool) -> Result<Vec<IpAddr>, ConnectError> {
        if let Some(ips) = self.hosts_entry(name) {
            return Ok(ips
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv6() == v6)
                .collect());
        }
        if Self::is_localhost(name) {
            let loopback = if v6 {
                IpAddr::V6(core::net::Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(core::net::Ipv4Addr::LOCALHOST)
            };
            return Ok(vec![loopback]);
        }
        let (dns, fqdn) = self.query_name(name)?;
        let found = if v6 {
            dns.ipv6_lookup(fqdn)
                .await
                .map(|l| l.iter().map(|a| IpAddr::V6(a.0)).collect())
        } else {
            dns.ipv4_lookup(fqdn)
                .await
                .map(|l| l.iter().map(|a| IpAddr::V4(a.0)).collect())
        };
        found.map_err(|e| resolve_error(name, &e))
    }

    /// All addresses of `name`, IPv6 first (for UDP, which takes the first usable one).
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ConnectError> {
        self.lookup_in(name, AddressFamily::PreferIpv6).await
    }

    /// The addresses of `name` in the families `family` uses (only those are queried), the
    /// preferred family first.
    pub async fn lookup_in(
        &self,
        name: &str,
        family: AddressFamily,
    ) -> Result<Vec<IpAddr>, ConnectError> {
        let (v6, v4) = tokio::join!(
            self.lookup_if(name, true, family.uses_ipv6()),
            self.lookup_if(name, false, family.uses_ipv4())
        );
        let mut ips = merge_lookups(v6, v4)?;
        let n = family.order(&mut ips);
        ips.truncate(n);
        Ok(ips)
    }

    /// The addresses of `name` in one family, or none without a query unless `wanted`.
    async fn lookup_if(
        &self,
        name: &str,
        v6: bool,
        wanted: bool,
    ) -> Result<Vec<IpAddr>, ConnectError> {
        if wanted {
            self.lookup_family(name, v6).await
        } else {
            Ok(Vec::new())
        }
    }

    /// Connects to `target` (an IP or a name, resolved here in `family`) with Happy
    /// Eyeballs, checking every resolved address with `allow` first (access rules on the
    /// resolved IP). The caller applies the overall timeout.
    pub async fn connect(
        &self,
        target: &Target,
        family: AddressFamily,
        allow: impl Fn(SocketAddr) -> Result<(), ConnectError>,
    ) -> Result<TcpStream, ConnectError> {
        self.connect_from(target, family, allow, None).await
    }

    /// [`connect`](Self::connect), every attempt leaving by `egress` when given (an address
    /// of a family the egress has no source for fails that attempt, and Happy Eyeballs goes
    /// on with the other family).
    pub async fn connect_from(
        &self,
        target: &Target,
        family: AddressFamily,
        allow: impl Fn(SocketAddr) -> Result<(), ConnectError>,
        egress: Option<Egress<'_>>,
    ) -> Result<TcpStream, ConnectError> {
        let stream = match target.as_addr().normalized() {
            socksgate_core::Addr::Ip(sa) => {
                allow(sa)?;
                connect_tcp_from(sa, egress).await?
            }
            socksgate_core::Addr::Domain(name, port) => {
                let name = name
                    .as_str()
                    .ok_or_else(|| ConnectError::NameNotFound(format!("{name} (not UTF-8)")))?;
                let v6 = self.lookup_if(name, true, family.uses_ipv6());
                let v4 = self.lookup_if(name, false, family.uses_ipv4());
                let attempt = |sa| connect_tcp_from(sa, egress);
                let found = if family.prefers_ipv6() {
                    happy_eyeballs(v6, v4, port, self.params, allow, attempt).await
                } else {
                    happy_eyeballs(v4, v6, port, self.params, allow, attempt).await
                };
                found?.0
            }
        };
        Ok(stream)
    }
}

/// A TCP connection with TCP_NODELAY set.
pub async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_tcp_from(addr, None).await
}

/// [`connect_tcp`] leaving by `egress` when given. The socket is prepared before the
/// returned future (which owns it) is first polled.
pub fn connect_tcp_from(
    addr: SocketAddr,
    egress: Option<Egress<'_>>,
) -> impl Future<Output = io::Result<TcpStream>> + Send + 'static {
    let socket = egress.map(|e| e.tcp_socket(addr.is_ipv6()));
    async move {
        let s = match socket {
            None => TcpStream::connect(addr).await?,
            Some(socket) => socket?.connect(addr).await?,
        };
        s.set_nodelay(true)?;
        Ok(s)
    }
}

fn resolve_error(name: &str, e: &hickory_resolver::ResolveError) -> ConnectError {
    if e.is_no_records_found() || e.is_nx_domain() {
        ConnectError::NameNotFound(name.to_owned())
    } else {
        ConnectError::Resolver(format!("{name}: {e}"))
    }
}

fn merge_lookups(
    v6: Result<Vec<IpAddr>, ConnectError>,
    v4: Result<Vec<IpAddr>, ConnectError>,
) -> Result<Vec<IpAddr>, ConnectError> {
    match (v6, v4) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            if a.is_empty() {
                Err(ConnectError::NameNotFound(String::new()))
            } else {
                Ok(a)
            }
        }
        (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
            if a.is_empty() {
                Err(e)
            } else {
                Ok(a)
            }
        }
        (Err(a), Err(b)) => Err(worse_resolve_error(a, b)),
    }
}

/// Of two failed lookups, the one to report: a resolver failure says more than "not found".
fn worse_resolve_error(a: ConnectError, b: ConnectError) -> ConnectError {
    match (&a, &b) {
        (ConnectError::NameNotFound(_), _) => b,
        _ => a,
    }
}

/// Parses `/etc/hosts`: `IP name [aliases…]`, `#` comments; names are lower-cased.
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let ips = map
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    map
}

/// Happy Eyeballs v2 over two lookups (see the module docs): `v6` is the preferred
/// family's lookup (AAAA in RFC 8305; pass the A lookup here to prefer IPv4) and `v4` the
/// other's. `connect` opens one connection; `allow` vets each address before it is tried.
/// Returns the winning stream and its address.
pub async fn happy_eyeballs<S, F, Fut>(
    v6: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
    v4: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
    port: u16,
    params: Params,
    allow: impl Fn(SocketAddr) -> Result<(), ConnectError>,
    connect: F,
) -> Result<(S, SocketAddr), ConnectError>
where
    S: Send + 'static,
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let mut v6 = std::pin::pin!(v6);
    let mut v4 = std::pin::pin!(v4);
    let (mut v6_done, mut v4_done) = (false, false);
    let mut resolve_err: Option<ConnectError> = None;
    let mut denied: Option<ConnectError> = None;
    let mut q6: VecDeque<SocketAddr> = VecDeque::new();
    let mut q4: VecDeque<SocketAddr> = VecDeque::new();
    let mut last_v6 = false;
    let mut started = false;
    let mut resolution_deadline: Option<Instant> = None;
    let mut next_attempt: Option<Instant> = None;
    let mut attempts: JoinSet<(SocketAddr, io::Result<S>)> = JoinSet::new();
    let mut conn_err: Option<io::Error> = None;

    loop {
        // Start the next attempt when allowed: nothing in flight, or the delay has passed.
        if started {
            let due = attempts.is_empty() || next_attempt.is_some_and(|t| Instant::now() >= t);
            if due {
                let pick_v4 = (last_v6 && !q4.is_empty()) || q6.is_empty();
                let next = if pick_v4 {
                    q4.pop_front()
                } else {
                    q6.pop_front()
                };
                if let Some(sa) = next {
                    // Which queue it came from (the preferred family's or the other's).
                    last_v6 = !pick_v4;
                    let fut = connect(sa);
                    attempts.spawn(async move { (sa, fut.await) });
                    next_attempt = Some(Instant::now() + params.attempt_delay);
                    continue;
                }
            }
        }
        if v6_done && v4_done && attempts.is_empty() && q6.is_empty() && q4.is_empty() {
            return Err(match (conn_err, denied, resolve_err) {
                (Some(e), _, _) => ConnectError::Io(e),
                (None, Some(d), _) => d,
                (None, None, Some(r)) => r,
                (None, None, None) => ConnectError::NameNotFound(String::new()),
            });
        }
        let have_queued = !q6.is_empty() || !q4.is_empty();
        tokio::select! {
            r = &mut v6, if !v6_done => {
                v6_done = true;
                match r {
                    Ok(ips) => add(ips, port, &mut q6, &allow, &mut denied),
                    Err(e) => resolve_err = Some(match resolve_err.take() { Some(o) => worse_resolve_error(o, e), None => e }),
                }
                // AAAA answered: go (§3), unless it was empty and A is still pending.
                if !q6.is_empty() || v4_done {
                    started = true;
                }
            }
            r = &mut v4, if !v4_done => {
                v4_done = true;
                match r {
                    Ok(ips) => add(ips, port, &mut q4, &allow, &mut denied),
                    Err(e) => resolve_err = Some(match resolve_err.take() { Some(o) => worse_resolve_error(o, e), None => e }),
                }
                if v6_done {
                    started = true;
                } else if !started {
                    resolution_deadline = Some(Instant::now() + params.resolution_delay);
                }
            }
            () = sleep_until_opt(resolution_deadline), if !started && resolution_deadline.is_some() => {
                started = true;
            }
            () = sleep_until_opt(next_attempt), if started && have_queued && next_attempt.is_some() => {}
            Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                match joined {
                    Ok((sa, Ok(stream))) => return Ok((stream, sa)),
                    Ok((sa, Err(e))) => {
                        tracing::debug!(%sa, error = %e, "connection attempt failed");
                        if conn_err.as_ref().is_none_or(|old| {
                            io_failure(old).most_telling(io_failure(&e)) == io_failure(&e)
                        }) {
                            conn_err = Some(e);
                        }
                        // A failure starts the next attempt at once (§5).
                        next_attempt = Some(Instant::now());
                    }
                    Err(join) => {
                        conn_err.get_or_insert_with(|| io::Error::other(join.to_string()));
                    }
                }
            }
        }
    }
}

fn add(
    ips: Vec<IpAddr>,
    port: u16,
    q: &mut VecDeque<SocketAddr>,
    allow: &impl Fn(SocketAddr) -> Result<(), ConnectError>,
    denied: &mut Option<ConnectError>,
) {
    for ip in ips {
        let sa = SocketAddr::new(ip, port);
        match allow(sa) {
            Ok(()) => q.push_back(sa),
            Err(e) => {
                if denied.is_none() {
                    *denied = Some(e);
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => core::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Special-use names are answered without a query; other names do reach the server.
    #[tokio::test]
    async fn special_use_names_never_reach_a_name_server() {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;

        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let addr = server.local_addr().unwrap();
        let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        );
        builder.options_mut().timeout = Duration::from_millis(200);
        builder.options_mut().attempts = 1;
        let resolver = Resolver {
            dns: Some(builder.build()),
            hosts: Arc::default(),
            params: Params::default(),
        };

        for name in ["nothing.invalid", "INVALID.", "x.y.invalid"] {
            assert!(
                matches!(
                    resolver.lookup(name).await,
                    Err(ConnectError::NameNotFound(_))
                ),
                "{name}"
            );
        }
        assert_eq!(
            resolver.lookup("app.localhost").await.unwrap(),
            ips(&["::1", "127.0.0.1"])
        );
        let mut buf = [0u8; 512];
        assert_eq!(
            server.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "no query sent"
        );

        // The control: an ordinary name is sent to the configured server.
        let _ = resolver.lookup("example.test").await;
        assert!(server.recv(&mut buf).is_ok(), "an ordinary name is queried");
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// A lookup that answers `list` at once.
    fn found(list: &[&str]) -> impl Future<Output = Result<Vec<IpAddr>, ConnectError>> + use<> {
        std::future::ready(Ok(ips(list)))
    }

    async fn after(
        ms: u64,
        r: Result<Vec<IpAddr>, ConnectError>,
    ) -> Result<Vec<IpAddr>, ConnectError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        r
    }

    /// A fake connector: per-address outcome after a delay; records the start times.
    #[derive(Clone)]
    struct Fake {
        log: Arc<Mutex<Vec<(SocketAddr, u128)>>>,
        start: Instant,
        outcome: Arc<dyn Fn(SocketAddr) -> (u64, bool) + Send + Sync>,
    }

    impl Fake {
        fn new(outcome: impl Fn(SocketAddr) -> (u64, bool) + Send + Sync + 'static) -> Self {
            Self {
                log: Arc::default(),
                start: Instant::now(),
                outcome: Arc::new(outcome),
            }
        }
        fn connect(
            &self,
            sa: SocketAddr,
        ) -> impl Future<Output = io::Result<SocketAddr>> + Send + use<> {
            self.log
                .lock()
                .unwrap()
                .push((sa, self.start.elapsed().as_millis()));
            let (ms, ok) = (self.outcome)(sa);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if ok {
                    Ok(sa)
                } else {
                    Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                }
            }
        }
        /// [`happy_eyeballs`] to port 80 over the lookups `v6` and `v4`, with the default
        /// parameters, every address allowed and this fake as the connector.
        async fn race(
            &self,
            v6: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
            v4: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
        ) -> Result<(SocketAddr, SocketAddr), ConnectError> {
            self.race_allowing(v6, v4, |_| Ok(())).await
        }

        /// [`Fake::race`] with `allow` deciding which addresses may be tried.
        async fn race_allowing(
            &self,
            v6: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
            v4: impl Future<Output = Result<Vec<IpAddr>, ConnectError>>,
            allow: impl Fn(SocketAddr) -> Result<(), ConnectError>,
        ) -> Result<(SocketAddr, SocketAddr), ConnectError> {
            let fake = self.clone();
            happy_eyeballs(v6, v4, 80, Params::default(), allow, move |sa| {
                fake.connect(sa)
            })
            .await
        }

        fn log(&self) -> Vec<(String, u128)> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .map(|(a, t)| (a.ip().to_string(), *t))
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn interleaves_families_with_attempt_delay() {
        // Nothing ever answers: attempts start every 250 ms, alternating families, v6 first.
        let fake = Fake::new(|_| (10_000, false));
        let r = tokio::time::timeout(
            Duration::from_millis(1100),
            fake.race(
                found(&["2001:db8::1", "2001:db8::2"]),
                found(&["192.0.2.1", "192.0.2.2"]),
            ),
        )
        .await;
        assert!(r.is_err(), "should still be waiting");
        assert_eq!(
            fake.log(),
            vec![
                ("2001:db8::1".into(), 0),
                ("192.0.2.1".into(), 250),
                ("2001:db8::2".into(), 500),
                ("192.0.2.2".into(), 750),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waits_resolution_delay_for_aaaa() {
        // A at 0 ms, AAAA at 30 ms: within the 50 ms resolution delay, so v6 goes first.
        let fake = Fake::new(|sa| (5, sa.is_ipv6()));
        let (_, won) = fake
            .race(after(30, Ok(ips(&["2001:db8::1"]))), found(&["192.0.2.1"]))
            .await
            .unwrap();
        assert!(won.is_ipv6());
        assert_eq!(fake.log(), vec![("2001:db8::1".into(), 30)]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_aaaa_does_not_block_a() {
        // AAAA takes 5 s: A is tried after the 50 ms resolution delay.
        let fake = Fake::new(|_| (5, true));
        let (_, won) = fake
            .race(
                after(5000, Ok(ips(&["2001:db8::1"]))),
                found(&["192.0.2.1"]),
            )
            .await
            .unwrap();
        assert_eq!(won, "192.0.2.1:80".parse().unwrap());
        assert_eq!(fake.log(), vec![("192.0.2.1".into(), 50)]);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_starts_next_attempt_at_once() {
        // v6 refused after 10 ms → v4 starts at 10 ms, not 250 ms.
        let fake = Fake::new(|sa| (10, sa.is_ipv4()));
        let (_, won) = fake
            .race(found(&["2001:db8::1"]), found(&["192.0.2.1"]))
            .await
            .unwrap();
        assert!(won.is_ipv4());
        assert_eq!(
            fake.log(),
            vec![("2001:db8::1".into(), 0), ("192.0.2.1".into(), 10)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slower_first_attempt_loses_to_faster_second() {
        // v6 hangs 2 s, v4 connects in 10 ms after its 250 ms start.
        let fake = Fake::new(|sa| {
            if sa.is_ipv6() {
                (2000, true)
            } else {
                (10, true)
            }
        });
        let (_, won) = fake
            .race(found(&["2001:db8::1"]), found(&["192.0.2.1"]))
            .await
            .unwrap();
        assert!(won.is_ipv4());
    }

    #[tokio::test(start_paused = true)]
    async fn all_refused_reports_refused() {
        let fake = Fake::new(|_| (1, false));
        let e = fake
            .race(found(&["2001:db8::1"]), found(&["192.0.2.1", "192.0.2.2"]))
            .await
            .unwrap_err();
        assert_eq!(
            e.failure().reply(),
            socksgate_core::wire::ReplyCode::ConnectionRefused
        );
        assert_eq!(fake.log().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn denied_addresses_are_skipped_and_reported() {
        let fake = Fake::new(|_| (1, true));
        let allow = |sa: SocketAddr| {
            if sa.is_ipv6() {
                Err(ConnectError::Denied(
                    socksgate_core::rules::Decision {
                        action: socksgate_core::rules::Action::Deny,
                        rule: Some(1),
                    }
                    .into(),
                ))
            } else {
                Ok(())
            }
        };
        let (_, won) = fake
            .race_allowing(found(&["2001:db8::1"]), found(&["192.0.2.1"]), allow)
            .await
            .unwrap();
        assert!(won.is_ipv4());
        let e = fake
            .race_allowing(found(&["2001:db8::1"]), found(&[]), allow)
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::Denied(_)), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn name_not_found() {
        let fake = Fake::new(|_| (1, true));
        let e = fake
            .race(
                async { Err(ConnectError::NameNotFound("x".into())) },
                async { Err(ConnectError::NameNotFound("x".into())) },
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.failure().reply(),
            socksgate_core::wire::ReplyCode::HostUnreachable
        );
    }

    #[tokio::test]
    async fn real_sockets_fall_back_from_closed_v6_to_listening_v4() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // ::1 on that port is (almost surely) closed, or unsupported: either way it fails.
        let mut hosts = HashMap::new();
        hosts.insert("both.test".to_owned(), ips(&["::1", "127.0.0.1"]));
        let resolver = Resolver::with_hosts(hosts);
        let target = Target::Domain(socksgate_core::DomainBuf::new(b"both.test").unwrap(), port);
        let s = resolver
            .connect(&target, AddressFamily::PreferIpv6, |_| Ok(()))
            .await
            .unwrap();
        assert_eq!(
            s.peer_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], port))
        );
        assert!(s.nodelay().unwrap());
        let (_accepted, _) = listener.accept().await.unwrap();
    }

    #[tokio::test]
    async fn lookups_query_only_the_families_in_use() {
        let mut hosts = HashMap::new();
        hosts.insert("both.test".to_owned(), ips(&["127.0.0.1", "::1"]));
        hosts.insert("v4.test".to_owned(), ips(&["127.0.0.1"]));
        let r = Resolver::with_hosts(hosts);
        for (family, want) in [
            (AddressFamily::PreferIpv6, &["::1", "127.0.0.1"][..]),
            (AddressFamily::PreferIpv4, &["127.0.0.1", "::1"][..]),
            (AddressFamily::Ipv4Only, &["127.0.0.1"][..]),
            (AddressFamily::Ipv6Only, &["::1"][..]),
        ] {
            assert_eq!(
                r.lookup_in("both.test", family).await.unwrap(),
                ips(want),
                "{family}"
            );
        }
        let e = r
            .lookup_in("v4.test", AddressFamily::Ipv6Only)
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::NameNotFound(_)), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn preferring_ipv4_swaps_the_roles() {
        // Both answer at once; the preferred (here IPv4) lookup goes first and starts first.
        let fake = Fake::new(|_| (10_000, false));
        let r = tokio::time::timeout(
            Duration::from_millis(600),
            fake.race(found(&["192.0.2.1", "192.0.2.2"]), found(&["2001:db8::1"])),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(
            fake.log(),
            vec![
                ("192.0.2.1".into(), 0),
                ("2001:db8::1".into(), 250),
                ("192.0.2.2".into(), 500),
            ]
        );
    }

    #[tokio::test]
    async fn system_resolver_knows_localhost() {
        let resolver = Resolver::from_system();
        let found = resolver.lookup("localhost").await.unwrap();
        assert!(found.iter().any(IpAddr::is_loopback), "{found:?}");
    }

    #[tokio::test]
    async fn names_dns_cannot_carry_are_not_found() {
        let resolver = Resolver::from_system();
        let name = format!("{}.invalid", "x".repeat(64));
        let e = resolver.lookup(&name).await.unwrap_err();
        assert_eq!(
            e.failure().reply(),
            socksgate_core::wire::ReplyCode::HostUnreachable,
            "{e}"
        );
    }

    #[test]
    fn hosts_file_parsing() {
        let h =
            parse_hosts("127.0.0.1 localhost Vm # c\n::1 localhost ip6-localhost\n# x\nbad line\n");
        assert_eq!(h["localhost"], ips(&["127.0.0.1", "::1"]));
        assert_eq!(h["vm"], ips(&["127.0.0.1"]));
        assert!(!h.contains_key("bad"));
    }
}
