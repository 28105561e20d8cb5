//! The command-line contract: open-relay refusal, `--allow-open`, `passwd` from stdin.

use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Instant;

use socksgate_tests::socks::{self, Client, Dst};
use socksgate_tests::socksgate::{self, Server};
use socksgate_tests::tmp::TempDir;
use socksgate_tests::{TIMEOUT, free_port, origin, tools};

use crate::{PASS, USER};

/// Runs `socksgate serve ARGS` expecting it to exit with an error before it ever accepts on
/// 127.0.0.1:`port`; returns its exit code and stderr.
#[track_caller]
fn expect_refusal(args: &[String], port: u16) -> (Option<i32>, String) {
    let mut child = socksgate::command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socksgate");
    let probe = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socksgate {args:?} started serving instead of refusing");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socksgate {args:?} neither refused nor served within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !status.success(),
        "socksgate {args:?} exited 0; stderr: {stderr}"
    );
    (status.code(), stderr)
}

#[test]
fn open_non_loopback_listener_refuses_to_start() {
    let port = free_port();
    let (code, stderr) = expect_refusal(
        &["serve".into(), "--listen".into(), format!("0.0.0.0:{port}")],
        port,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("open proxy") && stderr.contains("--allow-open"),
        "the refusal should explain itself and name --allow-open; stderr: {stderr}"
    );
}

#[test]
fn open_listener_among_loopback_ones_refuses_before_binding() {
    // One non-loopback listener taints the whole configuration; the loopback one must not
    // have been bound either (the check happens before binding).
    let lo = free_port();
    let any = free_port();
    let (_, stderr) = expect_refusal(
        &[
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{lo}"),
            "--listen".into(),
            format!("0.0.0.0:{any}"),
        ],
        lo,
    );
    assert!(!stderr.trim().is_empty(), "a refusal needs a message");
}

#[test]
fn open_ipv6_any_listener_refuses_to_start() {
    let port = free_port();
    let (code, stderr) = expect_refusal(
        &["serve".into(), "--listen".into(), format!("[::]:{port}")],
        port,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("open proxy"), "{stderr}");
}

#[test]
fn allow_open_starts_and_serves() {
    // Bound on 0.0.0.0 but only ever reached through 127.0.0.1.
    let port = free_port();
    let dir = TempDir::new();
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let mut child = socksgate::command()
        .args([
            "serve",
            "--allow-open",
            "--listen",
            &format!("0.0.0.0:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("spawn socksgate");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let up = socksgate_tests::wait_for_listener(addr, TIMEOUT);
    let exited = child.try_wait().expect("wait");
    if !up || exited.is_some() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "serve --allow-open did not start ({exited:?}): {}",
            tools::read_log(&dir.join("serve.log"))
        );
    }
    let echo = origin::echo();
    let mut c = socks::connect5(addr, &Dst::Ip(echo.addr()));
    c.send(b"open");
    let got = c.read_exact(4);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, b"open");
}

#[test]
fn non_loopback_listener_with_users_starts() {
    // Authentication makes a public listener acceptable without --allow-open.
    let dir = TempDir::new();
    let users = dir.join("users");
    socksgate::passwd(&users, USER, PASS);
    let port = free_port();
    let mut child = socksgate::command()
        .args(["serve", "--users", users.to_str().expect("utf-8")])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socksgate");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let up = socksgate_tests::wait_for_listener(addr, TIMEOUT);
    let mut c = up.then(|| Client::connect(addr));
    let status = c.as_mut().map(|c| c.login(USER, PASS));
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    assert!(
        up,
        "serve --users with 0.0.0.0 did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status, Some(0));
}

#[test]
fn passwd_reads_password_from_stdin_and_replaces_users() {
    let dir = TempDir::new();
    let users = dir.join("users");
    let path = users.to_str().expect("utf-8");
    socksgate::run(&["passwd", "--users", path, "alice"], b"first-pw\n")
        .assert_success("passwd alice");
    socksgate::run(&["passwd", "--users", path, "bob"], b"bob-pw\n").assert_success("passwd bob");

    let login = |user: &str, pass: &str| -> u8 {
        let server = Server::builder().arg("--users").arg(path).start();
        let mut c = Client::connect(server.addr());
        c.login(user, pass)
    };
    assert_eq!(login("alice", "first-pw"), 0, "alice with her password");
    assert_eq!(login("bob", "bob-pw"), 0, "bob with his password");
    assert_ne!(login("alice", "bob-pw"), 0, "alice with bob's password");

    // Replacing alice's password: the old one stops working, bob is untouched.
    socksgate::run(&["passwd", "--users", path, "alice"], b"second-pw\n")
        .assert_success("passwd alice again");
    assert_ne!(login("alice", "first-pw"), 0, "alice's old password");
    assert_eq!(login("alice", "second-pw"), 0, "alice's new password");
    assert_eq!(login("bob", "bob-pw"), 0, "bob after alice's change");
}

#[test]
fn non_loopback_listener_with_allow_rules_starts() {
    // Deny by default plus an explicit allow rule is a restricted proxy, not an open one.
    let dir = TempDir::new();
    let conf = dir.write(
        "socksgate.conf",
        "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n",
    );
    let port = free_port();
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let mut child = socksgate::command()
        .args(["serve", "--config", conf.to_str().expect("utf-8")])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("spawn socksgate");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let up = socksgate_tests::wait_for_listener(addr, TIMEOUT);
    let echo = origin::echo();
    // A failed exchange is reported below with the server's log and whether it had exited.
    let got = up.then(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut c = socks::connect5(addr, &Dst::Ip(echo.addr()));
            c.send(b"ruled");
            c.read_exact(5)
        }))
        .ok()
    });
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let log = tools::read_log(&dir.join("serve.log"));
    assert!(up, "serve with allow rules on 0.0.0.0 did not start: {log}");
    assert_eq!(
        got.flatten().as_deref(),
        Some(&b"ruled"[..]),
        "no echo through socksgate on 0.0.0.0:{port} (exited before the kill: {exited:?}); log: {log}"
    );
}

#[test]
fn log_format_json_writes_json_lines() {
    let server = Server::builder().arg("--log-format").arg("json").start();
    let echo = origin::echo();
    let mut c = socks::connect5(server.addr(), &Dst::Ip(echo.addr()));
    c.send(b"logged");
    assert_eq!(c.read_exact(6), b"logged");
    drop(c);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"INFO\"")),
        "no INFO line: {log}"
    );
    for line in lines {
        let l = line.trim();
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object per line: {l}"
        );
    }
}

#[test]
fn check_config_accepts_valid_and_locates_errors() {
    let dir = TempDir::new();
    let good = dir.write(
        "good.toml",
        "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n",
    );
    socksgate::run(&["check-config", good.to_str().expect("utf-8")], b"")
        .assert_success("check-config on a valid file");
    let bad = dir.write("bad.toml", "default_action = \"deny\"\nno_such_key = 1\n");
    let bad_path = bad.to_str().expect("utf-8");
    let out = socksgate::run(&["check-config", bad_path], b"");
    assert!(!out.status.success(), "an unknown key must be an error");
    let msg = format!(
        "{}{}",
        out.stderr_text(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        msg.contains("bad.toml") && msg.contains('2'),
        "the error should name the file and line 2: {msg}"
    );
    // `serve` refuses the same file before listening.
    let port = free_port();
    let out = tools::run(
        socksgate::command().args([
            "serve",
            "--config",
            bad_path,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]),
        b"",
        TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "serve with a broken config must fail"
    );
}
