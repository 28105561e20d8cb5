//! Operator controls end to end: authentication by client network (`[[auth]]`), session
//! rates per client network and per user (`[limits]`), and the address family for names
//! (`address_family`). Clients are curl and the core's client state machine from distinct
//! loopback sources (127.0.0.2, 127.0.0.3); IPv6 /64 keying runs in a network namespace
//! the test creates.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use socksgate::config::Config;
use socksgate::resolve::Resolver;
use socksgate::{client, reload};
use socksgate_core::client::{Client, ClientConfig, ClientError, Credentials};
use socksgate_core::server::Version;
use socksgate_core::wire::{Command as SocksCommand, Method, ReplyCode};
use socksgate_core::{Addr, Domain};
use socksgate_tests::{origin, socks, tools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

mod common;

use common::{Proxy, start_with};

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("controls.toml")).unwrap()
}

async fn start(text: &str, users: Option<&[(&str, &str)]>, resolver: Resolver) -> Proxy {
    start_with(config(text), users, resolver).await
}

/// curl through `proxy` (`--socks5-hostname`, or `--socks4` when `socks4`) from the loopback
/// address `from`, for `len` bytes of the HTTP origin on `port`; `Ok(body)` or `Err(stderr)`.
fn curl(
    proxy: SocketAddr,
    from: &str,
    socks4: bool,
    user: Option<&str>,
    port: u16,
    len: usize,
) -> Result<Vec<u8>, String> {
    let curl = &tools::require("controls: curl", &["curl"]).expect("curl")[0];
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", "10", "--interface", from]);
    cmd.arg(if socks4 {
        "--socks4"
    } else {
        "--socks5-hostname"
    })
    .arg(proxy.to_string());
    if let Some(user) = user {
        cmd.args(["--proxy-user", user]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{}", origin::http_path(len)));
    let out = tools::run(&mut cmd, b"", Duration::from_secs(20));
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{}: {}", out.status, out.stderr_text()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_by_client_network_with_curl() {
    let proxy = start(
        "[[auth]]\nfrom = [\"127.0.0.2\"]\nmethods = [\"none\"]\n",
        Some(&[("alice", "pw")]),
        Resolver::with_hosts(HashMap::new()),
    )
    .await;
    let http = origin::http_origin();
    let port = http.port();
    let body = socksgate_tests::body(1000);
    // The listed client gets in without a password, over SOCKS5 and SOCKS4.
    assert_eq!(
        curl(proxy.addr, "127.0.0.2", false, None, port, 1000),
        Ok(body.clone())
    );
    assert_eq!(
        curl(proxy.addr, "127.0.0.2", true, None, port, 1000),
        Ok(body.clone())
    );
    // Everyone else must log in; SOCKS4, which cannot, is refused.
    let e = curl(proxy.addr, "127.0.0.3", false, None, port, 1000).unwrap_err();
    assert!(e.contains("exit status: 97"), "{e}");
    assert_eq!(
        curl(proxy.addr, "127.0.0.3", false, Some("alice:pw"), port, 1000),
        Ok(body.clone())
    );
    let e = curl(
        proxy.addr,
        "127.0.0.3",
        false,
        Some("alice:wrong"),
        port,
        1000,
    )
    .unwrap_err();
    assert!(e.contains("exit status: 97"), "{e}");
    let e = curl(proxy.addr, "127.0.0.3", true, None, port, 1000).unwrap_err();
    assert!(e.contains("exit status: 97"), "{e}");
    // What the SOCKS4 client got: CD 91, and nothing reached the origin for it.
    let accepted = http.accepted();
    let mut s = connect_from("127.0.0.3", proxy.addr).await;
    s.write_all(&socks::encode::socks4(
        SocksCommand::Connect,
        &socks::Dst::Ip(SocketAddr::from(([127, 0, 0, 1], port))),
        "",
    ))
    .await
    .unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 91, "{reply:?}");
    assert_eq!(http.accepted(), accepted);
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().unwrap();
    let sock = if from.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// A SOCKS5 CONNECT through `proxy` from `from`: the stream, or how the handshake failed.
async fn socks5(
    proxy: SocketAddr,
    from: &str,
    target: Addr<'_>,
    creds: Option<(&[u8], &[u8])>,
) -> Result<TcpStream, ClientError> {
    let mut stream = connect_from(from, proxy).await;
    let config = ClientConfig {
        version: Version::Socks5,
        credentials: creds.map(|(username, password)| Credentials { username, password }),
        command: SocksCommand::Connect,
        target,
        user_id: b"",
    };
    let mut c = Client::new(config).unwrap();
    match client::handshake(&mut c, &mut stream).await {
        Ok(_) => Ok(stream),
        Err(client::Error::Handshake { source: e, .. }) => Err(e),
        Err(other) => panic!("{other:?}"),
    }
}

/// Connects from `from` and tells whether the proxy closed before answering the greeting.
async fn closed_before_handshake(proxy: SocketAddr, from: &str) -> bool {
    let mut s = connect_from(from, proxy).await;
    let _ = s
        .write_all(&socks::encode::greeting(&[Method::NoAuth]))
        .await;
    let mut out = [0u8; 2];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither refused nor answered"),
    }
}

#[tokio::test]
async fn session_rate_per_client_closes_before_the_handshake_and_spares_others() {
    // One new session a second, two at once: a third at once is over.
    let proxy = start(
        "[limits]\nsessions_per_second_per_client = 1\nsessions_burst_per_client = 2\n",
        None,
        Resolver::with_hosts(HashMap::new()),
    )
    .await;
    assert!(!closed_before_handshake(proxy.addr, "127.0.0.2").await);
    assert!(!closed_before_handshake(proxy.addr, "127.0.0.2").await);
    assert!(
        closed_before_handshake(proxy.addr, "127.0.0.2").await,
        "over the rate"
    );
    assert!(
        closed_before_handshake(proxy.addr, "127.0.0.2").await,
        "still over"
    );
    // Other clients are not affected.
    assert!(!closed_before_handshake(proxy.addr, "127.0.0.3").await);
    // The refusals are one burst, logged once.
    assert_eq!(proxy.shared.session_rates.client_refusals.open(), 1);
    // A token comes back after a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!closed_before_handshake(proxy.addr, "127.0.0.2").await);
    assert_eq!(
        proxy.shared.session_rates.client_refusals.open(),
        0,
        "admitted again: the burst is over"
    );
}

#[tokio::test]
async fn session_rate_per_user_is_reply_2() {
    let proxy = start(
        "[limits]\nsessions_per_second_per_user = 1\nsessions_burst_per_user = 2\n",
        Some(&[("alice", "pw"), ("bob", "pw")]),
        Resolver::with_hosts(HashMap::new()),
    )
    .await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dst = Addr::Ip(echo.local_addr().unwrap());
    let alice = Some((&b"alice"[..], &b"pw"[..]));
    socks5(proxy.addr, "127.0.0.2", dst, alice).await.unwrap();
    socks5(proxy.addr, "127.0.0.3", dst, alice).await.unwrap();
    // The third at once (whatever the client address) is refused: REP 2. Argon2 checks on
    // a busy machine may let a token refill, so allow a few tries.
    let mut refused = false;
    for _ in 0..3 {
        if let Err(e) = socks5(proxy.addr, "127.0.0.4", dst, alice).await {
            assert_eq!(e, ClientError::Rejected(ReplyCode::NotAllowed));
            refused = true;
            break;
        }
    }
    assert!(refused, "alice was never limited");
    // Another user is not.
    socks5(proxy.addr, "127.0.0.4", dst, Some((b"bob", b"pw")))
        .await
        .unwrap();
}

/// A service on 127.0.0.1:port and [::1]:port that answers "v4" or "v6": which family the
/// proxy connected over.
async fn dual_stack_origin() -> u16 {
    for _ in 0..20 {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let Ok(v6) = TcpListener::bind(("::1", port)).await else {
            continue;
        };
        for (l, tag) in [(v4, b"v4"), (v6, b"v6")] {
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let _ = s.write_all(tag).await;
                }
            });
        }
        return port;
    }
    panic!("no port free on both loopbacks");
}

/// Which family `host:port` was reached over through `proxy` from `from`.
async fn family_used(
    proxy: SocketAddr,
    from: &str,
    host: &str,
    port: u16,
) -> Result<String, ClientError> {
    let dst = Addr::Domain(Domain::new(host.as_bytes()).unwrap(), port);
    let mut s = socks5(proxy, from, dst, None).await?;
    let mut tag = [0u8; 2];
    s.read_exact(&mut tag).await.unwrap();
    Ok(String::from_utf8_lossy(&tag).into_owned())
}

fn hosts() -> Resolver {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut hosts = HashMap::new();
    hosts.insert("both.test".to_owned(), vec![ip("127.0.0.1"), ip("::1")]);
    hosts.insert("v4.test".to_owned(), vec![ip("127.0.0.1")]);
    Resolver::with_hosts(hosts)
}

#[tokio::test]
async fn address_family_chooses_the_family_of_a_name() {
    let port = dual_stack_origin().await;
    for (family, want) in [
        ("prefer_ipv6", "v6"),
        ("prefer_ipv4", "v4"),
        ("ipv4_only", "v4"),
        ("ipv6_only", "v6"),
    ] {
        let proxy = start(&format!("address_family = \"{family}\"\n"), None, hosts()).await;
        for _ in 0..3 {
            assert_eq!(
                family_used(proxy.addr, "127.0.0.2", "both.test", port).await,
                Ok(want.to_owned()),
                "{family}"
            );
        }
    }
    // A name with no address of the family in use: REP 4.
    let proxy = start("address_family = \"ipv6_only\"\n", None, hosts()).await;
    assert_eq!(
        family_used(proxy.addr, "127.0.0.2", "v4.test", port).await,
        Err(ClientError::Rejected(ReplyCode::HostUnreachable))
    );
    // An address given as such is not a name: taken as given.
    let s = socks5(
        proxy.addr,
        "127.0.0.2",
        Addr::Ip(SocketAddr::from(([127, 0, 0, 1], port))),
        None,
    )
    .await;
    assert!(s.is_ok());
}

#[tokio::test]
async fn address_family_per_rule() {
    let port = dual_stack_origin().await;
    let proxy = start(
        "address_family = \"prefer_ipv6\"\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.2\"]\naddress_family = \"ipv4_only\"\n",
        None,
        hosts(),
    )
    .await;
    assert_eq!(
        family_used(proxy.addr, "127.0.0.2", "both.test", port).await,
        Ok("v4".to_owned())
    );
    assert_eq!(
        family_used(proxy.addr, "127.0.0.3", "both.test", port).await,
        Ok("v6".to_owned())
    );
}

#[test]
fn reload_with_a_bad_limit_keeps_the_running_configuration() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[limits]\nsessions_per_second_per_client = 5\n").unwrap();
    let args = socksgate::cli::ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    let old = socksgate::shared::Shared::new(
        Config::from_args(&args).unwrap(),
        None,
        Resolver::with_hosts(HashMap::new()),
    )
    .unwrap();
    for (text, at) in [
        ("[limits]\nsessions_per_second_per_client = 0\n", ":2:34:"),
        ("[limits]\nclient_prefix_ipv6 = 200\n", ":2:22:"),
        (
            "[[auth]]\nfrom = [\"10.0.0.0/40\"]\nmethods = [\"none\"]\n",
            ":2:9:",
        ),
        ("address_family = \"ipv4\"\n", "line 1"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = reload::load(&args, &old).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(at),
            "{e} (wanted {at})"
        );
    }
    std::fs::write(&path, "[limits]\nsessions_per_second_per_client = 7\n").unwrap();
    let next = reload::load(&args, &old).unwrap();
    assert_eq!(next.config.limits.client_rate().unwrap().per_second, 7);
    assert!(std::sync::Arc::ptr_eq(
        &next.session_rates,
        &old.session_rates
    ));
}

#[test]
fn check_config_refuses_bad_controls_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for (text, at, reason) in [
        (
            "[limits]\nsessions_per_second_per_user = 0\n",
            ":2:32:",
            "at least 1",
        ),
        ("[limits]\nclient_prefix_ipv4 = 33\n", ":2:22:", "1 to 32"),
        (
            "[[auth]]\nfrom = [\"10.0.0.0/8\"]\nmethods = [\"password\"]\n",
            ":3:12:",
            "needs a users file",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_socksgate"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains(&format!("{}{at}", path.display())) && err.contains(reason),
            "{err} (wanted {at} {reason})"
        );
        // And `serve` refuses it the same way before listening.
        let out = Command::new(env!("CARGO_BIN_EXE_socksgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("{}{at}", path.display())), "{err}");
    }
}

/// IPv6 clients are keyed by /64: two addresses of one /64 share a session rate, another
/// /64 has its own. In a network namespace of its own (addresses 2001:db8::/64 and
/// 2001:db8:0:1::/64 on its loopback), with the socksgate binary, curl and an HTTP origin.
#[test]
fn ipv6_clients_are_keyed_by_their_64() {
    let Some(tools) = tools::require(
        "ipv6_clients_are_keyed_by_their_64",
        &["unshare", "ip", "curl", "python3"],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "listen = [\"[::1]:1080\"]\n[limits]\nsessions_per_second_per_client = 1\nmax_sessions_per_ip = 5\n",
    )
    .unwrap();
    let script = format!(
        r#"set -e
ip link set lo up
for a in 2001:db8::1 2001:db8::2 2001:db8:0:1::1; do ip -6 addr add $a/64 dev lo nodad; done
cd "{dir}"
echo hello > index.html
/usr/bin/python3 -m http.server --bind ::1 8080 >/dev/null 2>&1 &
origin=$!
"{bin}" serve --config "{config}" >/dev/null 2>serve.log &
proxy=$!
trap 'kill $origin $proxy' EXIT
for i in $(seq 50); do
  curl -s -o /dev/null http://[::1]:8080/ && nc -z ::1 1080 2>/dev/null && break
  sleep 0.1
done
try() {{ curl -sS --max-time 5 --interface $1 --socks5-hostname [::1]:1080 http://[::1]:8080/index.html >/dev/null 2>&1 && echo "$1 ok" || echo "$1 refused"; }}
try 2001:db8::1
try 2001:db8::2
try 2001:db8:0:1::1
"#,
        dir = dir.path().display(),
        bin = env!("CARGO_BIN_EXE_socksgate"),
        config = config.display(),
    );
    let out = tools::run(
        Command::new(&tools[0]).args(["-n", "sh", "-c", &script]),
        b"",
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "2001:db8::1 ok",
            "2001:db8::2 refused",
            "2001:db8:0:1::1 ok"
        ],
        "stderr: {}\nlog: {log}",
        out.stderr_text()
    );
    // One line for the burst, naming the /64.
    assert_eq!(log.matches("refusing connections").count(), 1, "{log}");
    assert!(log.contains("2001:db8::/64"), "{log}");
}

#[test]
fn check_config_shows_the_controls_and_guards_public_listeners() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "").unwrap();
    let path = dir.path().join("c.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_socksgate"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let lan = "users = \"users\"\naddress_family = \"prefer_ipv4\"\n[limits]\nsessions_per_second_per_client = 20\n[[auth]]\nfrom = [\"192.168.1.0/24\"]\nmethods = [\"none\"]\n";
    let (ok, out, err) = check(&format!("listen = [\"127.0.0.1:1080\"]\n{lan}"));
    assert!(ok, "{err}");
    for shown in [
        "address_family = \"prefer_ipv4\"",
        "[[auth]]",
        "from = [\"192.168.1.0/24\"]",
        "sessions_per_second_per_client = 20",
        "client_prefix_ipv6 = 64",
        "# session rates: per client network (IPv4 /32, IPv6 /64): 20 per second, burst 20; per user: no limit",
    ] {
        assert!(out.contains(shown), "{shown} missing:\n{out}");
    }
    // The LAN without a password on a public listener: an open proxy for all socksgate can
    // tell, unless the rules say who may use it.
    let (ok, _, err) = check(&format!("listen = [\"0.0.0.0:1080\"]\n{lan}"));
    assert!(
        !ok && err.contains("open proxy") && err.contains("[[auth]]"),
        "{err}"
    );
    let (ok, _, err) = check(&format!(
        "listen = [\"0.0.0.0:1080\"]\ndefault_action = \"deny\"\n{lan}[[rule]]\naction = \"allow\"\nfrom = [\"192.168.1.0/24\"]\n"
    ));
    assert!(ok, "{err}");
}
