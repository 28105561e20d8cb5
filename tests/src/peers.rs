//! Reference SOCKS servers from Debian: Dante's `danted` and `microsocks`, on loopback ports.

use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::tmp::TempDir;
use crate::{TIMEOUT, free_port, tools};

/// A peer server process; stopped on drop (`SIGTERM` first, so `danted` takes its worker
/// processes down with it, then `SIGKILL`).
#[derive(Debug)]
pub struct Peer {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Peer {
    /// The listening address (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer's log so far.
    pub fn log(&self) -> String {
        tools::read_log(&self.log)
    }

    #[track_caller]
    fn spawn(name: &'static str, dir: TempDir, make: impl Fn(u16, &Path) -> Command) -> Self {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let log = dir.join(&format!("{name}-{attempt}.log"));
            let file = File::create(&log).expect("create log");
            let mut cmd = make(port, &log);
            cmd.stdin(Stdio::null())
                .stdout(file.try_clone().expect("dup log"))
                .stderr(file);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("{cmd:?} exited with {status}:\n{}", tools::read_log(&log));
                    break;
                }
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    return Self {
                        name,
                        child,
                        addr,
                        log,
                        _dir: dir,
                    };
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
        panic!("{name} did not start: {last}");
    }
}

impl Drop for Peer {
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

/// Starts `danted` (Dante server, SOCKS4 and SOCKS5, no authentication, CONNECT and BIND from
/// and to loopback) with a minimal `sockd.conf`. It runs as root here, so the
/// privileged user is root and the unprivileged one `nobody`.
#[track_caller]
pub fn danted(exe: &Path) -> Peer {
    let dir = TempDir::new();
    let conf_dir = dir.path().to_path_buf();
    let exe = exe.to_path_buf();
    Peer::spawn("danted", dir, move |port, log| {
        let conf = format!(
            "logoutput: {log}\n\
             internal: 127.0.0.1 port = {port}\n\
             external: 127.0.0.1\n\
             clientmethod: none\n\
             socksmethod: none\n\
             user.privileged: root\n\
             user.unprivileged: nobody\n\
             timeout.negotiate: 30\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 127.0.0.0/8\n\
                 command: connect bind bindreply }}\n",
            log = log.display()
        );
        let conf_path = conf_dir.join(format!("sockd-{port}.conf"));
        std::fs::write(&conf_path, conf).expect("write sockd.conf");
        let mut cmd = Command::new(&exe);
        cmd.arg("-f")
            .arg(&conf_path)
            .arg("-p")
            .arg(conf_dir.join(format!("danted-{port}.pid")))
            .args(["-N", "1"]);
        cmd
    })
}

/// Starts `microsocks -i 127.0.0.1 -p PORT` (SOCKS5 CONNECT only), with `-u USER -P PASS` if
/// `auth` is given.
#[track_caller]
pub fn microsocks(exe: &Path, auth: Option<(&str, &str)>) -> Peer {
    let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
    let exe = exe.to_path_buf();
    Peer::spawn("microsocks", TempDir::new(), move |port, _log| {
        let mut cmd = Command::new(&exe);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((u, p)) = &auth {
            cmd.args(["-u", u, "-P", p]);
        }
        cmd
    })
}
