//! `socksgate socksify` with UDP and BIND: unmodified Debian programs (`dig`, `host`,
//! `tnftp` in active mode, `curl --ftp-port`, python3) in a network namespace whose only
//! neighbour is the proxy, and the same programs under proxychains4 and Dante's socksify.
//!
//! ```text
//!  client namespace          proxy namespace                        origin namespace
//!  c0 10.66.0.2  <──veth──>  p0 10.66.0.1 socksgate :1080, :1081
//!                            p1 10.67.0.1                <──veth──>  o1 10.67.0.2
//!                                                                    dnsmasq :53 (a name
//!                                                                    only it knows),
//!                                                                    pyftpdlib :21
//! ```
//!
//! The client namespace has no route to 10.67.0.0/24 and the proxy namespace does not
//! forward, so a datagram or connection reaches the origin only through socksgate (each
//! test first shows that the program fails without the shim). socksgate on :1080 allows
//! everything from 10.66.0.0/24; on :1081 only CONNECT. Programs run with `ip netns exec`
//! and coreutils' `timeout`. These tests need root, iproute2, bind9-dnsutils, dnsmasq-base,
//! tnftp, curl, python3-pyftpdlib, proxychains4 and dante-client: without them they fail.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use socksgate_tests::netns::Namespace;

const BIN: &str = env!("CARGO_BIN_EXE_socksgate");
const PROXY_IP: &str = "10.66.0.1";
const ORIGIN_IP: &str = "10.67.0.2";
/// The name only the origin's DNS server knows, and its address.
const SECRET_NAME: &str = "only.origin.test";
const SECRET_ADDRESS: &str = "10.9.8.7";
/// The origin's name in the proxy namespace's hosts file (and nowhere else).
const DNS_SERVER_NAME: &str = "dns.origin.test";
/// Bytes of the file the FTP server serves.
const FILE_LEN: usize = 300_000;
const WAIT: Duration = Duration::from_secs(20);

/// Adds `user` (password `USER-pw`) to the users file at `path` with `socksgate passwd`.
fn passwd(path: &Path, user: &str) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["passwd", "--users"])
        .arg(path)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}-pw\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// `libsocksgate_socksify.so` next to the binary (where `socksgate socksify` looks first),
/// built once per run: `cargo test -p socksgate` does not build the library crate.
fn library() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "-p", "socksgate-socksify"])
            .stdout(Stdio::null())
            .status()
            .expect("run cargo build -p socksgate-socksify");
        assert!(
            status.success(),
            "cargo build -p socksgate-socksify: {status}"
        );
        let lib = Path::new(BIN).with_file_name("libsocksgate_socksify.so");
        assert!(lib.is_file(), "{} missing after the build", lib.display());
        lib
    })
    .clone()
}

/// The three namespaces, the origin's servers and socksgate; all removed on drop.
struct Lab {
    client: Namespace,
    proxy: Namespace,
    origin: Namespace,
    children: Vec<Child>,
    socksgate_log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("socksgate's log:\n{}", self.socksgate_log());
        }
    }
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Self {
            client: Namespace::new("sfy-c"),
            proxy: Namespace::new("sfy-p"),
            origin: Namespace::new("sfy-o"),
            children: Vec::new(),
            socksgate_log: dir.path().join("socksgate.log"),
            dir,
        };
        let (c, p, o) = (&lab.client, &lab.proxy, &lab.origin);
        c.veth("c0", p, "p0");
        p.veth("p1", o, "o1");
        c.ip("addr add 10.66.0.2/24 dev c0");
        c.ip("link set c0 up");
        p.ip(&format!("addr add {PROXY_IP}/24 dev p0"));
        p.ip("link set p0 up");
        p.ip("addr add 10.67.0.1/24 dev p1");
        p.ip("link set p1 up");
        o.ip(&format!("addr add {ORIGIN_IP}/24 dev o1"));
        o.ip("link set o1 up");
        // The DNS server's name, which only the proxy side can resolve.
        p.etc("hosts", &format!("{ORIGIN_IP} {DNS_SERVER_NAME}\n"));

        // The origin: dnsmasq with one name and nothing else, pyftpdlib serving one file.
        let root = lab.dir.path().join("ftp");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("data.bin"), file_bytes()).unwrap();
        let dnsmasq = lab.spawn_in(
            lab.origin.name(),
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={ORIGIN_IP}"),
                "--user=root",
                "--pid-file=",
                &format!("--host-record={SECRET_NAME},{SECRET_ADDRESS}"),
            ],
            "dnsmasq.log",
        );
        lab.children.push(dnsmasq);
        let ftpd = lab.spawn_in(
            lab.origin.name(),
            &[
                "/usr/bin/python3",
                "-m",
                "pyftpdlib",
                "-i",
                ORIGIN_IP,
                "-p",
                "21",
                "-d",
                root.to_str().unwrap(),
            ],
            "ftpd.log",
        );
        lab.children.push(ftpd);

        // socksgate: :1080 allows the client network everything, :1081 only CONNECT, :1082
        // everything to a user who logged in.
        let users = lab.dir.path().join("users");
        passwd(&users, "alice");
        let servers = [
            (
                1080,
                String::new(),
                "commands = [\"connect\", \"bind\", \"udp_associate\"]",
            ),
            (1081, String::new(), "commands = [\"connect\"]"),
            (
                1082,
                format!("users = \"{}\"\n", users.display()),
                "users = [\"alice\"]",
            ),
        ];
        for (port, login, rule) in servers {
            let config = lab.dir.path().join(format!("socksgate-{port}.toml"));
            std::fs::write(
                &config,
                format!(
                    "listen = [\"{PROXY_IP}:{port}\"]\n{login}default_action = \"deny\"\n\n\
                     [[rule]]\naction = \"allow\"\nfrom = [\"10.66.0.0/24\"]\n{rule}\n"
                ),
            )
            .unwrap();
            let log = File::options()
                .create(true)
                .append(true)
                .open(&lab.socksgate_log)
                .unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", lab.proxy.name(), BIN, "serve", "--config"])
                .arg(&config)
                .env("RUST_LOG", "socksgate=info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("ip netns exec socksgate serve");
            lab.children.push(child);
        }
        lab.wait_tcp(&lab.proxy, &format!("{PROXY_IP}:1080"));
        lab.wait_tcp(&lab.proxy, &format!("{PROXY_IP}:1081"));
        lab.wait_tcp(&lab.proxy, &format!("{PROXY_IP}:1082"));
        lab.wait_tcp(&lab.proxy, &format!("{ORIGIN_IP}:21"));
        lab.wait_dns();
        lab
    }

    fn spawn_in(&self, ns: &str, args: &[&str], log: &str) -> Child {
        let log = File::create(self.dir.path().join(log)).unwrap();
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Waits until `at` accepts TCP connections from namespace `ns`.
    fn wait_tcp(&self, ns: &Namespace, at: &str) {
        let at: SocketAddr = at.parse().unwrap();
        let up = ns.run(move || {
            let start = Instant::now();
            while start.elapsed() < WAIT {
                if TcpStream::connect_timeout(&at, Duration::from_secs(1)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(up, "{at} did not come up:\n{}", self.socksgate_log());
    }

    /// Waits until dnsmasq answers in the proxy namespace (which can reach the origin).
    fn wait_dns(&self) {
        let start = Instant::now();
        loop {
            let out = self.run_in(
                self.proxy.name(),
                &[
                    "dig",
                    "+tries=1",
                    "+time=1",
                    "+short",
                    &format!("@{ORIGIN_IP}"),
                    SECRET_NAME,
                ],
            );
            if String::from_utf8_lossy(&out.stdout).trim() == SECRET_ADDRESS {
                return;
            }
            assert!(start.elapsed() < WAIT, "dnsmasq did not answer: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socksgate_log(&self) -> String {
        std::fs::read_to_string(&self.socksgate_log).unwrap_or_default()
    }

    /// Runs `args` in namespace `ns` (at most 30 s), with `env` and the lab's directory as
    /// the working directory and HOME (no user's .netrc or tool configuration).
    fn run_env(&self, ns: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "30"])
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn run_in(&self, ns: &str, args: &[&str]) -> Output {
        self.run_env(ns, &[], args)
    }

    /// `socksgate socksify --proxy socks5://PROXY:port --direct none -v -- args` in the
    /// client namespace.
    fn socksify(&self, port: u16, args: &[&str]) -> Output {
        self.socksify_with("socks5", port, args)
    }

    /// [`Self::socksify`] with the proxy URL's `scheme`.
    fn socksify_with(&self, scheme: &str, port: u16, args: &[&str]) -> Output {
        let lib = library();
        let proxy = format!("{scheme}://{PROXY_IP}:{port}");
        let mut all = vec![
            BIN, "socksify", "--proxy", &proxy, "--direct", "none", "-v", "--",
        ];
        all.extend_from_slice(args);
        self.run_env(
            self.client.name(),
            &[("SOCKSGATE_SOCKSIFY_LIBRARY", lib.to_str().unwrap())],
            &all,
        )
    }

    /// `args` under proxychains4 (socks5 to :1080) in the client namespace.
    fn proxychains(&self, args: &[&str]) -> Output {
        let conf = self.dir.path().join("proxychains.conf");
        std::fs::write(
            &conf,
            format!("strict_chain\nquiet_mode\n[ProxyList]\nsocks5 {PROXY_IP} 1080\n"),
        )
        .unwrap();
        let mut all = vec!["proxychains4", "-f", conf.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run_in(self.client.name(), &all)
    }

    /// `args` under Dante's socksify (SOCKS5 to :1080, every command) in the client namespace.
    fn dante(&self, args: &[&str]) -> Output {
        let conf = self.dir.path().join("socks.conf");
        std::fs::write(
            &conf,
            format!(
                "route {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0 via: {PROXY_IP} port = 1080\n  \
                 proxyprotocol: socks_v5\n  command: connect bind udpassociate bindreply udpreply\n}}\n"
            ),
        )
        .unwrap();
        let mut all = vec!["socksify"];
        all.extend_from_slice(args);
        self.run_env(
            self.client.name(),
            &[("SOCKS_CONF", conf.to_str().unwrap())],
            &all,
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn file_bytes() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The programs of the interop table, each with how to tell that it worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    /// `dig @origin NAME` (UDP: libuv's connected socket, sendmmsg, recvmsg).
    Dig,
    /// `host -t A NAME origin` (the same library, one socket per query).
    Host,
    /// `tnftp -A` (classic BSD FTP client, active mode): BIND.
    TnftpActive,
    /// `curl --ftp-port -` (active mode): BIND.
    CurlFtpPort,
}

impl Program {
    const ALL: [Self; 4] = [Self::Dig, Self::Host, Self::TnftpActive, Self::CurlFtpPort];

    fn args(self, out: &str) -> Vec<String> {
        let origin = format!("@{ORIGIN_IP}");
        let url = format!("ftp://anonymous:x@{ORIGIN_IP}/data.bin");
        let v: Vec<&str> = match self {
            Self::Dig => vec![
                "dig",
                "+tries=1",
                "+time=3",
                "+short",
                &origin,
                SECRET_NAME,
                "A",
            ],
            Self::Host => vec!["host", "-W", "3", "-t", "A", SECRET_NAME, ORIGIN_IP],
            Self::TnftpActive => vec!["tnftp", "-A", "-n", "-V", &url, "-o", out],
            Self::CurlFtpPort => vec!["curl", "-sS", "--ftp-port", "-", &url, "-o", out],
        };
        v.into_iter().map(String::from).collect()
    }

    /// Whether the program did its job: the secret name's address printed, or the file's
    /// bytes written.
    fn carried(self, out: &Output, file: &Path) -> bool {
        let stdout = String::from_utf8_lossy(&out.stdout);
        match self {
            Self::Dig => out.status.success() && stdout.trim() == SECRET_ADDRESS,
            Self::Host => stdout.contains(&format!("{SECRET_NAME} has address {SECRET_ADDRESS}")),
            Self::TnftpActive | Self::CurlFtpPort => {
                std::fs::read(file).is_ok_and(|b| b == file_bytes())
            }
        }
    }
}

/// Runs `program` with `how` and says whether it worked (its output file removed first).
fn attempt(lab: &Lab, program: Program, how: impl Fn(&[&str]) -> Output) -> (bool, Output) {
    let file = lab.path(&format!("{program:?}.out"));
    let _ = std::fs::remove_file(&file);
    let args = program.args(file.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = how(&args);
    (program.carried(&out, &file), out)
}

#[test]
fn dig_and_host_resolve_a_name_only_the_origin_knows_over_udp_associate() {
    let lab = Lab::new();
    for program in [Program::Dig, Program::Host] {
        let (direct, out) = attempt(&lab, program, |a| lab.run_in(lab.client.name(), a));
        assert!(
            !direct,
            "{program:?} reached the origin without the proxy:\n{}",
            text(&out)
        );
        let (carried, out) = attempt(&lab, program, |a| lab.socksify(1080, a));
        assert!(
            carried,
            "{program:?} through socksgate socksify:\n{}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("UDP ASSOCIATE via 10.66.0.1:1080: relay 10.66.0.1:"),
            "{stderr}"
        );
        assert!(stderr.contains("UDP via relay"), "{stderr}");
        assert!(
            stderr.contains("bytes from 10.67.0.2:53 via relay"),
            "{stderr}"
        );
    }
    // The DNS server by a name only the proxy resolves (socks5h): dig connects to the
    // placeholder, the header carries the name, the answer comes from the placeholder.
    let server = format!("@{DNS_SERVER_NAME}");
    let out = lab.socksify_with(
        "socks5h",
        1080,
        &[
            "dig",
            "+tries=1",
            "+time=3",
            "+short",
            &server,
            SECRET_NAME,
            "A",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        SECRET_ADDRESS,
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(" = {DNS_SERVER_NAME}:53): UDP via relay")),
        "{stderr}"
    );
    let log = lab.socksgate_log();
    assert!(log.contains("command=udp_associate"), "{log}");
}

#[test]
fn unconnected_udp_sendto_recvfrom_and_select() {
    let lab = Lab::new();
    // A DNS query for the secret name from an unconnected socket: select says when the
    // answer is there, recvfrom names the server as its sender.
    let script = format!(
        r#"
import select, socket
name = b"".join(bytes([len(l)]) + l for l in b"{SECRET_NAME}".split(b".")) + b"\0"
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(query, ("{ORIGIN_IP}", 53))
ready, _, _ = select.select([s], [], [], 10)
assert ready, "select: nothing to read"
data, sender = s.recvfrom(4096)
print(sender[0], sender[1], data[:2].hex(), ".".join(map(str, data[-4:])))
"#
    );
    let out = lab.socksify(1080, &["/usr/bin/python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{ORIGIN_IP} 53 1234 {SECRET_ADDRESS}"),
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(", 10.67.0.2:53): 34 bytes via relay"),
        "{stderr}"
    );
    assert!(stderr.contains("recvfrom(fd "), "{stderr}");
    // The same from an AF_INET6 socket to the IPv4-mapped address: the relay (IPv4) is
    // reached at its mapped form, the answer comes from the mapped destination.
    let v6 = script
        .replace("socket.AF_INET,", "socket.AF_INET6,")
        .replace(
            &format!("(\"{ORIGIN_IP}\", 53)"),
            &format!("(\"::ffff:{ORIGIN_IP}\", 53)"),
        );
    let out = lab.socksify(1080, &["/usr/bin/python3", "-c", &v6]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("::ffff:{ORIGIN_IP} 53 1234 {SECRET_ADDRESS}"),
        "{}",
        text(&out)
    );
}

#[test]
fn active_ftp_data_connections_over_bind() {
    let lab = Lab::new();
    for program in [Program::TnftpActive, Program::CurlFtpPort] {
        let (direct, out) = attempt(&lab, program, |a| lab.run_in(lab.client.name(), a));
        assert!(
            !direct,
            "{program:?} reached the origin without the proxy:\n{}",
            text(&out)
        );
        let (carried, out) = attempt(&lab, program, |a| lab.socksify(1080, a));
        assert!(
            carried,
            "{program:?} through socksgate socksify:\n{}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("BIND via 10.66.0.1:1080 for 10.67.0.2:0: proxy listens on 10.67.0.1:"),
            "{stderr}"
        );
        assert!(stderr.contains("the proxy accepted 10.67.0.2:"), "{stderr}");
    }
    let log = lab.socksgate_log();
    assert!(
        log.contains("command=bind dst=10.67.0.2:0 reply=0"),
        "{log}"
    );
    assert!(log.contains(&format!("down={FILE_LEN}")), "{log}");
}

#[test]
fn refusals_and_an_unreachable_proxy_become_errnos() {
    let lab = Lab::new();
    let udp = format!(
        r#"
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", ("{ORIGIN_IP}", 53))
    print("sent")
except OSError as e:
    print(errno.errorcode[e.errno])
"#
    );
    let bind = format!(
        r#"
import errno, socket
c = socket.create_connection(("{ORIGIN_IP}", 21))
d = socket.socket()
try:
    d.bind((c.getsockname()[0], 0))
    print("bound", d.getsockname()[0])
except OSError as e:
    print(errno.errorcode[e.errno])
"#
    );
    let answer = |port: u16, script: &str| {
        let out = lab.socksify(port, &["/usr/bin/python3", "-c", script]);
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            text(&out),
        )
    };
    // :1080 allows both; :1081 refuses BIND by rule (reply 2; socksgate checks UDP
    // datagram by datagram, so it grants every UDP ASSOCIATE); :1082 wants a password the
    // shim is not given; nothing listens on :1089.
    let (got, all) = answer(1080, &udp);
    assert_eq!(got, "sent", "{all}");
    let (got, all) = answer(1080, &bind);
    assert_eq!(got, "bound 10.67.0.1", "{all}");
    let (got, all) = answer(1081, &bind);
    assert_eq!(got, "EACCES", "{all}");
    assert!(
        all.contains(
            "BIND via 10.66.0.1:1081 for 10.67.0.2:0: proxy refused the request (reply 2)"
        ),
        "{all}"
    );
    let (got, all) = answer(1082, &udp);
    assert_eq!(got, "EACCES", "{all}");
    assert!(all.contains("UDP ASSOCIATE via 10.66.0.1:1082"), "{all}");
    let (got, all) = answer(1089, &udp);
    assert_eq!(got, "ECONNREFUSED", "{all}");
    // tnftp reports the refused BIND and transfers nothing.
    let (carried, out) = attempt(&lab, Program::TnftpActive, |a| lab.socksify(1081, a));
    assert!(!carried, "{}", text(&out));
}

/// The rows of tests/INTEROP.md's socksify table for these programs: which tool carries
/// which program. A change in any tool's behaviour fails here and must be reflected there.
#[test]
fn interop_socksgate_socksify_proxychains_and_dante() {
    let lab = Lab::new();
    let mut table = Vec::new();
    for program in Program::ALL {
        let (ours, ours_out) = attempt(&lab, program, |a| lab.socksify(1080, a));
        let (pc, _) = attempt(&lab, program, |a| lab.proxychains(a));
        let (dante, _) = attempt(&lab, program, |a| lab.dante(a));
        assert!(
            ours,
            "{program:?} through socksgate socksify:\n{}",
            text(&ours_out)
        );
        table.push((program, ours, pc, dante));
    }
    for row in &table {
        eprintln!(
            "{:?}: socksgate socksify {}, proxychains4 {}, Dante socksify {}",
            row.0, row.1, row.2, row.3
        );
    }
    let expected = [
        // proxychains carries TCP CONNECT only; Dante's socksify misses libuv's
        // syscall(SYS_sendmmsg) and so BIND 9's tools.
        (Program::Dig, true, false, false),
        (Program::Host, true, false, false),
        (Program::TnftpActive, true, false, true),
        (Program::CurlFtpPort, true, false, true),
    ];
    assert_eq!(table, expected, "update tests/INTEROP.md if this changed");
}
