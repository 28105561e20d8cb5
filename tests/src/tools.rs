//! External programs: where they are, and running them with a bound on time.

use core::time::Duration;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// Finds `name` on `PATH` (plus the sbin directories, where `danted` lives).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether a missing tool may skip a test instead of failing it.
pub fn skip_allowed() -> bool {
    std::env::var("SOCKSGATE_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// The paths of `names`, or `None` after printing why the test is skipped. Panics instead of
/// skipping unless `SOCKSGATE_ALLOW_SKIP=1`: in CI every tool is installed.
#[track_caller]
pub fn require(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    for name in names {
        match which(name) {
            Some(p) => found.push(p),
            None if skip_allowed() => {
                println!("SKIPPED {test}: `{name}` is not installed (SOCKSGATE_ALLOW_SKIP=1)");
                return None;
            }
            None => panic!(
                "{test}: required tool `{name}` is not installed (the root ci.sh installs the Debian \
                 packages; set SOCKSGATE_ALLOW_SKIP=1 to skip instead)"
            ),
        }
    }
    Some(found)
}

/// A curl from another Debian suite that the root ci.sh unpacks (`dpkg -x`, with the
/// packages it needs) into a private directory, beside the system's curl (Debian 12's 7.88.1,
/// which the other tests use).
#[derive(Debug, Clone, Copy)]
pub struct DebianCurl {
    /// The Debian suite it comes from.
    pub suite: &'static str,
    /// Its upstream version, the one whose behaviour the tests assert: exactly this one, or
    /// this one or later when [`Self::or_later`] (a suite that moves to new releases).
    pub version: &'static str,
    /// Whether a later version than [`Self::version`] is accepted too.
    pub or_later: bool,
    /// Where ci.sh unpacks it.
    pub root: &'static str,
    /// Whether `root` holds its own C library too (a newer suite's), run through that
    /// library's dynamic loader; otherwise only libcurl is its own (`LD_LIBRARY_PATH`).
    pub own_libc: bool,
}

/// Debian bookworm-backports' curl and libcurl4 (also Debian 13's version): its SOCKS5 code
/// is 7.88.1's.
pub const BOOKWORM_BACKPORTS_CURL: DebianCurl = DebianCurl {
    suite: "bookworm-backports",
    version: "8.14.1",
    or_later: false,
    root: "/opt/socksgate-tests/curl-bookworm-backports",
    own_libc: false,
};

/// Debian trixie-backports' curl with its libcurl4t64 and every library it needs from trixie
/// (glibc included): the SOCKS5 code after curl's rework of it (pull requests 18401 and
/// 18712, in 8.17.0). The suite follows curl's releases, so any version from 8.17.0 on is
/// taken (8.21.0 when the tests were written).
pub const TRIXIE_BACKPORTS_CURL: DebianCurl = DebianCurl {
    suite: "trixie-backports",
    version: "8.17.0",
    or_later: true,
    root: "/opt/socksgate-tests/curl-trixie-backports",
    own_libc: true,
};

/// A command running `curl`. Panics with the reason if it is missing, does not run or is
/// another version: no `SOCKSGATE_ALLOW_SKIP` here, ci.sh always installs it.
#[track_caller]
pub fn debian_curl(test: &str, curl: &DebianCurl) -> Command {
    let root = Path::new(curl.root);
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    let bin = root.join("usr/bin/curl");
    let command = || {
        if curl.own_libc {
            // Its own loader, so that none of the system's libraries is mixed in.
            let mut cmd = Command::new(lib.join("ld-linux-x86-64.so.2"));
            cmd.arg("--library-path").arg(&lib).arg(&bin);
            cmd
        } else {
            let mut cmd = Command::new(&bin);
            cmd.env("LD_LIBRARY_PATH", &lib);
            cmd
        }
    };
    let suite = curl.suite;
    let version = curl.version;
    let out = command()
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{test}: {suite}'s curl is not at {} ({e}); the root ci.sh's install step \
                 unpacks it there",
                bin.display()
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    // "curl 8.21.0 (x86_64-pc-linux-gnu) libcurl/8.21.0 ...": both must be the wanted one.
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map_while(|n| n.parse().ok()).collect() };
    let wanted = numbers(version);
    let fits = |v: &str| {
        let v = numbers(v);
        v.len() == 3
            && if curl.or_later {
                v >= wanted
            } else {
                v == wanted
            }
    };
    let mut words = first.split(' ');
    let tool = words.nth(1).unwrap_or_default();
    let lib = words
        .find_map(|w| w.strip_prefix("libcurl/"))
        .unwrap_or_default();
    let which = if curl.or_later { "or later" } else { "exactly" };
    assert!(
        out.status.success() && fits(tool) && lib == tool && text.contains("GSS-API"),
        "{test}: {} is not {suite}'s curl {version} ({which}) with GSS-API (re-run the root \
         ci.sh's install step): {text}",
        bin.display()
    );
    command()
}

/// A Python 3 interpreter that can `import socks` (python3-socks). Debian's module lives in
/// `/usr/lib/python3/dist-packages`, which a pyenv or venv `python3` earlier on `PATH` does
/// not see, so `/usr/bin/python3` is preferred.
#[track_caller]
pub fn require_pysocks(test: &str) -> Option<PathBuf> {
    let candidates = [Some(PathBuf::from("/usr/bin/python3")), which("python3")];
    for py in candidates.into_iter().flatten() {
        let ok = Command::new(&py)
            .args(["-c", "import socks"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    if skip_allowed() {
        println!("SKIPPED {test}: no python3 with the `socks` module (python3-socks)");
        return None;
    }
    panic!("{test}: no python3 can `import socks`; install Debian's python3-socks");
}

/// What a finished program did.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Stderr as text, for messages.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with both streams unless the program exited 0.
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what}: {}\nstderr: {}\nstdout (first 500 bytes): {}",
            self.status,
            self.stderr_text(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(500)])
        );
        self
    }
}

/// Runs `cmd` with `stdin` fed to it (then closed), collecting its output; kills it and panics
/// if it runs longer than `timeout`.
#[track_caller]
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    run_inner(cmd, stdin, timeout, false)
}

/// Like [`run`], but stdin stays open until the program's stdout ends, as for an interactive
/// session (a peer that does not support half-close tears the connection down on the
/// client's EOF).
#[track_caller]
pub fn run_holding_stdin(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    run_inner(cmd, stdin, timeout, true)
}

#[track_caller]
fn run_inner(cmd: &mut Command, stdin: &[u8], timeout: Duration, hold: bool) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let (stdout_done, wait_stdout) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
        if hold {
            // Returns when the reader drops its sender at stdout's EOF.
            let _ = wait_stdout.recv();
        }
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        drop(stdout_done);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{shown} did not finish within {timeout:?}\nstderr: {}\nstdout (first 500 bytes): {}",
            String::from_utf8_lossy(&stderr),
            String::from_utf8_lossy(&stdout[..stdout.len().min(500)])
        ),
    }
}

/// Reads a log file for failure messages (empty if unreadable).
pub fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
