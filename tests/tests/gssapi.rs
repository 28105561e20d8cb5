//! GSS-API (RFC 1961) against real Kerberos: an MIT KDC with a fresh realm started by this
//! file (once, shared by its tests), users with tickets from `kinit`, socksgate's server with a
//! keytab from `kadmin.local`; clients are Debian's curl (`--socks5-gssapi`,
//! `--socks5-gssapi-nec`, `--socks5-gssapi-service`: 7.88.1 and bookworm-backports' 8.14.1,
//! which both refuse a proxy that selects GSS-API) and an independent client on
//! python3-gssapi (`gssapi_client.py`: the RFC's framing, integrity and confidentiality).
//! Every byte is checked; with confidentiality the bytes on the wire are searched for the
//! payload; failures are checked by their outcome, log line and metric.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use socksgate_tests::kerberos::{KerberosServer, Realm};
use socksgate_tests::origin::{self, TcpService};
use socksgate_tests::socksgate::Server;
use socksgate_tests::tmp::TempDir;
use socksgate_tests::tools::{BOOKWORM_BACKPORTS_CURL, TRIXIE_BACKPORTS_CURL};
use socksgate_tests::{TIMEOUT, assert_same_bytes, body, tools};

/// The realm every test here uses: users alice and bob, the services `rcmd/localhost`
/// (curl's default name) and `socks/localhost` in the servers' keytab, and `other/localhost`,
/// which the KDC knows but the keytab does not hold.
fn realm() -> Option<&'static Realm> {
    static REALM: OnceLock<Option<Realm>> = OnceLock::new();
    REALM
        .get_or_init(|| {
            Realm::start(
                "gssapi",
                "SOCKSGATE.TEST",
                &["alice", "bob"],
                &["rcmd/localhost", "socks/localhost", "other/localhost"],
                &["rcmd/localhost", "socks/localhost"],
            )
        })
        .as_ref()
}

/// `[gssapi]` lines granting every level.
const EVERY_LEVEL: &str = "protection = [\"none\", \"integrity\", \"confidentiality\"]";

/// A server of the realm accepting GSS-API with `gssapi` lines, and `extra` config.
fn gss_server(realm: &Realm, gssapi: &str, extra: &str) -> KerberosServer {
    realm.server().gssapi(gssapi).config(extra).start()
}

/// curl through `server` with GSS-API flags `flags`, with `ccache`; (exit code, body,
/// stderr).
fn curl(
    realm: &Realm,
    server: &Server,
    ccache: &str,
    flags: &[&str],
    origin: &TcpService,
    len: usize,
) -> (i32, Vec<u8>, String) {
    let curl = tools::require("gssapi curl", &["curl"])
        .expect("curl")
        .remove(0);
    curl_run(
        Command::new(curl),
        realm,
        server,
        ccache,
        flags,
        origin,
        len,
    )
}

/// Like [`curl`], with another Debian suite's curl ([`tools::debian_curl`]); stderr also
/// holds MIT Kerberos' trace.
fn debian_curl(
    which: &tools::DebianCurl,
    realm: &Realm,
    server: &Server,
    ccache: &str,
    flags: &[&str],
    origin: &TcpService,
    len: usize,
) -> (i32, Vec<u8>, String) {
    let mut cmd = tools::debian_curl("gssapi curl", which);
    // MIT's trace on stderr says which service principal curl asked for.
    cmd.env("KRB5_TRACE", "/dev/stderr");
    curl_run(cmd, realm, server, ccache, flags, origin, len)
}

/// Runs `cmd` (a curl) as [`curl`] describes.
fn curl_run(
    mut cmd: Command,
    realm: &Realm,
    server: &Server,
    ccache: &str,
    flags: &[&str],
    origin: &TcpService,
    len: usize,
) -> (i32, Vec<u8>, String) {
    let url = format!(
        "http://127.0.0.1:{}{}",
        origin.port(),
        origin::http_path(len)
    );
    let proxy = format!("socks5h://localhost:{}", server.addr().port());
    cmd.args([
        "-sS",
        "--fail",
        "--noproxy",
        "",
        "--max-time",
        "60",
        "--proxy",
        &proxy,
    ])
    .args(flags)
    .arg(&url)
    .envs(realm.kdc.env())
    .env("KRB5CCNAME", ccache);
    let out = tools::run(&mut cmd, b"", TIMEOUT);
    (
        out.status.code().unwrap_or(-1),
        out.stdout.clone(),
        out.stderr_text(),
    )
}

/// What Debian 12's curl (7.88.1) prints when a proxy selects GSS-API: it offers method 1 in
/// every greeting, but its SOCKS code then refuses the choice before any token when the
/// method reply was not readable at its first read (it forgets, on the next call, that it
/// offered GSS-API). bookworm-backports' 8.14.1 has the same code.
const CURL_REFUSES_GSSAPI: &str = "SOCKS5 GSSAPI per-message authentication is not supported.";
/// The same curl's other way of failing a proxy that selects GSS-API: when the reply was
/// readable at once, the whole exchange runs and the code then falls through to this error.
const CURL_GIVES_UP_AFTER_GSSAPI: &str = "Undocumented SOCKS5 mode attempted to be used by server.";
/// And a third, seen when the exchange gets as far as the protection level and the server
/// grants none of what curl asks for (its default here, no `protection = ["none"]`).
const CURL_NO_PROTECTION_ANSWER: &str = "Failed to receive GSS-API encryption response.";

#[test]
fn debian_curl_refuses_the_gssapi_method_it_offers() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, "protection = [\"none\"]", "");
    let origin = origin::http_origin();
    for flags in [
        &["--socks5-gssapi"][..],
        &["--socks5-gssapi-nec"],
        &["--socks5-gssapi", "--socks5-gssapi-service", "socks"],
    ] {
        let (code, got, err) = curl(realm, &server, realm.cache("alice"), flags, &origin, 1000);
        assert!(got.is_empty(), "{flags:?}");
        // Exit 97: CURLE_PROXY; if a newer curl gets further, this test says so.
        assert_eq!(code, 97, "{flags:?}: {err}\nserver:\n{}", server.log());
        // Seen from the same build: usually the refusal, sometimes (after the GSS-API exchange)
        // "Undocumented SOCKS5 mode attempted to be used by server."
        assert!(
            err.contains(CURL_REFUSES_GSSAPI) || err.contains(CURL_GIVES_UP_AFTER_GSSAPI),
            "{flags:?}: {err}"
        );
    }
    // The server saw a client that left after the method selection.
    server.wait_log(&["handshake_failed", "client closed during handshake"]);
}

#[test]
fn curl_with_a_password_where_the_password_is_preferred() {
    let Some(realm) = realm() else { return };
    // Both methods accepted: curl with credentials offers 0, 1 and 2; `prefer` decides.
    let start = |prefer: &str| {
        realm
            .server()
            .user("carol", "carol-pw")
            .gssapi(&format!("prefer = \"{prefer}\""))
            .start()
    };
    let origin = origin::http_origin();
    let server = start("password");
    let flags = ["--proxy-user", "carol:carol-pw"];
    let (code, got, err) = curl(
        realm,
        &server,
        realm.cache("alice"),
        &flags,
        &origin,
        100_000,
    );
    assert_eq!(code, 0, "curl: {err}\nserver:\n{}", server.log());
    assert_same_bytes(
        &got,
        &body(100_000),
        "curl with a password, password preferred",
    );
    server.wait_log(&["user=carol", "succeeded"]);
    let server = start("gssapi");
    let (code, _, err) = curl(realm, &server, realm.cache("alice"), &flags, &origin, 1000);
    assert_eq!(
        code,
        97,
        "GSS-API preferred: {err}\nserver:\n{}",
        server.log()
    );
    // Which of its failures curl reaches depends on how the server's bytes arrive.
    assert!(
        [
            CURL_REFUSES_GSSAPI,
            CURL_GIVES_UP_AFTER_GSSAPI,
            CURL_NO_PROTECTION_ANSWER
        ]
        .iter()
        .any(|m| err.contains(m)),
        "{err}\nserver:\n{}",
        server.log()
    );
}

/// What curl 8.21.0 (and every curl since its SOCKS rework and pull request 18712) prints when
/// the server grants integrity or confidentiality: it asks for confidentiality but has no
/// per-message layer.
const CURL_NO_PROTECTION_LAYER: &str = "SOCKS5 GSS-API protection not yet implemented.";

/// MIT's trace line for the ticket curl uses, to `rcmd/localhost`.
const ASKS_FOR_RCMD: &str = "alice@SOCKSGATE.TEST -> rcmd/localhost@SOCKSGATE.TEST";

/// Debian trixie-backports' curl (8.17.0 or later; 8.21.0 when written) through the server's GSS-API method with
/// `protection = ["none"]`: bytes checked, the principal in the access record, the level
/// counted. `--socks5-gssapi-service` has no effect in this curl: it asks for `rcmd/localhost`
/// whatever the flag names (MIT's trace), so a service outside the keytab still gets through.
#[test]
fn trixie_backports_curl_through_gssapi() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, "protection = [\"none\"]", "");
    let origin = origin::http_origin();
    for (n, flags) in [
        &["--socks5-gssapi"][..],
        &["--socks5-gssapi", "--socks5-gssapi-service", "socks"],
        &[
            "--socks5-gssapi",
            "--socks5-gssapi-service",
            "other/localhost",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let (code, got, err) = debian_curl(
            &TRIXIE_BACKPORTS_CURL,
            realm,
            &server,
            realm.cache("alice"),
            flags,
            &origin,
            100_000,
        );
        assert_eq!(code, 0, "{flags:?}: {err}\nserver:\n{}", server.log());
        assert_same_bytes(
            &got,
            &body(100_000),
            &format!("trixie-backports curl {flags:?}"),
        );
        assert!(err.contains(ASKS_FOR_RCMD), "{flags:?}: {err}");
        assert!(
            !err.contains("socks/localhost") && !err.contains("other/localhost"),
            "{flags:?}: this curl now honours --socks5-gssapi-service: {err}"
        );
        server.wait_metric(&format!(
            "socksgate_gssapi_sessions_total{{protection=\"none\"}} {}",
            n + 1
        ));
    }
    let line = server.wait_log(&["user=alice@SOCKSGATE.TEST", "outcome=\"succeeded\""]);
    assert!(line.contains("command=connect"), "{line}");
}

/// The NEC form (`--socks5-gssapi-nec`, the level in clear): through with `accept_nec = true`;
/// with `accept_nec = false` the server refuses it and curl says it got no answer.
#[test]
fn trixie_backports_curl_nec_form() {
    let Some(realm) = realm() else { return };
    let origin = origin::http_origin();
    let flags = ["--socks5-gssapi-nec"];
    let server = gss_server(realm, "protection = [\"none\"]\naccept_nec = true", "");
    let (code, got, err) = debian_curl(
        &TRIXIE_BACKPORTS_CURL,
        realm,
        &server,
        realm.cache("bob"),
        &flags,
        &origin,
        100_000,
    );
    assert_eq!(code, 0, "{err}\nserver:\n{}", server.log());
    assert_same_bytes(
        &got,
        &body(100_000),
        "trixie-backports curl --socks5-gssapi-nec",
    );
    server.wait_log(&["user=bob@SOCKSGATE.TEST", "outcome=\"succeeded\""]);
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"none\"} 1");

    let server = gss_server(realm, "protection = [\"none\"]\naccept_nec = false", "");
    let (code, got, err) = debian_curl(
        &TRIXIE_BACKPORTS_CURL,
        realm,
        &server,
        realm.cache("bob"),
        &flags,
        &origin,
        1000,
    );
    assert!(got.is_empty());
    assert_eq!(code, 97, "{err}\nserver:\n{}", server.log());
    assert!(err.contains(CURL_NO_PROTECTION_ANSWER), "{err}");
    server.wait_log(&["GSS-API: unprotected (NEC) protection negotiation refused"]);
}

/// A server granting integrity or confidentiality (curl asks for confidentiality; the server
/// grants the strongest listed level not above it): curl stops with its "not yet implemented"
/// message, after sending its request unwrapped, which the server refuses as a malformed
/// GSS-API message. No byte reaches the origin.
#[test]
fn trixie_backports_curl_where_protection_is_granted() {
    let Some(realm) = realm() else { return };
    let origin = origin::http_origin();
    for (gssapi, flags) in [
        (EVERY_LEVEL, &["--socks5-gssapi"][..]),
        ("protection = [\"integrity\"]", &["--socks5-gssapi"]),
        (
            "protection = [\"integrity\", \"confidentiality\"]\naccept_nec = true",
            &["--socks5-gssapi-nec"],
        ),
    ] {
        let server = gss_server(realm, gssapi, "");
        let (code, got, err) = debian_curl(
            &TRIXIE_BACKPORTS_CURL,
            realm,
            &server,
            realm.cache("alice"),
            flags,
            &origin,
            1000,
        );
        assert!(got.is_empty(), "{gssapi} {flags:?}");
        assert_eq!(
            code,
            97,
            "{gssapi} {flags:?}: {err}\nserver:\n{}",
            server.log()
        );
        assert!(
            err.contains(CURL_NO_PROTECTION_LAYER),
            "{gssapi} {flags:?}: {err}"
        );
        server.wait_log(&["malformed GSS-API message", "unexpected version octet 0x05"]);
        assert!(!server.log().contains("succeeded"), "{}", server.log());
    }
}

/// What bookworm-backports' curl 8.14.1 prints, now and then, when it reached the exchange: it
/// sent its context token and waited until its time limit, although the server's answer token
/// had arrived within milliseconds (seen in a loopback capture). The server's record of that
/// session ends when curl closes, with no GSS-API error of its own.
const CURL_NO_AUTHENTICATION_ANSWER: &str = "Failed to receive GSS-API authentication response.";

/// Debian bookworm-backports' curl 8.14.1 (also Debian 13's version) has the same SOCKS5
/// state machine as 7.88.1 and fails the same ways, whatever the server grants and with every
/// GSS-API flag: the refusal when the method reply is not yet readable on its first read (its
/// permission to use GSS-API is set only in the step that sends the greeting), otherwise, after
/// a complete exchange, the "undocumented mode" error (no step follows a successful exchange),
/// or, where the server grants no "none", the missing encryption response; and now and then
/// it waits for an answer to its context token until its time limit (10 s here).
#[test]
fn bookworm_backports_curl_refuses_gssapi_like_debian_12() {
    let Some(realm) = realm() else { return };
    let origin = origin::http_origin();
    let none = "protection = [\"none\"]\naccept_nec = true";
    let protected = "protection = [\"integrity\", \"confidentiality\"]\naccept_nec = true";
    for gssapi in [none, protected] {
        let server = gss_server(realm, gssapi, "");
        for flags in [
            &["--socks5-gssapi"][..],
            &["--socks5-gssapi-nec"],
            &["--socks5-gssapi", "--socks5-gssapi-service", "socks"],
        ] {
            // A shorter limit than the harness's (the last --max-time counts).
            let flags = [flags, &["--max-time", "10"]].concat();
            let (code, got, err) = debian_curl(
                &BOOKWORM_BACKPORTS_CURL,
                realm,
                &server,
                realm.cache("alice"),
                &flags,
                &origin,
                1000,
            );
            assert!(got.is_empty(), "{gssapi} {flags:?}");
            // Exit 97: CURLE_PROXY; a curl that gets further fails this test.
            assert_eq!(
                code,
                97,
                "{gssapi} {flags:?}: {err}\nserver:\n{}",
                server.log()
            );
            assert!(
                [
                    CURL_REFUSES_GSSAPI,
                    CURL_GIVES_UP_AFTER_GSSAPI,
                    CURL_NO_PROTECTION_ANSWER,
                    CURL_NO_AUTHENTICATION_ANSWER
                ]
                .iter()
                .any(|m| err.contains(m)),
                "{gssapi} {flags:?}: {err}\nserver:\n{}",
                server.log()
            );
        }
        // No session ever reaches a request.
        assert!(!server.log().contains("succeeded"), "{}", server.log());
    }
}

/// One run of gssapi_client.py, the independent client on python3-gssapi: alice's tickets
/// for `rcmd@localhost`, confidentiality (2) asked in the RFC's protected form, `x` echoed,
/// unless a case says otherwise.
#[derive(Clone, Copy)]
struct Py<'a> {
    ccache: &'a str,
    service: &'a str,
    level: u8,
    /// `rfc` or `nec`.
    form: &'a str,
    payload: &'a [u8],
    /// `normal`, or the bad input to send (`garble`, `truncate`, `stall`, `oversize`,
    /// `expire`, `tamper`).
    mode: &'a str,
    /// For `expire`: seconds between making the context token and sending it.
    wait: &'a str,
}

impl<'a> Py<'a> {
    fn new(realm: &'a Realm) -> Self {
        Self {
            ccache: realm.cache("alice"),
            service: "rcmd@localhost",
            level: 2,
            form: "rfc",
            payload: b"x",
            mode: "normal",
            wait: "0",
        }
    }

    /// [`Self::new`] with the client's `mode`.
    fn with_mode(realm: &'a Realm, mode: &'a str) -> Self {
        Self {
            mode,
            ..Self::new(realm)
        }
    }

    /// Runs it through `server` to the echo service on `dst`; returns (result JSON, wire
    /// bytes sent, wire bytes received).
    fn run(
        &self,
        realm: &Realm,
        server: &Server,
        dst: u16,
    ) -> (serde_json::Value, Vec<u8>, Vec<u8>) {
        let py = Path::new("/usr/bin/python3");
        assert!(
            py.is_file(),
            "Debian's python3 (with python3-gssapi) is required"
        );
        let dir = TempDir::new();
        let payload_file = dir.write("payload", self.payload);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gssapi_client.py");
        let mut cmd = Command::new(py);
        cmd.arg(&script)
            .arg(server.addr().port().to_string())
            .arg(self.service)
            .arg(self.level.to_string())
            .arg(self.form)
            .arg(dst.to_string())
            .arg(&payload_file)
            .arg(dir.path())
            .arg(self.mode)
            .envs(realm.kdc.env())
            .env("KRB5CCNAME", self.ccache)
            .env("GSSAPI_CLIENT_WAIT", self.wait);
        let out = tools::run(&mut cmd, b"", TIMEOUT);
        out.assert_success("gssapi_client.py");
        let result: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("result.json")).expect("result.json"))
                .expect("result json");
        let sent = std::fs::read(dir.join("wire-sent")).unwrap_or_default();
        let received = std::fs::read(dir.join("wire-received")).unwrap_or_default();
        (result, sent, received)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A payload no framing could produce by chance.
fn secret_payload() -> Vec<u8> {
    let mut p = b"TOP-SECRET-PAYLOAD-".repeat(2000);
    p.extend(body(200_000));
    p
}

#[test]
fn python_client_integrity_and_confidentiality() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    let payload = secret_payload();
    for (level, form, name) in [
        (2u8, "rfc", "confidentiality"),
        (1, "rfc", "integrity"),
        (2, "nec", "confidentiality"),
        (0, "rfc", "none"),
    ] {
        let (r, sent, received) = Py {
            level,
            form,
            payload: &payload,
            ..Py::new(realm)
        }
        .run(realm, &server, echo.port());
        assert_eq!(r["outcome"], "done", "{name}/{form}: {r}\n{}", server.log());
        assert_eq!(r["granted"], u64::from(level), "{name}/{form}: {r}");
        assert_eq!(r["echo_ok"], true, "{name}/{form}: echo differs");
        let marker = b"TOP-SECRET-PAYLOAD-";
        let seen = contains(&sent, marker) || contains(&received, marker);
        // Confidentiality: the payload never appears in clear on the wire, either way.
        // Integrity and none: it does (the control that shows the search works).
        assert_eq!(
            seen,
            level != 2,
            "{name}/{form}: payload seen in clear: {seen}"
        );
    }
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 2");
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"integrity\"} 1");
    // The access record names the principal with the bytes relayed; the per-user metrics
    // count its sessions.
    server.wait_log(&["alice@SOCKSGATE.TEST", &format!("{}", payload.len())]);
    server.wait_metric("socksgate_user_sessions_total{user=\"alice@SOCKSGATE.TEST\"} 4");
}

#[test]
fn python_client_grant_follows_the_policy() {
    let Some(realm) = realm() else { return };
    // Only integrity granted: a request for confidentiality gets integrity (the strongest
    // allowed not above it); a request for none is refused.
    let server = gss_server(realm, "protection = [\"integrity\"]", "");
    let echo = origin::echo();
    let (r, _, _) = Py {
        payload: b"hello",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(
        (r["outcome"].as_str(), r["granted"].as_u64()),
        (Some("done"), Some(1)),
        "{r}"
    );
    let (r, _, _) = Py {
        level: 0,
        payload: b"hello",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_ne!(r["outcome"], "done", "{r}");
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"protocol\"} 1");
    server.wait_log(&["GSS-API: protection level none not acceptable"]);
}

#[test]
fn python_client_bad_input_closes_only_that_session() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    // A garbled context token: the abort message, one log line, a metric.
    let (r, _, _) = Py::with_mode(realm, "garble").run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "aborted", "{r}");
    server.wait_log(&["defective token", "auth_failed"]);
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"defective_token\"} 1");
    // A token header announcing 65,535 octets, then EOF: closed during the handshake.
    let (r, _, _) = Py::with_mode(realm, "truncate").run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "closed", "{r}");
    server.wait_log(&["client closed during handshake"]);
    // Counted as a failed handshake (the garbled token before it was one too).
    server.wait_metric("socksgate_handshake_failures_total 2");
    // A data message with a flipped bit after confidentiality was agreed: integrity.
    let (r, _, _) = Py {
        payload: b"tampered payload",
        mode: "tamper",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "closed", "{r}");
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"integrity\"} 1");
    server.wait_log(&["integrity check failed"]);
    // A ticket for a service the keytab does not hold.
    let (r, _, _) = Py {
        service: "other@localhost",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "aborted", "{r}");
    server.wait_log(&["ticket for another service principal"]);
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"wrong_service\"} 1");
    // No ticket at all: the client's library gives up before sending a token.
    let (r, _, _) = Py {
        ccache: &realm.kdc.empty_cache("nobody"),
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "gssapi error", "{r}");
    // Other sessions are unaffected.
    let (r, _, _) = Py {
        payload: b"still fine",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(
        (r["outcome"].as_str(), r["echo_ok"].as_bool()),
        (Some("done"), Some(true)),
        "{r}"
    );
}

/// `[libdefaults] clockskew = 1` in front of the realm's `krb5.conf`, for a server that is to
/// see an expired ticket within seconds (the default tolerance is five minutes).
fn one_second_skew(realm: &Realm) -> String {
    let skew = realm.kdc.dir().join("skew-1s.conf");
    std::fs::write(&skew, "[libdefaults]\n clockskew = 1\n").expect("skew config");
    format!("{}:{}", skew.display(), realm.kdc.krb5_config().display())
}

#[test]
fn python_client_expired_ticket_is_refused_by_the_server() {
    let Some(realm) = realm() else { return };
    let server = realm
        .server()
        .gssapi(EVERY_LEVEL)
        .env("KRB5_CONFIG", &one_second_skew(realm))
        .start();
    let echo = origin::echo();
    // Tickets for 4 s: the client makes its context token at once (its library refuses an
    // expired ticket), and sends it 6 s later, past the end time and the 1 s tolerance.
    let cache = realm.kdc.kinit("alice", "alice-pw", "expiring", "4s");
    let (r, _, _) = Py {
        ccache: &cache,
        mode: "expire",
        wait: "6",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "aborted", "{r}\n{}", server.log());
    // MIT's acceptor checks the ticket's end time before the authenticator's age, so the
    // library's own words name the ticket.
    server.wait_log(&["ticket or context expired", "Ticket expired", "auth_failed"]);
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"expired\"} 1");
    // A fresh ticket still works.
    let (r, _, _) = Py {
        payload: b"fresh",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "done", "{r}");
}

#[test]
fn python_client_ticket_from_another_realm_is_refused() {
    let Some(realm) = realm() else { return };
    // A second KDC: OTHER.TEST has its own alice and its own rcmd/localhost, whose key the
    // server's keytab (SOCKSGATE.TEST's) does not hold.
    let Some(other) = Realm::start(
        "gssapi",
        "OTHER.TEST",
        &["alice"],
        &["rcmd/localhost"],
        &["rcmd/localhost"],
    ) else {
        return;
    };
    let server = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    let (r, _, _) = Py {
        ccache: other.cache("alice"),
        ..Py::new(&other)
    }
    .run(&other, &server, echo.port());
    assert_eq!(r["outcome"], "aborted", "{r}\n{}", server.log());
    let line = server.wait_log(&["ticket for another service principal", "auth_failed"]);
    assert!(
        line.contains("OTHER.TEST"),
        "the log names the realm: {line}"
    );
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"wrong_service\"} 1");
}

#[test]
fn python_client_oversized_and_stalled_tokens() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "[timeouts]\nhandshake = 2\n");
    let echo = origin::echo();
    // A message of the longest length the framing allows, all garbage: read whole, refused
    // as a defective token with the abort message.
    let (r, _, _) = Py::with_mode(realm, "oversize").run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "aborted", "{r}\n{}", server.log());
    server.wait_log(&["defective token", "auth_failed"]);
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"defective_token\"} 1");
    // A length announcing more than ever comes, the connection left open: the handshake
    // timeout closes it.
    let (r, _, _) = Py::with_mode(realm, "stall").run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "closed", "{r}");
    server.wait_log(&["handshake timed out"]);
    // A failed handshake (the oversized token before it was one too).
    server.wait_metric("socksgate_handshake_failures_total 2");
    let (r, _, _) = Py {
        payload: b"after them",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "done", "{r}");
}

/// A client at `source` offering only GSS-API whose context token is garbage; returns
/// whether the server answered with the abort message, and when that answer came.
fn garbled_login_from(server: &Server, source: std::net::Ipv4Addr) -> (bool, std::time::Instant) {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&fd, &std::net::SocketAddrV4::new(source, 0)).expect("bind source");
    connect(&fd, &server.addr()).expect("connect");
    let mut s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.write_all(b"\x05\x01\x01").expect("greeting");
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).expect("method choice");
    assert_eq!(choice, [5, 1]);
    let token = b"not a kerberos token";
    let mut message = vec![1, 1, 0, token.len() as u8];
    message.extend_from_slice(token);
    s.write_all(&message).expect("token");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    (answer == [1, 0xff], std::time::Instant::now())
}

#[test]
fn gssapi_failures_are_throttled_per_client_address() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let mut answered = Vec::new();
    for _ in 0..5 {
        let (aborted, at) = garbled_login_from(&server, attacker);
        assert!(aborted, "{}", server.log());
        answered.push(at);
    }
    // Failures 1 and 2 cost nothing extra; then 100, 200 and 400 ms between checks. Measured
    // between the answers (each a moment after its check), which a slow client only spaces
    // further apart.
    let gaps: Vec<_> = answered.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = std::time::Duration::from_millis;
    assert!(
        gaps[1] >= ms(90) && gaps[2] >= ms(190) && gaps[3] >= ms(390),
        "{gaps:?}"
    );
    server.wait_metric("socksgate_gssapi_failures_total{cause=\"defective_token\"} 5");
    // Each check that had to wait is counted (all three, unless this client was itself
    // slower than a wait).
    let delayed = || -> u64 {
        server
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("socksgate_auth_throttled_total{action=\"delayed\"} "))
            .and_then(|v| v.parse().ok())
            .expect("the delayed counter")
    };
    let delayed_by_then = delayed();
    assert!((1..=3).contains(&delayed_by_then), "{}", server.metrics());
    // Another address is not slowed down: its login is not delayed.
    let (r, _, _) = Py {
        payload: b"another client",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "done", "{r}");
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 1");
    assert_eq!(delayed(), delayed_by_then, "{}", server.metrics());
}

#[test]
fn rules_match_the_principal() {
    let Some(realm) = realm() else { return };
    let server = gss_server(
        realm,
        EVERY_LEVEL,
        "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nusers = [\"alice@SOCKSGATE.TEST\"]\n",
    );
    let echo = origin::echo();
    let (r, _, _) = Py {
        payload: b"alice's bytes",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(
        (r["outcome"].as_str(), r["echo_ok"].as_bool()),
        (Some("done"), Some(true)),
        "{r}"
    );
    let (r, _, _) = Py {
        ccache: realm.cache("bob"),
        payload: b"bob's bytes",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    // REP 2 (not allowed by ruleset), itself sent protected.
    assert_eq!(r["outcome"], "reply 2", "{r}");
    server.wait_log(&["bob@SOCKSGATE.TEST", "denied"]);
}

#[test]
fn per_user_session_limit_counts_the_principal() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "[limits]\nmax_sessions_per_user = 1\n");
    let echo = origin::echo();
    // alice holds one session open: socksgate connect with its stdin kept open, a byte
    // echoed through it so that the session is known to be relaying.
    let url = format!(
        "socks5h+gssapi://localhost:{}?protection=integrity",
        server.addr().port()
    );
    let mut held = socksgate_tests::socksgate::command()
        .args([
            "connect",
            "--proxy",
            &url,
            "127.0.0.1",
            &echo.port().to_string(),
        ])
        .envs(realm.kdc.env())
        .env("KRB5CCNAME", realm.cache("alice"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("socksgate connect");
    let mut stdin = held.stdin.take().expect("stdin");
    let mut stdout = held.stdout.take().expect("stdout");
    stdin.write_all(b"!").expect("write");
    let mut echoed = [0u8; 1];
    stdout
        .read_exact(&mut echoed)
        .expect("the held session's echo");
    assert_eq!(&echoed, b"!");
    // A second session of alice's is over her limit (REP 1, sent protected); bob's is not.
    let (r, _, _) = Py::new(realm).run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "reply 1", "{r}\n{}", server.log());
    server.wait_log(&["alice@SOCKSGATE.TEST", "limited"]);
    let (r, _, _) = Py {
        ccache: realm.cache("bob"),
        payload: b"bob's bytes",
        ..Py::new(realm)
    }
    .run(realm, &server, echo.port());
    assert_eq!(r["outcome"], "done", "{r}");
    // Once alice's first session ends, she gets another.
    drop(stdin);
    let _ = stdout.read_to_end(&mut Vec::new());
    assert!(held.wait().expect("wait").success());
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (r, _, _) = Py::new(realm).run(realm, &server, echo.port());
        if r["outcome"] == "done" {
            break;
        }
        // The held session's slot is freed a moment after its client has gone.
        assert!(std::time::Instant::now() < deadline, "{r}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `socksgate connect --proxy URL 127.0.0.1 PORT` as ssh's ProxyCommand runs it: `payload`
/// on stdin, the destination's bytes on stdout, alice's tickets.
fn socksgate_connect(realm: &Realm, url: &str, port: u16, payload: &[u8]) -> tools::Output {
    tools::run(
        socksgate_tests::socksgate::command()
            .args(["connect", "--proxy", url, "127.0.0.1", &port.to_string()])
            .envs(realm.kdc.env())
            .env("KRB5CCNAME", realm.cache("alice")),
        payload,
        TIMEOUT,
    )
}

/// What a [`tap`] saw: (client → server, server → client).
type Wire = std::thread::JoinHandle<(Vec<u8>, Vec<u8>)>;

/// A TCP forwarder to `to` for one connection that records the bytes each way: (its port,
/// a handle giving (client → server, server → client) once the connection ends).
fn tap(to: std::net::SocketAddr) -> (u16, Wire) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("tap listener");
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (client, _) = listener.accept().expect("tap accept");
        let server = std::net::TcpStream::connect(to).expect("tap connect");
        let copy = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
            std::thread::spawn(move || {
                let (mut seen, mut buf) = (Vec::new(), [0u8; 16 * 1024]);
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
                seen
            })
        };
        let up = copy(client.try_clone().unwrap(), server.try_clone().unwrap());
        let down = copy(server, client);
        (up.join().unwrap(), down.join().unwrap())
    });
    (port, handle)
}

#[test]
fn socksgate_client_at_each_level_as_a_proxy_command() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    let payload = secret_payload();
    for (query, level) in [
        (
            "?service=rcmd&protection=confidentiality",
            "confidentiality",
        ),
        ("?protection=integrity", "integrity"),
        ("?protection=none", "none"),
        // The default: rcmd, confidentiality.
        ("", "confidentiality"),
    ] {
        let (port, wire) = tap(server.addr());
        let url = format!("socks5h+gssapi://localhost:{port}{query}");
        let out = socksgate_connect(realm, &url, echo.port(), &payload);
        out.assert_success(&format!("{url}\nserver:\n{}", server.log()));
        // Sent through the protected stream and echoed back through it.
        assert_same_bytes(&out.stdout, &payload, level);
        // Confidentiality: never in clear on the wire, either way; the other levels are
        // the control that shows the search works.
        let (sent, received) = wire.join().expect("tap");
        let marker = b"TOP-SECRET-PAYLOAD-";
        assert_eq!(
            contains(&sent, marker),
            level != "confidentiality",
            "{level}: sent"
        );
        assert_eq!(
            contains(&received, marker),
            level != "confidentiality",
            "{level}: received"
        );
    }
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 2");
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"integrity\"} 1");
    server.wait_metric("socksgate_gssapi_sessions_total{protection=\"none\"} 1");
    server.wait_log(&["alice@SOCKSGATE.TEST", &format!("{}", payload.len())]);
}

#[test]
fn socksgate_client_refuses_a_weaker_level_than_asked() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, "protection = [\"integrity\"]", "");
    let echo = origin::echo();
    let url = format!(
        "socks5h+gssapi://localhost:{}?protection=confidentiality",
        server.addr().port()
    );
    let out = socksgate_connect(realm, &url, echo.port(), b"never sent");
    assert!(!out.status.success(), "{url}: succeeded");
    assert!(out.stdout.is_empty());
    let err = out.stderr_text();
    assert!(
        err.contains("authentication") && err.contains("protection level integrity not acceptable"),
        "{err}"
    );
}

#[test]
fn socksgate_client_without_a_ticket_says_so() {
    let Some(realm) = realm() else { return };
    let server = gss_server(realm, "", "");
    let echo = origin::echo();
    let url = format!("socks5h+gssapi://localhost:{}", server.addr().port());
    let out = tools::run(
        socksgate_tests::socksgate::command()
            .args([
                "connect",
                "--proxy",
                &url,
                "127.0.0.1",
                &echo.port().to_string(),
            ])
            .envs(realm.kdc.env())
            .env("KRB5CCNAME", realm.kdc.empty_cache("client-none")),
        b"",
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(err.contains("GSS-API"), "{err}");
}

/// client → A → (GSS-API at `level`) → B → echo: A chains to B with the server's own
/// tickets (alice's cache in its environment), through a [`tap`] that records the A–B wire.
/// With `client_level`, the client authenticates to A with GSS-API at that level too, so A
/// unwraps what the client sent and wraps it again for B.
#[test]
fn upstream_at_each_protection_level() {
    let Some(realm) = realm() else { return };
    let b = gss_server(realm, EVERY_LEVEL, "");
    let echo = origin::echo();
    let payload = secret_payload();
    let marker = b"TOP-SECRET-PAYLOAD-";
    for (client_level, level) in [
        (None, "confidentiality"),
        (None, "integrity"),
        (None, "none"),
        (Some("confidentiality"), "confidentiality"),
        (Some("integrity"), "integrity"),
    ] {
        let case = format!("client {client_level:?}, upstream {level}");
        let (port, wire) = tap(b.addr());
        let mut a = realm.server().tickets_of("alice").config(&format!(
            "[[upstream]]\nname = \"kerberos\"\n\
             url = \"socks5h+gssapi://localhost:{port}?service=socks&protection={level}\"\n\n\
             [[rule]]\naction = \"allow\"\nupstream = \"kerberos\"\n"
        ));
        if client_level.is_some() {
            a = a.gssapi("protection = [\"integrity\", \"confidentiality\"]");
        }
        let a = a.start();
        let proxy = match client_level {
            None => format!("socks5h://{}", a.addr()),
            Some(l) => format!(
                "socks5h+gssapi://localhost:{}?protection={l}",
                a.addr().port()
            ),
        };
        let out = socksgate_connect(realm, &proxy, echo.port(), &payload);
        out.assert_success(&format!("{case}\na:\n{}\nb:\n{}", a.log(), b.log()));
        // Every byte through both hops and back.
        assert_same_bytes(&out.stdout, &payload, &case);
        // Between A and B: never in clear under confidentiality, either way; the other
        // levels are the control that shows the search works.
        let (sent, received) = wire.join().expect("tap");
        let clear = level != "confidentiality";
        assert_eq!(contains(&sent, marker), clear, "{case}: A → B");
        assert_eq!(contains(&received, marker), clear, "{case}: B → A");
        // A's access record counts the plaintext both ways.
        let bytes = payload.len().to_string();
        a.wait_log(&[
            "succeeded",
            &format!("up={bytes}"),
            &format!("down={bytes}"),
        ]);
    }
    b.wait_metric("socksgate_gssapi_sessions_total{protection=\"confidentiality\"} 2");
    b.wait_metric("socksgate_gssapi_sessions_total{protection=\"integrity\"} 2");
    b.wait_metric("socksgate_gssapi_sessions_total{protection=\"none\"} 1");
    b.wait_log(&["alice@SOCKSGATE.TEST", &payload.len().to_string()]);
}

/// alice, authenticated by Kerberos with confidentiality, has `[[traffic]]` limits of 1 MB/s
/// each way: a session that uploads 1.2 MB and only then receives 1.2 MB back takes at least
/// the time both limits allow. bob, without an entry, is not limited.
#[test]
fn traffic_limits_hold_in_the_protected_relay() {
    let Some(realm) = realm() else { return };
    let server = gss_server(
        realm,
        "protection = [\"integrity\", \"confidentiality\"]",
        "[[traffic]]\nusers = [\"alice@SOCKSGATE.TEST\"]\nper = \"user\"\n\
         up = \"1M\"\ndown = \"1M\"\nburst = \"64K\"\n",
    );
    let origin = origin::reply_after_eof();
    let payload = body(1_200_000);
    let url = format!(
        "socks5h+gssapi://localhost:{}?protection=confidentiality",
        server.addr().port()
    );
    let started = std::time::Instant::now();
    let out = socksgate_connect(realm, &url, origin.port(), &payload);
    let took = started.elapsed().as_secs_f64();
    out.assert_success(&format!("alice\n{}", server.log()));
    assert_same_bytes(
        &out.stdout,
        &origin::reply_after_eof_response(&payload),
        "alice, limited",
    );
    // The upload, then the reply: each (1.2 MB − the 64 KiB burst) at 1 MB/s, one after the
    // other (the origin answers after EOF): at least 2.27 s; one direction unlimited would
    // take about half.
    assert!(took >= 2.0, "alice moved 2.4 MB in {took:.2} s");
    assert!(took < 20.0, "alice's session took {took:.2} s");
    let out = tools::run(
        socksgate_tests::socksgate::command()
            .args(["connect", "--proxy", &url, "127.0.0.1"])
            .arg(origin.port().to_string())
            .envs(realm.kdc.env())
            .env("KRB5CCNAME", realm.cache("bob")),
        b"bob",
        TIMEOUT,
    );
    out.assert_success("bob");
    server.wait_log(&["bob@SOCKSGATE.TEST", "succeeded"]);
    let m = server.metrics();
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    // alice's session only; every plaintext byte of it counted against the limit.
    assert_eq!(value("socksgate_traffic_limited_sessions_total"), 1.0);
    assert!(value("socksgate_traffic_limited_bytes_total{direction=\"up\"}") >= 1.2e6);
    assert!(value("socksgate_traffic_limited_bytes_total{direction=\"down\"}") >= 1.2e6);
}

#[test]
fn upstream_asking_for_protection_passes_check_config() {
    let dir = TempDir::new();
    let file = dir.write(
        "socksgate.toml",
        b"[[upstream]]\nname = \"k\"\nurl = \"socks5h+gssapi://localhost:1080?protection=integrity\"\n",
    );
    let out = socksgate_tests::socksgate::run(&["check-config", &file.display().to_string()], b"");
    out.assert_success("check-config");
    // The effective configuration shows the upstream with its protection level.
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("protection=integrity"), "{shown}");
}
