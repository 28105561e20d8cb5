//! The systems under test: the direct baseline, socksgate (release build) and the peers from
//! Debian, each on its own loopback port, all stopped when dropped. The peers are started
//! here rather than with the harness's `peers` module so the benchmark controls their
//! configuration (Dante: UDP allowed, errors-only logging).

use core::fmt;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use socksgate_tests::tmp::TempDir;
use socksgate_tests::{free_port, tools, wait_for_listener};

use crate::error::{BenchError, Context, Result};
use crate::socks::Via;

/// Which system a column measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Direct,
    Socksgate,
    Dante,
    Microsocks,
}

impl Kind {
    pub(crate) const ALL: [Self; 4] =
        [Self::Direct, Self::Socksgate, Self::Dante, Self::Microsocks];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Socksgate => "socksgate",
            Self::Dante => "dante",
            Self::Microsocks => "microsocks",
        }
    }

    /// Whether it relays UDP ASSOCIATE.
    pub(crate) fn has_udp(self) -> bool {
        !matches!(self, Self::Microsocks)
    }

    pub(crate) fn is_peer(self) -> bool {
        matches!(self, Self::Dante | Self::Microsocks)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running proxy process; stopped on drop (SIGTERM first, so `danted` takes its worker
/// processes down with it, then SIGKILL).
#[derive(Debug)]
struct Proc {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `make(port, dir)` on a free loopback port (retrying if the port was taken) and
/// waits until it accepts; stdout and stderr go to a log in a fresh temp dir.
fn spawn(
    name: &str,
    make: impl Fn(u16, &TempDir) -> Result<Command>,
) -> Result<(Proc, SocketAddr)> {
    let dir = TempDir::new();
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join(&format!("{name}-{attempt}.log"));
        let file = File::create(&log).ctx(|| format!("create {}", log.display()))?;
        let err = file.try_clone().ctx(|| "dup log".into())?;
        let mut cmd = make(port, &dir)?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .ctx(|| format!("spawn {cmd:?}"))?;
        // Until it accepts, exits, or 20 s pass.
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if wait_for_listener(addr, Duration::ZERO) {
                let proc = Proc {
                    child,
                    log,
                    _dir: dir,
                };
                return Ok((proc, addr));
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        last = format!(
            "{} ({cmd:?}):\n{}",
            exited.map_or("not accepting after 20 s".to_owned(), |s| format!(
                "exited with {s}"
            )),
            tools::read_log(&log)
        );
        // Only a port taken in the meantime is worth another attempt.
        if !last.to_lowercase().contains("in use") {
            break;
        }
    }
    Err(BenchError::Setup(format!("{name} did not start:\n{last}")))
}

/// One column of the table: how to reach it and, for proxies, the process to measure.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) via: Via,
    process: Option<Proc>,
}

impl Target {
    pub(crate) fn direct() -> Self {
        Self {
            kind: Kind::Direct,
            via: Via::Direct,
            process: None,
        }
    }

    fn proxy(kind: Kind, (proc, addr): (Proc, SocketAddr)) -> Self {
        Self {
            kind,
            via: Via::Socks(addr),
            process: Some(proc),
        }
    }

    /// Starts `socksgate serve --listen 127.0.0.1:PORT` (defaults otherwise) from `exe`.
    pub(crate) fn socksgate(exe: &Path) -> Result<Self> {
        let (p, a) = spawn("socksgate", |port, _| {
            let mut cmd = Command::new(exe);
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
            Ok(cmd)
        })?;
        Ok(Self::proxy(Kind::Socksgate, (p, a)))
    }

    /// Starts Debian's `danted`: loopback in and out, no authentication, CONNECT and UDP
    /// ASSOCIATE allowed, errors logged only.
    pub(crate) fn dante(exe: &Path) -> Result<Self> {
        // As root, Dante insists on being told which users to switch to.
        let users = if rustix::process::geteuid().is_root() {
            "user.privileged: root\nuser.unprivileged: nobody\n"
        } else {
            ""
        };
        let spawned = spawn("danted", |port, dir| {
            let conf = format!(
                "logoutput: stderr\n\
                 internal: 127.0.0.1 port = {port}\n\
                 external: 127.0.0.1\n\
                 clientmethod: none\n\
                 socksmethod: none\n\
                 {users}\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0\n\
                     log: error }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8\n\
                     command: connect udpassociate udpreply\n\
                     log: error }}\n"
            );
            let path = dir.write(&format!("sockd-{port}.conf"), conf);
            let mut cmd = Command::new(exe);
            cmd.arg("-f")
                .arg(path)
                .arg("-p")
                .arg(dir.join(&format!("danted-{port}.pid")));
            Ok(cmd)
        })?;
        Ok(Self::proxy(Kind::Dante, spawned))
    }

    /// Starts `microsocks -i 127.0.0.1 -p PORT`.
    pub(crate) fn microsocks(exe: &Path) -> Result<Self> {
        let spawned = spawn("microsocks", |port, _| {
            let mut cmd = Command::new(exe);
            cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            Ok(cmd)
        })?;
        Ok(Self::proxy(Kind::Microsocks, spawned))
    }

    /// The proxy's (root) process id; `None` for the direct baseline.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// An error if the proxy process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        let Some(p) = &mut self.process else {
            return Ok(());
        };
        match p.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Setup(format!(
                "{} exited ({status}); log tail:\n{}",
                self.kind,
                tail(&tools::read_log(&p.log), 20)
            ))),
            Err(e) => Err(BenchError::Setup(format!("{}: wait: {e}", self.kind))),
        }
    }

    /// The last lines of the proxy's log (for failure messages).
    pub(crate) fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| tail(&tools::read_log(&p.log), 20))
            .unwrap_or_default()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
