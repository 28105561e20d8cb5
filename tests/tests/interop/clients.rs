//! Real SOCKS clients against socksgate: ncat, proxychains4, PySocks (TCP and UDP ASSOCIATE)
//! and Dante's socksify (BIND and CONNECT). Each also runs once against a Debian reference
//! server (`*_baseline_*`), which shows the client and harness work on this machine, so a
//! failure of the socksgate variant points at socksgate.

use core::net::SocketAddr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::socksgate::Server;
use socksgate_tests::tmp::TempDir;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, peers, tools};

use crate::{MB, PASS, USER};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

// ---- ncat ---------------------------------------------------------------------------------

/// `ncat --proxy-type KIND` sends an HTTP request to the origin and returns the body.
/// `--no-shutdown` keeps ncat reading after its stdin ends (ncat otherwise quits at once).
fn ncat_fetch(
    test: &str,
    proxy: SocketAddr,
    kind: &str,
    auth: Option<&str>,
    host: &str,
    origin: &TcpService,
) -> Option<Vec<u8>> {
    let ncat = tools::require(test, &["ncat"])?.remove(0);
    let mut cmd = Command::new(ncat);
    cmd.args(["--no-shutdown", "--wait", "30", "--proxy"])
        .arg(proxy.to_string())
        .args(["--proxy-type", kind]);
    if let Some(a) = auth {
        cmd.args(["--proxy-auth", a]);
    }
    if host != "127.0.0.1" {
        cmd.args(["--proxy-dns", "remote"]);
    }
    cmd.arg(host).arg(origin.port().to_string());
    let out = tools::run(&mut cmd, &origin::http_request(host, MB), TIMEOUT * 2);
    out.assert_success(&format!("{test}: ncat"));
    let (status, got) = origin::split_http_response(&out.stdout);
    assert_eq!(status, 200);
    Some(got.to_vec())
}

#[test]
fn ncat_socks4() {
    let server = Server::start();
    let origin = origin::http_origin();
    if let Some(got) = ncat_fetch(
        "ncat_socks4",
        server.addr(),
        "socks4",
        None,
        "127.0.0.1",
        &origin,
    ) {
        assert_same_bytes(&got, &body(MB), "ncat socks4");
    }
}

#[test]
fn ncat_socks4a_remote_dns() {
    let server = Server::start();
    let origin = origin::http_origin();
    if let Some(got) = ncat_fetch(
        "ncat_socks4a_remote_dns",
        server.addr(),
        "socks4",
        None,
        "localhost",
        &origin,
    ) {
        assert_same_bytes(&got, &body(MB), "ncat socks4a");
    }
}

#[test]
fn ncat_socks5() {
    let server = Server::start();
    let origin = origin::http_origin();
    if let Some(got) = ncat_fetch(
        "ncat_socks5",
        server.addr(),
        "socks5",
        None,
        "127.0.0.1",
        &origin,
    ) {
        assert_same_bytes(&got, &body(MB), "ncat socks5");
    }
}

#[test]
fn ncat_socks5_userpass_remote_dns() {
    let server = Server::builder().user(USER, PASS).start();
    let origin = origin::http_origin();
    if let Some(got) = ncat_fetch(
        "ncat_socks5_userpass_remote_dns",
        server.addr(),
        "socks5",
        Some(&format!("{USER}:{PASS}")),
        "localhost",
        &origin,
    ) {
        assert_same_bytes(&got, &body(MB), "ncat socks5 user:pass");
    }
}

#[test]
fn ncat_baseline_danted_socks5() {
    let test = "ncat_baseline_danted_socks5";
    let Some(danted) = tools::require(test, &["danted"]) else {
        return;
    };
    let peer = peers::danted(&danted[0]);
    let origin = origin::http_origin();
    if let Some(got) = ncat_fetch(test, peer.addr(), "socks5", None, "127.0.0.1", &origin) {
        assert_same_bytes(&got, &body(MB), test);
    }
}

// ---- proxychains4 -------------------------------------------------------------------------

/// `proxychains4 -f CONF curl URL` with one `[ProxyList]` entry; returns curl's output. The
/// chain report on stderr ("... OK") shows the proxy was really used.
fn proxychains_fetch(
    test: &str,
    entry: &str,
    url_host: &str,
    origin: &TcpService,
) -> Option<Vec<u8>> {
    let tools = tools::require(test, &["proxychains4", "curl"])?;
    let dir = TempDir::new();
    let conf = dir.write(
        "proxychains.conf",
        format!(
            "strict_chain\nproxy_dns\ntcp_read_time_out 60000\ntcp_connect_time_out 30000\n\
             [ProxyList]\n{entry}\n"
        ),
    );
    let url = format!(
        "http://{url_host}:{}{}",
        origin.port(),
        origin::http_path(MB)
    );
    let out = tools::run(
        Command::new(&tools[0])
            .arg("-f")
            .arg(&conf)
            .arg(&tools[1])
            .args(["-sS", "--fail", "--noproxy", "*", "--max-time", "120", &url]),
        b"",
        TIMEOUT * 2,
    );
    out.assert_success(&format!("{test}: proxychains4 curl"));
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("OK"),
        "{test}: proxychains did not report a proxied connection: {stderr}"
    );
    Some(out.stdout)
}

#[test]
fn proxychains_socks5_userpass() {
    let server = Server::builder().user(USER, PASS).start();
    let origin = origin::http_origin();
    let entry = format!("socks5 127.0.0.1 {} {USER} {PASS}", server.addr().port());
    if let Some(got) =
        proxychains_fetch("proxychains_socks5_userpass", &entry, "127.0.0.1", &origin)
    {
        assert_same_bytes(&got, &body(MB), "proxychains socks5");
    }
}

#[test]
fn proxychains_socks4() {
    let server = Server::start();
    let origin = origin::http_origin();
    let entry = format!("socks4 127.0.0.1 {}", server.addr().port());
    if let Some(got) = proxychains_fetch("proxychains_socks4", &entry, "127.0.0.1", &origin) {
        assert_same_bytes(&got, &body(MB), "proxychains socks4");
    }
}

#[test]
fn proxychains_baseline_microsocks() {
    let test = "proxychains_baseline_microsocks";
    let Some(ms) = tools::require(test, &["microsocks"]) else {
        return;
    };
    let peer = peers::microsocks(&ms[0], Some((USER, PASS)));
    let origin = origin::http_origin();
    let entry = format!("socks5 127.0.0.1 {} {USER} {PASS}", peer.addr().port());
    if let Some(got) = proxychains_fetch(test, &entry, "127.0.0.1", &origin) {
        assert_same_bytes(&got, &body(MB), test);
    }
}

// ---- PySocks ------------------------------------------------------------------------------

fn pysocks_fetch(
    test: &str,
    proxy: SocketAddr,
    kind: &str,
    auth: Option<(&str, &str)>,
    host: &str,
    rdns: bool,
    origin: &TcpService,
) -> Option<Vec<u8>> {
    let py = tools::require_pysocks(test)?;
    let (user, pass) = auth.unwrap_or(("", ""));
    let out = tools::run(
        Command::new(py)
            .arg(script("pysocks_tcp.py"))
            .args([kind, &proxy.ip().to_string(), &proxy.port().to_string()])
            .args([host, &origin.port().to_string(), &origin::http_path(MB)])
            .args([user, pass, if rdns { "1" } else { "0" }]),
        b"",
        TIMEOUT * 2,
    );
    out.assert_success(&format!("{test}: pysocks_tcp.py"));
    Some(out.stdout)
}

#[test]
fn pysocks_socks5_tcp() {
    let server = Server::start();
    let origin = origin::http_origin();
    let t = "pysocks_socks5_tcp";
    if let Some(got) = pysocks_fetch(
        t,
        server.addr(),
        "socks5",
        None,
        "127.0.0.1",
        false,
        &origin,
    ) {
        assert_same_bytes(&got, &body(MB), t);
    }
}

#[test]
fn pysocks_socks5_tcp_userpass_rdns() {
    let server = Server::builder().user(USER, PASS).start();
    let origin = origin::http_origin();
    let t = "pysocks_socks5_tcp_userpass_rdns";
    let auth = Some((USER, PASS));
    if let Some(got) = pysocks_fetch(t, server.addr(), "socks5", auth, "localhost", true, &origin) {
        assert_same_bytes(&got, &body(MB), t);
    }
}

#[test]
fn pysocks_socks4a_tcp() {
    let server = Server::start();
    let origin = origin::http_origin();
    let t = "pysocks_socks4a_tcp";
    if let Some(got) = pysocks_fetch(t, server.addr(), "socks4", None, "localhost", true, &origin) {
        assert_same_bytes(&got, &body(MB), t);
    }
}

fn pysocks_udp(test: &str, proxy: SocketAddr, auth: Option<(&str, &str)>) {
    let Some(py) = tools::require_pysocks(test) else {
        return;
    };
    let echo = origin::UdpEcho::start();
    let (user, pass) = auth.unwrap_or(("", ""));
    let out = tools::run(
        Command::new(py)
            .arg(script("pysocks_udp.py"))
            .args([proxy.ip().to_string(), proxy.port().to_string()])
            .args([echo.addr().ip().to_string(), echo.addr().port().to_string()])
            .args(["200", user, pass]),
        b"",
        TIMEOUT * 2,
    );
    out.assert_success(&format!("{test}: pysocks_udp.py"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK 200");
    assert!(echo.received() >= 200);
}

#[test]
fn pysocks_udp_associate() {
    let server = Server::start();
    pysocks_udp("pysocks_udp_associate", server.addr(), None);
}

#[test]
fn pysocks_udp_associate_userpass() {
    let server = Server::builder().user(USER, PASS).start();
    pysocks_udp(
        "pysocks_udp_associate_userpass",
        server.addr(),
        Some((USER, PASS)),
    );
}

// ---- Dante's socksify ---------------------------------------------------------------------

/// A Dante client configuration routing everything through `proxy` with `protocol`
/// (`socks_v4` or `socks_v5`).
fn dante_conf(dir: &TempDir, proxy: SocketAddr, protocol: &str) -> PathBuf {
    dir.write(
        "dante.conf",
        format!(
            "route {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0 via: {} port = {}\n  \
             proxyprotocol: {protocol}\n  method: none\n  command: bind connect\n}}\n",
            proxy.ip(),
            proxy.port()
        ),
    )
}

/// Runs `socksify perl socksify_bind.pl`: the script's listening socket is a SOCKS BIND on
/// the proxy; we connect to the address it reports and expect the echo.
fn socksify_bind(test: &str, proxy: SocketAddr, protocol: &str) {
    let Some(tools) = tools::require(test, &["socksify", "perl"]) else {
        return;
    };
    let dir = TempDir::new();
    let conf = dante_conf(&dir, proxy, protocol);
    let mut child = Command::new(&tools[0])
        .arg(&tools[1])
        .arg(script("socksify_bind.pl"))
        .env("SOCKS_CONF", &conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socksify");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let fail = |msg: String, child: &mut std::process::Child| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{test}: {msg}");
    };
    let Ok(listen) = rx.recv_timeout(TIMEOUT) else {
        fail("no LISTEN line from the script".into(), &mut child)
    };
    let mut parts = listen.split(' ');
    let addr: Option<SocketAddr> = match (parts.next(), parts.next(), parts.next()) {
        (Some("LISTEN"), Some(ip), Some(port)) => format!("{ip}:{port}").parse().ok(),
        _ => None,
    };
    let Some(mut addr) = addr else {
        fail(format!("unexpected line {listen:?}"), &mut child)
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(proxy.ip());
    }
    assert!(
        addr.ip().is_loopback(),
        "{test}: BIND address {addr} is not loopback"
    );
    let mut conn = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(c) => c,
        Err(e) => fail(format!("connect to BIND address {addr}: {e}"), &mut child),
    };
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn.write_all(b"ping through BIND").expect("write");
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    let lines: Vec<String> = rx.iter().take(2).collect();
    let status = child.wait().expect("wait");
    let stderr = err_reader.join().unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "echo:ping through BIND",
        "{test}: script output {lines:?}, stderr {stderr}"
    );
    assert_eq!(lines, ["ACCEPTED", "DONE"], "{test}: stderr {stderr}");
    assert!(status.success(), "{test}: {status}; stderr {stderr}");
}

#[test]
fn socksify_bind_socks5() {
    let server = Server::start();
    socksify_bind("socksify_bind_socks5", server.addr(), "socks_v5");
}

#[test]
fn socksify_bind_socks4() {
    let server = Server::start();
    socksify_bind("socksify_bind_socks4", server.addr(), "socks_v4");
}

#[test]
fn socksify_bind_baseline_danted() {
    let test = "socksify_bind_baseline_danted";
    let Some(danted) = tools::require(test, &["danted"]) else {
        return;
    };
    let peer = peers::danted(&danted[0]);
    socksify_bind(test, peer.addr(), "socks_v5");
}

#[test]
fn socksify_curl_connect() {
    let test = "socksify_curl_connect";
    let Some(tools) = tools::require(test, &["socksify", "curl"]) else {
        return;
    };
    let server = Server::start();
    let origin = origin::http_origin();
    let dir = TempDir::new();
    let conf = dante_conf(&dir, server.addr(), "socks_v5");
    let url = format!(
        "http://127.0.0.1:{}{}",
        origin.port(),
        origin::http_path(MB)
    );
    let out = tools::run(
        Command::new(&tools[0])
            .arg(&tools[1])
            .args(["-sS", "--fail", "--noproxy", "*", "--max-time", "120", &url])
            .env("SOCKS_CONF", &conf),
        b"",
        TIMEOUT * 2,
    );
    out.assert_success("socksify curl");
    assert_same_bytes(&out.stdout, &body(MB), test);
}
