//! The inspector on synthetic captures built in the test: every link type and file variant,
//! reassembly edge cases, every SOCKS command and reply, UDP matching, detection.

mod common;

use common::*;
use socksgate_inspect::{InspectError, Options, Report, Session, inspect};

fn run(bytes: &[u8]) -> Report {
    inspect(bytes, &Options::default()).unwrap()
}

fn only(report: &Report) -> &Session {
    assert_eq!(report.sessions.len(), 1, "{report}");
    &report.sessions[0]
}

/// A SOCKS5 CONNECT with username/password to a domain, HTTP inside.
fn socks5_userpass(cap: &mut Cap, conv: &mut Conv) {
    conv.open(cap);
    conv.up(cap, &greeting(&[0, 2]));
    conv.down(cap, &[5, 2]);
    conv.up(cap, &userpass("alice", "s3cret"));
    conv.down(cap, &[1, 0]);
    conv.up(cap, &request5(1, "example.com", 80));
    conv.down(cap, &reply5(0, "127.0.0.1", 37247));
    conv.up(cap, HTTP_GET);
    conv.down(cap, HTTP_OK);
    conv.close(cap);
}

#[test]
fn socks5_connect_userpass_all_contract_keys() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut conv = Conv::new("127.0.0.1:55820", "127.0.0.1:1080");
    socks5_userpass(&mut cap, &mut conv);
    let report = run(&cap.pcap(false, false));
    assert_eq!(report.capture.format, "pcap");
    assert_eq!(report.capture.packets, cap.packets.len() as u64);
    assert_eq!(report.capture.link_types, ["ETHERNET"]);
    let s = only(&report);
    assert_eq!(s.client, "127.0.0.1:55820");
    assert_eq!(s.server, "127.0.0.1:1080");
    assert_eq!(s.version, "socks5");
    assert_eq!(s.methods_offered, [0, 2]);
    assert_eq!(s.method, Some(2));
    assert_eq!(s.username.as_deref(), Some("alice"));
    assert_eq!(s.password, None);
    assert_eq!(s.auth_ok, Some(true));
    assert_eq!(s.command.as_deref(), Some("connect"));
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert_eq!(s.dst_port, Some(80));
    assert_eq!(s.reply_code, Some(0));
    assert_eq!(s.bound.as_deref(), Some("127.0.0.1:37247"));
    assert_eq!(s.bind_peer, None);
    assert_eq!(s.bytes_up, HTTP_GET.len() as u64);
    assert_eq!(s.bytes_down, HTTP_OK.len() as u64);
    assert_eq!(s.tunnelled, Some("http"));
    assert_eq!(s.sni, None);
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    assert!((s.start - 1_795_708_650.001).abs() < 1e-6, "{}", s.start);
    assert!(s.end > s.start);
    assert_eq!(s.messages.len(), 6);

    // Every key of the JSON contract, with JSON types.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    for k in ["format", "packets", "link_types"] {
        assert!(json["capture"].get(k).is_some(), "capture.{k}");
    }
    let js = &json["sessions"][0];
    for k in [
        "client",
        "server",
        "version",
        "methods_offered",
        "method",
        "username",
        "auth_ok",
        "command",
        "dst_host",
        "dst_port",
        "reply_code",
        "bound",
        "bind_peer",
        "bytes_up",
        "bytes_down",
        "udp_datagrams_up",
        "udp_datagrams_down",
        "start",
        "end",
        "tunnelled",
        "sni",
        "anomalies",
    ] {
        assert!(js.get(k).is_some(), "session key {k} missing");
    }
    assert!(js.get("password").is_none());
    assert!(js["bind_peer"].is_null());
    // The password is masked in the message hex too.
    let auth = &js["messages"][2];
    assert_eq!(auth["kind"], "userpass_request");
    assert!(auth["hex"].as_str().unwrap().ends_with("06************"));
    assert!(!report.to_json().contains("s3cret"));
    assert!(!report.to_string().contains("s3cret"));
}

#[test]
fn secrets_shown_on_request() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut conv = Conv::new("127.0.0.1:55820", "127.0.0.1:1080");
    socks5_userpass(&mut cap, &mut conv);
    let report = inspect(&cap.pcap(false, false), &Options::with_secrets(true)).unwrap();
    let s = only(&report);
    assert_eq!(s.password.as_deref(), Some("s3cret"));
    assert!(report.to_json().contains("\"password\": \"s3cret\""));
}

#[test]
fn auth_failure_stops_the_handshake() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[2]));
    c.down(&mut cap, &[5, 2]);
    c.up(&mut cap, &userpass("bob", "wrong"));
    c.down(&mut cap, &[1, 1]);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.auth_ok, Some(false));
    assert_eq!(s.command, None);
    assert_eq!(s.reply_code, None);
}

#[test]
fn no_acceptable_method() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0xff]);
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(s.method, Some(255));
    assert_eq!(s.command, None);
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
}

#[test]
fn split_handshake_one_byte_per_segment() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:50000", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up_bytewise(&mut cap, &greeting(&[0, 2]));
    c.down_bytewise(&mut cap, &[5, 2]);
    c.up_bytewise(&mut cap, &userpass("alice", "pw"));
    c.down_bytewise(&mut cap, &[1, 0]);
    c.up_bytewise(&mut cap, &request5(1, "example.org", 443));
    c.down_bytewise(&mut cap, &reply5(0, "::1", 4444));
    c.up_bytewise(&mut cap, HTTP_GET);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.username.as_deref(), Some("alice"));
    assert_eq!(s.dst_host.as_deref(), Some("example.org"));
    assert_eq!(s.bound.as_deref(), Some("[::1]:4444"));
    assert_eq!(s.bytes_up, HTTP_GET.len() as u64);
    assert_eq!(s.tunnelled, Some("http"));
    // The request spans as many frames as it has bytes.
    let req = s.messages.iter().find(|m| m.kind == "request").unwrap();
    assert_eq!(req.frames.len(), req.len);
    assert_eq!(req.file_ranges.len(), req.len);
}

#[test]
fn coalesced_handshake_and_data() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:50000", "127.0.0.1:1080");
    c.open(&mut cap);
    let mut up = greeting(&[0]);
    up.extend(request5(1, "93.184.216.34", 80));
    up.extend_from_slice(HTTP_GET);
    c.up(&mut cap, &up);
    let mut down = vec![5, 0];
    down.extend(reply5(0, "10.1.1.1", 1234));
    down.extend_from_slice(HTTP_OK);
    c.down(&mut cap, &down);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.method, Some(0));
    assert_eq!(s.dst_host.as_deref(), Some("93.184.216.34"));
    assert_eq!(s.reply_code, Some(0));
    assert_eq!(s.bytes_up, HTTP_GET.len() as u64);
    assert_eq!(s.bytes_down, HTTP_OK.len() as u64);
    // The reply sits at offset 2 of the server's first segment.
    let reply = s.messages.iter().find(|m| m.kind == "reply").unwrap();
    let sel = s
        .messages
        .iter()
        .find(|m| m.kind == "method_reply")
        .unwrap();
    assert_eq!(reply.file_ranges[0][0], sel.file_ranges[0][0] + 2);
    assert_eq!(reply.frames, sel.frames);
}

#[test]
fn out_of_order_and_retransmitted_segments() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:50000", "127.0.0.1:1080");
    c.open(&mut cap);
    let g = greeting(&[0]);
    let req = request5(1, "example.com", 443);
    let hello = tls_hello("example.com");
    // Client: request before greeting in capture order, greeting twice, payload overlapping.
    let base = c.cseq;
    cap.tcp(c.c, c.s, base + g.len() as u32, c.sseq, ack(), &req);
    cap.tcp(c.c, c.s, base, c.sseq, ack(), &g);
    cap.tcp(c.c, c.s, base, c.sseq, ack(), &g);
    c.cseq = base + (g.len() + req.len()) as u32;
    c.down(&mut cap, &[5, 0]);
    c.down(&mut cap, &reply5(0, "0.0.0.0", 0));
    let (a, b) = hello.split_at(20);
    let base = c.cseq;
    cap.tcp(c.c, c.s, base + 20, c.sseq, ack(), b);
    cap.tcp(c.c, c.s, base, c.sseq, ack(), &hello[..30]); // overlaps b's first 10 bytes
    let _ = a;
    c.cseq = base + hello.len() as u32;
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert_eq!(s.bytes_up, hello.len() as u64);
    assert_eq!(s.tunnelled, Some("tls"));
    assert_eq!(s.sni.as_deref(), Some("example.com"));
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
}

#[test]
fn gaps_are_anomalies() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:50000", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 1));
    c.up(&mut cap, HTTP_GET);
    c.cseq += 100; // 100 bytes never captured
    c.up(&mut cap, b"more data");
    c.down(&mut cap, HTTP_OK);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.bytes_up, HTTP_GET.len() as u64 + 100 + 9);
    assert!(
        s.anomalies
            .iter()
            .any(|a| a.starts_with("gap: 100 bytes missing client→server")),
        "{:?}",
        s.anomalies
    );
}

#[test]
fn gap_inside_the_handshake() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:50000", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.cseq += 5; // first 5 bytes of the request lost
    c.up(&mut cap, &request5(1, "example.com", 80)[5..]);
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(s.command, None);
    assert!(
        s.anomalies.iter().any(|a| a.starts_with("gap")),
        "{:?}",
        s.anomalies
    );
}

#[test]
fn sequence_wraparound() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::with_isn("127.0.0.1:50000", "127.0.0.1:1080", u32::MAX - 3, u32::MAX);
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(1, "wrap.test", 22));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 2));
    c.down(&mut cap, b"SSH-2.0-OpenSSH_9.2\r\n");
    c.up(&mut cap, b"SSH-2.0-client\r\n");
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(s.dst_host.as_deref(), Some("wrap.test"));
    assert_eq!(s.tunnelled, Some("ssh"));
    assert_eq!(s.bytes_up, 16);
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
}

fn simple_session(cap: &mut Cap, client: &str, server: &str) {
    let mut c = Conv::new(client, server);
    c.open(cap);
    c.up(cap, &greeting(&[0]));
    c.down(cap, &[5, 0]);
    c.up(cap, &request5(1, "example.com", 80));
    c.down(cap, &reply5(0, "127.0.0.1", 3333));
    c.up(cap, HTTP_GET);
    c.down(cap, HTTP_OK);
    c.close(cap);
}

#[test]
fn every_link_type_and_ipv6() {
    for link in [
        Link::Ethernet,
        Link::EthernetVlan,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Null,
    ] {
        for (client, server) in [
            ("127.0.0.1:40001", "127.0.0.1:1080"),
            ("[::1]:40001", "[::1]:1080"),
        ] {
            let mut cap = Cap::new(link);
            simple_session(&mut cap, client, server);
            let r = run(&cap.pcap(false, false));
            let s = only(&r);
            assert_eq!(s.client, client, "{link:?}");
            assert_eq!(s.server, server, "{link:?}");
            assert_eq!(s.tunnelled, Some("http"), "{link:?}");
            assert_eq!(s.bytes_down, HTTP_OK.len() as u64);
        }
    }
    let mut cap = Cap::new(Link::Sll2);
    simple_session(&mut cap, "[::1]:1", "[::1]:2");
    assert_eq!(
        run(&cap.pcap(false, false)).capture.link_types,
        ["LINUX_SLL2"]
    );
}

#[test]
fn pcap_byte_orders_and_resolutions() {
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    for be in [false, true] {
        for ns in [false, true] {
            let r = run(&cap.pcap(be, ns));
            let s = only(&r);
            assert!(
                (s.start - 1_795_708_650.001).abs() < 1e-6,
                "be={be} ns={ns}"
            );
            assert_eq!(s.dst_port, Some(80));
        }
    }
}

#[test]
fn pcapng_sections_interfaces_byte_orders() {
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    cap.iface = 1;
    simple_session(&mut cap, "127.0.0.1:40002", "127.0.0.1:1080");
    for be in [false, true] {
        for sections in [1, 3] {
            let r = run(&cap.pcapng(be, sections, 2));
            assert_eq!(r.capture.format, "pcapng");
            assert_eq!(r.capture.packets, cap.packets.len() as u64);
            assert_eq!(r.sessions.len(), 2, "be={be} sections={sections}");
            assert!((r.sessions[0].start - 1_795_708_650.001).abs() < 1e-6);
            assert_eq!(r.sessions[1].client, "127.0.0.1:40002");
        }
    }
}

#[test]
fn socks4_and_socks4a() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(
        &mut cap,
        &request4(1, [93, 184, 216, 34], 80, "ident", None),
    );
    c.down(&mut cap, &reply4(90, [0, 0, 0, 0], 0));
    c.up(&mut cap, HTTP_GET);
    c.close(&mut cap);
    let mut c = Conv::new("127.0.0.1:40002", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(
        &mut cap,
        &request4(1, [0, 0, 0, 1], 443, "", Some("example.com")),
    );
    c.down(&mut cap, &reply4(91, [0, 0, 0, 0], 0));
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    assert_eq!(r.sessions.len(), 2);
    let (a, b) = (&r.sessions[0], &r.sessions[1]);
    assert_eq!(a.version, "socks4");
    assert!(a.methods_offered.is_empty());
    assert_eq!(a.method, None);
    assert_eq!(a.username.as_deref(), Some("ident"));
    assert_eq!(a.auth_ok, None);
    assert_eq!(a.dst_host.as_deref(), Some("93.184.216.34"));
    assert_eq!(a.reply_code, Some(90));
    assert_eq!(a.bound.as_deref(), Some("0.0.0.0:0"));
    assert_eq!(a.tunnelled, Some("http"));
    assert_eq!(b.version, "socks4a");
    assert_eq!(b.dst_host.as_deref(), Some("example.com"));
    assert_eq!(b.dst_port, Some(443));
    assert_eq!(b.username, None);
    assert_eq!(b.reply_code, Some(91));
}

#[test]
fn bind_with_second_reply_socks5_and_socks4() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(2, "198.51.100.7", 21));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 45000));
    c.down(&mut cap, &reply5(0, "198.51.100.7", 20));
    c.down(&mut cap, b"220 ftp ready\r\n");
    c.close(&mut cap);
    let mut c = Conv::new("127.0.0.1:40002", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &request4(2, [198, 51, 100, 7], 21, "u", None));
    let mut both = reply4(90, [127, 0, 0, 1], 45001);
    both.extend(reply4(90, [198, 51, 100, 7], 20));
    c.down(&mut cap, &both);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let (a, b) = (&r.sessions[0], &r.sessions[1]);
    assert_eq!(a.command.as_deref(), Some("bind"));
    assert_eq!(a.bound.as_deref(), Some("127.0.0.1:45000"));
    assert_eq!(a.bind_peer.as_deref(), Some("198.51.100.7:20"));
    assert_eq!(a.bytes_down, 15);
    assert_eq!(b.command.as_deref(), Some("bind"));
    assert_eq!(b.bound.as_deref(), Some("127.0.0.1:45001"));
    assert_eq!(b.bind_peer.as_deref(), Some("198.51.100.7:20"));
    assert_eq!(b.bytes_down, 0);
}

#[test]
fn every_reply_code_and_unknown_command() {
    let mut cap = Cap::new(Link::Ethernet);
    for rep in 0u8..=9 {
        let mut c = Conv::new(
            &format!("127.0.0.1:{}", 41000 + u16::from(rep)),
            "127.0.0.1:1080",
        );
        c.open(&mut cap);
        c.up(&mut cap, &greeting(&[0]));
        c.down(&mut cap, &[5, 0]);
        c.up(
            &mut cap,
            &request5(if rep == 9 { 0x80 } else { 1 }, "example.com", 80),
        );
        c.down(
            &mut cap,
            &reply5(if rep == 9 { 7 } else { rep }, "0.0.0.0", 0),
        );
        c.close(&mut cap);
    }
    let r = run(&cap.pcap(false, false));
    assert_eq!(r.sessions.len(), 10);
    for (i, s) in r.sessions.iter().enumerate().take(9) {
        assert_eq!(s.reply_code, Some(i as u8));
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    }
    assert_eq!(r.sessions[9].command.as_deref(), Some("unknown:0x80"));
    assert_eq!(r.sessions[9].reply_code, Some(7));
}

#[test]
fn missing_reply_and_truncated_request() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(1, "example.com", 80));
    let mut c2 = Conv::new("127.0.0.1:40002", "127.0.0.1:1080");
    c2.open(&mut cap);
    c2.up(&mut cap, &greeting(&[0]));
    c2.down(&mut cap, &[5, 0]);
    c2.up(&mut cap, &request5(1, "example.com", 80)[..6]);
    let r = run(&cap.pcap(false, false));
    assert!(
        r.sessions[0]
            .anomalies
            .iter()
            .any(|a| a.starts_with("missing reply")),
        "{:?}",
        r.sessions[0].anomalies
    );
    assert!(
        r.sessions[1]
            .anomalies
            .iter()
            .any(|a| a.starts_with("truncated")),
        "{:?}",
        r.sessions[1].anomalies
    );
}

#[test]
fn malformed_request_is_an_anomaly() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]);
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert!(
        s.anomalies
            .iter()
            .any(|a| a.starts_with("malformed request")),
        "{:?}",
        s.anomalies
    );
}

#[test]
fn udp_associate_datagrams_matched_by_relay_and_client_ip() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(3, "0.0.0.0", 0));
    c.down(&mut cap, &reply5(0, "0.0.0.0", 50000)); // relay on the server's IP
    let client_udp = sa("127.0.0.1:39999");
    let relay = sa("127.0.0.1:50000");
    let dns = sa("127.0.0.1:53");
    cap.udp(client_udp, relay, &udp_dgram("127.0.0.1", 53, b"query"));
    // The relay forwards from the same socket to the destination on the same host…
    cap.udp(relay, dns, b"query");
    cap.udp(dns, relay, b"answer");
    cap.udp(relay, client_udp, &udp_dgram("127.0.0.1", 53, b"answer"));
    cap.udp(client_udp, relay, &udp_dgram("example.com", 53, b"q2"));
    // …and unrelated UDP is not counted.
    cap.udp(sa("127.0.0.1:1234"), sa("127.0.0.1:50001"), b"noise");
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let s = only(&r);
    assert_eq!(s.command.as_deref(), Some("udp_associate"));
    assert_eq!(s.udp_relay.as_deref(), Some("127.0.0.1:50000"));
    assert_eq!(s.udp_datagrams_up, 2);
    assert_eq!(s.udp_datagrams_down, 1);
    assert_eq!(s.udp_destinations, ["127.0.0.1:53", "example.com:53"]);
    assert!(s.messages.iter().any(|m| m.kind == "udp_header"));
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
}

#[test]
fn udp_associate_with_announced_client_port() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("[::1]:40001", "[::1]:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(3, "::1", 39000));
    c.down(&mut cap, &reply5(0, "::1", 50000));
    // From another port of the client's host: not this association.
    cap.udp(
        sa("[::1]:38000"),
        sa("[::1]:50000"),
        &udp_dgram("::1", 53, b"x"),
    );
    cap.udp(
        sa("[::1]:39000"),
        sa("[::1]:50000"),
        &udp_dgram("::1", 53, b"x"),
    );
    cap.udp(
        sa("[::1]:50000"),
        sa("[::1]:39000"),
        &udp_dgram("::1", 53, b"y"),
    );
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!((s.udp_datagrams_up, s.udp_datagrams_down), (1, 1));
}

#[test]
fn gssapi_token_framing() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1, 0]));
    c.down(&mut cap, &[5, 1]);
    c.up(&mut cap, &gss(1, &[0x60; 40]));
    c.down(&mut cap, &gss(1, &[0x61; 20]));
    c.up(&mut cap, &gss(2, &[1]));
    c.down(&mut cap, &gss(2, &[1]));
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    c.close(&mut cap);
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(s.method, Some(1));
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert_eq!(s.reply_code, Some(0));
    assert_eq!(s.messages.iter().filter(|m| m.kind == "gssapi").count(), 4);
}

#[test]
fn socks_on_any_port_and_non_socks_ignored() {
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:9050");
    simple_session(&mut cap, "127.0.0.1:40002", "127.0.0.1:443");
    // The proxy's own outbound leg: plain HTTP, here even to port 1080.
    let mut c = Conv::new("127.0.0.1:40003", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, HTTP_GET);
    c.down(&mut cap, HTTP_OK);
    c.close(&mut cap);
    // A server-first protocol whose banner starts with 0x05.
    let mut c = Conv::new("127.0.0.1:40004", "127.0.0.1:1081");
    c.open(&mut cap);
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &[5, 1, 0]);
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    assert_eq!(r.capture.tcp_connections, 4);
    let servers: Vec<_> = r.sessions.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(servers, ["127.0.0.1:9050", "127.0.0.1:443"]);
}

#[test]
fn capture_starting_mid_stream() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    // No SYN: the first captured segment is the greeting.
    c.cseq += 1;
    c.sseq += 1;
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    let s = only(&run(&cap.pcap(false, false))).clone();
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert!(s.anomalies.iter().any(|a| a.contains("mid-connection")));
    // And one that starts inside the payload is not a session.
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.up(&mut cap, HTTP_GET);
    c.down(&mut cap, HTTP_OK);
    assert!(run(&cap.pcap(false, false)).sessions.is_empty());
}

#[test]
fn tls_sni() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(1, "example.com", 443));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    let hello = tls_hello("www.example.com");
    c.up_bytewise(&mut cap, &hello[..10]);
    c.up(&mut cap, &hello[10..]);
    c.close(&mut cap);
    let s = only(&run(&cap.pcapng(false, 1, 1))).clone();
    assert_eq!(s.tunnelled, Some("tls"));
    assert_eq!(s.sni.as_deref(), Some("www.example.com"));
}

#[test]
fn port_reuse_makes_a_new_session() {
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    assert_eq!(run(&cap.pcap(false, false)).sessions.len(), 2);
    // After a non-SOCKS connection that was never seen closing, on the same 4-tuple.
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::with_isn("127.0.0.1:40001", "127.0.0.1:1080", 7, 9);
    c.open(&mut cap);
    c.up(&mut cap, HTTP_GET);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    assert_eq!(run(&cap.pcap(false, false)).sessions.len(), 1);
}

#[test]
fn not_a_capture_and_damaged_files() {
    let err = inspect(b"GIF89a....", &Options::default()).unwrap_err();
    assert!(matches!(err, InspectError::NotACapture { .. }));
    assert!(err.to_string().starts_with("not a capture file"), "{err}");
    assert!(matches!(
        inspect(b"", &Options::default()),
        Err(InspectError::Empty)
    ));
    assert!(inspect(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0], &Options::default()).is_err());
    // A capture cut in its last packet still reports what came before.
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    let mut bytes = cap.pcap(false, false);
    bytes.truncate(bytes.len() - 5);
    let r = run(&bytes);
    assert!(r.capture.truncated);
    assert_eq!(r.sessions.len(), 1);
    let mut ng = cap.pcapng(false, 1, 1);
    ng.truncate(ng.len() - 5);
    assert!(run(&ng).capture.truncated);
}

#[test]
fn never_panics_on_cut_or_corrupt_captures() {
    let mut cap = Cap::new(Link::Ethernet);
    socks5_userpass(&mut cap, &mut Conv::new("127.0.0.1:1", "127.0.0.1:2"));
    for bytes in [cap.pcap(false, false), cap.pcapng(true, 2, 1)] {
        for cut in (0..bytes.len()).step_by(7) {
            let _ = inspect(&bytes[..cut], &Options::default());
        }
        let mut x = bytes.clone();
        for i in (40..x.len()).step_by(13) {
            x[i] ^= 0x5a;
        }
        let _ = inspect(&x, &Options::default());
    }
}

#[test]
fn progress_reaches_the_end() {
    let mut cap = Cap::new(Link::Ethernet);
    simple_session(&mut cap, "127.0.0.1:40001", "127.0.0.1:1080");
    let bytes = cap.pcap(false, false);
    let mut last = None;
    socksgate_inspect::inspect_with_progress(&bytes, &Options::default(), &mut |p| last = Some(p))
        .unwrap();
    let p = last.unwrap();
    assert_eq!(p.done, p.total);
    assert_eq!(p.total, bytes.len());
}

#[test]
fn gssapi_abort_and_failed_bind_second_reply() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1]));
    c.down(&mut cap, &[5, 1]);
    c.up(&mut cap, &gss(1, &[0x60; 8]));
    c.down(&mut cap, &[1, 0xff]);
    c.close(&mut cap);
    let mut c = Conv::new("127.0.0.1:40002", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[0]));
    c.down(&mut cap, &[5, 0]);
    c.up(&mut cap, &request5(2, "example.com", 21));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 45000));
    c.down(&mut cap, &reply5(6, "0.0.0.0", 0));
    c.close(&mut cap);
    let r = run(&cap.pcap(false, false));
    let (a, b) = (&r.sessions[0], &r.sessions[1]);
    assert!(
        a.anomalies.iter().any(|x| x.contains("aborted")),
        "{:?}",
        a.anomalies
    );
    assert_eq!(a.messages.last().unwrap().describe().1.len(), 2);
    assert_eq!(b.reply_code, Some(0));
    assert_eq!(b.bind_peer.as_deref(), Some("0.0.0.0:0"));
    assert_eq!(b.tunnelled, None);
}

#[test]
fn render_for_the_cli() {
    let mut cap = Cap::new(Link::Ethernet);
    socks5_userpass(
        &mut cap,
        &mut Conv::new("127.0.0.1:55820", "127.0.0.1:1080"),
    );
    let bytes = cap.pcap(false, false);
    let text = socksgate_inspect::render(&bytes, false, false).unwrap();
    assert!(
        text.contains("socks5 127.0.0.1:55820 -> 127.0.0.1:1080"),
        "{text}"
    );
    let json = socksgate_inspect::render(&bytes, true, true).unwrap();
    assert!(json.contains("\"password\": \"s3cret\""));
    let err = socksgate_inspect::render(b"nope", true, false).unwrap_err();
    assert!(err.to_string().starts_with("not a capture file"));
}

/// Any segmentation, reordering and duplication of the same byte streams gives the same
/// session (deterministic pseudo-random trials).
#[test]
fn arbitrary_segmentation_gives_identical_sessions() {
    let mut up = greeting(&[0, 2]);
    up.extend(userpass("alice", "pw"));
    up.extend(request5(1, "example.com", 443));
    up.extend(tls_hello("example.com"));
    let mut down = vec![5, 2, 1, 0];
    down.extend(reply5(0, "127.0.0.1", 1234));
    down.extend_from_slice(&[0x17; 300]);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut reference = None;
    for trial in 0..200 {
        let mut cap = Cap::new(Link::Ethernet);
        let mut c = Conv::with_isn(
            "127.0.0.1:40001",
            "127.0.0.1:1080",
            rnd(1 << 30) as u32 * 4,
            77,
        );
        c.open(&mut cap);
        // Cut each stream into random pieces, shuffle each direction's pieces and add
        // duplicates; the client's pieces are captured before the server's (causality).
        let mut pieces = Vec::new();
        for (is_up, data) in [(true, &up), (false, &down)] {
            let mut mine = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let len = 1 + rnd(40.min(data.len() - at));
                mine.push((is_up, at, len));
                at += len;
            }
            for i in (1..mine.len()).rev() {
                if rnd(3) == 0 {
                    mine.swap(i, rnd(i + 1));
                }
            }
            let dups: Vec<_> = (0..2).map(|_| mine[rnd(mine.len())]).collect();
            mine.extend(dups);
            pieces.extend(mine);
        }
        let (cbase, sbase) = (c.cseq, c.sseq);
        for (is_up, at, len) in pieces {
            if is_up {
                cap.tcp(
                    c.c,
                    c.s,
                    cbase.wrapping_add(at as u32),
                    sbase,
                    ack(),
                    &up[at..at + len],
                );
            } else {
                cap.tcp(
                    c.s,
                    c.c,
                    sbase.wrapping_add(at as u32),
                    cbase,
                    ack(),
                    &down[at..at + len],
                );
            }
        }
        let r = run(&cap.pcap(false, false));
        let s = only(&r);
        let key = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {:?} {:?} {}",
            s.methods_offered,
            s.method,
            s.username,
            s.auth_ok,
            s.command,
            s.dst_host,
            s.dst_port,
            s.reply_code,
            s.bound,
            s.bytes_up,
            s.bytes_down,
            s.tunnelled,
            s.sni,
            s.messages.len(),
        );
        assert!(s.anomalies.is_empty(), "trial {trial}: {:?}", s.anomalies);
        match &reference {
            None => reference = Some(key),
            Some(k) => assert_eq!(k, &key, "trial {trial}"),
        }
    }
    let k = reference.unwrap();
    assert!(k.contains("Some(\"example.com\") Some(443)"), "{k}");
    assert!(k.ends_with("Some(\"tls\") Some(\"example.com\") 6"), "{k}");
}

/// RFC 1961 with Kerberos-sized tokens (2 000 bytes each way, longer than the core
/// observer's message buffer): the messages are listed with their lengths and fields, the
/// request and reply follow, and nothing is reported as too long.
#[test]
fn gssapi_long_tokens() {
    let client_token: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let server_token = vec![0x61; 2000];
    let mut cap = Cap::new(Link::Ethernet);
    let mut c = Conv::new("127.0.0.1:40001", "127.0.0.1:1080");
    c.open(&mut cap);
    c.up(&mut cap, &greeting(&[1, 0]));
    c.down(&mut cap, &[5, 1]);
    // The client's token over two segments, the server's in one.
    let msg = gss(1, &client_token);
    c.up(&mut cap, &msg[..1448]);
    c.up(&mut cap, &msg[1448..]);
    c.down(&mut cap, &gss(1, &server_token));
    c.up(&mut cap, &gss(2, &[1]));
    c.down(&mut cap, &gss(2, &[1]));
    c.up(&mut cap, &request5(1, "example.com", 80));
    c.down(&mut cap, &reply5(0, "127.0.0.1", 5));
    c.up(&mut cap, HTTP_GET);
    c.down(&mut cap, HTTP_OK);
    c.close(&mut cap);
    let bytes = cap.pcap(false, false);
    let s = only(&run(&bytes)).clone();
    assert_eq!(s.method, Some(1));
    assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    let kinds: Vec<_> = s
        .messages
        .iter()
        .map(|m| (m.kind, m.len, m.stream_offset))
        .collect();
    assert_eq!(
        kinds,
        [
            ("method_request", 4, 0),
            ("method_reply", 2, 0),
            ("gssapi", 2004, 4),
            ("gssapi", 2004, 2),
            ("gssapi", 5, 2008),
            ("gssapi", 5, 2006),
            ("request", 18, 2013),
            ("reply", 10, 2011),
        ]
    );
    let (summary, fields) = s.messages[2].describe();
    assert_eq!(summary, "GSS-API authentication message, 2000-byte token");
    let fields: Vec<_> = fields
        .iter()
        .map(|f| (f.name, f.value.as_str(), f.offset, f.len))
        .collect();
    assert_eq!(
        fields,
        [
            ("VER", "1", 0, 1),
            ("MTYP", "0x01 (authentication)", 1, 1),
            ("LEN", "2000", 2, 2),
            ("TOKEN", "2000 bytes", 4, 2000),
        ]
    );
    assert_eq!(s.messages[2].bytes.as_slice(), msg);
    assert_eq!(s.messages[2].frames.len(), 2);
    assert_eq!(s.dst_host.as_deref(), Some("example.com"));
    assert_eq!(s.reply_code, Some(0));
    assert_eq!(s.tunnelled, Some("http"));
    let text = socksgate_inspect::render(&bytes, false, false).unwrap();
    assert!(
        text.contains("GSS-API authentication message, 2000-byte token"),
        "{text}"
    );
    assert!(!text.contains("longer than"), "{text}");
}
