//! RFC 1961 GSS-API sessions in synthetic captures built around real Kerberos tokens: the
//! AP-REQ/AP-REP and wrapped messages MIT Kerberos produced for a throw-away realm
//! (inspect/tests/fixtures/gssapi/generate.py, committed bytes), framed by RFC 1961 and
//! carried in TCP segments of any size.

// The shared builder; this file does not use all of it.
#[allow(unused_imports)]
mod common;

use common::*;
use socksgate_inspect::{Dir, Options, Report, Session, inspect};

const AP_REQ: &[u8] = include_bytes!("fixtures/gssapi/ap_req.bin");
const AP_REP: &[u8] = include_bytes!("fixtures/gssapi/ap_rep.bin");
const PROT_CLIENT: &[u8] = include_bytes!("fixtures/gssapi/prot_client.bin");
const PROT_SERVER: &[u8] = include_bytes!("fixtures/gssapi/prot_server.bin");
const REQUEST: &[u8] = include_bytes!("fixtures/gssapi/request.bin");
const REPLY: &[u8] = include_bytes!("fixtures/gssapi/reply.bin");
const DATA_UP: &[u8] = include_bytes!("fixtures/gssapi/data_up.bin");
const DATA_DOWN: &[u8] = include_bytes!("fixtures/gssapi/data_down.bin");

const PRINCIPAL: &str = "rcmd/proxy.socksgate.test@SOCKSGATE.TEST";
/// Encapsulated data messages each way after the request and reply.
const DATA_MESSAGES: usize = 50;

fn run(bytes: &[u8]) -> Report {
    inspect(bytes, &Options::default()).unwrap()
}

fn only(report: &Report) -> &Session {
    assert_eq!(report.sessions.len(), 1, "{report}");
    &report.sessions[0]
}

/// Sends `data` up or down in segments of `seg` bytes.
fn send(c: &mut Conv, cap: &mut Cap, up: bool, data: &[u8], seg: usize) {
    for chunk in data.chunks(seg) {
        if up {
            c.up(cap, chunk);
        } else {
            c.down(cap, chunk);
        }
    }
}

/// A Kerberos session protected as RFC 1961 says: AP-REQ, AP-REP, wrapped protection
/// levels, then the request, reply and data encapsulated; the client's bytes cut into
/// `seg`-byte segments, several messages coalesced into one segment going down.
fn protected_session(seg: usize) -> Vec<u8> {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1, 0]));
    c.down(&mut cap, &[5, 1]);
    send(&mut c, &mut cap, true, &gss(1, AP_REQ), seg);
    c.down(&mut cap, &gss(1, AP_REP));
    send(&mut c, &mut cap, true, &gss(2, PROT_CLIENT), seg);
    c.down(&mut cap, &gss(2, PROT_SERVER));
    send(&mut c, &mut cap, true, &gss(3, REQUEST), seg);
    c.down(&mut cap, &gss(3, REPLY));
    let up: Vec<u8> = (0..DATA_MESSAGES).flat_map(|_| gss(3, DATA_UP)).collect();
    let down: Vec<u8> = (0..DATA_MESSAGES).flat_map(|_| gss(3, DATA_DOWN)).collect();
    send(&mut c, &mut cap, true, &up, seg);
    send(&mut c, &mut cap, false, &down, 1448);
    c.close(&mut cap);
    cap.pcap(false, false)
}

#[test]
fn kerberos_session_with_encapsulated_relay() {
    let bytes = protected_session(1448);
    let report = run(&bytes);
    let s = only(&report);
    assert_eq!(s.method, Some(1));
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    // The request and reply are protected: not visible.
    assert_eq!((s.command.as_deref(), s.reply_code), (None, None));
    assert_eq!(s.tunnelled, None);
    let g = s.gssapi.as_ref().expect("the GSS-API exchange");
    assert_eq!(g.mechanism.as_deref(), Some("kerberos"));
    assert_eq!(g.service_principal.as_deref(), Some(PRINCIPAL));
    assert_eq!(g.realm.as_deref(), Some("SOCKSGATE.TEST"));
    let tokens: Vec<_> = g
        .tokens
        .iter()
        .map(|t| (t.dir, t.kind.as_str(), t.len))
        .collect();
    assert_eq!(
        tokens,
        [
            (Dir::Up, "context", AP_REQ.len()),
            (Dir::Down, "context", AP_REP.len()),
            (Dir::Up, "protection", PROT_CLIENT.len()),
            (Dir::Down, "protection", PROT_SERVER.len()),
        ]
    );
    let p = g.protection.as_ref().expect("the protection exchange");
    assert_eq!(
        (p.form, p.requested.as_deref(), p.granted.as_deref()),
        ("wrapped", None, None)
    );
    // The request, the reply and every data message, counted each way.
    let n = DATA_MESSAGES as u64;
    assert_eq!(g.encapsulated_up.messages, 1 + n);
    assert_eq!(
        g.encapsulated_up.bytes,
        (REQUEST.len() + DATA_MESSAGES * DATA_UP.len()) as u64
    );
    assert_eq!(g.encapsulated_down.messages, 1 + n);
    assert_eq!(
        g.encapsulated_down.bytes,
        (REPLY.len() + DATA_MESSAGES * DATA_DOWN.len()) as u64
    );
    // The payload is the encapsulated part, headers included.
    assert_eq!(s.bytes_up, g.encapsulated_up.bytes + 4 * (1 + n));
    assert_eq!(s.bytes_down, g.encapsulated_down.bytes + 4 * (1 + n));

    // The AP-REQ message, described from its bytes.
    let kinds: Vec<_> = s.messages.iter().map(|m| (m.kind, m.len)).collect();
    assert_eq!(
        kinds,
        [
            ("method_request", 4),
            ("method_reply", 2),
            ("gssapi", 4 + AP_REQ.len()),
            ("gssapi", 4 + AP_REP.len()),
            ("gssapi", 4 + PROT_CLIENT.len()),
            ("gssapi", 4 + PROT_SERVER.len()),
        ]
    );
    let (summary, fields) = s.messages[2].describe();
    assert_eq!(
        summary,
        format!(
            "GSS-API authentication message, {}-byte token: Kerberos AP-REQ for {PRINCIPAL}",
            AP_REQ.len()
        )
    );
    let fields: Vec<_> = fields
        .iter()
        .map(|f| (f.name, f.value.as_str(), f.offset, f.len))
        .collect();
    let ticket = format!("ticket for {PRINCIPAL}");
    assert_eq!(
        fields[4..],
        [
            ("MECH", "1.2.840.113554.1.2.2 (kerberos)", 8, 11),
            ("TOK_ID", "01 00 (AP-REQ)", 19, 2),
            ("AP-REQ", ticket.as_str(), 21, AP_REQ.len() - 17),
        ]
    );
    assert_eq!(&s.messages[2].bytes[19..21], [1, 0]);
    assert!(s.messages[3].summary().ends_with(": Kerberos AP-REP"));
    assert!(
        s.messages[4]
            .summary()
            .ends_with(": level wrapped (RFC 1961 form)")
    );

    // The JSON contract's new keys, and the text rendering.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let js = &json["sessions"][0]["gssapi"];
    assert_eq!(js["service_principal"], PRINCIPAL);
    assert_eq!(js["tokens"][0]["dir"], "up");
    assert_eq!(js["tokens"][0]["kind"], "context");
    assert_eq!(js["protection"]["form"], "wrapped");
    assert!(js["protection"]["requested"].is_null());
    assert_eq!(js["encapsulated_down"]["messages"], 1 + n);
    let text = socksgate_inspect::render(&bytes, false, false).unwrap();
    assert!(
        text.contains(&format!("gssapi kerberos service {PRINCIPAL}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("encapsulated up {} msgs", 1 + n)),
        "{text}"
    );
}

/// Tokens and encapsulated messages cut into any segment size (down to one byte per
/// segment) give the same report.
#[test]
fn segmentation_does_not_change_the_report() {
    let whole = run(&protected_session(1448)).to_json();
    for seg in [1, 7, 100, 536] {
        let got = run(&protected_session(seg)).to_json();
        // Frame numbers and file offsets differ; everything else must not.
        let strip = |j: &str| {
            let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
            let s = &mut v["sessions"][0];
            s["end"] = 0.into();
            s["messages"] = serde_json::Value::Null;
            v["capture"] = serde_json::Value::Null;
            v
        };
        assert_eq!(strip(&got), strip(&whole), "segments of {seg} bytes");
    }
}

/// The NEC form (curl's `--socks5-gssapi-nec`): the level octet unwrapped, both ways, and
/// with level 0 the request and reply in clear.
#[test]
fn nec_protection_level_in_clear() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40002", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0, 1, 2]));
    c.down(&mut cap, &[5, 1]);
    c.up(&mut cap, &gss(1, AP_REQ));
    c.down(&mut cap, &gss(1, AP_REP));
    c.up(&mut cap, &gss(2, &[2]));
    c.down(&mut cap, &gss(2, &[0]));
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    c.up(&mut cap, HTTP_GET);
    c.down(&mut cap, HTTP_OK);
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    let g = s.gssapi.as_ref().unwrap();
    assert_eq!(g.service_principal.as_deref(), Some(PRINCIPAL));
    let p = g.protection.as_ref().unwrap();
    assert_eq!(
        (p.form, p.requested.as_deref(), p.granted.as_deref()),
        ("nec", Some("confidentiality"), Some("none"))
    );
    assert_eq!(g.encapsulated_up.messages + g.encapsulated_down.messages, 0);
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert_eq!((s.reply_code, s.tunnelled), (Some(0), Some("http")));
    assert_eq!(s.bytes_up, HTTP_GET.len() as u64);
    let (summary, fields) = s.messages[4].describe();
    assert_eq!(
        summary,
        "GSS-API protection-level negotiation message, 1-byte token: level 2 (confidentiality), unwrapped (NEC form)"
    );
    assert_eq!(
        fields.last().map(|f| (f.name, f.offset, f.len)),
        Some(("LEVEL", 4, 1))
    );
}

/// The largest token RFC 1961 frames (65 535 bytes) each way, over 1448-byte segments, is
/// decoded whole; a capture that ends inside one says so.
#[test]
fn largest_tokens_decode_whole() {
    let big_up: Vec<u8> = (0..65_535u32).map(|i| (i % 251) as u8).collect();
    let big_down = vec![0x61; 65_535];
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40003", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1]));
    c.down(&mut cap, &[5, 1]);
    send(&mut c, &mut cap, true, &gss(1, &big_up), 1448);
    send(&mut c, &mut cap, false, &gss(1, &big_down), 1448);
    c.up(&mut cap, &gss(2, &[1]));
    c.down(&mut cap, &gss(2, &[1]));
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    let g = s.gssapi.as_ref().unwrap();
    let lens: Vec<_> = g.tokens.iter().map(|t| t.len).collect();
    assert_eq!(lens, [65_535, 65_535, 1, 1]);
    assert_eq!(s.messages[2].bytes.as_slice(), gss(1, &big_up));
    assert_eq!(s.messages[2].frames.len(), 46);
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));

    // The same token cut short by the end of the capture.
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40004", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1]));
    c.down(&mut cap, &[5, 1]);
    send(&mut c, &mut cap, true, &gss(1, &big_up)[..40_000], 1448);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(
        s.anomalies,
        ["truncated: incomplete GSS-API message (40000 bytes)"]
    );
    assert_eq!(s.gssapi.unwrap().tokens.len(), 0);
}

/// Counting stops, with the reason, at a hole in the capture and at an abort.
#[test]
fn encapsulated_count_stops_at_a_gap_or_an_abort() {
    let prefix = |cap: &mut Cap, c: &mut Conv| {
        c.open(cap);
        c.up(cap, &greeting(&[1]));
        c.down(cap, &[5, 1]);
        c.up(cap, &gss(1, AP_REQ));
        c.down(cap, &gss(1, AP_REP));
        c.up(cap, &gss(2, PROT_CLIENT));
        c.down(cap, &gss(2, PROT_SERVER));
        c.up(cap, &gss(3, REQUEST));
        c.down(cap, &gss(3, REPLY));
    };
    // A data message lost from the capture (the client's sequence numbers skip it).
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40005", "127.0.0.1:1080");
    prefix(&mut cap, &mut c);
    c.up(&mut cap, &gss(3, DATA_UP));
    let lost_at = c.cseq;
    c.cseq = c.cseq.wrapping_add(gss(3, DATA_UP).len() as u32);
    c.up(&mut cap, &gss(3, DATA_UP));
    c.down(&mut cap, &gss(3, DATA_DOWN));
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    let g = s.gssapi.as_ref().unwrap();
    assert_eq!(g.encapsulated_up.messages, 2);
    assert_eq!(g.encapsulated_down.messages, 2);
    let handshake_up = (3 + 4 + AP_REQ.len() + 4 + PROT_CLIENT.len()) as u32;
    let hole = u64::from(lost_at - 1001);
    assert!(
        s.anomalies.contains(&format!(
            "gap: encapsulated messages client→server not counted after stream offset {hole}"
        )),
        "{:?}",
        s.anomalies
    );
    assert_eq!(
        hole,
        u64::from(handshake_up) + (4 + REQUEST.len() + 4 + DATA_UP.len()) as u64
    );

    // The server aborts the context after the reply.
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40006", "127.0.0.1:1080");
    prefix(&mut cap, &mut c);
    c.down(&mut cap, &[1, 0xff]);
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    let g = s.gssapi.as_ref().unwrap();
    assert_eq!(g.encapsulated_down.messages, 1);
    let at = 2 + 4 + AP_REP.len() + 4 + PROT_SERVER.len() + 4 + REPLY.len();
    assert_eq!(
        s.anomalies,
        [format!(
            "GSS-API context aborted server→client at stream offset {at}"
        )]
    );
}

/// The capture the wasm package's runtime test compares across the CLI, Node, Deno, Chromium
/// and workerd (wasm/e2e/runtimes.mjs) is this file's Kerberos session, kept current:
/// `SOCKSGATE_WRITE_FIXTURES=1` rewrites it.
#[test]
fn wasm_fixture_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../wasm/tests/fixtures/gssapi-kerberos.pcap"
    );
    let bytes = protected_session(1448);
    if std::env::var_os("SOCKSGATE_WRITE_FIXTURES").is_some() {
        std::fs::write(path, &bytes).unwrap();
    }
    let committed = std::fs::read(path).unwrap();
    assert!(
        committed == bytes,
        "{path} is stale: run with SOCKSGATE_WRITE_FIXTURES=1"
    );
}

/// Real captures recorded against socksgate's server (inspect/tests/captures/README.md):
/// python3-gssapi with confidentiality, integrity and the NEC form's "none", and Debian curl
/// giving up after the server selected GSS-API.
#[test]
fn real_python3_gssapi_and_curl_captures() {
    let bytes = include_bytes!("captures/gssapi-python3-lo.pcap");
    let report = run(bytes);
    assert_eq!(report.sessions.len(), 3, "{report}");
    for (i, s) in report.sessions.iter().enumerate() {
        assert!(s.anomalies.is_empty(), "#{}: {:?}", i + 1, s.anomalies);
        let g = s.gssapi.as_ref().unwrap();
        assert_eq!(g.mechanism.as_deref(), Some("kerberos"));
        assert_eq!(
            g.service_principal.as_deref(),
            Some("rcmd/localhost@EXAMPLE.TEST")
        );
        let kinds: Vec<_> = g.tokens.iter().map(|t| (t.dir, t.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (Dir::Up, "context"),
                (Dir::Down, "context"),
                (Dir::Up, "protection"),
                (Dir::Down, "protection")
            ]
        );
        let p = g.protection.as_ref().unwrap();
        if i < 2 {
            // Confidentiality, then integrity: the request, reply and echo are encapsulated.
            assert_eq!((p.form, p.requested.as_deref()), ("wrapped", None));
            assert_eq!(g.encapsulated_up.messages, 2, "#{}", i + 1);
            assert_eq!(g.encapsulated_down.messages, 2, "#{}", i + 1);
            assert_eq!(s.bytes_up, g.encapsulated_up.bytes + 8);
            assert_eq!(s.command, None);
        } else {
            assert_eq!(
                (p.form, p.requested.as_deref(), p.granted.as_deref()),
                ("nec", Some("none"), Some("none"))
            );
            assert_eq!(g.encapsulated_up.messages + g.encapsulated_down.messages, 0);
            assert_eq!(s.command.as_deref(), Some("connect"));
            assert_eq!(s.dst_host.as_deref(), Some("127.0.0.1"));
            assert_eq!((s.reply_code, s.bytes_up, s.bytes_down), (Some(0), 50, 50));
        }
    }

    let refused = run(include_bytes!("captures/gssapi-curl-refused-lo.pcap"));
    let s = only(&refused);
    assert_eq!(
        (s.methods_offered.as_slice(), s.method),
        (&[0, 1][..], Some(1))
    );
    assert_eq!(s.anomalies, ["missing GSS-API message"]);
    assert!(s.gssapi.as_ref().is_some_and(|g| g.tokens.is_empty()));
}

/// curl 8.21.0 (Debian trixie-backports) through socksgate with `protection = ["none"]`: the
/// RFC 1961 form (level request and grant wrapped, so their values stay hidden), then the NEC
/// form (confidentiality asked in clear, none granted); each a CONNECT carrying an HTTP
/// fetch of 1000 bytes in clear.
#[test]
fn real_curl_gssapi_capture() {
    let report = run(include_bytes!("captures/gssapi-curl-8.21-lo.pcap"));
    assert_eq!(report.sessions.len(), 2, "{report}");
    for (i, s) in report.sessions.iter().enumerate() {
        assert!(s.anomalies.is_empty(), "#{}: {:?}", i + 1, s.anomalies);
        assert_eq!(
            (s.methods_offered.as_slice(), s.method),
            (&[0, 1][..], Some(1))
        );
        let g = s.gssapi.as_ref().unwrap();
        assert_eq!(g.mechanism.as_deref(), Some("kerberos"));
        assert_eq!(
            g.service_principal.as_deref(),
            Some("rcmd/localhost@SOCKSGATE.TEST")
        );
        let kinds: Vec<_> = g.tokens.iter().map(|t| (t.dir, t.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (Dir::Up, "context"),
                (Dir::Down, "context"),
                (Dir::Up, "protection"),
                (Dir::Down, "protection")
            ]
        );
        let p = g.protection.as_ref().unwrap();
        let expected = if i == 0 {
            ("wrapped", None, None)
        } else {
            ("nec", Some("confidentiality"), Some("none"))
        };
        assert_eq!(
            (p.form, p.requested.as_deref(), p.granted.as_deref()),
            expected,
            "#{}",
            i + 1
        );
        // Level none: nothing encapsulated, the request and the HTTP exchange in clear.
        assert_eq!(g.encapsulated_up.messages + g.encapsulated_down.messages, 0);
        assert_eq!(s.command.as_deref(), Some("connect"));
        assert_eq!(s.dst_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            (s.reply_code, s.bytes_up, s.bytes_down),
            (Some(0), 83, 1100)
        );
    }
}
