//! A fleet behind a real HAProxy: three socksgate nodes whose listeners take PROXY protocol
//! headers from the balancer only, HAProxy in TCP mode sending them (v2 to two nodes, v1 to
//! the third) and checking each node's `/readyz`; curl from distinct loopback addresses
//! through the balancer. Each node must see — in its rules and its access log — the real
//! client, not the balancer.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::net::UdpSocket;

use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::peers::{Haproxy, Peer};
use socksgate_tests::socks::{Client, Command, Dst, ReplyCode, decode, encode};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, free_port, reliability, tools};

use crate::{PASS, USER};

const SIZE: usize = 64 * 1024;

/// Three nodes behind a running HAProxy.
pub(crate) struct Fleet {
    pub(crate) nodes: Vec<Server>,
    /// Each node's metrics listener (`/readyz`).
    pub(crate) metrics: Vec<SocketAddr>,
    pub(crate) balancer: Peer,
}

/// Three nodes with `extra` config (rules) and, with `users`, alice's password required,
/// behind HAProxy.
fn fleet(test: &str, extra: &str, users: bool) -> Option<Fleet> {
    fleet_with(test, &|_| extra.to_owned(), users, false)
}

/// Three nodes, node `i` with `node_config(i)` added to its config and, with `users`,
/// alice's password required, behind HAProxy (in master-worker mode with `master_worker`).
pub(crate) fn fleet_with(
    test: &str,
    node_config: &dyn Fn(usize) -> String,
    users: bool,
    master_worker: bool,
) -> Option<Fleet> {
    let haproxy = tools::require(test, &["haproxy"])?.remove(0);
    let mut balancer = Haproxy::new(&haproxy);
    if master_worker {
        balancer = balancer.master_worker();
    }
    let mut nodes = Vec::new();
    let mut metrics_addrs = Vec::new();
    for i in 0..3 {
        let metrics = format!("127.0.0.1:{}", free_port());
        // The balancer connects from 127.0.0.1; clients use 127.0.0.2 and 127.0.0.3.
        // The node's own settings first: top-level keys must precede the tables.
        let config = format!(
            "{}\n[[proxy_protocol]]\nlisteners = [\"{{listen}}\"]\nfrom = [\"127.0.0.1\"]\n",
            node_config(i)
        );
        let mut builder = Server::builder()
            .config(&config)
            .arg("--metrics")
            .arg(&metrics);
        if users {
            builder = builder.user(USER, PASS);
        }
        let node = builder.start();
        let version = if i == 2 {
            "send-proxy"
        } else {
            "send-proxy-v2"
        };
        let check_port = metrics.rsplit(':').next().unwrap_or_default();
        balancer = balancer.server(node.addr(), &format!("{version} check port {check_port}"));
        nodes.push(node);
        metrics_addrs.push(metrics.parse().expect("metrics address"));
    }
    Some(Fleet {
        nodes,
        metrics: metrics_addrs,
        balancer: balancer.start(),
    })
}

/// curl through the balancer from `source` with `flag` (and `user`); the body, or curl's
/// stderr when it fails.
fn curl(
    fleet: &Fleet,
    source: &str,
    flag: &str,
    user: Option<&str>,
    origin: &TcpService,
) -> Result<Vec<u8>, String> {
    let url = format!(
        "http://localhost:{}{}",
        origin.port(),
        origin::http_path(SIZE)
    );
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--fail", "--noproxy", "", "--max-time", "60"])
        .args(["--interface", source])
        .args([flag, &fleet.balancer.addr().to_string()]);
    if let Some(u) = user {
        cmd.args(["--proxy-user", u]);
    }
    let out = tools::run(cmd.arg(&url), b"", TIMEOUT * 2);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(out.stderr_text())
    }
}

#[test]
fn fleet_behind_haproxy_sees_the_real_clients() {
    let test = "fleet_behind_haproxy_sees_the_real_clients";
    let Some(fleet) = fleet(
        test,
        "[[rule]]\naction = \"deny\"\nfrom = [\"127.0.0.3\"]\n",
        false,
    ) else {
        return;
    };
    let origin = origin::http_origin();
    // Round robin: six requests reach every node twice, over PROXY v1 and v2.
    for i in 0..6 {
        let flag = if i % 2 == 0 {
            "--socks4a"
        } else {
            "--socks5-hostname"
        };
        let got = curl(&fleet, "127.0.0.2", flag, None, &origin)
            .unwrap_or_else(|e| panic!("{test}: curl {flag} from 127.0.0.2: {e}"));
        assert_same_bytes(&got, &body(SIZE), test);
    }
    // (Each node sees the balancer's connections from 127.0.0.1 only as PROXY headers; the
    // harness's own readiness probe through HAProxy is a client from 127.0.0.1.)
    for (i, node) in fleet.nodes.iter().enumerate() {
        let log = node.log();
        assert!(
            log.contains("client=127.0.0.2:"),
            "node {i} does not log the real client:\n{log}"
        );
    }
    // The `from` rule applies to the client behind the balancer.
    for flag in ["--socks4a", "--socks5-hostname"] {
        let r = curl(&fleet, "127.0.0.3", flag, None, &origin);
        assert!(r.is_err(), "{test}: 127.0.0.3 got through with {flag}");
    }
    let refused = fleet
        .nodes
        .iter()
        .filter(|n| n.log().contains("client=127.0.0.3:"))
        .count();
    assert!(refused >= 1, "no node logged the refused client");
    let log = fleet.balancer.log();
    assert!(!log.contains("DOWN"), "HAProxy marked a node down:\n{log}");
}

#[test]
fn fleet_behind_haproxy_with_passwords() {
    let test = "fleet_behind_haproxy_with_passwords";
    let Some(fleet) = fleet(test, "", true) else {
        return;
    };
    let origin = origin::http_origin();
    let creds = format!("{USER}:{PASS}");
    for _ in 0..3 {
        let got = curl(
            &fleet,
            "127.0.0.2",
            "--socks5-hostname",
            Some(&creds),
            &origin,
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert_same_bytes(&got, &body(SIZE), test);
    }
    let wrong = format!("{USER}:not-{PASS}");
    assert!(
        curl(
            &fleet,
            "127.0.0.2",
            "--socks5-hostname",
            Some(&wrong),
            &origin
        )
        .is_err()
    );
    for (i, node) in fleet.nodes.iter().enumerate() {
        let log = node.log();
        assert!(
            log.contains("client=127.0.0.2:") && log.contains("alice"),
            "node {i}:\n{log}"
        );
    }
}

/// UDP ASSOCIATE through the fleet: each node has its own `[udp] public_address` (127.0.0.11,
/// .12 and .13 here), its relay listens there, and each association's reply names its own
/// node's address; datagrams sent there echo through. Then PySocks does the same.
#[test]
fn fleet_udp_each_node_advertises_its_own_relay() {
    let test = "fleet_udp_each_node_advertises_its_own_relay";
    let public = |i: usize| Ipv4Addr::new(127, 0, 0, 11 + u8::try_from(i).unwrap_or(0));
    let Some(fleet) = fleet_with(
        test,
        &|i| format!("[udp]\npublic_address = \"{}\"\n", public(i)),
        false,
        false,
    ) else {
        return;
    };
    let echo = origin::UdpEcho::start();
    // The node whose public address `relay` names must be the one that opened it (its log
    // has the exact address and port).
    let owner = |relay: SocketAddr| -> usize {
        let i = (0..3)
            .find(|&i| relay.ip() == IpAddr::V4(public(i)))
            .unwrap_or_else(|| panic!("relay {relay} is no node's public address"));
        // (The node logs the relay just after sending the reply.)
        let line = format!("relay={relay}");
        assert!(
            reliability::poll_until(Duration::from_secs(10), || fleet.nodes[i]
                .log()
                .contains(&line)),
            "node {i} did not open the relay {relay} it advertises:\n{}",
            fleet.nodes[i].log()
        );
        i
    };
    // Associations held open at once until every node has served one (round robin gives one
    // to each unless a check failed meanwhile; at most twelve).
    let mut served = [0usize; 3];
    let mut held = Vec::new();
    for a in 0..12 {
        if served.iter().all(|&n| n > 0) {
            break;
        }
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        udp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut control = Client::connect(fleet.balancer.addr());
        control.greet_no_auth();
        let r = control.request5(
            Command::UdpAssociate,
            &Dst::Ip(udp.local_addr().expect("local_addr")),
        );
        assert_eq!(r.rep, ReplyCode::Succeeded, "association {a}: {r:?}");
        let relay = r.bound_addr();
        served[owner(relay)] += 1;
        for i in 0..5 {
            let payload = format!("association {a} datagram {i}").into_bytes();
            udp.send_to(
                &encode::udp_datagram(&Dst::Ip(echo.addr()), &payload),
                relay,
            )
            .expect("send");
            let mut buf = [0u8; 2048];
            let (n, from) = udp
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("association {a} via {relay}: no echo: {e}"));
            assert_eq!(from, relay, "replies come from the advertised relay");
            let (frag, src, off) = decode::udp_datagram(&buf[..n]).expect("header");
            assert_eq!((frag, src), (0, Dst::Ip(echo.addr())));
            assert_eq!(&buf[off..n], &payload[..]);
        }
        held.push((control, udp));
    }
    println!("{test}: associations per node {served:?}");
    assert!(
        served.iter().all(|&n| n > 0),
        "not every node served an association: {served:?}"
    );
    drop(held);

    let Some(py) = tools::require_pysocks(test) else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("pysocks_udp_fleet.py");
    let balancer = fleet.balancer.addr();
    let out = tools::run(
        std::process::Command::new(py)
            .arg(script)
            .args([balancer.ip().to_string(), balancer.port().to_string()])
            .args([echo.addr().ip().to_string(), echo.addr().port().to_string()])
            .args(["3", "50"]),
        b"",
        TIMEOUT,
    );
    out.assert_success(&format!("{test}: pysocks_udp_fleet.py"));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{test}: PySocks:\n{text}");
    assert!(text.contains("OK 3 50"), "{text}");
    let relays: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.strip_prefix("relay ")?.parse().ok())
        .collect();
    assert_eq!(relays.len(), 3, "{text}");
    for relay in relays {
        owner(relay);
    }
}

/// PROXY v2 on output: socksgate A chains through socksgate B, whose listener takes PROXY
/// headers from A's address only. With `proxy_protocol = true` on A's `[[upstream]]`, B
/// sees — and logs — the real client (127.0.0.2), not A; without it B refuses A.
#[test]
fn upstream_gets_a_proxy_v2_header_with_the_real_client() {
    let test = "upstream_gets_a_proxy_v2_header_with_the_real_client";
    let b = Server::builder()
        .config("[[proxy_protocol]]\nlisteners = [\"{listen}\"]\nfrom = [\"127.0.0.1\"]\n")
        .start();
    let chain = |proxy_protocol: bool| {
        Server::builder()
            .config(&format!(
                "[[upstream]]\nname = \"b\"\nurl = \"socks5h://{}\"\nproxy_protocol = \
                 {proxy_protocol}\n\n[[rule]]\naction = \"allow\"\nupstream = \"b\"\n",
                b.addr()
            ))
            .start()
    };
    let origin = origin::http_origin();
    let fetch = |a: &Server| {
        let url = format!(
            "http://localhost:{}{}",
            origin.port(),
            origin::http_path(SIZE)
        );
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--fail", "--noproxy", "", "--max-time", "60"])
            .args(["--interface", "127.0.0.2"])
            .args(["--socks5-hostname", &a.addr().to_string()])
            .arg(&url);
        tools::run(&mut cmd, b"", TIMEOUT * 2)
    };
    let a = chain(true);
    let out = fetch(&a);
    out.assert_success(&format!("{test}: curl through A and B"));
    assert_same_bytes(&out.stdout, &body(SIZE), test);
    // Each access line is written when the session has ended, a moment after curl's.
    let wanted = "socksgate::access: session client=127.0.0.2:";
    let dst = format!("dst=localhost:{}", origin.port());
    assert!(
        reliability::poll_until(Duration::from_secs(10), || b
            .log()
            .lines()
            .any(|l| l.contains(wanted) && l.contains(&dst))),
        "B does not log the real client with the request:\n{}",
        b.log()
    );
    // A's own access log names the client too.
    assert!(
        reliability::poll_until(Duration::from_secs(10), || a
            .log()
            .contains("client=127.0.0.2:")),
        "{}",
        a.log()
    );

    // Without the header, B (which requires one from A's address) closes A's connection.
    let refusals = |log: &str| log.matches("connection closed").count();
    let plain = chain(false);
    // (The harness's readiness probe of A does not reach B; B's own probe was refused.)
    let before_probe = refusals(&b.log());
    let out = fetch(&plain);
    assert!(
        !out.status.success(),
        "{test}: B accepted A without a header"
    );
    assert!(
        reliability::poll_until(TIMEOUT, || refusals(&b.log()) > before_probe),
        "B did not say why it refused A:\n{}",
        b.log()
    );
}
