//! SOCKS over TLS through `socksgate serve`: Debian's stunnel (client mode) in front of curl,
//! socksgate's own `connect` with `socks5h+tls://`, chaining over TLS, client certificates
//! mapped to users for the rules, the bad cases (plain text on a TLS listener, untrusted,
//! expired and missing certificates, a silent client) each closed with one log line, and
//! SIGHUP with a new certificate and with a broken one. Certificates are made by the test
//! with the `openssl` command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socksgate_tests::origin::{echo, http_origin, http_path};
use socksgate_tests::socksgate::{self, Server};
use socksgate_tests::tmp::TempDir;
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, free_port, tools, wait_for_listener};

/// Runs `openssl ARGS` in `dir`; panics with its output on failure.
#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    tools::require("tls", &["openssl"]);
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory of test certificates (P-256 keys).
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            dir: TempDir::new(),
        };
        pki.ca("ca");
        pki.leaf("server", "ca", "localhost", "server", 2);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// A self-signed CA: `NAME.pem`, `NAME.key`.
    fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-subj",
                &format!("/CN={name} test CA"),
                "-days",
                "2",
            ],
        );
    }

    /// `NAME.pem` and `NAME.key` with subject CN `cn`, signed by `ca`, valid for `days` (-1:
    /// expired yesterday); `kind` "server" (for localhost and 127.0.0.1) or "client".
    fn leaf(&self, name: &str, ca: &str, cn: &str, kind: &str, days: i32) {
        let ext = match kind {
            "server" => {
                "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            }
            _ => "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        };
        self.dir.write(&format!("{name}.ext"), ext);
        openssl(
            self.dir.path(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &format!("{}", 1000 + name.len() * 7 + cn.len()),
                "-days",
                &days.to_string(),
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// The `[[tls]]` entry for the test server's listener, with `extra` lines.
    fn tls_entry(&self, extra: &str) -> String {
        format!(
            "[[tls]]\nlisteners = [\"{{listen}}\"]\ncertificate = \"{}\"\nkey = \"{}\"\n{extra}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }
}

/// `socksgate connect --proxy URL [extra] 127.0.0.1 PORT` with `input`: its output.
fn connect(url: &str, extra: &[&str], port: u16, input: &[u8]) -> tools::Output {
    let mut cmd = socksgate::command();
    cmd.arg("connect").arg("--proxy").arg(url);
    cmd.args(extra);
    cmd.args(["127.0.0.1", &port.to_string()]);
    tools::run(&mut cmd, input, TIMEOUT)
}

/// The log lines that mention `needle`.
fn lines_with(server: &Server, needle: &str) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Waits until the log has `count` lines with `needle`; returns them.
#[track_caller]
fn wait_lines(server: &Server, needle: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = lines_with(server, needle);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines with {needle:?} expected; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// stunnel in client mode on a loopback port, forwarding to `server` over TLS and checking
/// its certificate against `ca` for the name localhost.
struct Stunnel {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Stunnel {
    fn start(server: SocketAddr, ca: &str) -> Option<Self> {
        let bin = tools::require("stunnel_and_curl", &["stunnel4"])?.remove(0);
        let dir = TempDir::new();
        let port = free_port();
        let conf = dir.write(
            "stunnel.conf",
            format!(
                "foreground = yes\npid =\n[socks]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {server}\nCAfile = {ca}\nverifyChain = yes\ncheckHost = localhost\nsni = localhost\n"
            ),
        );
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel4");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_listener(addr, TIMEOUT),
            "stunnel did not listen on {addr}"
        );
        Some(Self {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl → stunnel (TLS client) → socksgate's TLS listener → an HTTP origin: the body arrives
/// whole, and the access log records the session.
#[test]
fn stunnel_and_curl_through_a_tls_listener() {
    let Some(curl) = tools::require("stunnel_and_curl", &["curl"]) else {
        return;
    };
    let pki = Pki::new();
    let server = Server::builder().config(&pki.tls_entry("")).start();
    let Some(stunnel) = Stunnel::start(server.addr(), &pki.path("ca.pem")) else {
        return;
    };
    let origin = http_origin();
    let len = 300_000;
    let out = tools::run(
        Command::new(&curl[0]).args([
            "-sS",
            "--max-time",
            "30",
            "--socks5-hostname",
            &format!("127.0.0.1:{}", stunnel.port),
            &format!("http://127.0.0.1:{}{}", origin.port(), http_path(len)),
        ]),
        b"",
        TIMEOUT,
    );
    out.assert_success("curl through stunnel");
    assert_same_bytes(&out.stdout, &body(len), "body through TLS");
    let lines = wait_lines(&server, "outcome=\"succeeded\"", 1);
    let down: u64 = lines[0]
        .split("down=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("down= in the access line");
    assert!(down > len as u64, "{lines:?}");
}

/// socksgate's own client: `socks5h+tls://` with `--ca` relays; without it the system's
/// trust store does not know the test CA, the client fails, and the server logs one line.
#[test]
fn connect_over_tls_checks_the_certificate() {
    let pki = Pki::new();
    let server = Server::builder().config(&pki.tls_entry("")).start();
    let echo = echo();
    let url = format!("socks5h+tls://localhost:{}", server.addr().port());
    let ca = pki.path("ca.pem");
    let out = connect(&url, &["--ca", &ca], echo.port(), b"hello over tls");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello over tls");
    // By IP address: the certificate names 127.0.0.1 too.
    let url_ip = format!("socks5+tls://127.0.0.1:{}", server.addr().port());
    let out = connect(&url_ip, &["--ca", &ca], echo.port(), b"by address");
    assert_eq!(out.stdout, b"by address");

    // (The harness's readiness probe left a line of its own.)
    let before = lines_with(&server, "TLS handshake failed").len();
    let out = connect(&url, &[], echo.port(), b"x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS handshake with proxy localhost"), "{err}");
    assert!(err.to_lowercase().contains("unknown"), "{err}");
    let lines = wait_lines(&server, "TLS handshake failed", before + 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lines_with(&server, "TLS handshake failed").len(),
        before + 1,
        "one line: {lines:?}"
    );
    assert!(lines.last().unwrap().contains("UnknownCA"), "{lines:?}");
    // A client CA file without a +tls URL is a usage error.
    let out = connect(
        &format!("socks5h://127.0.0.1:{}", server.addr().port()),
        &["--ca", &ca],
        echo.port(),
        b"",
    );
    assert!(!out.status.success());
}

/// A plain-text SOCKS5 client on a TLS listener gets no SOCKS answer, the connection is
/// closed, one log line says why, and the server goes on serving.
#[test]
fn plain_text_client_on_a_tls_listener_is_closed_with_one_line() {
    let pki = Pki::new();
    let mut server = Server::builder().config(&pki.tls_entry("")).start();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let me = s.local_addr().unwrap().to_string();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !got.starts_with(&[5, 0]),
        "no SOCKS answer in the clear: {got:?}"
    );
    let lines = wait_lines(&server, &me, 1);
    std::thread::sleep(Duration::from_millis(300));
    let lines_after = lines_with(&server, &me);
    assert_eq!(lines_after.len(), 1, "{lines:?}");
    assert!(
        lines_after[0].contains("TLS handshake failed"),
        "{lines_after:?}"
    );
    assert!(
        lines_after[0].contains("outcome=\"handshake_failed\""),
        "{lines_after:?}"
    );
    server.assert_running();
    // Others are unaffected.
    let echo = echo();
    let out = connect(
        &format!("socks5h+tls://localhost:{}", server.addr().port()),
        &["--ca", &pki.path("ca.pem")],
        echo.port(),
        b"still fine",
    );
    assert_eq!(out.stdout, b"still fine");
}

/// A client that connects and sends nothing is closed at the handshake timeout, with one
/// line.
#[test]
fn silent_client_times_out_in_the_tls_handshake() {
    let pki = Pki::new();
    let server = Server::builder()
        .config(&format!(
            "{}\n[timeouts]\nhandshake = 1\n",
            pki.tls_entry("")
        ))
        .start();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let me = s.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(got.is_empty(), "{got:?}");
    let lines = wait_lines(&server, &me, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_with(&server, &me).len(), 1, "{lines:?}");
    assert!(lines[0].contains("TLS handshake timed out"), "{lines:?}");
}

/// Mutual TLS: a client certificate's CN is the session's user for the rules (alice is
/// allowed, bob is not) and the access log; no password is asked for even though the server
/// has a users file; a missing, expired or foreign certificate is refused with one line.
#[test]
fn client_certificates_are_users() {
    let pki = Pki::new();
    pki.ca("clients");
    pki.ca("rogue");
    pki.leaf("alice", "clients", "alice", "client", 2);
    pki.leaf("bob", "clients", "bob", "client", 2);
    pki.leaf("expired", "clients", "alice", "client", -1);
    pki.leaf("foreign", "rogue", "alice", "client", 2);
    let config = format!(
        "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nusers = [\"alice\"]\n\n{}",
        pki.tls_entry(&format!("client_ca = \"{}\"\n", pki.path("clients.pem")))
    );
    let mut server = Server::builder()
        .user("carol", "secret")
        .config(&config)
        .start();
    let echo = echo();
    let url = format!("socks5h+tls://localhost:{}", server.addr().port());
    let ca = pki.path("ca.pem");
    let with = |name: &str, input: &[u8]| {
        connect(
            &url,
            &[
                "--ca",
                &ca,
                "--cert",
                &pki.path(&format!("{name}.pem")),
                "--key",
                &pki.path(&format!("{name}.key")),
            ],
            echo.port(),
            input,
        )
    };
    let out = with("alice", b"alice's bytes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"alice's bytes");
    let lines = wait_lines(&server, "outcome=\"succeeded\"", 1);
    assert!(lines[0].contains("user=alice"), "{lines:?}");

    // SOCKS4a too: TLS authenticated the client, though the server has a users file (which
    // refuses SOCKS4 on plain connections).
    let out = connect(
        &format!("socks4a+tls://localhost:{}", server.addr().port()),
        &[
            "--ca",
            &ca,
            "--cert",
            &pki.path("alice.pem"),
            "--key",
            &pki.path("alice.key"),
        ],
        echo.port(),
        b"socks4a",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"socks4a");

    let out = with("bob", b"x");
    assert!(!out.status.success());
    let lines = wait_lines(&server, "user=bob", 1);
    assert!(lines[0].contains("outcome=\"refused\""), "{lines:?}");

    for (case, extra) in [
        ("no certificate", None),
        ("expired", Some("expired")),
        ("foreign CA", Some("foreign")),
    ] {
        let before = lines_with(&server, "TLS handshake failed").len();
        let out = match extra {
            Some(name) => with(name, b"x"),
            None => connect(&url, &["--ca", &ca], echo.port(), b"x"),
        };
        assert!(!out.status.success(), "{case}");
        assert!(out.stdout.is_empty(), "{case}");
        let lines = wait_lines(&server, "TLS handshake failed", before + 1);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            lines_with(&server, "TLS handshake failed").len(),
            before + 1,
            "{case}: one line"
        );
        let line = lines.last().unwrap();
        let want = match extra {
            None => "peer sent no certificates",
            Some("expired") => "invalid peer certificate: Expired",
            _ => "invalid peer certificate: UnknownIssuer",
        };
        assert!(line.contains(want), "{case}: {line}");
    }
    server.assert_running();
}

/// Chaining over TLS: a client → A (plain) → B (TLS with client certificates) → echo; A's
/// `[[upstream]]` has B's CA and a client certificate whose CN B's rules allow. B's listener
/// also takes PROXY headers, which A sends before TLS: B logs A's client as its own.
#[test]
fn chaining_through_a_tls_upstream() {
    let pki = Pki::new();
    pki.ca("clients");
    pki.leaf("gateway", "clients", "gateway-a", "client", 2);
    let b = Server::builder()
        .config(&format!(
            "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nusers = [\"gateway-a\"]\n\n[[proxy_protocol]]\nlisteners = [\"{{listen}}\"]\nfrom = [\"127.0.0.1\"]\nrequired = false\n\n{}",
            pki.tls_entry(&format!("client_ca = \"{}\"\n", pki.path("clients.pem")))
        ))
        .start();
    let a = Server::builder()
        .config(&format!(
            "[[upstream]]\nname = \"b\"\nurl = \"socks5h+tls://localhost:{}\"\nproxy_protocol = true\nca = \"{}\"\ncertificate = \"{}\"\nkey = \"{}\"\n\n[[rule]]\naction = \"allow\"\nupstream = \"b\"\n",
            b.addr().port(),
            pki.path("ca.pem"),
            pki.path("gateway.pem"),
            pki.path("gateway.key"),
        ))
        .start();
    let echo = echo();
    let out = connect(
        &format!("socks5h://{}", a.host_port()),
        &[],
        echo.port(),
        &body(200_000),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_bytes(&out.stdout, &body(200_000), "echo through A and B");
    let lines = wait_lines(&b, "outcome=\"succeeded\"", 1);
    assert!(lines[0].contains("user=gateway-a"), "{lines:?}");
    let a_lines = wait_lines(&a, "outcome=\"succeeded\"", 1);
    let client = |line: &str| {
        line.split(" client=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        client(&lines[0]),
        client(&a_lines[0]),
        "B sees A's client: {lines:?} {a_lines:?}"
    );
}

/// `[[traffic]]` limits apply to TLS sessions (the copy relay): 600 KB down at 200 KB/s
/// (64 KB burst) take about 2.7 s.
#[test]
fn traffic_limits_apply_over_tls() {
    let pki = Pki::new();
    let server = Server::builder()
        .config(&format!(
            "[[traffic]]\nper = \"session\"\ndown = \"200K\"\nburst = \"64K\"\n\n{}",
            pki.tls_entry("")
        ))
        .start();
    let origin = http_origin();
    let len = 600_000;
    let started = Instant::now();
    let mut cmd = socksgate::command();
    cmd.args([
        "connect",
        "--proxy",
        &format!("socks5h+tls://localhost:{}", server.addr().port()),
        "--ca",
        &pki.path("ca.pem"),
        "127.0.0.1",
        &origin.port().to_string(),
    ]);
    let request = format!("GET {} HTTP/1.0\r\nHost: x\r\n\r\n", http_path(len));
    let out = tools::run_holding_stdin(&mut cmd, request.as_bytes(), TIMEOUT);
    let took = started.elapsed();
    out.assert_success("connect");
    assert!(out.stdout.ends_with(&body(len)), "the body arrives whole");
    assert!(
        took >= Duration::from_millis(2300),
        "600 KB at 200 KB/s took only {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

fn hup(server: &Server) {
    let pid = server.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// SIGHUP re-reads the certificate: new connections get the new one (from another CA); a
/// broken file is refused with a log line and the running certificate stays.
#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_broken() {
    let pki = Pki::new();
    let work = TempDir::new();
    let cert = work.write("cert.pem", std::fs::read(pki.path("server.pem")).unwrap());
    let key = work.write("key.pem", std::fs::read(pki.path("server.key")).unwrap());
    let mut server = Server::builder()
        .config(&format!(
            "[[tls]]\nlisteners = [\"{{listen}}\"]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ))
        .start();
    let echo = echo();
    let url = format!("socks5h+tls://localhost:{}", server.addr().port());
    let through = |ca: &str| connect(&url, &["--ca", &pki.path(ca)], echo.port(), b"ping");
    assert_eq!(through("ca.pem").stdout, b"ping");

    pki.ca("next");
    pki.leaf("server2", "next", "localhost", "server", 2);
    replace(&cert, &PathBuf::from(pki.path("server2.pem")));
    replace(&key, &PathBuf::from(pki.path("server2.key")));
    hup(&server);
    wait_lines(&server, "reloaded", 1);
    assert_eq!(through("next.pem").stdout, b"ping", "the new certificate");
    assert!(through("ca.pem").stdout.is_empty(), "not the old one");

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hup(&server);
    let refused = wait_lines(&server, "reload refused", 1);
    assert!(refused[0].contains("cert.pem"), "{refused:?}");
    assert_eq!(
        through("next.pem").stdout,
        b"ping",
        "the running certificate stays"
    );
    server.assert_running();
}

fn replace(to: &Path, from: &Path) {
    std::fs::copy(from, to).unwrap();
}

/// `[[tls]]` mistakes: a listener not in `listen` is located by `check-config`; a missing
/// key file fails `check-config` and stops `serve` before it listens, naming the file. A good
/// entry shows in `check-config`'s effective configuration.
#[test]
fn tls_configuration_errors() {
    let dir = TempDir::new();
    let conf = dir.write(
        "bad.toml",
        "listen = [\"127.0.0.1:1080\"]\n\n[[tls]]\nlisteners = [\"127.0.0.1:1443\"]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n",
    );
    let out = socksgate::run(&["check-config", conf.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("not in `listen`"), "{err}");

    let pki = Pki::new();
    let port = free_port();
    let conf = dir.write(
        "missing.toml",
        format!(
            "listen = [\"127.0.0.1:{port}\"]\n\n[[tls]]\nlisteners = [\"127.0.0.1:{port}\"]\ncertificate = \"{}\"\nkey = \"no-such.key\"\nclient_certificate = \"optional\"\n",
            pki.path("server.pem")
        ),
    );
    for command in [
        &["check-config", conf.to_str().unwrap()][..],
        &["serve", "--config", conf.to_str().unwrap()],
    ] {
        let out = socksgate::run(command, b"");
        assert!(!out.status.success(), "{command:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no-such.key"), "{command:?}: {err}");
    }
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("no-such.key", &pki.path("server.key"))
        .replace(
            "client_certificate",
            &format!("client_ca = \"{}\"\nclient_certificate", pki.path("ca.pem")),
        );
    let good = dir.write("good.toml", text);
    let out = socksgate::run(&["check-config", good.to_str().unwrap()], b"");
    out.assert_success("check-config");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("[[tls]]"), "{shown}");
    assert!(shown.contains("client_ca = "), "{shown}");
    assert!(
        shown.contains("client_certificate = \"optional\""),
        "{shown}"
    );
}

/// An expired server certificate: `connect` refuses it and says so; the server logs one line.
#[test]
fn expired_server_certificate_is_refused_by_the_client() {
    let pki = Pki::new();
    pki.leaf("old", "ca", "localhost", "server", -1);
    let server = Server::builder()
        .config(&format!(
            "[[tls]]\nlisteners = [\"{{listen}}\"]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            pki.path("old.pem"),
            pki.path("old.key")
        ))
        .start();
    let echo = echo();
    let before = lines_with(&server, "TLS handshake failed").len();
    let out = connect(
        &format!("socks5h+tls://localhost:{}", server.addr().port()),
        &["--ca", &pki.path("ca.pem")],
        echo.port(),
        b"x",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Expired"), "{err}");
    let lines = wait_lines(&server, "TLS handshake failed", before + 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lines_with(&server, "TLS handshake failed").len(),
        before + 1,
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().contains("CertificateExpired"),
        "{lines:?}"
    );
}

/// The client library (`socksgate::client`) through a plain proxy into a `+tls` one that
/// wants a client certificate: TLS runs inside the first proxy's tunnel, and the
/// certificate's CN is the user the second proxy's rules allow.
#[tokio::test]
async fn client_library_chains_into_a_tls_proxy_with_a_client_certificate() {
    use ::socksgate::client::{Connector, Proxy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new();
    pki.ca("clients");
    pki.leaf("alice", "clients", "alice", "client", 2);
    pki.leaf("bob", "clients", "bob", "client", 2);
    let config = format!(
        "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nusers = [\"alice\"]\n\n{}",
        pki.tls_entry(&format!("client_ca = \"{}\"\n", pki.path("clients.pem")))
    );
    let inner = Server::builder().config(&config).start();
    let outer = Server::start();
    let echo = echo();
    let ca = PathBuf::from(pki.path("ca.pem"));
    let chain = |who: &str| {
        let cert = PathBuf::from(pki.path(&format!("{who}.pem")));
        let key = PathBuf::from(pki.path(&format!("{who}.key")));
        let tls = ::socksgate::tls::client_config(Some(&ca), Some((&cert, &key))).unwrap();
        let first: Proxy = format!("socks5h://{}", outer.addr()).parse().unwrap();
        let second: Proxy = format!("socks5h+tls://localhost:{}", inner.addr().port())
            .parse()
            .unwrap();
        Connector::new(first)
            .through(second.with_tls(tls))
            .with_timeout(TIMEOUT)
    };
    let mut stream = chain("alice").connect(echo.addr()).await.unwrap();
    stream.write_all(b"inside two proxies").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"inside two proxies");
    let lines = wait_lines(&inner, "outcome=\"succeeded\"", 1);
    assert!(lines[0].contains("user=alice"), "{lines:?}");
    // bob's certificate is valid, but the rules allow alice only: REP 2 from the inner proxy.
    let e = chain("bob").connect(echo.addr()).await.unwrap_err();
    assert_eq!(
        e.reply_code(),
        Some(socksgate_core::wire::ReplyCode::NotAllowed),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("proxy localhost:{}", inner.addr().port())),
        "{e}"
    );
}
