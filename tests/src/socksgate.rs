//! The `socksgate` binary under test: locating it and running `serve` on a loopback port.

use core::net::SocketAddr;
use core::time::Duration;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::tmp::TempDir;
use crate::tools::{self, Output};
use crate::{TIMEOUT, free_port};

/// The `socksgate` executable: `$SOCKSGATE_BIN` if set, else `target/debug/socksgate`, brought
/// up to date once per test process with `cargo build -p socksgate` (a no-op when `cargo test`
/// over the workspace already built it).
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SOCKSGATE_BIN") {
            return PathBuf::from(p);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest.parent().expect("workspace root");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| {
                if t.is_relative() {
                    workspace.join(t)
                } else {
                    t
                }
            })
            .unwrap_or_else(|| workspace.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "-p", "socksgate", "--bin", "socksgate"])
            .stdout(Stdio::null())
            .status()
            .expect("run cargo build -p socksgate");
        assert!(
            status.success(),
            "cargo build -p socksgate failed: {status}"
        );
        let exe = target.join("debug").join("socksgate");
        assert!(exe.is_file(), "{} missing after cargo build", exe.display());
        exe
    })
}

/// A `socksgate` command with the binary filled in.
pub fn command() -> Command {
    Command::new(bin())
}

/// Runs `socksgate ARGS` with `stdin`, bounded by [`TIMEOUT`].
#[track_caller]
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    tools::run(command().args(args), stdin, TIMEOUT)
}

/// `socksgate passwd --users FILE USER` with `password` and a newline on stdin.
#[track_caller]
pub fn passwd(users: &Path, user: &str, password: &str) {
    let users = users.to_str().expect("utf-8 path");
    run(
        &["passwd", "--users", users, user],
        format!("{password}\n").as_bytes(),
    )
    .assert_success("socksgate passwd");
}

/// How to start a server; [`ServerBuilder::start`] picks the port.
#[derive(Debug, Default)]
pub struct ServerBuilder {
    users: Vec<(String, String)>,
    config: Option<String>,
    ipv6: bool,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServerBuilder {
    /// Requires username/password: the users are written with `socksgate passwd`.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Passes `--config FILE` with this text (plus a `[timeouts]` table unless it has one);
    /// `{listen}` in it stands for the listen address, known only once a port is picked.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.into());
        self
    }

    /// Listens on `[::1]` instead of `127.0.0.1`.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Sets environment variables for the server (e.g. a Kerberos realm's `KRB5_CONFIG`).
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// Extra command-line arguments after `serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts `socksgate serve` and waits until it accepts connections.
    #[track_caller]
    pub fn start(self) -> Server {
        let dir = TempDir::new();
        let mut args: Vec<String> = vec!["serve".into()];
        if !self.users.is_empty() {
            let users = dir.join("users");
            for (name, password) in &self.users {
                passwd(&users, name, password);
            }
            args.extend(["--users".into(), users.to_str().expect("utf-8").into()]);
        }
        // A generous handshake timeout: on a loaded two-core machine an unoptimised debug
        // build's Argon2 check alone can take seconds, and the default (10 s) would close
        // logins mid-verification. Tests that set `[timeouts]` themselves keep theirs.
        let mut config = self.config.clone().unwrap_or_default();
        if !config.contains("[timeouts]") {
            config.push_str(&format!(
                "\n[timeouts]\nhandshake = {}\n",
                TIMEOUT.as_secs()
            ));
        }
        let config_path = dir.join("socksgate.conf");
        args.extend([
            "--config".into(),
            config_path.to_str().expect("utf-8").into(),
        ]);
        args.extend(self.extra.iter().cloned());
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = if self.ipv6 {
                SocketAddr::from((core::net::Ipv6Addr::LOCALHOST, port))
            } else {
                SocketAddr::from((core::net::Ipv4Addr::LOCALHOST, port))
            };
            dir.write(
                "socksgate.conf",
                config.replace("{listen}", &addr.to_string()),
            );
            let log_path = dir.join(&format!("serve-{attempt}.log"));
            let log = File::create(&log_path).expect("create log");
            let mut cmd = command();
            cmd.args(&args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .arg("--listen")
                .arg(addr.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
            match wait_ready(&mut child, addr, &log_path) {
                Ok(()) => {
                    return Server {
                        child,
                        addr,
                        log: log_path,
                        dir,
                    };
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = log;
                    if !last_log.to_lowercase().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("socksgate serve {args:?} did not start:\n{last_log}");
    }
}

/// A running `socksgate serve`; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: TempDir,
}

impl Server {
    /// A builder; `Server::builder().start()` is a no-auth server on 127.0.0.1.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A no-auth server with default settings on 127.0.0.1.
    #[track_caller]
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as clients spell it (`[::1]:port` for IPv6).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        tools::read_log(&self.log)
    }

    /// The server's process id (for /proc statistics and `prlimit --pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the server's files.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Panics (with the log) if the server has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("socksgate serve exited ({status}); log:\n{}", self.log());
        }
    }

    /// The exit status if the server has exited (after a signal the test sent).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `child` accepts on `addr`; `Err(log)` if it exits or never does.
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "exited with {status}; log:\n{}",
                tools::read_log(log)
            ));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            // Something accepts; make sure it is this server (a server that lost the port
            // to another listener exits with "address in use" right away).
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "exited with {status}; log:\n{}",
                    tools::read_log(log)
                ));
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not accepting after {TIMEOUT:?}; log:\n{}",
                tools::read_log(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
