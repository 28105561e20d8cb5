//! `socksgate socksify` with real, unmodified Debian programs, side by side with
//! proxychains4 and Dante's `socksify`, through socksgate's server and Dante's.
//!
//! Each test builds two network namespaces joined by one veth pair:
//!
//! ```text
//!  client namespace                 proxy namespace
//!  c0: 10.81.0.2   <────veth────>   p0: 10.81.0.1  socksgate :1080, danted :1081, DNS trap :53
//!                                   lo: 10.82.0.100 the origin (HTTP :8080, banner :7001,
//!                                       sshd :2222), named origin.socksify.test
//! ```
//!
//! The programs run in the client namespace, which has no route to 10.82.0.100: only the
//! proxies get them there. The origin's name is only in the proxy namespace's hosts file
//! (`ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts), and the client
//! namespace's resolv.conf names 10.81.0.1, where a UDP socket counts every DNS query that
//! leaves the client. These tests need root, iproute2 and the Debian packages of ci.sh: a
//! missing one fails them. Namespaces are deleted when a test ends, failed or not.
#![cfg(target_os = "linux")]

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socksgate_tests::netns::{Namespace, sh};

const BIN: &str = env!("CARGO_BIN_EXE_socksgate");
const PROXY_IP: &str = "10.81.0.1";
const ORIGIN: &str = "10.82.0.100";
const ORIGIN_NAME: &str = "origin.socksify.test";
const SOCKSGATE_PORT: u16 = 1080;
const DANTE_PORT: u16 = 1081;
const HTTP_PORT: u16 = 8080;
const BANNER_PORT: u16 = 7001;
const SSH_PORT: u16 = 2222;
/// Refused by the origin (nothing listens) and blocked by Dante's rules.
const CLOSED_PORT: u16 = 9;
const HTTP_BODY: &str = "hello from the origin\n";
const BANNER: &str = "banner from the origin\n";
const WAIT: Duration = Duration::from_secs(20);

/// A tool the test needs; fails the test if it is missing.
#[track_caller]
fn tool(name: &str) -> PathBuf {
    socksgate_tests::tools::which(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed (the root ci.sh installs the Debian packages)")
    })
}

/// `libsocksgate_socksify.so`, built next to the socksgate binary (where `socksify` looks
/// first) by `cargo build -p socksgate-socksify`, a no-op when it is up to date.
fn build_library() {
    let exe = Path::new(BIN);
    let dir = exe.parent().expect("binary directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "-p", "socksgate-socksify"])
        .stdout(Stdio::null());
    if dir.ends_with("release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo build -p socksgate-socksify");
    assert!(status.success(), "cargo build -p socksgate-socksify failed");
    let library = dir.join("libsocksgate_socksify.so");
    assert!(library.is_file(), "{} missing", library.display());
}

/// The two namespaces and the origin; deleted on drop.
struct Net {
    client: Namespace,
    proxy: Namespace,
    dir: tempfile::TempDir,
    dns_queries: Arc<AtomicUsize>,
    children: Vec<(String, Child, PathBuf)>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for (name, child, log) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("---- {name}'s log:\n{log}");
            }
        }
    }
}

impl Net {
    fn new() -> Self {
        let mut net = Self {
            client: Namespace::new("sfy-c"),
            proxy: Namespace::new("sfy-p"),
            dir: tempfile::tempdir().unwrap(),
            dns_queries: Arc::default(),
            children: Vec::new(),
        };
        let (c, p) = (&net.client, &net.proxy);
        p.veth("p0", c, "c0");
        p.ip(&format!("addr add {PROXY_IP}/24 dev p0"));
        p.ip(&format!("addr add {ORIGIN}/32 dev lo"));
        p.ip("link set p0 up");
        c.ip("addr add 10.81.0.2/24 dev c0");
        c.ip("link set c0 up");
        p.etc(
            "hosts",
            &format!("127.0.0.1 localhost\n{ORIGIN} {ORIGIN_NAME}\n"),
        );
        c.etc("resolv.conf", &format!("nameserver {PROXY_IP}\n"));
        let queries = net.dns_queries.clone();
        net.proxy.run(move || start_origin(&queries));
        net.start_sshd();
        net.start_socksgate();
        net.start_danted();
        net
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `args` in the proxy namespace, its output in a log; waits for `port`.
    fn spawn(&mut self, name: &str, args: &[&str], wait_for: SocketAddr) {
        let log = self.path(&format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.proxy.name()])
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.children.push((name.to_owned(), child, log));
        let start = Instant::now();
        let reachable = self.proxy.run(move || {
            loop {
                if TcpStream::connect_timeout(&wait_for, Duration::from_secs(1)).is_ok() {
                    return true;
                }
                if start.elapsed() > WAIT {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        assert!(reachable, "{name} does not listen on {wait_for}");
    }

    fn start_socksgate(&mut self) {
        let listen = format!("{PROXY_IP}:{SOCKSGATE_PORT}");
        let config = self.path("socksgate.toml");
        // A listener outside loopback without authentication (allowed inside this
        // namespace), and the origin lives on the proxy's own host.
        std::fs::write(
            &config,
            format!(
                "listen = [\"{listen}\"]\nallow_open = true\n\n\
                 [access]\nprotect_local_destinations = false\n"
            ),
        )
        .unwrap();
        self.spawn(
            "socksgate",
            &[BIN, "serve", "--config", config.to_str().unwrap()],
            listen.parse().unwrap(),
        );
    }

    fn start_danted(&mut self) {
        let conf = self.path("sockd.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: stderr\n\
                 internal: {PROXY_IP} port = {DANTE_PORT}\n\
                 external: {ORIGIN}\n\
                 clientmethod: none\n\
                 socksmethod: none\n\
                 user.privileged: root\n\
                 user.unprivileged: nobody\n\
                 client pass {{ from: 10.81.0.0/24 to: 0.0.0.0/0 }}\n\
                 socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 port = {CLOSED_PORT} }}\n\
                 socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }}\n"
            ),
        )
        .unwrap();
        let danted = tool("danted");
        let pid = self.path("danted.pid");
        self.spawn(
            "danted",
            &[
                danted.to_str().unwrap(),
                "-f",
                conf.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-N",
                "1",
            ],
            format!("{PROXY_IP}:{DANTE_PORT}").parse().unwrap(),
        );
    }

    /// sshd on the origin, accepting root with a key made here.
    fn start_sshd(&mut self) {
        let sshd = tool("sshd");
        let keygen = tool("ssh-keygen");
        for key in ["host_key", "client_key"] {
            sh(&[
                keygen.to_str().unwrap(),
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                self.path(key).to_str().unwrap(),
            ]);
        }
        std::fs::copy(self.path("client_key.pub"), self.path("authorized_keys")).unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let conf = self.path("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {SSH_PORT}\nListenAddress {ORIGIN}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile none\n",
                self.path("host_key").display(),
                self.path("authorized_keys").display()
            ),
        )
        .unwrap();
        self.spawn(
            "sshd",
            &[
                sshd.to_str().unwrap(),
                "-D",
                "-e",
                "-f",
                conf.to_str().unwrap(),
            ],
            format!("{ORIGIN}:{SSH_PORT}").parse().unwrap(),
        );
    }

    /// Runs `args` in the client namespace with `env`, bounded by [`WAIT`].
    fn run_client(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.client.name()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let id = child.id();
        let timer = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < WAIT {
                std::thread::sleep(Duration::from_millis(50));
                if !Path::new(&format!("/proc/{id}")).exists() {
                    return;
                }
            }
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
        });
        let out = child.wait_with_output().unwrap();
        let _ = timer.join();
        out
    }

    fn dns_queries(&self) -> usize {
        self.dns_queries.load(Ordering::SeqCst)
    }
}

/// The origin's HTTP and banner servers, and the DNS trap on the client's nameserver.
fn start_origin(dns_queries: &Arc<AtomicUsize>) {
    let http = TcpListener::bind((ORIGIN, HTTP_PORT)).expect("HTTP origin");
    std::thread::spawn(move || {
        for mut s in http.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HTTP_BODY}",
                    HTTP_BODY.len()
                );
            });
        }
    });
    let banner = TcpListener::bind((ORIGIN, BANNER_PORT)).expect("banner origin");
    std::thread::spawn(move || {
        for mut s in banner.incoming().flatten() {
            let _ = s.write_all(BANNER.as_bytes());
        }
    });
    let dns = UdpSocket::bind((PROXY_IP, 53)).expect("DNS trap");
    let queries = dns_queries.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while dns.recv_from(&mut buf).is_ok() {
            queries.fetch_add(1, Ordering::SeqCst);
        }
    });
}

/// How a program is taken through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrapper {
    Socksgate,
    Proxychains,
    DanteSocksify,
}

impl Wrapper {
    const ALL: [Self; 3] = [Self::Socksgate, Self::Proxychains, Self::DanteSocksify];

    fn name(self) -> &'static str {
        match self {
            Self::Socksgate => "socksgate socksify",
            Self::Proxychains => "proxychains4",
            Self::DanteSocksify => "Dante socksify",
        }
    }

    /// The command line and environment that run `program` through the proxy on `port`.
    fn wrap(self, net: &Net, port: u16, program: &[&str]) -> (Vec<String>, Vec<(String, String)>) {
        let mut args: Vec<String> = Vec::new();
        let mut env = Vec::new();
        match self {
            Self::Socksgate => {
                args.extend([
                    BIN.to_owned(),
                    "socksify".into(),
                    "--proxy".into(),
                    format!("socks5h://{PROXY_IP}:{port}"),
                    "--".into(),
                ]);
            }
            Self::Proxychains => {
                let conf = net.path(&format!("proxychains-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "strict_chain\nproxy_dns\nremote_dns_subnet 224\n\
                         tcp_read_time_out 15000\ntcp_connect_time_out 8000\n\
                         [ProxyList]\nsocks5 {PROXY_IP} {port}\n"
                    ),
                )
                .unwrap();
                args.extend([
                    tool("proxychains4").display().to_string(),
                    "-q".into(),
                    "-f".into(),
                    conf.display().to_string(),
                ]);
            }
            Self::DanteSocksify => {
                let conf = net.path(&format!("socks-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "resolveprotocol: fake\n\
                         route {{ from: 0.0.0.0/0 to: 0.0.0.0/0 via: {PROXY_IP} port = {port}\n\
                         proxyprotocol: socks_v5\nmethod: none }}\n"
                    ),
                )
                .unwrap();
                env.push(("SOCKS_CONF".to_owned(), conf.display().to_string()));
                args.push(tool("socksify").display().to_string());
            }
        }
        args.extend(program.iter().map(|s| (*s).to_owned()));
        (args, env)
    }
}

/// The programs, each with what it must print.
fn programs(net: &Net) -> Vec<(&'static str, Vec<String>, &'static str)> {
    let http_ip = format!("http://{ORIGIN}:{HTTP_PORT}/");
    let http_name = format!("http://{ORIGIN_NAME}:{HTTP_PORT}/");
    let key = net.path("client_key").display().to_string();
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "curl (IP)",
            s(&["curl", "-sS", "--max-time", "15", &http_ip]),
            HTTP_BODY,
        ),
        (
            "curl (name only the proxy resolves)",
            s(&["curl", "-sS", "--max-time", "15", &http_name]),
            HTTP_BODY,
        ),
        (
            "wget (name only the proxy resolves)",
            s(&[
                "wget",
                "-q",
                "-O",
                "-",
                "--tries=1",
                "--timeout=15",
                &http_name,
            ]),
            HTTP_BODY,
        ),
        (
            "nc (IP)",
            s(&["nc", "-w", "15", ORIGIN, &BANNER_PORT.to_string()]),
            BANNER,
        ),
        (
            "ssh (name only the proxy resolves)",
            s(&[
                "ssh",
                "-F",
                "none",
                "-i",
                &key,
                "-p",
                &SSH_PORT.to_string(),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=15",
                &format!("root@{ORIGIN_NAME}"),
                "echo",
                "ssh-ok",
            ]),
            "ssh-ok\n",
        ),
        (
            "sh -c curl (fork+exec)",
            s(&["sh", "-c", &format!("curl -sS --max-time 15 {http_name}")]),
            HTTP_BODY,
        ),
    ]
}

#[test]
fn programs_through_socksgate_proxychains_and_dante() {
    for name in [
        "curl",
        "wget",
        "nc",
        "ssh",
        "proxychains4",
        "socksify",
        "danted",
        "python3",
    ] {
        tool(name);
    }
    build_library();
    let net = Net::new();

    // Without a wrapper the client reaches neither the origin nor its name, and its name
    // lookup is a DNS query the trap sees.
    let direct = net.run_client(
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ORIGIN}:{HTTP_PORT}/"),
        ],
        &[],
    );
    assert!(
        !direct.status.success(),
        "the client reaches the origin directly"
    );
    let before = net.dns_queries();
    let _ = net.run_client(
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &format!("http://{ORIGIN_NAME}/"),
        ],
        &[],
    );
    assert!(
        net.dns_queries() > before,
        "the DNS trap saw no query from an unwrapped curl"
    );

    let mut table = String::new();
    let mut failures = Vec::new();
    let mut other_results = Vec::new();
    for (proxy, port) in [("socksgate", SOCKSGATE_PORT), ("Dante", DANTE_PORT)] {
        for wrapper in Wrapper::ALL {
            for (program, argv, expected) in programs(&net) {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let (args, env) = wrapper.wrap(&net, port, &argv);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let queries = net.dns_queries();
                let out = net.run_client(&args, &env);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let carried = out.status.success() && stdout == expected;
                let leaked = net.dns_queries() - queries;
                let _ = writeln!(
                    table,
                    "| {proxy} | {} | {program} | {} | {leaked} |",
                    wrapper.name(),
                    if carried { "yes" } else { "no" },
                );
                if wrapper == Wrapper::Socksgate {
                    if !carried || leaked > 0 {
                        failures.push(format!(
                            "{program} via {proxy}: status {}, {leaked} DNS queries, stdout {stdout:?}, stderr {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                } else {
                    other_results.push((proxy, wrapper, program, carried));
                }
            }
        }
    }
    println!(
        "| proxy | wrapper | program | carried | DNS queries leaked |\n|---|---|---|---|---|\n{table}"
    );
    assert!(
        failures.is_empty(),
        "socksgate socksify failed:\n{}\n{table}",
        failures.join("\n")
    );
    // The other wrappers: what tests/INTEROP.md says they carry.
    for (proxy, wrapper, program, carried) in other_results {
        assert!(
            carried,
            "{} no longer carries {program} via {proxy} as tests/INTEROP.md says\n{table}",
            wrapper.name()
        );
    }

    // --log-file: the lookup and the connection, as the program made them.
    let log = net.path("socksify.log");
    let out = net.run_client(
        &[
            BIN,
            "socksify",
            "--proxy",
            &format!("socks5h://{PROXY_IP}:{SOCKSGATE_PORT}"),
            "--log-file",
            log.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &format!("echo \"$LD_PRELOAD\"; curl -sS http://{ORIGIN_NAME}:{HTTP_PORT}/"),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("libsocksgate_socksify.so") && stdout.ends_with(HTTP_BODY),
        "{stdout}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!("getaddrinfo({ORIGIN_NAME}): placeholder 240.")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "= {ORIGIN_NAME}:{HTTP_PORT}) via {PROXY_IP}:{SOCKSGATE_PORT}: succeeded"
        )),
        "{log}"
    );
}

/// The errno a Python socket gets for `host:port` through socksify (`mode`: `blocking`, or
/// `timeout`, which makes Python use a non-blocking socket and poll).
const CONNECT_PY: &str = r#"
import errno, socket, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
if mode == "timeout":
    s.settimeout(15)
try:
    s.connect((host, port))
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
print("connected", s.recv(100).decode().strip())
"#;

#[test]
fn refusals_become_the_errno_programs_expect() {
    let python = tool("python3");
    tool("danted");
    build_library();
    let net = Net::new();
    let script = net.path("connect.py");
    std::fs::write(&script, CONNECT_PY).unwrap();
    let unresolvable = format!("{}.invalid", "x".repeat(64));
    let cases: Vec<(String, u16, String, u16, &str)> = vec![
        // proxy URL port, destination host and port, expected
        (
            "socks5h".into(),
            SOCKSGATE_PORT,
            ORIGIN.into(),
            BANNER_PORT,
            "connected banner from the origin",
        ),
        (
            "socks4a".into(),
            SOCKSGATE_PORT,
            ORIGIN_NAME.into(),
            BANNER_PORT,
            "connected banner from the origin",
        ),
        (
            "socks5h".into(),
            SOCKSGATE_PORT,
            ORIGIN.into(),
            CLOSED_PORT,
            "ECONNREFUSED",
        ),
        (
            "socks5h".into(),
            SOCKSGATE_PORT,
            "10.200.0.1".into(),
            80,
            "ENETUNREACH",
        ),
        (
            "socks5h".into(),
            SOCKSGATE_PORT,
            unresolvable.clone(),
            80,
            "EHOSTUNREACH",
        ),
        (
            "socks5h".into(),
            DANTE_PORT,
            ORIGIN.into(),
            CLOSED_PORT,
            "EACCES",
        ),
        (
            "socks5h".into(),
            DANTE_PORT,
            ORIGIN_NAME.into(),
            BANNER_PORT,
            "connected banner from the origin",
        ),
        // Nothing listens on the proxy's port 1.
        (
            "socks5h".into(),
            1,
            ORIGIN.into(),
            BANNER_PORT,
            "ECONNREFUSED",
        ),
    ];
    let mut failures = Vec::new();
    for (scheme, proxy_port, host, port, expected) in &cases {
        for mode in ["blocking", "timeout"] {
            let out = net.run_client(
                &[
                    BIN,
                    "socksify",
                    "--proxy",
                    &format!("{scheme}://{PROXY_IP}:{proxy_port}"),
                    "--",
                    python.to_str().unwrap(),
                    script.to_str().unwrap(),
                    host,
                    &port.to_string(),
                    mode,
                ],
                &[],
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            if stdout.trim() != *expected {
                failures.push(format!(
                    "{scheme}://…:{proxy_port} to {host}:{port} ({mode}): {stdout:?}, expected {expected:?}; stderr {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(net.dns_queries(), 0, "a name lookup left the client");

    // A statically linked program: refused before it starts, with the reason.
    let out = net.run_client(&[BIN, "socksify", "--", "/sbin/ldconfig", "-p"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is statically linked"), "{stderr}");
}
