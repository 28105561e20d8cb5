//! Egress profiles as the destination sees them.
//!
//! Each test builds two network namespaces joined by two veth pairs:
//!
//! ```text
//!  proxy namespace                                   origin namespace
//!  pa: 10.77.0.1 .2 .3, fd77::1 ::2 ::3  <──veth──>  oa: 10.77.0.100, fd77::100
//!  pb: 10.78.0.1                         <──veth──>  ob: 10.78.0.100
//!                                                    lo: 10.99.0.100, fd99::100 (the origin)
//! ```
//!
//! In the proxy namespace the origin's network is reached by `pa` (metric 10) or, when `pa`
//! cannot be used, by `pb` (metric 20); packets with firewall mark 42 use table 100, which
//! only routes by `pb`. So the source the origin sees tells which address, interface or mark
//! the session left with: 10.77.0.1 is the kernel's default, 10.78.0.1 means `pb`.
//!
//! socksgate runs in the proxy namespace (`ip netns exec`); the test's clients and origins
//! are threads that enter a namespace (`setns`) before opening their sockets. The origin
//! answers every TCP connection and UDP datagram with the source address it saw. These tests
//! need root and iproute2: without them they fail, they do not skip. Namespaces are deleted
//! when the test ends, failed or not.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socksgate_tests::netns::{Namespace, sh};
use socksgate_tests::socks::{Client, Command as Cmd, Dst, ReplyCode, decode, encode};

const BIN: &str = env!("CARGO_BIN_EXE_socksgate");
const ORIGIN4: &str = "10.99.0.100";
const ORIGIN6: &str = "fd99::100";
/// The origin's name in the proxy namespace's hosts file (both addresses).
const ORIGIN_NAME: &str = "origin.egress.test";
/// The origin's TCP port (a second one, `TCP_PORT + 1`, answers the same way).
const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7100;
const WAIT: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn origin_tcp(v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(ip(if v6 { ORIGIN6 } else { ORIGIN4 }), port)
}

/// The two namespaces; deleted on drop.
struct Net {
    proxy: Namespace,
    origin: Namespace,
}

impl Net {
    fn new() -> Self {
        let net = Self {
            proxy: Namespace::new("egress-p"),
            origin: Namespace::new("egress-o"),
        };
        let (p, o) = (&net.proxy, &net.origin);
        // No duplicate address detection on the links to come: until it ends (a second or
        // so) the first IPv6 packets wait, long enough to lose Happy Eyeballs races.
        for ns in [p, o] {
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        }
        p.veth("pa", o, "oa");
        p.veth("pb", o, "ob");
        for a in ["10.77.0.1/24", "10.77.0.2/24", "10.77.0.3/24"] {
            p.ip(&format!("addr add {a} dev pa"));
        }
        for a in ["fd77::1/64", "fd77::2/64", "fd77::3/64"] {
            p.ip(&format!("addr add {a} dev pa nodad"));
        }
        p.ip("addr add 10.78.0.1/24 dev pb");
        o.ip("addr add 10.77.0.100/24 dev oa");
        o.ip("addr add fd77::100/64 dev oa nodad");
        o.ip("addr add 10.78.0.100/24 dev ob");
        o.ip(&format!("addr add {ORIGIN4}/32 dev lo"));
        o.ip(&format!("addr add {ORIGIN6}/128 dev lo"));
        for l in ["pa", "pb"] {
            p.ip(&format!("link set {l} up"));
        }
        for l in ["oa", "ob"] {
            o.ip(&format!("link set {l} up"));
        }
        p.ip("route add 10.99.0.0/24 via 10.77.0.100 dev pa metric 10");
        p.ip("route add 10.99.0.0/24 via 10.78.0.100 dev pb metric 20");
        p.ip("-6 route add fd99::/64 via fd77::100 dev pa");
        p.ip("route add 10.99.0.0/24 via 10.78.0.100 dev pb table 100");
        p.ip("rule add fwmark 42 table 100");
        // The origin's name, in both families, for the programs `ip netns exec` starts.
        p.etc(
            "hosts",
            &format!("{ORIGIN4} {ORIGIN_NAME}\n{ORIGIN6} {ORIGIN_NAME}\n"),
        );
        start_origin(o);
        // The first IPv6 packet to a new neighbour waits for a retransmitted solicitation
        // (a second), which would lose Happy Eyeballs races: settle the links first.
        p.run(|| {
            for origin in [ORIGIN6, ORIGIN4] {
                let at = SocketAddr::new(ip(origin), TCP_PORT);
                let mut s = TcpStream::connect_timeout(&at, WAIT)
                    .unwrap_or_else(|e| panic!("the origin {at} is not reachable: {e}"));
                let _ = s.read_to_end(&mut Vec::new());
            }
        });
        net
    }
}

/// TCP on `TCP_PORT` and `TCP_PORT + 1` and UDP on `UDP_PORT`, on both origin addresses:
/// each answers with the source address it saw.
fn start_origin(ns: &Namespace) {
    ns.run(|| {
        for host in [ORIGIN4, ORIGIN6] {
            for port in [TCP_PORT, TCP_PORT + 1] {
                let l = TcpListener::bind((ip(host), port)).expect("origin listener");
                std::thread::spawn(move || {
                    for mut s in l.incoming().flatten() {
                        if let Ok(peer) = s.peer_addr() {
                            let _ = s.write_all(peer.ip().to_string().as_bytes());
                        }
                    }
                });
            }
            let u = UdpSocket::bind((ip(host), UDP_PORT)).expect("origin UDP socket");
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((_, src)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(src.ip().to_string().as_bytes(), src);
                }
            });
        }
    });
}

/// socksgate serving `config` in the proxy namespace; killed on drop.
struct Server {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("socksgate's log:\n{}", self.log());
        }
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hup(&self) {
        sh(&["kill", "-HUP", &self.child.id().to_string()]);
    }

    /// Waits until the log has `needle` `count` times.
    fn wait_log(&self, needle: &str, count: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                start.elapsed() < WAIT,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Creates a users file with `users` (name = password) with `socksgate passwd`.
fn passwd(path: &Path, users: &[&str]) {
    for u in users {
        let mut child = Command::new(BIN)
            .args(["passwd", "--users"])
            .arg(path)
            .arg(u)
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{u}-pw\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}

/// Starts socksgate in the proxy namespace with `config` (`USERS` replaced by a users file
/// holding `users`, each with password `NAME-pw`) and waits until `ready` accepts.
fn serve(net: &Net, config: &str, users: &[&str], ready: SocketAddr) -> Server {
    serve_in(&net.proxy, config, users, ready)
}

/// [`serve`] in namespace `ns`.
fn serve_in(ns: &Namespace, config: &str, users: &[&str], ready: SocketAddr) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("users");
    if !users.is_empty() {
        passwd(&users_file, users);
    }
    let path = dir.path().join("socksgate.toml");
    std::fs::write(
        &path,
        config.replace("USERS", &users_file.display().to_string()),
    )
    .unwrap();
    let log = dir.path().join("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN, "serve", "--config"])
        .env("RUST_LOG", "socksgate=debug")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("ip netns exec socksgate serve");
    let mut server = Server {
        child,
        config: path,
        log,
        _dir: dir,
    };
    let up = ns.run(move || {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if TcpStream::connect(ready).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(
        up,
        "socksgate did not start ({:?}):\n{}",
        server.child.try_wait(),
        server.log()
    );
    server
}

type Login = Option<&'static str>;

/// A SOCKS5 client of `proxy`, opened in the proxy namespace, logged in as `user` (password
/// `USER-pw`) or without authentication.
fn client(net: &Net, proxy: SocketAddr, user: Login) -> Client {
    let mut c = net.proxy.run(move || Client::connect(proxy));
    match user {
        None => c.greet_no_auth(),
        Some(u) => assert_eq!(c.login(u, &format!("{u}-pw")), 0, "login as {u}"),
    }
    c
}

/// CONNECT to `dst` through `proxy`: the source address the origin saw, or the reply code.
fn connect_source(
    net: &Net,
    proxy: SocketAddr,
    user: Login,
    dst: impl Into<Dst>,
) -> Result<IpAddr, ReplyCode> {
    let mut c = client(net, proxy, user);
    let reply = c.request5(Cmd::Connect, &dst.into());
    if reply.rep != ReplyCode::Succeeded {
        return Err(reply.rep);
    }
    let seen = String::from_utf8(c.read_to_end()).unwrap();
    Ok(seen
        .parse()
        .unwrap_or_else(|_| panic!("origin said {seen:?}")))
}

/// UDP ASSOCIATE through `proxy`, one datagram to the origin (v4 or v6): the source address
/// the origin saw, as relayed back.
fn udp_source(net: &Net, proxy: SocketAddr, user: Login, v6: bool) -> IpAddr {
    let mut c = client(net, proxy, user);
    let reply = c.request5(Cmd::UdpAssociate, &Dst::Ip("0.0.0.0:0".parse().unwrap()));
    assert_eq!(reply.rep, ReplyCode::Succeeded, "udp associate");
    let relay = reply.bound_addr();
    let local = c.stream().local_addr().unwrap().ip();
    let sock = net.proxy.run(move || UdpSocket::bind((local, 0)).unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dst = SocketAddr::new(ip(if v6 { ORIGIN6 } else { ORIGIN4 }), UDP_PORT);
    let datagram = encode::udp_datagram(&Dst::Ip(dst), b"who am I");
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&datagram, relay).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let (_, from, offset) = decode::udp_datagram(&buf[..n]).unwrap();
            assert_eq!(from, Dst::Ip(dst));
            let seen = String::from_utf8_lossy(&buf[offset..n]).into_owned();
            drop(c);
            return seen
                .parse()
                .unwrap_or_else(|_| panic!("origin said {seen:?}"));
        }
    }
    panic!("no UDP answer from {dst} through {relay}");
}

/// BIND through `proxy` for a peer at the origin's address (v4 or v6); the origin connects
/// back from it. Returns the address socksgate advertised (and listened on).
fn bind_address(net: &Net, proxy: SocketAddr, user: Login, v6: bool) -> IpAddr {
    let origin = ip(if v6 { ORIGIN6 } else { ORIGIN4 });
    let mut c = client(net, proxy, user);
    let first = c.request5(Cmd::Bind, &Dst::Ip(SocketAddr::new(origin, 0)));
    assert_eq!(first.rep, ReplyCode::Succeeded, "bind");
    let listening = first.bound_addr();
    let mut peer = net.origin.run(move || {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(listening),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        s.bind(&SocketAddr::new(origin, 0).into()).unwrap();
        s.connect_timeout(&listening.into(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting back to {listening}: {e}"));
        TcpStream::from(s)
    });
    let second = c.read_reply5();
    assert_eq!(second.rep, ReplyCode::Succeeded, "bind: peer accepted");
    assert_eq!(second.bound_addr().ip(), origin);
    c.send(b"x");
    let mut got = [0u8; 1];
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"x");
    listening.ip()
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn global_profile_for_connect_bind_and_udp_in_both_families() {
    let net = Net::new();
    let proxy = at("127.0.0.1:1080");
    let _server = serve(
        &net,
        r#"
listen = ["127.0.0.1:1080"]
default_egress = "out"

[[egress]]
name = "out"
address = ["10.77.0.2", "fd77::2"]
"#,
        &[],
        proxy,
    );
    for v6 in [false, true] {
        let want = ip(if v6 { "fd77::2" } else { "10.77.0.2" });
        assert_eq!(
            connect_source(&net, proxy, None, origin_tcp(v6, TCP_PORT)),
            Ok(want)
        );
        assert_eq!(udp_source(&net, proxy, None, v6), want);
        assert_eq!(bind_address(&net, proxy, None, v6), want);
    }
}

#[test]
fn listener_and_user_profiles_and_a_family_the_profile_lacks() {
    let net = Net::new();
    let (plain, special) = (at("127.0.0.1:1080"), at("127.0.0.1:1081"));
    let _server = serve(
        &net,
        r#"
listen = ["127.0.0.1:1080", "127.0.0.1:1081"]
users = "USERS"

[[egress]]
name = "by-listener"
address = ["10.77.0.3"]
listeners = ["127.0.0.1:1081"]

[[egress]]
name = "by-user"
address = ["10.77.0.2"]
users = ["alice"]
"#,
        &["alice", "bob"],
        plain,
    );
    let v4 = origin_tcp(false, TCP_PORT);
    // No profile: the kernel's choice, the interface's first address.
    assert_eq!(
        connect_source(&net, plain, Some("bob"), v4),
        Ok(ip("10.77.0.1"))
    );
    assert_eq!(
        connect_source(&net, special, Some("bob"), v4),
        Ok(ip("10.77.0.3"))
    );
    assert_eq!(
        udp_source(&net, special, Some("bob"), false),
        ip("10.77.0.3")
    );
    assert_eq!(
        bind_address(&net, special, Some("bob"), false),
        ip("10.77.0.3")
    );
    // The user's profile wins over the listener's.
    for proxy in [plain, special] {
        assert_eq!(
            connect_source(&net, proxy, Some("alice"), v4),
            Ok(ip("10.77.0.2"))
        );
    }
    assert_eq!(
        udp_source(&net, plain, Some("alice"), false),
        ip("10.77.0.2")
    );
    assert_eq!(
        bind_address(&net, special, Some("alice"), false),
        ip("10.77.0.2")
    );
    // Alice's profile has no IPv6 address: refused with "host unreachable", not sent from
    // an address nobody chose.
    assert_eq!(
        connect_source(&net, plain, Some("alice"), origin_tcp(true, TCP_PORT)),
        Err(ReplyCode::HostUnreachable)
    );
    // Bob has no profile on the plain listener: IPv6 goes out as the kernel chooses.
    let kernel = connect_source(&net, plain, Some("bob"), origin_tcp(true, TCP_PORT));
    assert!(
        matches!(kernel, Ok(IpAddr::V6(a)) if a.segments()[0] == 0xfd77),
        "{kernel:?}"
    );
}

#[test]
fn rule_profiles_win_over_the_global_one() {
    let net = Net::new();
    let proxy = at("127.0.0.1:1080");
    let _server = serve(
        &net,
        &format!(
            r#"
listen = ["127.0.0.1:1080"]
default_egress = "global"

[[egress]]
name = "global"
address = ["10.77.0.2"]

[[egress]]
name = "special"
address = ["10.77.0.3"]

[[rule]]
action = "allow"
to = ["{ORIGIN4}/32"]
ports = ["{TCP_PORT}"]
commands = ["connect"]
egress = "special"

[[rule]]
action = "allow"
commands = ["bind"]
egress = "special"
"#
        ),
        &[],
        proxy,
    );
    assert_eq!(
        connect_source(&net, proxy, None, origin_tcp(false, TCP_PORT)),
        Ok(ip("10.77.0.3"))
    );
    assert_eq!(
        connect_source(&net, proxy, None, origin_tcp(false, TCP_PORT + 1)),
        Ok(ip("10.77.0.2"))
    );
    assert_eq!(bind_address(&net, proxy, None, false), ip("10.77.0.3"));
    // No rule decides a UDP association (each datagram meets the rules): the global profile.
    assert_eq!(udp_source(&net, proxy, None, false), ip("10.77.0.2"));
}

#[test]
fn rotation_per_session_and_sticky_per_user() {
    let net = Net::new();
    let (round_robin, sticky) = (at("127.0.0.1:1080"), at("127.0.0.1:1081"));
    let _server = serve(
        &net,
        r#"
listen = ["127.0.0.1:1080", "127.0.0.1:1081"]
users = "USERS"

[[egress]]
name = "rr"
address = ["10.77.0.2", "fd77::2", "10.77.0.3"]
listeners = ["127.0.0.1:1080"]

[[egress]]
name = "sticky"
address = ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
rotation = "user"
listeners = ["127.0.0.1:1081"]
"#,
        &["alice", "bob"],
        round_robin,
    );
    let v4 = origin_tcp(false, TCP_PORT);
    let seen: Vec<IpAddr> = (0..4)
        .map(|_| connect_source(&net, round_robin, Some("alice"), v4).unwrap())
        .collect();
    let (two, three) = (ip("10.77.0.2"), ip("10.77.0.3"));
    assert_eq!(seen, [two, three, two, three]);
    // BIND and UDP sessions take their turn too.
    assert_eq!(udp_source(&net, round_robin, Some("alice"), false), two);
    assert_eq!(bind_address(&net, round_robin, Some("bob"), false), three);

    let pool = [ip("10.77.0.1"), two, three];
    for user in ["alice", "bob"] {
        let want = pool[(socksgate_core::egress::user_key(user.as_bytes()) % 3) as usize];
        for _ in 0..3 {
            assert_eq!(
                connect_source(&net, sticky, Some(user), v4),
                Ok(want),
                "{user}"
            );
        }
        assert_eq!(udp_source(&net, sticky, Some(user), false), want, "{user}");
    }
}

#[test]
fn rotation_same_uses_the_address_the_client_connected_to() {
    let net = Net::new();
    let (two, three) = (at("10.77.0.2:1080"), at("10.77.0.3:1080"));
    let _server = serve(
        &net,
        r#"
listen = ["10.77.0.2:1080", "10.77.0.3:1080"]
allow_open = true
default_egress = "same"

[[egress]]
name = "same"
rotation = "same"
"#,
        &[],
        two,
    );
    let v4 = origin_tcp(false, TCP_PORT);
    assert_eq!(connect_source(&net, two, None, v4), Ok(ip("10.77.0.2")));
    assert_eq!(connect_source(&net, three, None, v4), Ok(ip("10.77.0.3")));
    assert_eq!(udp_source(&net, three, None, false), ip("10.77.0.3"));
    assert_eq!(udp_source(&net, two, None, false), ip("10.77.0.2"));
    assert_eq!(bind_address(&net, three, None, false), ip("10.77.0.3"));
    // An IPv4 listener has no IPv6 address to be the same as, and the profile lists none.
    assert_eq!(
        connect_source(&net, two, None, origin_tcp(true, TCP_PORT)),
        Err(ReplyCode::HostUnreachable)
    );
}

#[test]
fn interface_and_mark_route_sessions_out_by_another_link() {
    let net = Net::new();
    let (device, marked, plain) = (
        at("127.0.0.1:1080"),
        at("127.0.0.1:1081"),
        at("127.0.0.1:1082"),
    );
    let _server = serve(
        &net,
        r#"
listen = ["127.0.0.1:1080", "127.0.0.1:1081", "127.0.0.1:1082"]

[[egress]]
name = "device"
interface = "pb"
listeners = ["127.0.0.1:1080"]

[[egress]]
name = "marked"
mark = 42
listeners = ["127.0.0.1:1081"]
"#,
        &[],
        plain,
    );
    let v4 = origin_tcp(false, TCP_PORT);
    assert_eq!(connect_source(&net, plain, None, v4), Ok(ip("10.77.0.1")));
    let by_pb = ip("10.78.0.1");
    for proxy in [device, marked] {
        assert_eq!(connect_source(&net, proxy, None, v4), Ok(by_pb), "{proxy}");
        assert_eq!(udp_source(&net, proxy, None, false), by_pb, "{proxy}");
        assert_eq!(bind_address(&net, proxy, None, false), by_pb, "{proxy}");
    }
    assert_eq!(udp_source(&net, plain, None, false), ip("10.77.0.1"));
}

#[test]
fn sighup_applies_new_profiles_and_keeps_the_running_ones_on_a_bad_file() {
    let net = Net::new();
    let proxy = at("127.0.0.1:1080");
    let config = |address: &str| {
        format!(
            "listen = [\"127.0.0.1:1080\"]\ndefault_egress = \"out\"\n\n[[egress]]\nname = \"out\"\naddress = [\"{address}\"]\n"
        )
    };
    let server = serve(&net, &config("10.77.0.2"), &[], proxy);
    let v4 = origin_tcp(false, TCP_PORT);
    assert_eq!(connect_source(&net, proxy, None, v4), Ok(ip("10.77.0.2")));
    std::fs::write(&server.config, config("10.77.0.3")).unwrap();
    server.hup();
    server.wait_log("reloaded", 1);
    assert_eq!(connect_source(&net, proxy, None, v4), Ok(ip("10.77.0.3")));
    // An address the host does not have: refused, with the file, line and reason.
    std::fs::write(&server.config, config("10.77.0.9")).unwrap();
    server.hup();
    server.wait_log("reload refused", 1);
    let log = server.log();
    let want = format!(
        "{}:6:12: [[egress]] \"out\" address \"10.77.0.9\": this host has no such address",
        server.config.display()
    );
    assert!(log.contains(&want), "{want} not in\n{log}");
    assert_eq!(connect_source(&net, proxy, None, v4), Ok(ip("10.77.0.3")));
}

/// `check-config` and `serve` with `file`, optionally without CAP_NET_ADMIN (setpriv).
fn refused(dir: &Path, text: &str, without_net_admin: bool) -> (String, String) {
    let file = dir.join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = if without_net_admin {
            let mut c = Command::new("setpriv");
            c.args([
                "--bounding-set",
                "-net_admin,-net_raw",
                "--inh-caps",
                "-net_admin,-net_raw",
                "--",
                BIN,
            ]);
            c
        } else {
            Command::new(BIN)
        };
        let out = cmd
            .args(args)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e} (setpriv is util-linux's)"));
        assert!(!out.status.success(), "{args:?} accepted:\n{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (
        run(&["check-config"]),
        run(&["serve", "--listen", "127.0.0.1:0", "--config"]),
    )
}

#[test]
fn bad_egress_settings_are_refused_by_check_config_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml").display().to_string();
    for (text, location, reason, without_net_admin) in [
        (
            "[[egress]]\nname = \"x\"\naddress = [\"192.0.2.77\"]\n",
            "3:12",
            "this host has no such address",
            false,
        ),
        (
            "[[egress]]\nname = \"x\"\naddress = [\"127.0.0.1/8\"]\n",
            "3:12",
            "an address, not a prefix, is expected",
            false,
        ),
        (
            "[[egress]]\nname = \"x\"\ninterface = \"nosuch0\"\n",
            "3:13",
            "no such interface on this host",
            false,
        ),
        (
            "[[egress]]\nname = \"x\"\nmark = 0\n",
            "3:8",
            "0 means no mark",
            false,
        ),
        (
            "[[egress]]\nname = \"x\"\nmark = 42\n",
            "3:8",
            "needs CAP_NET_ADMIN",
            true,
        ),
        (
            "[[rule]]\naction = \"allow\"\negress = \"nope\"\n",
            "3:10",
            "egress \"nope\" is not defined by an [[egress]]",
            false,
        ),
    ] {
        let want = format!("{path}:{location}: ");
        let (check, serve) = refused(dir.path(), text, without_net_admin);
        for (what, err) in [("check-config", check), ("serve", serve)] {
            assert!(
                err.contains(&want) && err.contains(reason),
                "{what}: wanted {want}…{reason} in {err}"
            );
        }
    }
    // The same mark with the privilege is accepted, and shown.
    let file = dir.path().join("good.toml");
    std::fs::write(
        &file,
        "default_egress = \"x\"\n[[egress]]\nname = \"x\"\nmark = 42\ninterface = \"lo\"\naddress = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "default_egress = \"x\"",
        "[[egress]]",
        "mark = 42",
        "interface = \"lo\"",
        "rotation = \"session\"",
    ] {
        assert!(shown.contains(key), "{key} not in\n{shown}");
    }
}

#[test]
fn happy_eyeballs_attempts_and_upstream_connections_leave_by_the_profile() {
    let net = Net::new();
    // A SOCKS server beside the origin: its access log shows where our connection came from.
    let upstream = at("10.99.0.100:1090");
    let upstream_server = serve_in(
        &net.origin,
        "listen = [\"10.99.0.100:1090\"]\nallow_open = true\n\n[access]\nprotect_local_destinations = false\n",
        &[],
        upstream,
    );
    let (v4_only, both) = (at("127.0.0.1:1080"), at("127.0.0.1:1081"));
    let _server = serve(
        &net,
        &format!(
            r#"
listen = ["127.0.0.1:1080", "127.0.0.1:1081"]

[[upstream]]
name = "beside-origin"
url = "socks5://{upstream}"

[[egress]]
name = "v4-only"
address = ["10.77.0.2"]
listeners = ["127.0.0.1:1080"]

[[egress]]
name = "both"
address = ["10.77.0.3", "fd77::3"]
listeners = ["127.0.0.1:1081"]

[[egress]]
name = "chained"
address = ["10.77.0.3"]

[[rule]]
action = "allow"
ports = ["{}"]
upstream = "beside-origin"
egress = "chained"
"#,
            TCP_PORT + 1
        ),
        &[],
        v4_only,
    );
    let name = |port| Dst::Name(ORIGIN_NAME.into(), port);
    // The name has both families; Happy Eyeballs prefers IPv6, which this profile cannot
    // use, so the IPv4 attempt (from the profile's address) wins.
    assert_eq!(
        connect_source(&net, v4_only, None, name(TCP_PORT)),
        Ok(ip("10.77.0.2"))
    );
    assert_eq!(
        connect_source(&net, both, None, name(TCP_PORT)),
        Ok(ip("fd77::3"))
    );
    // Through the upstream: the origin sees the upstream, the upstream sees our egress.
    assert_eq!(
        connect_source(&net, v4_only, None, origin_tcp(false, TCP_PORT + 1)),
        Ok(ip(ORIGIN4))
    );
    upstream_server.wait_log("client=10.77.0.3:", 1);
}
