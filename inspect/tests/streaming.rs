//! The streaming [`Inspector`]: the same sessions whatever the chunking, sessions reported as
//! their connections end (close, idle timeout, end of input), memory held by the live
//! connections only, and errors as soon as the first bytes show a non-capture.

#[allow(unused_imports)]
mod common;

use common::*;
use socksgate_inspect::{InspectError, Inspector, Options, Report, Session, inspect};

const SAMPLE: &[u8] = include_bytes!("../../wasm/tests/fixtures/sample.pcap");
const CURL_LO: &[u8] = include_bytes!("../../wasm/tests/fixtures/curl-lo.pcapng");

/// Pushes `bytes` in chunks whose sizes cycle through `sizes`; returns the sessions taken
/// along the way (in the order they ended) and the final report.
fn stream(bytes: &[u8], sizes: &[usize]) -> (Vec<Session>, Report) {
    let mut inspector = Inspector::new(Options::default());
    let mut taken = Vec::new();
    let mut at = 0;
    for &n in sizes.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + n.max(1)).min(bytes.len());
        inspector.push(&bytes[at..end]).unwrap();
        taken.extend(inspector.take_sessions());
        at = end;
    }
    let report = inspector.finish().unwrap();
    (taken, report)
}

/// The streamed result in the batch API's order, as the batch API's JSON.
fn streamed_json(bytes: &[u8], sizes: &[usize]) -> String {
    let (mut sessions, mut report) = stream(bytes, sizes);
    sessions.append(&mut report.sessions);
    sessions.sort_by_key(|s| s.first_frame);
    report.sessions = sessions;
    report.to_json()
}

fn five_sessions(gap_ns: u64) -> Cap {
    let mut cap = Cap::new(Link::Ethernet);
    for i in 0..5u16 {
        let mut conv = Conv::new(&format!("127.0.0.1:{}", 40000 + i), "127.0.0.1:1080");
        conv.open(&mut cap);
        conv.up(&mut cap, &greeting(&[0]));
        conv.down(&mut cap, &[5, 0]);
        conv.up(&mut cap, &request5(1, "example.com", 80));
        conv.down(&mut cap, &reply5(0, "127.0.0.1", 4000 + i));
        conv.up(&mut cap, HTTP_GET);
        conv.down(&mut cap, HTTP_OK);
        conv.close(&mut cap);
        cap.clock_ns += gap_ns;
    }
    cap
}

#[test]
fn any_chunking_gives_the_batch_result() {
    let synthetic = five_sessions(2_000_000_000);
    let files = [
        SAMPLE.to_vec(),
        CURL_LO.to_vec(),
        synthetic.pcap(false, false),
        synthetic.pcap(true, true),
        synthetic.pcapng(false, 2, 2),
        synthetic.pcapng(true, 1, 1),
    ];
    for bytes in &files {
        let batch = inspect(bytes, &Options::default()).unwrap().to_json();
        for sizes in [
            &[1][..],
            &[7],
            &[4096],
            &[3, 1, 100, 25, 2000],
            &[usize::MAX],
        ] {
            assert_eq!(streamed_json(bytes, sizes), batch, "chunk sizes {sizes:?}");
        }
    }
}

#[test]
fn a_cut_off_capture_is_truncated_whatever_the_chunking() {
    let bytes = five_sessions(0).pcap(false, false);
    let cut = &bytes[..bytes.len() - 10];
    let batch = inspect(cut, &Options::default()).unwrap();
    assert!(batch.capture.truncated);
    assert_eq!(streamed_json(cut, &[1]), batch.to_json());
    assert_eq!(streamed_json(cut, &[333]), batch.to_json());
}

#[test]
fn sessions_are_reported_as_their_connections_close() {
    // 2 s between sessions: each is reported once the next one's packets pass its linger.
    let bytes = five_sessions(2_000_000_000).pcap(false, false);
    let (taken, report) = stream(&bytes, &[512]);
    assert_eq!(taken.len(), 4, "all but the last before the end of input");
    assert_eq!(report.sessions.len(), 1);
    let ports: Vec<&str> = taken.iter().map(|s| s.client.as_str()).collect();
    assert_eq!(
        ports,
        [
            "127.0.0.1:40000",
            "127.0.0.1:40001",
            "127.0.0.1:40002",
            "127.0.0.1:40003"
        ]
    );
    assert!(
        taken
            .iter()
            .all(|s| s.reply_code == Some(0) && s.bytes_up > 0)
    );
    // Within the linger (1 ms apart) nothing is reported before the end.
    let bytes = five_sessions(0).pcap(false, false);
    let (taken, report) = stream(&bytes, &[512]);
    assert!(taken.is_empty());
    assert_eq!(report.sessions.len(), 5);
}

#[test]
fn an_idle_connection_is_reported_after_the_idle_timeout() {
    let mut cap = Cap::new(Link::Ethernet);
    let mut idle = Conv::new("127.0.0.1:41000", "127.0.0.1:1080");
    idle.open(&mut cap);
    idle.up(&mut cap, &greeting(&[0]));
    idle.down(&mut cap, &[5, 0]);
    // Other traffic for 20 minutes of capture time, never closing the first connection.
    for i in 0..5u16 {
        cap.clock_ns += 300_000_000_000;
        let mut other = Conv::new(&format!("127.0.0.1:{}", 42000 + i), "127.0.0.1:80");
        other.open(&mut cap);
        other.up(&mut cap, b"GET / HTTP/1.1\r\n\r\n");
        other.close(&mut cap);
    }
    let bytes = cap.pcap(false, false);
    let mut inspector = Inspector::new(Options::default());
    inspector.push(&bytes).unwrap();
    let taken = inspector.take_sessions();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].client, "127.0.0.1:41000");
    assert!(
        taken[0].anomalies.iter().any(|a| a.contains("missing")),
        "{:?}",
        taken[0].anomalies
    );
    assert!(inspector.finish().unwrap().sessions.is_empty());

    // Without a timeout it is reported at the end.
    let mut options = Options::default();
    options.idle_timeout = None;
    let mut inspector = Inspector::new(options);
    inspector.push(&bytes).unwrap();
    assert!(inspector.take_sessions().is_empty());
    assert_eq!(inspector.finish().unwrap().sessions.len(), 1);
}

#[test]
fn memory_holds_the_live_connections_only() {
    // 2000 sequential sessions; at no point are more than a few held.
    let mut cap = Cap::new(Link::Ethernet);
    for i in 0..2000u32 {
        let mut conv = Conv::new(
            &format!("127.0.{}.{}:{}", i / 250, 1 + i % 250, 30000 + i % 1000),
            "127.0.0.1:1080",
        );
        conv.open(&mut cap);
        conv.up(&mut cap, &greeting(&[0]));
        conv.down(&mut cap, &[5, 0]);
        conv.up(&mut cap, &request5(1, "example.com", 443));
        conv.down(&mut cap, &reply5(0, "127.0.0.1", 5000));
        conv.close(&mut cap);
        cap.clock_ns += 100_000_000;
    }
    let bytes = cap.pcap(false, false);
    let mut inspector = Inspector::new(Options::default());
    let mut most = 0;
    let mut reported = 0;
    for chunk in bytes.chunks(1500) {
        inspector.push(chunk).unwrap();
        most = most.max(inspector.live_connections());
        reported += inspector.take_sessions().len();
    }
    let report = inspector.finish().unwrap();
    assert_eq!(reported + report.sessions.len(), 2000);
    assert_eq!(report.capture.tcp_connections, 2000);
    assert!(most <= 12, "{most} connections held at once");
}

#[test]
fn a_non_capture_fails_on_its_first_bytes() {
    let mut inspector = Inspector::new(Options::default());
    let e = inspector
        .push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_err();
    assert!(matches!(e, InspectError::NotACapture { .. }), "{e}");
    // Fewer bytes than a header: undecided until more come or the input ends.
    let mut inspector = Inspector::new(Options::default());
    inspector.push(&SAMPLE[..3]).unwrap();
    assert!(matches!(
        inspector.finish().unwrap_err(),
        InspectError::Truncated { .. }
    ));
    assert!(matches!(
        Inspector::new(Options::default()).finish().unwrap_err(),
        InspectError::Empty
    ));
}
