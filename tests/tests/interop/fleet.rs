//! A fleet behind a real HAProxy: three socksgate nodes whose listeners take PROXY protocol
//! headers from the balancer only, HAProxy in TCP mode sending them (v2 to two nodes, v1 to
//! the third) and checking each node's `/readyz`; curl from distinct loopback addresses
//! through the balancer. Each node must see — in its rules and its access log — the real
//! client, not the balancer.

use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::peers::{Haproxy, Peer};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, free_port, tools};

use crate::{PASS, USER};

const SIZE: usize = 64 * 1024;

struct Fleet {
    nodes: Vec<Server>,
    balancer: Peer,
}

/// Three nodes with `extra` config (rules) and, with `users`, alice's password required,
/// behind HAProxy.
fn fleet(test: &str, extra: &str, users: bool) -> Option<Fleet> {
    let haproxy = tools::require(test, &["haproxy"])?.remove(0);
    let mut balancer = Haproxy::new(&haproxy);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let metrics = format!("127.0.0.1:{}", free_port());
        // The balancer connects from 127.0.0.1; clients use 127.0.0.2 and 127.0.0.3.
        let config = format!(
            "[[proxy_protocol]]\nlisteners = [\"{{listen}}\"]\nfrom = [\"127.0.0.1\"]\n\n{extra}"
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
    }
    Some(Fleet {
        nodes,
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
