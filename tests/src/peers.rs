//! Reference SOCKS servers from Debian, Dante's `danted` and `microsocks`, on loopback ports:
//! the one launcher for the interop tests, native's integration tests, inspect's real-traffic
//! test and socksbench.
//!
//! [`Danted`] and [`Microsocks`] describe a peer; `start` runs it and panics if it does not
//! come up (for tests), `try_start` returns the failure instead (for socksbench).
//! [`Process::spawn`] is the launcher underneath, for any server that takes its port on the
//! command line.

use core::fmt::Write as _;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::tmp::TempDir;
use crate::{TIMEOUT, free_port, tools};

/// A server process listening on a loopback port; stopped on drop (`SIGTERM` first, so
/// `danted` takes its worker processes down with it, then `SIGKILL`).
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: TempDir,
}

/// A peer server ([`danted`], [`microsocks`], [`Haproxy`]).
pub type Peer = Process;

impl Process {
    /// Starts `make(port, dir)` on a [`free_port`] of 127.0.0.1 and waits until it accepts
    /// connections; stdout and stderr go to a log in `dir` (kept with the process). A
    /// process that exits or does not accept within [`TIMEOUT`] is retried on another port,
    /// five times in all; the error carries the last attempt's log.
    pub fn spawn(
        name: &'static str,
        dir: TempDir,
        make: impl Fn(u16, &TempDir) -> Command,
    ) -> Result<Self, String> {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let log = dir.join(&format!("{name}-{attempt}.log"));
            let file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
            let err = file.try_clone().map_err(|e| format!("dup log: {e}"))?;
            let mut cmd = make(port, &dir);
            cmd.stdin(Stdio::null()).stdout(file).stderr(err);
            let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("{cmd:?} exited with {status}:\n{}", tools::read_log(&log));
                    break;
                }
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    return Ok(Self {
                        name,
                        child,
                        addr,
                        log,
                        dir,
                    });
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{cmd:?} not accepting:\n{}", tools::read_log(&log));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(format!("{name} did not start: {last}"))
    }

    /// The listening address (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        tools::read_log(&self.log)
    }

    /// The process id (for `danted`: the main process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The temp dir holding the process's files.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
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
        eprintln!("{} did not stop on SIGTERM; killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dante's `danted`: SOCKS4 and SOCKS5, no authentication, clients from 127.0.0.0/8.
///
/// By default it allows CONNECT and BIND to 127.0.0.0/8, logs what Dante logs by default
/// and runs one main server (`-N 1`).
#[derive(Clone, Debug)]
pub struct Danted {
    exe: PathBuf,
    commands: &'static str,
    from: &'static str,
    to: &'static str,
    blocked_ports: Vec<u16>,
    errors_only: bool,
    main_servers: u32,
}

impl Danted {
    /// `danted` at `exe` with the defaults above.
    pub fn new(exe: &Path) -> Self {
        Self {
            exe: exe.to_path_buf(),
            commands: "connect bind bindreply",
            from: "127.0.0.0/8",
            to: "127.0.0.0/8",
            blocked_ports: Vec::new(),
            errors_only: false,
            main_servers: 1,
        }
    }

    /// The commands the `socks pass` rule allows, in Dante's words (`connect`, `bind`,
    /// `bindreply`, `udpassociate`, `udpreply`).
    pub fn commands(mut self, commands: &'static str) -> Self {
        self.commands = commands;
        self
    }

    /// The sources the `socks pass` rule allows (a CIDR block; by default 127.0.0.0/8). For
    /// `udpassociate` Dante matches the client address announced in the request, which
    /// clients such as PySocks leave at 0.0.0.0, so those need `0.0.0.0/0`. Which clients
    /// may connect at all stays 127.0.0.0/8 (the `client pass` rule).
    pub fn socks_from(mut self, cidr: &'static str) -> Self {
        self.from = cidr;
        self
    }

    /// The destinations the `socks pass` rule allows (a CIDR block).
    pub fn to(mut self, cidr: &'static str) -> Self {
        self.to = cidr;
        self
    }

    /// Refuses every request to destination port `port` (Dante's reply 2, "not allowed").
    pub fn block_port(mut self, port: u16) -> Self {
        self.blocked_ports.push(port);
        self
    }

    /// Logs errors only (`log: error` on the rules): no per-session lines.
    pub fn errors_only(mut self) -> Self {
        self.errors_only = true;
        self
    }

    /// How many main servers Dante forks at startup (`-N`).
    pub fn main_servers(mut self, n: u32) -> Self {
        self.main_servers = n;
        self
    }

    /// The `sockd.conf` for `port`; Dante logs to stderr, which is the process's log.
    fn conf(&self, port: u16) -> String {
        let mut conf = format!(
            "logoutput: stderr\n\
             internal: 127.0.0.1 port = {port}\n\
             external: 127.0.0.1\n\
             clientmethod: none\n\
             socksmethod: none\n\
             timeout.negotiate: 30\n"
        );
        // As root, Dante insists on being told which users to switch to.
        if rustix::process::geteuid().is_root() {
            conf.push_str("user.privileged: root\nuser.unprivileged: nobody\n");
        }
        let log_rule = if self.errors_only {
            "\n    log: error"
        } else {
            ""
        };
        let _ = writeln!(
            conf,
            "client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0{log_rule} }}"
        );
        for p in &self.blocked_ports {
            let _ = writeln!(
                conf,
                "socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 port = {p}{log_rule} }}"
            );
        }
        let _ = writeln!(
            conf,
            "socks pass {{ from: {} to: {}\n    command: {}{log_rule} }}",
            self.from, self.to, self.commands
        );
        conf
    }

    /// Starts it on a free loopback port; the error says why it did not start.
    pub fn try_start(self) -> Result<Peer, String> {
        Process::spawn("danted", TempDir::new(), move |port, dir| {
            let conf = dir.write(&format!("sockd-{port}.conf"), self.conf(port));
            let mut cmd = Command::new(&self.exe);
            cmd.arg("-f")
                .arg(conf)
                .arg("-p")
                .arg(dir.join(&format!("danted-{port}.pid")))
                .arg("-N")
                .arg(self.main_servers.to_string());
            cmd
        })
    }

    /// Starts it on a free loopback port; panics if it does not start.
    #[track_caller]
    pub fn start(self) -> Peer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `microsocks -i 127.0.0.1 -p PORT` (SOCKS5 CONNECT only).
#[derive(Clone, Debug)]
pub struct Microsocks {
    exe: PathBuf,
    auth: Option<(String, String)>,
}

impl Microsocks {
    /// `microsocks` at `exe`, no authentication.
    pub fn new(exe: &Path) -> Self {
        Self {
            exe: exe.to_path_buf(),
            auth: None,
        }
    }

    /// Requires this username and password (`-u USER -P PASS`).
    pub fn auth(mut self, user: &str, pass: &str) -> Self {
        self.auth = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Starts it on a free loopback port; the error says why it did not start.
    pub fn try_start(self) -> Result<Peer, String> {
        Process::spawn("microsocks", TempDir::new(), move |port, _| {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((u, p)) = &self.auth {
                cmd.args(["-u", u, "-P", p]);
            }
            cmd
        })
    }

    /// Starts it on a free loopback port; panics if it does not start.
    #[track_caller]
    pub fn start(self) -> Peer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// HAProxy in TCP mode on a free loopback port, balancing round robin over `servers`, each
/// with its own `server` line options after the address (e.g. `send-proxy-v2 check port
/// 9100`). Health checks, when a line asks for them, are `GET /readyz` every 200 ms.
#[derive(Clone, Debug)]
pub struct Haproxy {
    exe: PathBuf,
    servers: Vec<(SocketAddr, String)>,
    master_worker: bool,
}

impl Haproxy {
    /// `haproxy` at `exe`, with no servers yet.
    pub fn new(exe: &Path) -> Self {
        Self {
            exe: exe.to_path_buf(),
            servers: Vec::new(),
            master_worker: false,
        }
    }

    /// Runs in master-worker mode (`-W`): `SIGUSR2` to the process reloads it seamlessly (a
    /// new worker takes over the listening sockets; the old one finishes its connections).
    pub fn master_worker(mut self) -> Self {
        self.master_worker = true;
        self
    }

    /// Adds a backend server with `options` on its `server` line.
    pub fn server(mut self, addr: SocketAddr, options: &str) -> Self {
        self.servers.push((addr, options.to_owned()));
        self
    }

    /// The configuration for a frontend on `port`.
    fn config(&self, port: u16) -> String {
        let mut text = format!(
            "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 120s\n    timeout server 120s\n    timeout check 1s\n    \
             retries 3\n    option redispatch\n\nfrontend socks\n    bind 127.0.0.1:{port}\n    \
             default_backend nodes\n\nbackend nodes\n    balance roundrobin\n    \
             option httpchk GET /readyz\n    default-server inter 200ms fall 1 rise 1\n"
        );
        for (i, (addr, options)) in self.servers.iter().enumerate() {
            text.push_str(&format!("    server node{i} {addr} {options}\n"));
        }
        text
    }

    /// Starts it in the foreground (`-db`, logging to stderr: `Server nodes/node0 is DOWN`
    /// when a check fails); the error says why it did not start.
    pub fn try_start(self) -> Result<Peer, String> {
        Process::spawn("haproxy", TempDir::new(), move |port, dir| {
            let path = dir.write("haproxy.cfg", self.config(port));
            let mut cmd = Command::new(&self.exe);
            if self.master_worker {
                cmd.arg("-W");
            }
            cmd.arg("-db").arg("-f").arg(path);
            cmd
        })
    }

    /// Starts it; panics if it does not start.
    #[track_caller]
    pub fn start(self) -> Peer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Starts `danted` with the defaults of [`Danted::new`].
#[track_caller]
pub fn danted(exe: &Path) -> Peer {
    Danted::new(exe).start()
}

/// Starts `microsocks`, with `-u USER -P PASS` if `auth` is given.
#[track_caller]
pub fn microsocks(exe: &Path, auth: Option<(&str, &str)>) -> Peer {
    let m = Microsocks::new(exe);
    match auth {
        Some((u, p)) => m.auth(u, p),
        None => m,
    }
    .start()
}
