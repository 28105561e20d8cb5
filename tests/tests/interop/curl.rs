//! curl `--socks4`, `--socks4a`, `--socks5`, `--socks5-hostname`, with and without
//! credentials, fetching 1 MiB from the local HTTP origin; bodies compared byte for byte.

use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, tools};

use crate::{MB, PASS, USER};

/// Runs curl through `proxy` with `flag` and returns the body (curl must exit 0).
fn fetch(
    test: &str,
    flag: &str,
    proxy: &str,
    proxy_user: Option<&str>,
    url_host: &str,
    origin: &TcpService,
    len: usize,
) -> Option<Vec<u8>> {
    let curl = tools::require(test, &["curl"])?.remove(0);
    let url = format!(
        "http://{url_host}:{}{}",
        origin.port(),
        origin::http_path(len)
    );
    let mut cmd = std::process::Command::new(curl);
    cmd.args(["-sS", "--fail", "--noproxy", "", "--max-time", "120"])
        .args([flag, proxy]);
    if let Some(u) = proxy_user {
        cmd.args(["--proxy-user", u]);
    }
    cmd.arg(&url);
    let out = tools::run(&mut cmd, b"", TIMEOUT * 2);
    out.assert_success(&format!("{test}: curl {flag} {proxy} {url}"));
    Some(out.stdout)
}

#[track_caller]
fn check(test: &str, flag: &str, auth: bool, url_host: &str) {
    let server = if auth {
        Server::builder().user(USER, PASS).start()
    } else {
        Server::start()
    };
    let origin = origin::http_origin();
    let creds = format!("{USER}:{PASS}");
    let proxy_user = auth.then_some(creds.as_str());
    let Some(got) = fetch(
        test,
        flag,
        &server.host_port(),
        proxy_user,
        url_host,
        &origin,
        MB,
    ) else {
        return;
    };
    assert_same_bytes(&got, &body(MB), test);
}

#[test]
fn curl_socks4() {
    check("curl_socks4", "--socks4", false, "127.0.0.1");
}

#[test]
fn curl_socks4_with_userid() {
    // SOCKS4 has no password: curl sends the user name as USERID; a no-auth server accepts it.
    let server = Server::start();
    let origin = origin::http_origin();
    let Some(got) = fetch(
        "curl_socks4_with_userid",
        "--socks4",
        &server.host_port(),
        Some("alice:"),
        "127.0.0.1",
        &origin,
        MB,
    ) else {
        return;
    };
    assert_same_bytes(&got, &body(MB), "curl_socks4_with_userid");
}

#[test]
fn curl_socks4a() {
    // `localhost` is resolved by the server (SOCKS4a DSTIP 0.0.0.x + name).
    check("curl_socks4a", "--socks4a", false, "localhost");
}

#[test]
fn curl_socks5() {
    check("curl_socks5", "--socks5", false, "127.0.0.1");
}

#[test]
fn curl_socks5_hostname() {
    check(
        "curl_socks5_hostname",
        "--socks5-hostname",
        false,
        "localhost",
    );
}

#[test]
fn curl_socks5_userpass() {
    check("curl_socks5_userpass", "--socks5", true, "127.0.0.1");
}

#[test]
fn curl_socks5_hostname_userpass() {
    check(
        "curl_socks5_hostname_userpass",
        "--socks5-hostname",
        true,
        "localhost",
    );
}

#[test]
fn curl_socks5_ipv6_loopback() {
    // The server listens on [::1] and the origin is reached at [::1].
    let server = Server::builder().ipv6().start();
    let origin = origin::http_origin();
    assert!(origin.has_v6(), "the origin could not listen on ::1");
    let Some(got) = fetch(
        "curl_socks5_ipv6_loopback",
        "--socks5",
        &server.host_port(),
        None,
        "[::1]",
        &origin,
        MB,
    ) else {
        return;
    };
    assert_same_bytes(&got, &body(MB), "curl_socks5_ipv6_loopback");
}

#[test]
fn curl_socks5_wrong_password_fails() {
    let test = "curl_socks5_wrong_password_fails";
    let Some(curl) = tools::require(test, &["curl"]) else {
        return;
    };
    let server = Server::builder().user(USER, PASS).start();
    let origin = origin::http_origin();
    let out = tools::run(
        std::process::Command::new(&curl[0])
            .args(["-sS", "--max-time", "60", "--socks5"])
            .arg(server.host_port())
            .args(["--proxy-user", &format!("{USER}:wrong")])
            .arg(format!("http://127.0.0.1:{}/10", origin.port())),
        b"",
        TIMEOUT,
    );
    // 97 is CURLE_PROXY (curl ≥ 7.73): the SOCKS handshake failed.
    assert_eq!(
        out.status.code(),
        Some(97),
        "curl should report a proxy error: {}",
        out.stderr_text()
    );
    assert!(out.stdout.is_empty());
    assert_eq!(origin.accepted(), 0, "the origin must not be contacted");
}
