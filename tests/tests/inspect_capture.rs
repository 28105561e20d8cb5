//! The inspector on real traffic through socksgate itself: dumpcap records loopback while
//! curl goes through two socksgate servers (one with logins), then `socksgate inspect --json`
//! must report every session exactly as the clients and the server made it — including the
//! real bound address socksgate reports (peers send 0.0.0.0:0), SOCKS4a (Dante lacks it), a
//! failed login and a refused connection — and must ignore socksgate's own legs to the
//! origin, which the capture also holds. tshark's dissector (told where SOCKS runs) must see
//! the same protocol versions on the same client connections.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::socksgate::{self, Server};
use socksgate_tests::tmp::TempDir;
use socksgate_tests::{TIMEOUT, free_port, tools};

const USER: &str = "alice";
const PASS: &str = "wonderland";

/// dumpcap on `lo`, stopped with SIGINT so the file is complete.
struct Capture(Child);

impl Capture {
    /// Starts capturing and returns once packets to `probe` (inside `filter`) are recorded:
    /// the file appears before the filter is live, so its existence proves nothing.
    fn start(filter: &str, file: &Path, probe: SocketAddr) -> Self {
        let child = Command::new("dumpcap")
            .args(["-q", "-i", "lo", "-f", filter, "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dumpcap");
        let capture = Self(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // A bare connect and close: not SOCKS, so not a session in the report.
            drop(TcpStream::connect(probe));
            std::thread::sleep(Duration::from_millis(200));
            let seen = Command::new("tshark")
                .arg("-r")
                .arg(file)
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if seen {
                return capture;
            }
            assert!(Instant::now() < deadline, "dumpcap recorded nothing on lo");
        }
    }

    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // Let the last packets reach dumpcap's buffer before asking it to finish.
            std::thread::sleep(Duration::from_millis(500));
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the origin sends for a body of `len` bytes (see `origin::http_origin`).
fn response_len(len: usize) -> u64 {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    (head.len() + len) as u64
}

/// curl through a SOCKS proxy; returns curl's exit code and its local port (`%{local_port}`).
fn curl(curl: &Path, args: &[&str], url: &str) -> (i32, u16) {
    let mut cmd = Command::new(curl);
    cmd.args([
        "-sS",
        "--noproxy",
        "",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
    ])
    .args(["-w", "%{local_port}"])
    .args(args)
    .arg(url);
    let out = tools::run(&mut cmd, b"", TIMEOUT);
    let port = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.code().unwrap_or(-1), port)
}

#[test]
fn socksgate_sessions_in_a_real_capture_decode_exactly() {
    let test = "socksgate_sessions_in_a_real_capture_decode_exactly";
    let Some(found) = tools::require(test, &["dumpcap", "tshark", "curl"]) else {
        return;
    };
    let curl_bin = &found[2];
    let open = Server::start();
    let login = Server::builder().user(USER, PASS).start();
    let origin: TcpService = origin::http_origin();
    let closed = free_port();
    let dir = TempDir::new();
    let file = dir.join("socksgate.pcapng");
    let filter = format!(
        "tcp port {} or tcp port {} or tcp port {}",
        open.addr().port(),
        login.addr().port(),
        origin.port()
    );
    let mut capture = Capture::start(&filter, &file, origin.addr());

    let url = |host: &str, len: usize| format!("http://{host}:{}/{len}", origin.port());
    let socks5h = format!("socks5h://{}", login.host_port());
    let creds = format!("{USER}:{PASS}");
    let wrong = format!("{USER}:not-{PASS}");
    let runs = [
        (
            "socks5h login",
            curl(
                curl_bin,
                &["--proxy", &socks5h, "--proxy-user", &creds],
                &url("localhost", 1000),
            ),
        ),
        (
            "socks5 wrong password",
            curl(
                curl_bin,
                &["--proxy", &socks5h, "--proxy-user", &wrong],
                &url("localhost", 10),
            ),
        ),
        (
            "socks4",
            curl(
                curl_bin,
                &["--socks4", &open.host_port()],
                &url("127.0.0.1", 2000),
            ),
        ),
        (
            "socks4a",
            curl(
                curl_bin,
                &["--socks4a", &open.host_port()],
                &url("localhost", 3000),
            ),
        ),
        (
            "socks5 refused",
            curl(
                curl_bin,
                &["--socks5", &open.host_port()],
                &format!("http://127.0.0.1:{closed}/"),
            ),
        ),
    ];
    capture.stop();
    for (name, (code, port)) in &runs {
        let ok = matches!(*name, "socks5h login" | "socks4" | "socks4a");
        assert_eq!(*code == 0, ok, "{name}: curl exit {code}");
        assert_ne!(*port, 0, "{name}: curl reported no local port");
    }

    let out = socksgate::run(&["inspect", file.to_str().unwrap(), "--json"], b"");
    assert!(out.status.success(), "inspect: {}", out.stderr_text());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions: BTreeMap<u16, &Value> = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["client"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap(),
                s,
            )
        })
        .collect();
    assert_eq!(
        sessions.len(),
        runs.len(),
        "one session per curl run, none for socksgate's own connections to the origin: {sessions:#?}"
    );
    let session = |name: &str| {
        let port = runs.iter().find(|r| r.0 == name).unwrap().1.1;
        *sessions
            .get(&port)
            .unwrap_or_else(|| panic!("{name}: no session for client port {port}"))
    };

    let s = session("socks5h login");
    assert_eq!(
        (s["version"].as_str(), s["method"].as_u64()),
        (Some("socks5"), Some(2))
    );
    assert_eq!(
        (s["username"].as_str(), s["auth_ok"].as_bool()),
        (Some(USER), Some(true))
    );
    assert!(s.get("password").is_none(), "masked without --show-secrets");
    assert_eq!(
        (s["command"].as_str(), s["dst_host"].as_str()),
        (Some("connect"), Some("localhost"))
    );
    assert_eq!(
        (s["dst_port"].as_u64(), s["reply_code"].as_u64()),
        (Some(origin.port().into()), Some(0))
    );
    let bound = s["bound"].as_str().unwrap();
    assert!(
        bound.starts_with("127.0.0.1:") && !bound.ends_with(":0"),
        "the real outbound address: {bound}"
    );
    assert_eq!(s["bytes_down"].as_u64(), Some(response_len(1000)));
    assert!(s["bytes_up"].as_u64().unwrap() > 0);
    assert_eq!(s["tunnelled"].as_str(), Some("http"));
    assert_eq!(s["anomalies"].as_array().map(Vec::len), Some(0), "{s:#}");

    let s = session("socks5 wrong password");
    assert_eq!(
        (s["username"].as_str(), s["auth_ok"].as_bool()),
        (Some(USER), Some(false))
    );
    assert!(
        s["command"].is_null() && s["reply_code"].is_null(),
        "no request after a failed login: {s:#}"
    );

    let s = session("socks4");
    assert_eq!(
        (s["version"].as_str(), s["dst_host"].as_str()),
        (Some("socks4"), Some("127.0.0.1"))
    );
    assert_eq!(
        (s["reply_code"].as_u64(), s["bytes_down"].as_u64()),
        (Some(90), Some(response_len(2000)))
    );

    let s = session("socks4a");
    assert_eq!(
        (s["version"].as_str(), s["dst_host"].as_str()),
        (Some("socks4a"), Some("localhost"))
    );
    assert_eq!(
        (s["reply_code"].as_u64(), s["bytes_down"].as_u64()),
        (Some(90), Some(response_len(3000)))
    );

    let s = session("socks5 refused");
    assert_eq!(
        (s["dst_port"].as_u64(), s["reply_code"].as_u64()),
        (Some(closed.into()), Some(5))
    );
    assert_eq!(
        (s["bytes_up"].as_u64(), s["bytes_down"].as_u64()),
        (Some(0), Some(0))
    );

    // Wireshark decodes SOCKS only where it is told to; it must see the same versions on the
    // same client connections (requests carry the version: 5, or 4 for SOCKS4/4a).
    let fields = Command::new(&found[1])
        .arg("-r")
        .arg(&file)
        .args(["-d", &format!("tcp.port=={},socks", open.addr().port())])
        .args(["-d", &format!("tcp.port=={},socks", login.addr().port())])
        .args([
            "-Y",
            "socks.version",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "socks.version",
        ])
        .output()
        .expect("tshark");
    assert!(
        fields.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&fields.stderr)
    );
    let text = String::from_utf8_lossy(&fields.stdout);
    for (name, (_, port)) in &runs {
        let want = if name.starts_with("socks4") { "4" } else { "5" };
        assert!(
            text.lines()
                .any(|l| l.split('\t').collect::<Vec<_>>() == [port.to_string().as_str(), want]),
            "{name}: tshark shows no SOCKS{want} message from client port {port}:\n{text}"
        );
    }
}
