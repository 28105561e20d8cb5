//! The `socksgate` binary as operators run it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socksgate_tests::{free_port, socks};

const BIN: &str = env!("CARGO_BIN_EXE_socksgate");

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with `args` and waits until it accepts connections.
fn serve(port: u16, args: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["serve", "--listen", &listen])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(&listen).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child)
}

/// A TCP server that reads until EOF, then sends back what it read.
fn echo_after_eof() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            let mut data = Vec::new();
            s.read_to_end(&mut data).unwrap();
            s.write_all(&data).unwrap();
        }
    });
    port
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`, in `dir`.
struct Notify {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn bind(dir: &std::path::Path) -> Self {
        let path = dir.join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { socket, path }
    }

    /// Expects the next notification to be `state` (within 10 s).
    #[track_caller]
    fn expect(&self, state: &str) {
        let mut msg = [0u8; 64];
        let n = self
            .socket
            .recv(&mut msg)
            .unwrap_or_else(|e| panic!("{state} from serve: {e}"));
        assert_eq!(String::from_utf8_lossy(&msg[..n]), state);
    }
}

/// A destination that keeps its one connection open and reports each read that arrives.
fn reporting_destination() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dest.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let (mut s, _) = dest.accept().unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// `socksgate connect` through `url` to 127.0.0.1:`port`, held open by its stdin (returned).
fn held_connect(url: &str, port: u16) -> (Child, std::process::ChildStdin) {
    let mut client = Command::new(BIN)
        .args(["connect", "--proxy", url, "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = client.stdin.take().unwrap();
    (client, stdin)
}

/// Sends `signal` (`kill`'s spelling: `-TERM`, `-HUP`) to the server.
fn signal(server: &Server, signal: &str) {
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn metrics_endpoint_counts_requests() {
    let echo = echo_after_eof();
    let port = free_port();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _server = serve(port, &["--metrics", &metrics_addr]);
    let url = format!("socks5h://127.0.0.1:{port}");
    let (code, out, _) = run(
        &["connect", "--proxy", &url, "localhost", &echo.to_string()],
        b"count me",
    );
    assert_eq!((code, out.as_str()), (0, "count me"));
    let start = Instant::now();
    let text = loop {
        let mut s = TcpStream::connect(&metrics_addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        // The session's byte counts land when its relay ends, just after the client's exit.
        if text.contains("socksgate_bytes_total{direction=\"up\"} 8\n")
            || start.elapsed() > Duration::from_secs(5)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE "), "not Prometheus text: {text}");
    assert!(
        text.contains("socksgate_requests_total{command=\"connect\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("socksgate_replies_total{code=\"0\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("socksgate_bytes_total{direction=\"up\"} 8\n"),
        "{text}"
    );
}

#[test]
fn passwd_then_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let users_s = users.to_str().unwrap();
    let (code, _, err) = run(&["passwd", "--users", users_s, "alice"], b"s3cret\n");
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("alice:$argon2id$") && !text.contains("s3cret"));

    let config = dir.path().join("socksgate.toml");
    std::fs::write(
        &config,
        "listen = [\"0.0.0.0:1080\"]\nusers = \"users\"\n[timeouts]\nconnect = 5\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", config.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = [\"0.0.0.0:1080\"]"), "{out}");
    assert!(
        out.contains("connect = 5") && out.contains("handshake = 10"),
        "{out}"
    );
    assert!(out.contains(users_s), "the users path is resolved: {out}");

    std::fs::write(
        &config,
        "listen = [\"0.0.0.0:1080\"]\n\n[[rule]]\naction = \"allow\"\nto = [\"10.0.0.1/8\"]\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", config.to_str().unwrap()], b"");
    assert_eq!(code, 1);
    assert!(err.contains("socksgate.toml:5:7"), "{err}");
}

#[test]
fn connect_through_serve_with_every_scheme_and_auth() {
    let echo = echo_after_eof();
    let port = free_port();
    let _server = serve(port, &[]);
    for scheme in ["socks4", "socks4a", "socks5", "socks5h"] {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let (code, out, err) = run(
            &["connect", "--proxy", &url, "localhost", &echo.to_string()],
            b"ping",
        );
        assert_eq!((code, out.as_str()), (0, "ping"), "{scheme}: {err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let (code, _, _) = run(
        &["passwd", "--users", users.to_str().unwrap(), "bob"],
        b"pa:ss@word\n",
    );
    assert_eq!(code, 0);
    let port = free_port();
    let _server = serve(port, &["--users", users.to_str().unwrap()]);
    let url = format!("socks5h://bob:pa%3Ass%40word@127.0.0.1:{port}");
    let (code, out, err) = run(
        &["connect", "--proxy", &url, "127.0.0.1", &echo.to_string()],
        b"authed",
    );
    assert_eq!((code, out.as_str()), (0, "authed"), "{err}");
}

/// `socksgate connect` through a fresh `serve` to a loopback destination served once by
/// `destination`, with stdin and stdout piped (the server is returned to keep it running).
fn connect_once(destination: impl FnOnce(TcpStream) + Send + 'static) -> (Child, Server) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = l.local_addr().unwrap().port();
    std::thread::spawn(move || destination(l.accept().unwrap().0));
    let port = free_port();
    let server = serve(port, &[]);
    let url = format!("socks5://127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["connect", "--proxy", &url, "127.0.0.1", &dst.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    (child, server)
}

#[test]
fn connect_exits_when_the_destination_closes_with_stdin_open() {
    // Like ssh's ProxyCommand: stdin stays open; the destination answers and closes.
    let (mut child, _server) = connect_once(|mut s| s.write_all(b"bye").unwrap());
    let _stdin = child.stdin.take(); // held open
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "connect did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "bye");
}

/// stdin ends while the echo is on its way to a stdout nobody reads yet (its pipe is full):
/// every byte still arrives, in order, once stdout is read.
#[test]
fn connect_delivers_everything_when_stdin_ends_before_stdout_drains() {
    let (mut child, _server) = connect_once(|mut s| {
        let mut back = s.try_clone().unwrap();
        std::io::copy(&mut s, &mut back).unwrap();
        back.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Four times a pipe's capacity: the echo fills stdout and waits in socket buffers.
    let input: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    // The echo comes back and fills stdout's pipe; only then does stdin end.
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.len(), input.len());
    assert!(out == input, "the echo came back reordered");
}

/// A real capture (curl and PySocks through microsocks and Dante on loopback, recorded by
/// the inspector's test suite) decoded by `socksgate inspect`.
const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../wasm/tests/fixtures/curl-lo.pcapng"
);

#[test]
fn inspect_prints_the_json_contract() {
    let (code, out, err) = run(&["inspect", CAPTURE, "--json"], b"");
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["capture"]["format"], "pcapng");
    assert_eq!(
        doc["capture"]["link_types"],
        serde_json::json!(["ETHERNET"])
    );
    let sessions = doc["sessions"].as_array().unwrap();
    let versions: Vec<_> = sessions
        .iter()
        .map(|s| s["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["socks5", "socks5", "socks5", "socks4", "socks4a", "socks5"]
    );
    let login = &sessions[2];
    assert_eq!(
        (&login["method"], &login["username"], &login["auth_ok"]),
        (&2.into(), &"alice".into(), &true.into())
    );
    assert!(
        login.get("password").is_none(),
        "passwords are masked by default"
    );
    assert_eq!(
        (&sessions[1]["dst_host"], &sessions[1]["dst_port"]),
        (&"localhost".into(), &33665.into())
    );
    assert_eq!(sessions[0]["tunnelled"], "http");
    assert_eq!(sessions[4]["reply_code"], 91);
    assert_eq!(sessions[5]["command"], "udp_associate");
    for key in [
        "client",
        "server",
        "methods_offered",
        "bound",
        "bind_peer",
        "bytes_up",
        "bytes_down",
        "udp_datagrams_up",
        "udp_datagrams_down",
        "start",
        "end",
        "sni",
        "anomalies",
    ] {
        assert!(
            sessions.iter().all(|s| s.get(key).is_some()),
            "every session has {key}"
        );
    }

    let (_, shown, _) = run(&["inspect", CAPTURE, "--json", "--show-secrets"], b"");
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert!(
        doc["sessions"][2]["password"].is_string(),
        "--show-secrets reveals the password"
    );
}

#[test]
fn inspect_text_and_errors() {
    let (code, out, _) = run(&["inspect", CAPTURE], b"");
    assert_eq!(code, 0);
    assert!(out.contains("6 SOCKS sessions"), "{out}");
    assert!(out.contains("user \"alice\"  auth ok"), "{out}");

    let (code, _, err) = run(
        &[
            "inspect",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ],
        b"",
    );
    assert_eq!(code, 1);
    assert!(err.contains("not a capture file"), "{err}");
    let (code, _, err) = run(&["inspect", "/nonexistent/capture.pcap"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("reading /nonexistent/capture.pcap"), "{err}");
}

#[test]
fn open_proxy_guard_covers_config_files() {
    // A config file whose only rule denies is still open (default allow): refused, also by
    // check-config. Nothing is bound: the check comes first.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "listen = [\"0.0.0.0:0\"]\n[[rule]]\naction = \"deny\"\nto = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, _, err) = run(&["serve", "--config", config], b"");
    assert_eq!(code, 1);
    assert!(err.contains("open proxy"), "{err}");
    let (code, _, err) = run(&["check-config", config], b"");
    assert_eq!(code, 1);
    assert!(err.contains("open proxy"), "{err}");
}

/// Reads everything the server wrote to stderr after stopping it.
fn stop_and_read_stderr(mut server: Server) -> String {
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn passwords_are_never_logged_even_at_trace_level() {
    const RIGHT: &str = "Right-Pa55word-7f3a";
    const WRONG: &str = "Wrong-Pa55word-c91e";
    let echo = echo_after_eof();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let (code, _, _) = run(
        &["passwd", "--users", users.to_str().unwrap(), "alice"],
        format!("{RIGHT}\n").as_bytes(),
    );
    assert_eq!(code, 0);
    for level in ["trace", "debug"] {
        for format in ["text", "json"] {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let child = Command::new(BIN)
                .args(["serve", "--listen", &listen, "--log-format", format])
                .args(["--users", users.to_str().unwrap()])
                .env("RUST_LOG", level)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let server = Server(child);
            let start = Instant::now();
            while TcpStream::connect(&listen).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "serve did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            for (password, ok) in [(WRONG, false), (RIGHT, true)] {
                let url = format!("socks5h://alice:{password}@{listen}");
                let (code, out, err) = run(
                    &["connect", "--proxy", &url, "127.0.0.1", &echo.to_string()],
                    b"x",
                );
                assert_eq!(code == 0, ok, "{err}");
                assert_eq!(out == "x", ok);
            }
            std::thread::sleep(Duration::from_millis(200));
            let err = stop_and_read_stderr(server);
            // The sessions were logged, the failure with the user name ...
            assert!(err.contains("authentication failed"), "{err}");
            assert!(err.contains("alice"), "{err}");
            // ... and neither password, nor a recognisable part of one.
            for secret in [RIGHT, WRONG, "Pa55word"] {
                assert!(
                    !err.contains(secret),
                    "{level}/{format}: {secret} in\n{err}"
                );
            }
            // stderr is a pipe, not a terminal: no colour escape sequences.
            assert!(
                !err.contains('\x1b'),
                "{level}/{format}: ANSI codes in\n{err}"
            );
        }
    }
}

#[test]
fn unknown_user_for_privilege_drop_is_refused() {
    let (code, _, err) = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "no-such-user-socksgate",
        ],
        b"",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("--user no-such-user-socksgate: no such user"),
        "{err}"
    );
}

/// `Uid:`/`Gid:` of /proc/PID/status (real, effective, saved, filesystem) and `Groups:`.
fn ids(status: &str) -> (Vec<u32>, Vec<u32>, String) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let nums = |s: String| s.split_whitespace().map(|n| n.parse().unwrap()).collect();
    (nums(field("Uid:")), nums(field("Gid:")), field("Groups:"))
}

#[test]
fn user_flag_drops_privileges_after_binding() {
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    if ids(&me).0.first() != Some(&0) {
        eprintln!("not root: privilege drop not tested");
        return;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let Some(nobody) = passwd.lines().find(|l| l.starts_with("nobody:")) else {
        eprintln!("no user nobody: privilege drop not tested");
        return;
    };
    let fields: Vec<&str> = nobody.split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let echo = echo_after_eof();
    let port = free_port();
    let server = serve(port, &["--user", "nobody"]);
    let pid = server.0.id();
    // The drop happens just after the listener opens; wait for it (bounded).
    let start = Instant::now();
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if ids(&status).0 == [uid; 4] || start.elapsed() > Duration::from_secs(10) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (uids, gids, groups) = ids(&status);
    assert_eq!(uids, [uid; 4], "{status}");
    assert_eq!(gids, [gid; 4], "{status}");
    assert_eq!(groups, "", "{status}");
    // Every thread, not only the main one.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let (uids, gids, _) = ids(&status);
        assert_eq!((uids, gids), (vec![uid; 4], vec![gid; 4]), "{status}");
    }
    // Still serving.
    let url = format!("socks5h://127.0.0.1:{port}");
    let (code, out, err) = run(
        &["connect", "--proxy", &url, "127.0.0.1", &echo.to_string()],
        b"as nobody",
    );
    assert_eq!((code, out.as_str()), (0, "as nobody"), "{err}");
    // And curl, to a one-shot HTTP server (when curl is installed).
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = http.accept() {
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nnobody");
        }
    });
    let curl = Command::new("curl")
        .args(["-s", "--max-time", "10", "-x", &url])
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .output();
    match curl {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "nobody", "{out:?}"),
        Err(e) => eprintln!("curl not run: {e}"),
    }
    let err = stop_and_read_stderr(server);
    assert!(err.contains("dropped privileges"), "{err}");
}

#[test]
fn accept_backs_off_when_out_of_file_descriptors_and_recovers() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // A low descriptor limit, so a few held connections exhaust it.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 48 && exec \"$0\" \"$@\"", BIN])
        .args(["serve", "--listen", &listen])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let server = Server(child);
    let start = Instant::now();
    while TcpStream::connect(&listen).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    // Hold more connections than there are descriptors (they wait in the handshake).
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&listen).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut server = server;
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the server must not exit"
    );
    assert_eq!(
        count("backing off"),
        1,
        "one log line per episode: {:?}",
        lines.lock().unwrap()
    );
    drop(held);
    // Once descriptors are free again, a new client is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(&listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&socks::encode::greeting(&[socks::Method::NoAuth]))
            .unwrap();
        let mut reply = [0u8; 2];
        if s.read_exact(&mut reply).is_ok() {
            assert_eq!(
                socks::decode::method(&reply),
                Ok(Some((socks::Method::NoAuth, 2)))
            );
            break;
        }
        assert!(Instant::now() < deadline, "the server never recovered");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while count("accepting connections again") == 0 {
        assert!(Instant::now() < deadline, "no recovery log line");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.0.try_wait().unwrap().is_none());
}

/// Collects a child's stderr lines in the background.
fn collect_lines(
    stderr: std::process::ChildStderr,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// The whole HTTP response to `GET path` from the metrics listener at `addr`.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics")
}

#[test]
fn access_log_and_session_metrics_after_real_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let users_s = users.to_str().unwrap();
    assert_eq!(run(&["passwd", "--users", users_s, "alice"], b"pw\n").0, 0);
    let config = dir.path().join("socksgate.toml");
    std::fs::write(&config, "[[rule]]\naction = \"deny\"\nports = [\"9\"]\n").unwrap();
    let echo = echo_after_eof();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = serve(
        port,
        &[
            "--config",
            config.to_str().unwrap(),
            "--users",
            users_s,
            "--metrics",
            &metrics_addr,
            "--log-format",
            "json",
        ],
    );
    let lines = collect_lines(server.0.stderr.take().unwrap());
    let ok = format!("socks5h://alice:pw@127.0.0.1:{port}");
    let (code, out, _) = run(
        &["connect", "--proxy", &ok, "127.0.0.1", &echo.to_string()],
        b"count me",
    );
    assert_eq!((code, out.as_str()), (0, "count me"));
    let bad = format!("socks5h://alice:wrong@127.0.0.1:{port}");
    let (code, _, _) = run(&["connect", "--proxy", &bad, "127.0.0.1", "80"], b"");
    assert_ne!(code, 0);
    let (code, _, _) = run(&["connect", "--proxy", &ok, "127.0.0.1", "9"], b"");
    assert_ne!(code, 0);
    let want = [
        "socksgate_sessions_total{command=\"connect\",outcome=\"succeeded\"} 1\n",
        "socksgate_sessions_total{command=\"connect\",outcome=\"refused\"} 1\n",
        "socksgate_sessions_total{command=\"none\",outcome=\"auth_failed\"} 1\n",
        "socksgate_auth_failures_total 1\n",
        "socksgate_connections_active 0\n",
        "socksgate_handshake_duration_seconds_count 2\n",
        "socksgate_handshake_duration_seconds_bucket{le=\"+Inf\"} 2\n",
        "socksgate_connect_duration_seconds_count 1\n",
        "socksgate_bytes_total{direction=\"up\"} 8\n",
        "socksgate_user_bytes_total{user=\"alice\",direction=\"down\"} 8\n",
    ];
    // Session ends are counted just after the clients exit.
    let start = Instant::now();
    let text = loop {
        let text = scrape(&metrics_addr);
        if want.iter().all(|w| text.contains(w)) || start.elapsed() > Duration::from_secs(5) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for w in want {
        assert!(text.contains(w), "missing {w:?} in\n{text}");
    }
    // One access line per session, with every field. A line may reach stderr (and the
    // collecting thread) after the counters it goes with: poll briefly.
    let access_lines = || -> Vec<serde_json::Value> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "socksgate::access")
            .collect()
    };
    let start = Instant::now();
    let access = loop {
        let access = access_lines();
        if access.len() >= 4 || start.elapsed() > Duration::from_secs(5) {
            break access;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // serve()'s readiness probe connects and leaves: a handshake_failed session of its own.
    assert_eq!(access.len(), 4, "{access:?}");
    assert_eq!(
        access
            .iter()
            .filter(|v| v["outcome"] == "handshake_failed")
            .count(),
        1
    );
    let done = access
        .iter()
        .find(|v| v["outcome"] == "succeeded")
        .expect("the successful session's line");
    assert_eq!(done["user"], "alice");
    assert_eq!(done["command"], "connect");
    assert_eq!(done["dst"], format!("127.0.0.1:{echo}"));
    assert_eq!(done["reply"], 0);
    assert_eq!(
        (done["up"].as_u64(), done["down"].as_u64()),
        (Some(8), Some(8))
    );
    assert!(done["duration_ms"].is_u64());
    assert!(done["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let denied = access.iter().find(|v| v["outcome"] == "refused").unwrap();
    assert_eq!(denied["reply"], 2);
}

#[test]
fn sd_notify_and_sigterm_drains_with_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notify::bind(dir.path());
    let config = dir.path().join("socksgate.toml");
    std::fs::write(&config, "drain_timeout = 2\n").unwrap();
    let (dest_port, rx) = reporting_destination();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut server = Server(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &listen,
                "--metrics",
                &metrics,
                "--config",
            ])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    notify.expect("READY=1");
    // One session, kept open by the client's stdin.
    let url = format!("socks5://127.0.0.1:{port}");
    let (mut client, mut stdin) = held_connect(&url, dest_port);
    stdin.write_all(b"before").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"before");
    assert!(http_get(&metrics, "/readyz").starts_with("HTTP/1.1 200 OK"));
    let stopped_at = Instant::now();
    signal(&server, "-TERM");
    notify.expect("STOPPING=1");
    // Listeners close at once…
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(&listen).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // …readiness turns false (the process is still healthy)…
    assert!(http_get(&metrics, "/readyz").starts_with("HTTP/1.1 503"));
    assert!(http_get(&metrics, "/healthz").starts_with("HTTP/1.1 200 OK"));
    // …the open session keeps relaying while draining…
    stdin.write_all(b"during").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)).unwrap(), b"during");
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "exited before the drain deadline"
    );
    // …and the process exits at the deadline although the session is still open.
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(8),
            "no exit after drain_timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(stopped_at.elapsed() >= Duration::from_millis(1900));
    drop(stdin);
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn sighup_reloads_rules_without_dropping_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notify::bind(dir.path());
    let config = dir.path().join("socksgate.toml");
    std::fs::write(&config, "").unwrap();
    let (dest_port, rx) = reporting_destination();
    let echo = echo_after_eof().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--listen", &listen, "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = collect_lines(server.0.stderr.take().unwrap());
    notify.expect("READY=1");
    let url = format!("socks5://127.0.0.1:{port}");
    let (mut held, mut stdin) = held_connect(&url, dest_port);
    stdin.write_all(b"before").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"before");
    let dest_port = dest_port.to_string();
    let through = |port: &str| run(&["connect", "--proxy", &url, "127.0.0.1", port], b"x");

    // A new deny rule for the held session's destination.
    std::fs::write(
        &config,
        format!("[[rule]]\naction = \"deny\"\nports = [\"{dest_port}\"]\n"),
    )
    .unwrap();
    signal(&server, "-HUP");
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    // The established session keeps relaying…
    stdin.write_all(b"after").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"after");
    // …new sessions see the rule.
    let (code, _, err) = through(&dest_port);
    assert_ne!(code, 0, "denied after the reload");
    assert!(err.contains("(reply 2)"), "{err}");
    assert_eq!(through(&echo).1, "x");

    // An invalid file is refused and the running rules stay.
    std::fs::write(&config, "[[rule]]\naction = \"maybe\"\n").unwrap();
    signal(&server, "-HUP");
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    assert_ne!(through(&dest_port).0, 0, "the deny rule still applies");
    assert_eq!(through(&echo).1, "x");
    let refused = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("reload refused"))
        .count();
    assert_eq!(refused, 1, "{:?}", lines.lock().unwrap());
    assert!(server.0.try_wait().unwrap().is_none());
    stdin.write_all(b"still").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"still");
    drop(stdin);
    let _ = held.kill();
    let _ = held.wait();
}

#[test]
fn systemd_socket_activation() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notify::bind(dir.path());
    // Python binds and listens, puts the socket on fd 3, sets LISTEN_FDS/LISTEN_PID for its
    // own pid and execs socksgate in its place (same pid), as systemd would.
    let script = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[1], [sys.argv[1], "serve"])
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, BIN])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let lines = collect_lines(child.stderr.take().unwrap());
    let server = Server(child);
    let mut port = String::new();
    stdout.read_line(&mut port).unwrap();
    let port = port.trim().to_owned();
    notify.expect("READY=1");
    let echo = echo_after_eof().to_string();
    let url = format!("socks5://127.0.0.1:{port}");
    let (code, out, err) = run(&["connect", "--proxy", &url, "127.0.0.1", &echo], b"fd 3");
    assert_eq!((code, out.as_str()), (0, "fd 3"), "{err}");
    let log = lines.lock().unwrap().join("\n");
    assert!(log.contains("listening (socket activation)"), "{log}");
    assert!(
        !log.contains("127.0.0.1:1080"),
        "bound the default listener too: {log}"
    );
    drop(server);
}

/// Under systemd, stderr is a stream socket to journald whose `device:inode` is in
/// `JOURNAL_STREAM`: every line then starts with its syslog priority and text lines carry no
/// timestamp (journald stamps them). An inherited `JOURNAL_STREAM` naming another stream
/// changes nothing.
#[test]
fn journal_stream_lines_carry_priorities_and_no_timestamps() {
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::net::UnixStream;

    let dir = tempfile::tempdir().unwrap();
    // An empty users file: serve warns that nobody can log in, so both levels show.
    let users = dir.path().join("users");
    std::fs::write(&users, "").unwrap();
    for (format, journal) in [("text", true), ("json", true), ("text", false)] {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let meta = std::fs::File::from(OwnedFd::from(theirs.try_clone().unwrap()))
            .metadata()
            .unwrap();
        let ino = if journal { meta.ino() } else { meta.ino() + 1 };
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--log-format", format])
            .args(["--users", users.to_str().unwrap()])
            .env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(OwnedFd::from(theirs))
            .spawn()
            .unwrap();
        let server = Server(child);
        let mut lines = BufReader::new(ours).lines();
        let mut log = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let ready = line.contains("ready");
            log.push(line);
            if ready {
                break;
            }
        }
        drop(server);
        let all = log.join("\n");
        let warning = log.iter().find(|l| l.contains("has no users")).expect(&all);
        let ready = log.iter().find(|l| l.contains("ready")).expect(&all);
        for line in &log {
            assert_eq!(line.starts_with('<'), journal, "{format}: {all}");
        }
        if !journal {
            // The usual text line: an RFC 3339 timestamp, then the level.
            assert!(ready.starts_with("20"), "{all}");
            continue;
        }
        assert!(warning.starts_with("<4>"), "{format}: {all}");
        assert!(ready.starts_with("<6>"), "{format}: {all}");
        for line in &log {
            let rest = &line[3..];
            match format {
                "text" => assert!(
                    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                        .iter()
                        .any(|level| rest.trim_start().starts_with(level)),
                    "a timestamp or something else before the level: {all}"
                ),
                _ => {
                    let object: serde_json::Value = serde_json::from_str(rest).expect(&all);
                    assert!(object.get("timestamp").is_some(), "{all}");
                }
            }
        }
    }
}
