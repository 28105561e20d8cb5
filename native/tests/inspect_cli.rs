//! `socksgate inspect` as a stream: stdin (`-`), `--json-lines` printing sessions as their
//! connections end (before the input ends; also live from `tcpdump -w - -U`), gzip and zstd
//! captures (compressed by Debian's gzip and zstd), the progress bar on a terminal (util-linux
//! `script`), output to a pipe closed early (`| head`) ending quietly, and `--json` (streamed
//! through a temporary file) byte for byte the batch document.

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

#[test]
fn a_progress_bar_on_a_terminal_for_files_only() {
    // util-linux `script` runs the command on a pseudo-terminal and copies what it draws.
    let script = tool("script");
    let on_terminal = |command: String| {
        let out = Command::new(&script)
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = on_terminal(format!("{BIN} inspect {CAPTURE} --json > /dev/null"));
    assert!(file.contains('█'), "a bar for a file: {file:?}");
    assert!(file.contains("KiB"), "with sizes: {file:?}");
    let stdin = on_terminal(format!("{BIN} inspect - --json < {CAPTURE} > /dev/null"));
    assert!(stdin.is_empty(), "no bar for stdin: {stdin:?}");
    let (_, piped, err) = inspect(&[CAPTURE, "--json"], b"");
    assert!(
        err.is_empty() && piped.starts_with('{'),
        "no bar when stderr is not a terminal"
    );
}

/// Reads lines from `out` on a thread, so the test can wait for one with a timeout.
fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A SOCKS5 CONNECT through `proxy` to `origin` (an echo server), one round trip, closed.
fn socks5_round_trip(proxy: u16, origin: std::net::SocketAddr) {
    use std::net::{IpAddr, TcpStream};
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0]);
    let IpAddr::V4(ip) = origin.ip() else {
        panic!("IPv4 origin")
    };
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&origin.port().to_be_bytes());
    s.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "CONNECT succeeded");
    s.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    s.read_exact(&mut echoed).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn live_capture_on_stdin_shows_sessions_as_they_finish() {
    // tcpdump -i lo -w - -U | socksgate inspect - --json-lines, with a socksgate server and
    // an echo origin on loopback: the first session is printed while the capture still runs.
    let tcpdump = ["/usr/sbin/tcpdump", "/usr/bin/tcpdump"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("tcpdump is needed (Debian package tcpdump)");
    let origin = socksgate_tests::origin::echo();
    let port = socksgate_tests::free_port();
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(socksgate_tests::wait_for_listener(
        proxy_addr,
        std::time::Duration::from_secs(10)
    ));
    let mut capture = Command::new(tcpdump)
        .args([
            "-i",
            "lo",
            "-U",
            // Packets go to the pipe as they arrive, not in the kernel's blocks of up to 1 s.
            "--immediate-mode",
            "-w",
            "-",
            "tcp",
            "port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let capture_err = lines_of(capture.stderr.take().unwrap());
    let mut inspector = Command::new(BIN)
        .args(["inspect", "-", "--json-lines"])
        .stdin(Stdio::from(capture.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = lines_of(inspector.stdout.take().unwrap());
    // tcpdump says so once it captures.
    let started = std::time::Instant::now();
    loop {
        match capture_err.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) if started.elapsed().as_secs() < 10 => {}
            other => panic!("tcpdump did not start capturing: {other:?}"),
        }
    }
    socks5_round_trip(port, origin.addr());
    // The second session's packets, more than the 1 s linger later, bring out the first.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    socks5_round_trip(port, origin.addr());
    let first = printed.recv_timeout(std::time::Duration::from_secs(10));
    let still_capturing = capture.try_wait().unwrap().is_none();
    // Give tcpdump time to write the second session's last packets before it is killed (a
    // loaded machine can hold them back).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = capture.kill();
    let _ = capture.wait();
    let rest: Vec<String> = printed.iter().collect();
    let _ = server.kill();
    let _ = server.wait();
    let status = inspector.wait().unwrap();
    let first = first.unwrap_or_else(|e| {
        panic!("no session printed while the capture runs ({e}); afterwards: {rest:?}")
    });
    assert!(still_capturing);
    let session: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(session["server"], format!("127.0.0.1:{port}"));
    assert_eq!(session["version"], "socks5");
    assert_eq!(session["command"], "connect");
    assert_eq!(session["dst_port"], origin.addr().port());
    assert_eq!(session["reply_code"], 0);
    assert_eq!(session["bytes_up"], 4);
    assert_eq!(session["bytes_down"], 4);
    assert!(status.success() || status.code().is_none() || status.code() == Some(0));
    // The second session at the end of input, then the capture line.
    assert!(rest.len() >= 2, "{rest:?}");
    assert!(
        rest.last().unwrap().starts_with("{\"capture\":"),
        "{rest:?}"
    );
}

#[test]
fn json_is_byte_for_byte_the_batch_document() {
    // The document streams through a temporary file now; its bytes must not change: the
    // fixtures (file and stdin), and 200 sessions spread over time, so that many settle and
    // are written before the input ends.
    let many = repeated_sample(40, 5);
    let cases = [
        (std::fs::read(CAPTURE).unwrap(), Some(CAPTURE)),
        (std::fs::read(SAMPLE).unwrap(), Some(SAMPLE)),
        (many, None),
    ];
    for (bytes, file) in &cases {
        for secrets in [false, true] {
            let want = socksgate_inspect::render(bytes, true, secrets).unwrap() + "\n";
            let mut args = vec!["--json"];
            if secrets {
                args.push("--show-secrets");
            }
            let (code, out, err) = inspect(&[&args[..], &["-"]].concat(), bytes);
            assert_eq!((code, err.as_str()), (0, ""), "stdin");
            assert!(
                out == want,
                "stdin --json differs from the batch document ({file:?})"
            );
            if let Some(file) = file {
                let (code, out, err) = inspect(&[&args[..], &[file]].concat(), b"");
                assert_eq!((code, err.as_str()), (0, ""), "{file}");
                assert!(
                    out == want,
                    "{file}: --json differs from the batch document"
                );
            }
        }
    }
}
