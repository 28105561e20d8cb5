//! `socksgate connect --proxy URL HOST PORT` (stdin to the destination, the destination to
//! stdout) against socksgate itself, Debian's dante-server and microsocks.

use core::net::SocketAddr;

use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::socksgate::{self, Server};
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, free_port, peers, tools};

use crate::{MB, PASS, USER};

/// `socksgate connect` flags for microsocks, which drops both directions when the client
/// half-closes (its relay loop stops at the first EOF): the client keeps its write side open
/// after stdin's EOF.
const NO_SHUTDOWN: &[&str] = &["--no-shutdown"];

/// Fetches 1 MiB from the origin with `socksgate connect` and `flags`; returns the body.
/// Stdin (the request) ends at once, so the client half-closes right after sending it
/// (unless `flags` has `--no-shutdown`).
#[track_caller]
fn fetch(test: &str, flags: &[&str], proxy_url: &str, host: &str, origin: &TcpService) -> Vec<u8> {
    let out = tools::run(
        socksgate::command().arg("connect").args(flags).args([
            "--proxy",
            proxy_url,
            host,
            &origin.port().to_string(),
        ]),
        &origin::http_request(host, MB),
        TIMEOUT * 2,
    );
    out.assert_success(&format!("{test}: socksgate connect --proxy {proxy_url}"));
    let (status, got) = origin::split_http_response(&out.stdout);
    assert_eq!(status, 200, "{test}");
    got.to_vec()
}

fn url(scheme: &str, auth: bool, proxy: SocketAddr) -> String {
    if auth {
        format!("{scheme}://{USER}:{PASS}@{proxy}")
    } else {
        format!("{scheme}://{proxy}")
    }
}

/// [`fetch`] from a new HTTP origin through `proxy` as `scheme` (with the test user's
/// credentials if `auth`), checking every byte of the body.
#[track_caller]
fn fetch_through(
    test: &str,
    flags: &[&str],
    scheme: &str,
    auth: bool,
    proxy: SocketAddr,
    host: &str,
) {
    let origin = origin::http_origin();
    let got = fetch(test, flags, &url(scheme, auth, proxy), host, &origin);
    assert_same_bytes(&got, &body(MB), test);
}

#[track_caller]
fn against_socksgate(test: &str, scheme: &str, auth: bool, host: &str) {
    let server = if auth {
        Server::builder().user(USER, PASS).start()
    } else {
        Server::start()
    };
    fetch_through(test, &[], scheme, auth, server.addr(), host);
}

#[test]
fn connect_socks4_to_socksgate() {
    against_socksgate("connect_socks4_to_socksgate", "socks4", false, "127.0.0.1");
}

#[test]
fn connect_socks4a_to_socksgate() {
    against_socksgate(
        "connect_socks4a_to_socksgate",
        "socks4a",
        false,
        "localhost",
    );
}

#[test]
fn connect_socks5_to_socksgate() {
    against_socksgate("connect_socks5_to_socksgate", "socks5", false, "127.0.0.1");
}

#[test]
fn connect_socks5h_userpass_to_socksgate() {
    against_socksgate(
        "connect_socks5h_userpass_to_socksgate",
        "socks5h",
        true,
        "localhost",
    );
}

#[test]
fn connect_socks5_userpass_to_socksgate() {
    against_socksgate(
        "connect_socks5_userpass_to_socksgate",
        "socks5",
        true,
        "127.0.0.1",
    );
}

#[test]
fn connect_socks5_ipv6_to_socksgate() {
    let server = Server::builder().ipv6().start();
    let origin = origin::http_origin();
    assert!(origin.has_v6());
    let got = fetch(
        "connect_socks5_ipv6_to_socksgate",
        &[],
        &url("socks5", false, server.addr()),
        "::1",
        &origin,
    );
    assert_same_bytes(&got, &body(MB), "connect over ::1");
}

#[test]
fn connect_socks4_to_danted() {
    let test = "connect_socks4_to_danted";
    let Some(danted) = tools::require(test, &["danted"]) else {
        return;
    };
    let peer = peers::danted(&danted[0]);
    fetch_through(test, &[], "socks4", false, peer.addr(), "127.0.0.1");
}

#[test]
fn connect_socks5_to_danted() {
    let test = "connect_socks5_to_danted";
    let Some(danted) = tools::require(test, &["danted"]) else {
        return;
    };
    let peer = peers::danted(&danted[0]);
    fetch_through(test, &[], "socks5", false, peer.addr(), "127.0.0.1");
}

#[test]
fn connect_socks5_to_microsocks() {
    let test = "connect_socks5_to_microsocks";
    let Some(ms) = tools::require(test, &["microsocks"]) else {
        return;
    };
    let peer = peers::microsocks(&ms[0], None);
    fetch_through(test, NO_SHUTDOWN, "socks5", false, peer.addr(), "127.0.0.1");
}

#[test]
fn connect_socks5h_userpass_to_microsocks() {
    let test = "connect_socks5h_userpass_to_microsocks";
    let Some(ms) = tools::require(test, &["microsocks"]) else {
        return;
    };
    let peer = peers::microsocks(&ms[0], Some((USER, PASS)));
    fetch_through(test, NO_SHUTDOWN, "socks5h", true, peer.addr(), "localhost");
}

#[test]
fn connect_refused_destination_fails() {
    let server = Server::start();
    let out = tools::run(
        socksgate::command().args([
            "connect",
            "--proxy",
            &url("socks5", false, server.addr()),
            "127.0.0.1",
            &free_port().to_string(),
        ]),
        b"",
        TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "connect to a closed port must fail; stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty(), "the failure needs a message");
}

#[test]
fn connect_wrong_password_fails() {
    let server = Server::builder().user(USER, PASS).start();
    let origin = origin::echo();
    let out = tools::run(
        socksgate::command().args([
            "connect",
            "--proxy",
            &format!("socks5://{USER}:wrong@{}", server.addr()),
            "127.0.0.1",
            &origin.port().to_string(),
        ]),
        b"hello",
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "a rejected login must fail");
    assert!(
        out.stderr_text().contains("rejected the username/password"),
        "{}",
        out.stderr_text()
    );
    assert!(out.stdout.is_empty());
    assert_eq!(origin.accepted(), 0);
}
