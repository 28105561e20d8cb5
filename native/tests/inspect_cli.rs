//! `socksgate inspect` as a stream: stdin (`-`), `--json-lines` printing sessions as their
//! connections end (before the input ends), gzip and zstd captures (compressed by Debian's
//! gzip and zstd), and output to a pipe closed early (`| head`) ending quietly.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_socksgate");
/// Real traffic: curl and PySocks through microsocks and Dante on loopback.
const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../wasm/tests/fixtures/curl-lo.pcapng"
);
/// A legacy pcap of synthetic sessions (little-endian, microseconds).
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../wasm/tests/fixtures/sample.pcap"
);

fn inspect(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("inspect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `sample.pcap`'s records repeated `times` times, each copy `shift_s` seconds later: every
/// copy's SYNs open new connections, so each copy adds the sample's sessions again.
fn repeated_sample(times: u32, shift_s: u32) -> Vec<u8> {
    let sample = std::fs::read(SAMPLE).unwrap();
    assert_eq!(sample[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let (header, records) = sample.split_at(24);
    let mut out = header.to_vec();
    for copy in 0..times {
        let mut at = 0;
        while at + 16 <= records.len() {
            let caplen = u32::from_le_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
            let mut record = records[at..at + 16 + caplen].to_vec();
            let ts = u32::from_le_bytes(record[..4].try_into().unwrap()) + copy * shift_s;
            record[..4].copy_from_slice(&ts.to_le_bytes());
            out.extend_from_slice(&record);
            at += 16 + caplen;
        }
    }
    out
}

fn tool(name: &str) -> String {
    let found = ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists());
    found.unwrap_or_else(|| panic!("{name} is needed (Debian package {name})"))
}

#[test]
fn stdin_gzip_and_zstd_give_the_file_result() {
    let (code, expected, err) = inspect(&[CAPTURE, "--json"], b"");
    assert_eq!(code, 0, "{err}");
    let raw = std::fs::read(CAPTURE).unwrap();
    let (code, from_stdin, err) = inspect(&["-", "--json"], &raw);
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_stdin, expected);

    let dir = tempfile::tempdir().unwrap();
    for (compressor, ext) in [("gzip", "gz"), ("zstd", "zst")] {
        let path = dir.path().join(format!("lo.pcapng.{ext}"));
        let status = Command::new(tool(compressor))
            .args(["-q", "-c", CAPTURE])
            .stdout(std::fs::File::create(&path).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{compressor}");
        let (code, out, err) = inspect(&[path.to_str().unwrap(), "--json"], b"");
        assert_eq!(code, 0, "{compressor}: {err}");
        assert_eq!(out, expected, "{compressor} file");
        let compressed = std::fs::read(&path).unwrap();
        let (code, out, err) = inspect(&["-", "--json"], &compressed);
        assert_eq!(code, 0, "{compressor}: {err}");
        assert_eq!(out, expected, "{compressor} on stdin");
    }
    let (code, _, err) = inspect(&["-"], b"this is not a capture at all");
    assert_eq!(code, 1);
    assert!(err.contains("stdin: not a capture file"), "{err}");
}

#[test]
fn json_lines_has_the_json_documents_sessions_and_capture() {
    let (_, doc, _) = inspect(&[CAPTURE, "--json"], b"");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let (code, lines, err) = inspect(&[CAPTURE, "--json-lines"], b"");
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.pop().unwrap();
    assert_eq!(last["capture"], doc["capture"]);
    lines.sort_by_key(|s| s["first_frame"].as_u64());
    assert_eq!(serde_json::Value::from(lines), doc["sessions"]);
}

#[test]
fn json_lines_prints_sessions_before_the_input_ends() {
    // Two copies 10 s apart: the second copy's packets pass the first copy's close linger,
    // so the first copy's sessions are printed while stdin is still open.
    let one = repeated_sample(1, 10).len();
    let two = repeated_sample(2, 10);
    let (_, expected, _) = inspect(&["-", "--json"], &repeated_sample(1, 10));
    let per_copy = serde_json::from_str::<serde_json::Value>(&expected).unwrap()["sessions"]
        .as_array()
        .unwrap()
        .len();
    assert!(per_copy > 0);
    let mut child = Command::new(BIN)
        .args(["inspect", "-", "--json-lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The first copy and part of the second, then wait with stdin open.
    stdin
        .write_all(&two[..one + (two.len() - one) / 2])
        .unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(first["client"].is_string(), "{line}");
    stdin
        .write_all(&two[one + (two.len() - one) / 2..])
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(1 + rest.lines().count(), 2 * per_copy + 1);
}

#[test]
fn a_pipe_closed_early_ends_quietly() {
    // Thousands of sessions: far more output than a pipe buffer holds.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pcap");
    std::fs::write(&big, repeated_sample(3000, 0)).unwrap();
    for format in [&[][..], &["--json"], &["--json-lines"]] {
        let mut child = Command::new(BIN)
            .arg("inspect")
            .arg(&big)
            .args(format)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(!line.is_empty());
        drop(out); // what `head -1` does
        let result = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(
            result.status.success(),
            "{format:?}: {:?} {err}",
            result.status
        );
        assert!(err.is_empty(), "{format:?}: quiet, but stderr has {err}");
    }
}
