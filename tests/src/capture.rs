//! A packet capture on `lo` by Debian's tcpdump, for tests that check what crosses the wire
//! (e.g. that a payload never appears in clear under GSS-API confidentiality).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::tmp::TempDir;

/// A running capture into a pcap file; [`stop_after`](Self::stop_after) ends it and returns the file.
#[derive(Debug)]
pub struct LoCapture {
    child: Child,
    file: PathBuf,
    _dir: TempDir,
}

impl LoCapture {
    /// Starts capturing packets on `lo` that match the tcpdump `filter` (e.g.
    /// `udp and not port 7`); returns once tcpdump says it is listening. Panics if tcpdump
    /// is missing or does not start.
    #[track_caller]
    pub fn start(filter: &str) -> Self {
        let tcpdump = ["/usr/sbin/tcpdump", "/usr/bin/tcpdump"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("tcpdump is needed (Debian package tcpdump)");
        let dir = TempDir::new();
        let file = dir.join("capture.pcap");
        let mut child = Command::new(tcpdump)
            // -U and --immediate-mode: each packet reaches the file as it is seen.
            .args(["-i", "lo", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .args(filter.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let mut err = BufReader::new(child.stderr.take().expect("tcpdump stderr"));
        let mut seen = String::new();
        let mut line = String::new();
        while err.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            if line.contains("listening on") {
                break;
            }
            line.clear();
        }
        assert!(
            seen.contains("listening on"),
            "tcpdump did not start: {seen}"
        );
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Self {
            child,
            file,
            _dir: dir,
        }
    }

    /// Ends the capture once its file holds at least `at_least` octets (or after 10 s: on a
    /// busy machine tcpdump may lag behind the traffic), after a moment for the last
    /// packets, and returns the pcap file's bytes: the packets' payloads appear in it as
    /// sent.
    pub fn stop_after(mut self, at_least: usize) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&self.file).map_or(0, |m| m.len()) < at_least as u64
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("capture file")
    }
}
