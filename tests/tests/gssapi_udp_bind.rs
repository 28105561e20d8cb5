//! GSS-API (RFC 1961) protection of UDP ASSOCIATE and BIND against real Kerberos: an MIT KDC
//! with a fresh realm started by this file (once, shared by its tests), alice's tickets from
//! `kinit`, socksgate's server with a keytab from `kadmin.local`, and the independent client
//! on python3-gssapi (`gssapi_client.py`, modes `udp`, `udp-tamper` and `bind`): datagrams
//! wrapped one per §5 message to a UDP echo and back, a BIND whose peer connects back, at
//! integrity and confidentiality, bytes checked; a capture on `lo` (Debian's tcpdump) showing
//! that with confidentiality the payload never crosses between client and relay in clear;
//! altered, replayed and unwrapped datagrams dropped and counted while the association goes
//! on.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use socksgate_tests::capture::LoCapture;
use socksgate_tests::kerberos::{KerberosServer, Realm};
use socksgate_tests::origin::UdpEcho;
use socksgate_tests::socksgate::Server;
use socksgate_tests::tmp::TempDir;
use socksgate_tests::{TIMEOUT, tools};

const REALM: &str = "UDPBIND.TEST";

fn realm() -> Option<&'static Realm> {
    static REALM_: OnceLock<Option<Realm>> = OnceLock::new();
    REALM_
        .get_or_init(|| {
            Realm::start(
                "gssapi_udp_bind",
                REALM,
                &["alice"],
                &["rcmd/localhost"],
                &["rcmd/localhost"],
            )
        })
        .as_ref()
}

/// A server granting every level, with a metrics listener.
fn gss_server(realm: &Realm) -> KerberosServer {
    realm
        .server()
        .gssapi("protection = [\"none\", \"integrity\", \"confidentiality\"]")
        .start()
}

/// Runs gssapi_client.py in `mode` at `level` against `server` with alice's tickets, to
/// destination port `dst`; returns its result.
fn python(
    realm: &Realm,
    server: &Server,
    level: u8,
    mode: &str,
    dst: u16,
    payload: &[u8],
) -> serde_json::Value {
    let py = Path::new("/usr/bin/python3");
    assert!(
        py.is_file(),
        "Debian's python3 (with python3-gssapi) is required"
    );
    let dir = TempDir::new();
    let payload_file = dir.write("payload", payload);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gssapi_client.py");
    let mut cmd = Command::new(py);
    cmd.arg(&script)
        .arg(server.addr().port().to_string())
        .arg("rcmd@localhost")
        .arg(level.to_string())
        .arg("rfc")
        .arg(dst.to_string())
        .arg(&payload_file)
        .arg(dir.path())
        .arg(mode)
        .envs(realm.kdc.env())
        .env("KRB5CCNAME", realm.cache("alice"));
    let out = tools::run(&mut cmd, b"", TIMEOUT);
    out.assert_success("gssapi_client.py");
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).expect("result.json"))
        .expect("result json")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A payload no framing could produce by chance, in 1200-octet datagrams.
fn udp_payload(marker: &[u8]) -> Vec<u8> {
    let mut p = marker.repeat(40);
    p.extend(socksgate_tests::body(30_000));
    p
}

#[test]
fn udp_associate_with_wrapped_datagrams_and_the_wire_in_clear_only_with_integrity() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm);
    let echo = UdpEcho::start();
    let marker = b"UDP-SECRET-DATAGRAM-";
    let payload = udp_payload(marker);
    for (level, name) in [(2u8, "confidentiality"), (1, "integrity")] {
        // Everything on lo but the relay's leg to the echo, which is the destination's
        // plaintext by design.
        let capture = LoCapture::start(&format!("udp and not port {}", echo.addr().port()));
        let r = python(realm, &server, level, "udp", echo.addr().port(), &payload);
        let wire = capture.stop_after(payload.len());
        assert_eq!(r["outcome"], "done", "{name}: {r}\n{}", server.log());
        assert_eq!(r["granted"], u64::from(level), "{name}: {r}");
        assert_eq!(r["echo_ok"], true, "{name}: {r}");
        // The capture saw the datagrams: they are 1200 octets of payload and more each.
        assert!(
            wire.len() > payload.len(),
            "{name}: {} octets captured",
            wire.len()
        );
        // Confidentiality: never in clear between client and relay; integrity: in clear
        // (the control that shows the search works).
        assert_eq!(
            contains(&wire, marker),
            level == 1,
            "{name}: payload in clear"
        );
    }
    assert!(echo.received() >= 2 * payload.len().div_ceil(1200));
    // Nothing was dropped.
    for cause in ["integrity", "sequence", "protocol"] {
        server.wait_metric(&format!(
            "socksgate_gssapi_datagrams_dropped_total{{cause=\"{cause}\"}} 0"
        ));
    }
    let log = server.log();
    assert!(log.contains("udp associate ended"), "{log}");
    assert!(!log.contains("not supported with GSS-API"), "{log}");
}

#[test]
fn bad_datagrams_are_dropped_and_counted_while_the_association_goes_on() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm);
    let echo = UdpEcho::start();
    let payload = udp_payload(b"TAMPER-TEST-");
    // Four bad datagrams, each beside a good one: a flipped bit in the token, a replay of a
    // datagram already relayed, MTYP 2 instead of 3, an unwrapped SOCKS datagram.
    let r = python(
        realm,
        &server,
        2,
        "udp-tamper",
        echo.addr().port(),
        &payload,
    );
    assert_eq!(r["outcome"], "done", "{r}\n{}", server.log());
    assert_eq!(r["bad_answered"], 0, "{r}");
    assert_eq!(r["echo_ok"], true, "every good datagram echoed: {r}");
    server.wait_metric("socksgate_gssapi_datagrams_dropped_total{cause=\"integrity\"} 1");
    server.wait_metric("socksgate_gssapi_datagrams_dropped_total{cause=\"sequence\"} 1");
    server.wait_metric("socksgate_gssapi_datagrams_dropped_total{cause=\"protocol\"} 2");
    // The session itself did not fail.
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"integrity\"} 0");
    // One line for the burst, the first drop's; its size when the association ended.
    let log = server.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("protected datagram dropped"))
        .count();
    assert_eq!(lines, 1, "{log}");
    assert!(log.contains("integrity check failed"), "{log}");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !server
        .log()
        .contains("a burst of protected datagrams dropped")
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(server.log().contains("dropped=4"), "{}", server.log());
}

#[test]
fn bind_with_both_replies_and_the_relay_protected() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm);
    let mut payload = b"BIND-SECRET-".repeat(100);
    payload.extend(socksgate_tests::body(100_000));
    for (level, name) in [(2u8, "confidentiality"), (1, "integrity")] {
        let r = python(realm, &server, level, "bind", 0, &payload);
        assert_eq!(r["outcome"], "done", "{name}: {r}\n{}", server.log());
        assert_eq!(r["granted"], u64::from(level), "{name}: {r}");
        assert_eq!(r["echo_ok"], true, "{name}: bytes differ: {r}");
    }
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 1");
    // Both sessions' access records: BIND, alice, the bytes each way.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let log = server.log();
        let records = log
            .lines()
            .filter(|l| {
                l.contains("bind")
                    && l.contains("alice@UDPBIND.TEST")
                    && l.contains(&payload.len().to_string())
            })
            .count();
        if records >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
