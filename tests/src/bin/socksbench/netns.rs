//! The network the benchmark runs in. By default (`--net private`) a network namespace of its
//! own, with only `lo`, brought up, and a stated TCP congestion control (`--cc`, default
//! cubic, else reno where the host does not let a namespace choose cubic): other loopback
//! traffic on the machine stays out of the measurement, and runs on kernels with different
//! defaults compare (this project's VM defaults to bbr, whose pacing caps loopback
//! throughput).
//!
//! Without `unsafe`, the namespace is entered by re-executing this program under util-linux
//! `unshare --net`, before any thread exists; the load generator, its servers and every proxy
//! it starts (they inherit it) then run inside. When the namespace cannot be created (not
//! root, no CAP_SYS_ADMIN, `unshare` or `ip` missing), the run goes on on the host's loopback
//! with its congestion control, after one line on stderr: unprivileged developers can still
//! measure. The host's own settings are never changed.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{Context as _, bail};
use socksgate_tests::tools;

use crate::Config;

/// Set for the re-executed child: the network namespace of the parent (`net:[…]`), so the
/// child can check that it really is in another one before changing anything.
const MARKER: &str = "SOCKSBENCH_NETNS";
/// The parent's (the host's) default congestion control, for the report.
const HOST_CC: &str = "SOCKSBENCH_HOST_CC";
/// The parent's `argv[0]`, so the report shows the command as it was typed.
const ARGV0: &str = "SOCKSBENCH_ARGV0";
/// The default TCP congestion control of the current network namespace.
const CC_PATH: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
/// The congestion controls the kernel has loaded.
const AVAILABLE_CC_PATH: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
/// The congestion controls a network namespace other than the initial one may choose.
const ALLOWED_CC_PATH: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
/// Used in place of the default preference (cubic) where the kernel refuses it.
const FALLBACK_CC: &str = "reno";

/// `--net`: where the benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Net {
    /// A new network namespace with only `lo`.
    Private,
    /// The network namespace socksbench was started in.
    Host,
}

impl Net {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "private" => Ok(Self::Private),
            "host" => Ok(Self::Host),
            other => bail!("--net must be `private` or `host`, not {other:?}"),
        }
    }
}

/// `--cc`: `None` for `default` (leave the kernel's default), else a congestion control name.
pub(crate) fn parse_cc(s: &str) -> anyhow::Result<Option<String>> {
    if s == "default" {
        return Ok(None);
    }
    // The kernel's names: TCP_CA_NAME_MAX is 16 bytes with the NUL.
    let ok = (1..16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!("--cc: {s:?} is not a congestion control name (e.g. cubic, bbr, reno) or `default`");
    }
    Ok(Some(s.to_owned()))
}

/// What the run used, for the report.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    /// In a private namespace (else on the host's loopback).
    private: bool,
    /// The congestion control in effect.
    cc: String,
    /// Whether `--cc` set it (else it is the namespace's default).
    cc_set: bool,
    /// Why the default preference (cubic) gave way to reno.
    cc_note: Option<String>,
    /// The host's default.
    host_cc: String,
    /// Why a private namespace was asked for but could not be created.
    fallback: Option<String>,
}

impl Network {
    /// The report's `network:` line.
    pub(crate) fn describe(&self) -> String {
        if !self.private {
            let why = self.fallback.as_ref().map_or(String::new(), |why| {
                format!(" (no private namespace: {why})")
            });
            return format!(
                "host loopback{why}; TCP congestion control {} (the host's default)",
                self.cc
            );
        }
        let how = match (&self.cc_note, self.cc_set) {
            (Some(note), _) => format!("{note}; "),
            (None, true) => String::new(),
            (None, false) => "left at the kernel's default; ".into(),
        };
        format!(
            "private namespace, loopback only; TCP congestion control {} ({how}host default: {})",
            self.cc, self.host_cc
        )
    }
}

/// Where `main` goes on.
#[derive(Debug)]
pub(crate) enum Entered {
    /// The benchmark ran in a re-executed child, which exited with this status.
    Ran(ExitCode),
    /// Measure in this process.
    Here(Network),
}

/// Enters the network `cfg` asks for; call before any thread exists. May change `cfg` to
/// `--net host --cc default` when no namespace can be created.
pub(crate) fn enter(cfg: &mut Config) -> anyhow::Result<Entered> {
    if cfg.net == Net::Host {
        let cc = read_cc();
        return Ok(Entered::Here(Network {
            private: false,
            cc: cc.clone(),
            cc_set: false,
            cc_note: None,
            host_cc: cc,
            fallback: None,
        }));
    }
    if let Some(parent_ns) = std::env::var_os(MARKER) {
        return inside(cfg, &parent_ns).map(Entered::Here);
    }
    let host_cc = read_cc();
    let unshare = match usable_unshare() {
        Ok(unshare) => unshare,
        Err(why) => {
            eprintln!(
                "socksbench: cannot create a network namespace ({why}); measuring on the host's \
                 loopback with its congestion control ({host_cc})"
            );
            cfg.net = Net::Host;
            cfg.cc = None;
            return Ok(Entered::Here(Network {
                private: false,
                cc: host_cc.clone(),
                cc_set: false,
                cc_note: None,
                host_cc,
                fallback: Some(why),
            }));
        }
    };
    let exe = std::env::current_exe().context("cannot find this program's path to re-run it")?;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // util-linux `unshare` without --fork execs the program in the new namespace: the child
    // keeps unshare's pid and process group, so a group kill (tests/ci.sh) reaches it and the
    // proxies it starts.
    let status = Command::new(&unshare)
        .args(["--net", "--"])
        .arg(&exe)
        .args(args)
        .env(MARKER, own_ns().unwrap_or_else(|| "?".into()))
        .env(HOST_CC, &host_cc)
        .env(ARGV0, argv0)
        .status()
        .with_context(|| format!("run {} --net -- {}", unshare.display(), exe.display()))?;
    Ok(Entered::Ran(exit_code(status)))
}

/// The command line as typed (in the re-executed child, with the parent's `argv[0]`).
pub(crate) fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let (Some(first), Some(argv0)) = (args.first_mut(), std::env::var_os(ARGV0)) {
        *first = argv0.to_string_lossy().into_owned();
    }
    args.join(" ")
}

/// `unshare`, once `unshare --net -- ip link set lo up` has worked; else why not.
fn usable_unshare() -> Result<PathBuf, String> {
    let unshare = tools::which("unshare").ok_or("util-linux `unshare` is not installed")?;
    let ip = tools::which("ip").ok_or("`ip` (iproute2) is not installed")?;
    let out = Command::new(&unshare)
        .args(["--net", "--"])
        .arg(&ip)
        .args(["link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", unshare.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        return Err(format!(
            "`unshare --net` {}{}{}",
            out.status,
            if err.is_empty() { "" } else { ": " },
            err.replace('\n', "; ")
        ));
    }
    Ok(unshare)
}

/// In the re-executed child: brings `lo` up and sets the congestion control.
fn inside(cfg: &Config, parent_ns: &std::ffi::OsStr) -> anyhow::Result<Network> {
    let own = own_ns().context("cannot read /proc/self/ns/net")?;
    if own == parent_ns {
        bail!(
            "{MARKER} is set but this process is in the network namespace it names ({}): \
             not in a private namespace, so not changing its settings (unset {MARKER})",
            own.to_string_lossy()
        );
    }
    let ip = tools::which("ip").context("`ip` (iproute2) is not installed")?;
    let out = Command::new(&ip)
        .args(["link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", ip.display()))?;
    if !out.status.success() {
        bail!(
            "`ip link set lo up` in the private namespace: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut cc_note = None;
    if let Some(cc) = &cfg.cc
        && let Err(why) = set_cc(cc)
    {
        if cfg.cc_required {
            bail!("--cc {cc}: {why}; `--cc default` keeps the kernel's default");
        }
        // The default preference: a congestion control that does not pace, as Linux's
        // default, cubic, does not. Reno is always built in and always allowed.
        set_cc(FALLBACK_CC).map_err(|e| anyhow::anyhow!("{why}; {FALLBACK_CC}: {e}"))?;
        eprintln!("socksbench: {why}; using {FALLBACK_CC}, which does not pace either");
        cc_note = Some(format!(
            "{why}; {FALLBACK_CC} instead, which does not pace either"
        ));
    }
    Ok(Network {
        private: true,
        cc: read_cc(),
        cc_set: cfg.cc.is_some(),
        cc_note,
        host_cc: std::env::var(HOST_CC).unwrap_or_else(|_| "unknown".into()),
        fallback: None,
    })
}

/// Makes `cc` this network namespace's default congestion control; else says why not.
fn set_cc(cc: &str) -> Result<(), String> {
    if let Err(e) = std::fs::write(CC_PATH, cc) {
        // Outside the initial namespace the kernel lets a namespace choose only among
        // net.ipv4.tcp_allowed_congestion_control (EPERM for the others): a host setting,
        // which socksbench never changes.
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        return Err(format!(
            "cannot set {cc} in the private namespace ({e}); loaded: {}; allowed in \
             namespaces: {}",
            read(AVAILABLE_CC_PATH).trim(),
            read(ALLOWED_CC_PATH).trim()
        ));
    }
    let now = read_cc();
    if now != cc {
        return Err(format!(
            "wrote {cc} to {CC_PATH}, but it reads back as {now:?}"
        ));
    }
    Ok(())
}

/// This network namespace's default congestion control, or `unknown`.
fn read_cc() -> String {
    std::fs::read_to_string(CC_PATH)
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// This process's network namespace, e.g. `net:[4026531840]`.
fn own_ns() -> Option<OsString> {
    std::fs::read_link("/proc/self/ns/net")
        .ok()
        .map(PathBuf::into_os_string)
}

/// The child's status as ours: its exit code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_names() {
        assert_eq!(parse_cc("default").unwrap(), None);
        assert_eq!(parse_cc("cubic").unwrap().as_deref(), Some("cubic"));
        assert_eq!(parse_cc("bbr").unwrap().as_deref(), Some("bbr"));
        assert_eq!(parse_cc("dctcp_2").unwrap().as_deref(), Some("dctcp_2"));
        for bad in ["", "Cubic", "../x", "cubic\n", "a_name_far_too_long"] {
            assert!(parse_cc(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn net_values() {
        assert_eq!(Net::parse("private").unwrap(), Net::Private);
        assert_eq!(Net::parse("host").unwrap(), Net::Host);
        assert!(Net::parse("none").is_err());
    }

    #[test]
    fn network_lines() {
        let private = Network {
            private: true,
            cc: "cubic".into(),
            cc_set: true,
            cc_note: None,
            host_cc: "bbr".into(),
            fallback: None,
        };
        assert_eq!(
            private.describe(),
            "private namespace, loopback only; TCP congestion control cubic (host default: bbr)"
        );
        let fell_back = Network {
            cc: "reno".into(),
            cc_note: Some("cannot set cubic (EPERM); reno instead".into()),
            ..private.clone()
        };
        assert_eq!(
            fell_back.describe(),
            "private namespace, loopback only; TCP congestion control reno (cannot set cubic \
             (EPERM); reno instead; host default: bbr)"
        );
        let mut host = Network {
            private: false,
            cc: "bbr".into(),
            cc_set: false,
            cc_note: None,
            host_cc: "bbr".into(),
            fallback: None,
        };
        assert_eq!(
            host.describe(),
            "host loopback; TCP congestion control bbr (the host's default)"
        );
        host.fallback = Some("`unshare --net` exit status: 1".into());
        assert_eq!(
            host.describe(),
            "host loopback (no private namespace: `unshare --net` exit status: 1); TCP \
             congestion control bbr (the host's default)"
        );
    }
}
