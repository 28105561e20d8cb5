//! The systems under test: the direct baseline, socksgate (release build), the peers from
//! Debian and the peers given with `--peer`, each on its own loopback port, all stopped when
//! dropped. Every process is started with the harness's `peers` launcher; Dante is configured
//! for the benchmark (UDP allowed, errors-only logging).

use core::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use socksgate_tests::peers::{Danted, Microsocks, Process};
use socksgate_tests::tmp::TempDir;

use crate::added_peer::AddedPeer;
use crate::error::{BenchError, Result};
use crate::procfs;
use crate::via::Via;

/// Which system a column measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Direct,
    Socksgate,
    /// Another socksgate build (`--baseline PATH`), to compare a change in the same run.
    Baseline,
    Dante,
    Microsocks,
    /// A peer given with `--peer NAME=COMMAND`.
    Added(&'static str),
}

impl Kind {
    pub(crate) const ALL: [Self; 4] =
        [Self::Direct, Self::Socksgate, Self::Dante, Self::Microsocks];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Socksgate => "socksgate",
            Self::Baseline => "baseline",
            Self::Dante => "dante",
            Self::Microsocks => "microsocks",
            Self::Added(name) => name,
        }
    }

    /// Whether it may relay UDP ASSOCIATE (microsocks has no UDP; an added peer is asked, and
    /// a refusal shows in the table).
    pub(crate) fn has_udp(self) -> bool {
        !matches!(self, Self::Microsocks)
    }

    /// Whether it is a peer socksgate is compared with ("best peer", the targets).
    pub(crate) fn is_peer(self) -> bool {
        matches!(self, Self::Dante | Self::Microsocks | Self::Added(_))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of the table: how to reach it and, for proxies, the process to measure.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) via: Via,
    process: Option<Process>,
}

impl Target {
    pub(crate) fn direct() -> Self {
        Self {
            kind: Kind::Direct,
            via: Via::Direct,
            process: None,
        }
    }

    fn proxy(kind: Kind, started: core::result::Result<Process, String>) -> Result<Self> {
        let process = started.map_err(BenchError::Setup)?;
        Ok(Self {
            kind,
            via: Via::Socks(process.addr()),
            process: Some(process),
        })
    }

    /// Starts `socksgate serve --listen 127.0.0.1:PORT` (defaults otherwise) from `exe`, as
    /// the column `kind` (socksgate, or the baseline build).
    pub(crate) fn socksgate(kind: Kind, exe: &Path) -> Result<Self> {
        let started = Process::spawn("socksgate", TempDir::new(), |port, _| {
            let mut cmd = Command::new(exe);
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
            cmd
        });
        Self::proxy(kind, started)
    }

    /// Starts Debian's `danted`: loopback in and out, no authentication, CONNECT and UDP
    /// ASSOCIATE allowed, errors logged only.
    pub(crate) fn dante(exe: &Path) -> Result<Self> {
        let started = Danted::new(exe)
            .commands("connect udpassociate udpreply")
            .errors_only()
            .try_start();
        Self::proxy(Kind::Dante, started)
    }

    /// Starts `microsocks -i 127.0.0.1 -p PORT`.
    pub(crate) fn microsocks(exe: &Path) -> Result<Self> {
        Self::proxy(Kind::Microsocks, Microsocks::new(exe).try_start())
    }

    /// Starts an added peer: `sh -c COMMAND` with its placeholders replaced, after writing its
    /// config file (if it has one) for the chosen port into the peer's temp directory. The
    /// shell stays the root of the peer's process tree (dash does not exec the last command),
    /// so CPU and RSS are summed over the tree, and dropping the target stops the whole tree.
    pub(crate) fn added(peer: &AddedPeer) -> Result<Self> {
        let started = Process::spawn(peer.name, TempDir::new(), |port, dir| {
            let config = peer
                .config_file_name(port)
                .zip(peer.config_for(port))
                .map(|(name, text)| dir.write(&name, text));
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(peer.command_for(port, config.as_deref()));
            cmd
        });
        Self::proxy(Kind::Added(peer.name), started)
    }

    /// The proxy's (root) process id; `None` for the direct baseline.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// An error if the proxy process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        let Some(p) = &mut self.process else {
            return Ok(());
        };
        match p.exited() {
            None => Ok(()),
            Some(status) => Err(BenchError::Setup(format!(
                "{} exited ({status}); log tail:\n{}",
                self.kind,
                tail(&p.log(), 20)
            ))),
        }
    }

    /// The last lines of the proxy's log (for failure messages).
    pub(crate) fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| tail(&p.log(), 20))
            .unwrap_or_default()
    }
}

impl Drop for Target {
    /// An added peer runs under `sh -c`, whose SIGTERM (from the launcher) would leave the
    /// server itself running: stop the shell's descendants first, SIGKILL after 5 s.
    fn drop(&mut self) {
        let (Kind::Added(_), Some(p)) = (self.kind, &self.process) else {
            return;
        };
        let root = p.pid();
        let descendants = || -> Vec<u32> {
            procfs::tree(root)
                .into_iter()
                .filter(|&pid| pid != root)
                .collect()
        };
        let signal = |pids: &[u32], sig: rustix::process::Signal| {
            for &pid in pids {
                if let Some(pid) = i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        };
        signal(&descendants(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + core::time::Duration::from_secs(5);
        while Instant::now() < deadline && !descendants().is_empty() {
            std::thread::sleep(core::time::Duration::from_millis(20));
        }
        let left = descendants();
        if !left.is_empty() {
            eprintln!("{}: {left:?} did not stop on SIGTERM; killing", self.kind);
            signal(&left, rustix::process::Signal::KILL);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::added_peer;
    use socksgate_tests::tools;

    /// A peer through the whole `--peer`/`--peer-config` path: the config file is written with
    /// the port in it, its path reaches the command, the server comes up on the port, serves a
    /// SOCKS5 CONNECT, and dropping the target stops the server under the shell.
    #[test]
    fn an_added_peer_starts_from_its_config_and_stops_with_its_children() {
        let Some(exe) = tools::require("added peer", &["microsocks"]) else {
            return;
        };
        let dir = TempDir::new();
        let config = dir.write("peer.conf", "listen on {port}\n");
        let command = format!(
            "grep -qx 'listen on {{port}}' {{config}} && {} -i 127.0.0.1 -p {{port}}",
            exe[0].display()
        );
        let peers = added_peer::parse(
            &[format!("ms={command}")],
            &[format!("ms={}", config.display())],
            &[],
        )
        .unwrap();
        let target = Target::added(&peers[0]).unwrap();
        assert_eq!(target.kind, Kind::Added("ms"));
        let Via::Socks(proxy) = target.via else {
            panic!("a peer is a proxy");
        };
        let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = crate::via::connect(target.via, origin.local_addr().unwrap());
        assert!(s.is_ok(), "CONNECT through {proxy}: {s:?}");
        let root = target.pid().unwrap();
        let children: Vec<u32> = procfs::tree(root)
            .into_iter()
            .filter(|&p| p != root)
            .collect();
        assert!(!children.is_empty(), "microsocks runs under the shell");
        drop(s);
        drop(target);
        for pid in children {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(state.is_empty(), "{pid} still there: {state}");
        }
    }
}
