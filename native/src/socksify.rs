//! `socksgate socksify [--proxy URL] -- PROGRAM ARGS…`: runs PROGRAM with
//! `libsocksgate_socksify.so` preloaded, so that its TCP connections (CONNECT), UDP
//! datagrams (UDP ASSOCIATE), active-mode data connections (BIND) and name lookups go
//! through a SOCKS proxy (see the library's crate docs, native/socksify/).
//!
//! This command gathers the settings — flags, then environment variables, then the config
//! file (`--config` or `SOCKSGATE_SOCKSIFY_CONFIG`), then the defaults — validates them,
//! resolves the proxy's name, finds the library, refuses statically linked programs, and
//! execs PROGRAM with `LD_PRELOAD` and the library's variables
//! ([`socksgate_socksify_config`]) in its environment, where its children find them too.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::ToSocketAddrs as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use socksgate_socksify_config::{
    DEFAULT_DIRECT, DEFAULT_TIMEOUT_SECS, DIRECT_ENV, DirectList, LOG_ENV, PROXY_ENV, Proxy,
    TIMEOUT_ENV,
};
use toml::Spanned;

use crate::cli::SocksifyArgs;
use crate::config::ConfigError;

/// Environment variable: the config file, when `--config` is not given.
pub const CONFIG_ENV: &str = "SOCKSGATE_SOCKSIFY_CONFIG";
/// Environment variable: the library to preload, overriding the search.
pub const LIBRARY_ENV: &str = "SOCKSGATE_SOCKSIFY_LIBRARY";
/// The library's file name.
pub const LIBRARY_NAME: &str = "libsocksgate_socksify.so";
/// Where the Debian package installs the library.
pub const PACKAGED_LIBRARY_DIR: &str = "/usr/lib/socksgate";
/// The proxy when none is configured: socksgate's default listener, names resolved by it.
pub const DEFAULT_PROXY: &str = "socks5h://127.0.0.1:1080";

/// Why `socksify` did not start the program.
#[derive(Debug, thiserror::Error)]
pub enum SocksifyError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A flag or environment variable has a bad value.
    #[error("{0}")]
    Setting(String),
    /// The library is nowhere to be found.
    #[error("{LIBRARY_NAME} not found (looked in {0}); set {LIBRARY_ENV} to its path")]
    NoLibrary(String),
    /// The program cannot be socksified.
    #[error("{0}")]
    Program(String),
    /// exec failed.
    #[error("cannot run {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The config file (`--config FILE`): every key optional, unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocksifyFile {
    /// The proxy URL.
    pub proxy: Option<Spanned<String>>,
    /// The `--direct` list.
    pub direct: Option<Spanned<String>>,
    /// Log each interposed call.
    pub verbose: Option<bool>,
    /// Log to this file instead of stderr (implies `verbose`).
    pub log_file: Option<PathBuf>,
    /// Seconds for reaching the proxy and its answers.
    pub connect_timeout: Option<Spanned<u64>>,
}

/// The effective settings, as the library will read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The proxy, its name resolved.
    pub proxy: Proxy,
    /// The `--direct` list, as given.
    pub direct: String,
    /// `None`: quiet; `stderr` or a file path.
    pub log: Option<String>,
    /// Seconds.
    pub connect_timeout: u64,
}

impl Effective {
    /// The environment variables the library reads.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (PROXY_ENV, self.proxy.to_url()),
            (DIRECT_ENV, self.direct.clone()),
            (TIMEOUT_ENV, self.connect_timeout.to_string()),
        ];
        if let Some(log) = &self.log {
            vars.push((LOG_ENV, log.clone()));
        }
        vars
    }
}

/// Merges flags, the environment (`var`) and the config file into the effective settings.
pub fn settings(
    args: &SocksifyArgs,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Effective, SocksifyError> {
    let config_path = args
        .config
        .clone()
        .or_else(|| var(CONFIG_ENV).map(PathBuf::from));
    let (file, text) = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?;
            let file: SocksifyFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
            (file, text)
        }
        None => (SocksifyFile::default(), String::new()),
    };
    let path = config_path.unwrap_or_default();
    let in_file = |span: core::ops::Range<usize>, message: String| {
        SocksifyError::Config(ConfigError::at(&text, &path, span, message))
    };

    let proxy = if let Some(url) = args.proxy.clone().or_else(|| var(PROXY_ENV)) {
        proxy(&url).map_err(|e| SocksifyError::Setting(format!("--proxy {url}: {e}")))?
    } else if let Some(url) = &file.proxy {
        proxy(url.get_ref()).map_err(|e| in_file(url.span(), format!("proxy: {e}")))?
    } else {
        proxy(DEFAULT_PROXY).map_err(SocksifyError::Setting)?
    };

    let direct = if let Some(list) = args.direct.clone().or_else(|| var(DIRECT_ENV)) {
        DirectList::parse(&list)
            .map_err(|e| SocksifyError::Setting(format!("--direct {list}: {e}")))?;
        list
    } else if let Some(list) = &file.direct {
        DirectList::parse(list.get_ref())
            .map_err(|e| in_file(list.span(), format!("direct: {e}")))?;
        list.get_ref().clone()
    } else {
        DEFAULT_DIRECT.to_owned()
    };

    let connect_timeout = if let Some(secs) = args.connect_timeout {
        secs
    } else if let Some(secs) = var(TIMEOUT_ENV) {
        secs.parse().map_err(|_| {
            SocksifyError::Setting(format!("{TIMEOUT_ENV}={secs}: not a number of seconds"))
        })?
    } else if let Some(secs) = &file.connect_timeout {
        *secs.get_ref()
    } else {
        DEFAULT_TIMEOUT_SECS
    };
    if connect_timeout == 0 {
        let message = "connect timeout must be at least 1 second".to_owned();
        return Err(match &file.connect_timeout {
            Some(secs) if args.connect_timeout.is_none() && var(TIMEOUT_ENV).is_none() => {
                in_file(secs.span(), format!("connect_timeout: {message}"))
            }
            _ => SocksifyError::Setting(message),
        });
    }

    let log_file = args.log_file.clone().or(file.log_file.clone());
    let log = match log_file {
        Some(path) => Some(path.display().to_string()),
        None if args.verbose || file.verbose == Some(true) => Some("stderr".to_owned()),
        None => var(LOG_ENV),
    };
    Ok(Effective {
        proxy,
        direct,
        log,
        connect_timeout,
    })
}

/// Parses a proxy URL (any host) and resolves its host to the address the library uses.
fn proxy(url: &str) -> Result<Proxy, String> {
    let parsed: crate::client::Proxy = url
        .parse()
        .map_err(|e: crate::client::Error| e.to_string())?;
    if parsed.tls {
        return Err("socksify does not speak SOCKS over TLS (use a plain socks URL)".to_owned());
    }
    let address = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve proxy host {}: {e}", parsed.host))?
        .next()
        .ok_or_else(|| format!("proxy host {} has no address", parsed.host))?;
    Ok(Proxy {
        version: parsed.version,
        remote_dns: parsed.remote_dns,
        address,
        credentials: match &parsed.auth {
            crate::client::Auth::Password { username, password } => {
                Some((username.clone(), password.clone()))
            }
            _ => None,
        },
    })
}

/// Finds the library: `SOCKSGATE_SOCKSIFY_LIBRARY`, then next to this executable (a cargo
/// build), then the Debian package's directory.
pub fn library(var: impl Fn(&str) -> Option<String>) -> Result<PathBuf, SocksifyError> {
    if let Some(path) = var(LIBRARY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(SocksifyError::NoLibrary(format!(
                "{LIBRARY_ENV}={}, which is not a file",
                path.display()
            )))
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(LIBRARY_NAME));
        // `cargo test` runs binaries from target/debug; their tests from target/debug/deps.
        if dir.ends_with("deps") {
            candidates.extend(dir.parent().map(|d| d.join(LIBRARY_NAME)));
        }
    }
    candidates.push(Path::new(PACKAGED_LIBRARY_DIR).join(LIBRARY_NAME));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            SocksifyError::NoLibrary(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// The file `program` names: a path, or the first match in `PATH`.
fn find_program(program: &OsStr, path_var: Option<String>) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path_var = path_var.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// How a program file is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// ELF with an interpreter (PT_INTERP): the dynamic linker honours `LD_PRELOAD`.
    Dynamic,
    /// ELF without an interpreter: nothing can be preloaded.
    Static,
    /// Not ELF (a script is checked through its `#!` interpreter), or unreadable.
    Unknown,
}

/// Whether `path` is a dynamically linked ELF file (scripts: their `#!` interpreter).
pub fn linkage(path: &Path) -> Linkage {
    linkage_at(path, 0)
}

fn linkage_at(path: &Path, depth: u8) -> Linkage {
    let Ok(file) = File::open(path) else {
        return Linkage::Unknown;
    };
    let mut header = [0u8; 64];
    let Ok(n) = file.read_at(&mut header, 0) else {
        return Linkage::Unknown;
    };
    let header = header.get(..n).unwrap_or_default();
    if let Some(rest) = header.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let interpreter = String::from_utf8_lossy(line);
        return match interpreter.split_whitespace().next() {
            Some(interp) if depth < 4 => linkage_at(Path::new(interp), depth + 1),
            _ => Linkage::Unknown,
        };
    }
    elf_linkage(&file, header).unwrap_or(Linkage::Unknown)
}

/// Reads the program headers of an ELF file and looks for PT_INTERP.
fn elf_linkage(file: &File, header: &[u8]) -> Option<Linkage> {
    const PT_INTERP: u32 = 3;
    if header.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = *header.get(4)? == 2;
    let little = *header.get(5)? == 1;
    let number = |bytes: &[u8]| -> u64 {
        let mut buf = [0u8; 8];
        for (i, b) in bytes.iter().enumerate() {
            let at = if little { i } else { 8 - bytes.len() + i };
            if let Some(slot) = buf.get_mut(at) {
                *slot = *b;
            }
        }
        if little {
            u64::from_le_bytes(buf)
        } else {
            u64::from_be_bytes(buf)
        }
    };
    let (phoff, phentsize, phnum) = if wide {
        (
            number(header.get(32..40)?),
            number(header.get(54..56)?),
            number(header.get(56..58)?),
        )
    } else {
        (
            number(header.get(28..32)?),
            number(header.get(42..44)?),
            number(header.get(44..46)?),
        )
    };
    let size = usize::try_from(phentsize.checked_mul(phnum)?).ok()?;
    if size > 1 << 20 {
        return None;
    }
    let mut table = vec![0u8; size];
    file.read_exact_at(&mut table, phoff).ok()?;
    let entry = usize::try_from(phentsize).ok()?;
    let dynamic = table
        .chunks(entry.max(4))
        .any(|ph| ph.get(..4).map(number) == Some(u64::from(PT_INTERP)));
    Some(if dynamic {
        Linkage::Dynamic
    } else {
        Linkage::Static
    })
}

/// Runs the command: on success it does not return (the process becomes PROGRAM).
pub fn run(args: &SocksifyArgs) -> Result<std::convert::Infallible, SocksifyError> {
    let var = |name: &str| std::env::var(name).ok();
    let effective = settings(args, var)?;
    let library = library(var)?;
    let Some((program, program_args)) = args.command.split_first() else {
        return Err(SocksifyError::Program("no PROGRAM given".to_owned()));
    };
    let shown = program.to_string_lossy().into_owned();
    let path = find_program(program, var("PATH"))
        .ok_or_else(|| SocksifyError::Program(format!("{shown}: not found in PATH")))?;
    if linkage(&path) == Linkage::Static {
        return Err(SocksifyError::Program(format!(
            "{} is statically linked: a preloaded library cannot intercept its socket calls, so \
             it cannot be socksified (use the program's own proxy settings, or `socksgate \
             connect` as a ProxyCommand)",
            path.display()
        )));
    }
    let mut preload = OsString::from(library.as_os_str());
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(" ");
        preload.push(existing);
    }
    if effective.log.is_some() {
        eprintln!(
            "socksgate socksify: {} via {} (direct: {}), library {}",
            shown,
            effective.proxy.address,
            effective.direct,
            library.display()
        );
    }
    let mut command = std::process::Command::new(program);
    command.args(program_args).env("LD_PRELOAD", preload);
    for (name, value) in effective.environment() {
        command.env(name, value);
    }
    let source = command.exec();
    Err(SocksifyError::Exec {
        program: shown,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> SocksifyArgs {
        let mut argv = vec!["socksgate", "socksify"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Socksify(a) => a,
            _ => panic!("not socksify"),
        }
    }

    #[test]
    fn flags_win_over_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("socksify.toml");
        std::fs::write(
            &file,
            "proxy = \"socks4a://127.0.0.1:1081\"\ndirect = \"10.0.0.0/8\"\nconnect_timeout = 7\nverbose = true\n",
        )
        .unwrap();
        let from_file = settings(
            &args(&["--config", file.to_str().unwrap(), "--", "true"]),
            |_| None,
        )
        .unwrap();
        assert_eq!(from_file.proxy.to_url(), "socks4a://127.0.0.1:1081");
        assert_eq!(from_file.direct, "10.0.0.0/8");
        assert_eq!(from_file.connect_timeout, 7);
        assert_eq!(from_file.log.as_deref(), Some("stderr"));
        let env = |name: &str| (name == PROXY_ENV).then(|| "socks5://127.0.0.1:1082".to_owned());
        let from_env = settings(
            &args(&["--config", file.to_str().unwrap(), "--", "true"]),
            env,
        )
        .unwrap();
        assert_eq!(from_env.proxy.to_url(), "socks5://127.0.0.1:1082");
        let from_flag = settings(
            &args(&[
                "--config",
                file.to_str().unwrap(),
                "--proxy",
                "socks5h://u:p%40ss@localhost:1083",
                "--direct",
                "none",
                "--",
                "true",
            ]),
            env,
        )
        .unwrap();
        assert!(from_flag.proxy.remote_dns);
        assert_eq!(from_flag.proxy.address.port(), 1083);
        assert_eq!(
            from_flag.proxy.credentials,
            Some((b"u".to_vec(), b"p@ss".to_vec()))
        );
        assert_eq!(from_flag.direct, "none");
        let defaults = settings(&args(&["--", "true"]), |_| None).unwrap();
        assert_eq!(defaults.proxy.to_url(), "socks5h://127.0.0.1:1080");
        assert_eq!(defaults.direct, DEFAULT_DIRECT);
        assert_eq!(defaults.log, None);
    }

    #[test]
    fn bad_file_values_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("socksify.toml");
        std::fs::write(
            &file,
            "proxy = \"socks5h://127.0.0.1:1080\"\ndirect = \"lan\"\n",
        )
        .unwrap();
        let err = settings(
            &args(&["--config", file.to_str().unwrap(), "--", "true"]),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("socksify.toml:2:10: direct:"), "{err}");
        std::fs::write(&file, "prox = \"socks5h://127.0.0.1:1080\"\n").unwrap();
        let err = settings(
            &args(&["--config", file.to_str().unwrap(), "--", "true"]),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `prox`"), "{err}");
        std::fs::write(&file, "proxy = \"http://127.0.0.1:3128\"\n").unwrap();
        let err = settings(
            &args(&["--config", file.to_str().unwrap(), "--", "true"]),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("socksify.toml:1:9: proxy:"), "{err}");
    }

    #[test]
    fn linkage_of_real_programs() {
        assert_eq!(linkage(Path::new("/bin/sh")), Linkage::Dynamic);
        // Debian builds ldconfig statically.
        assert_eq!(linkage(Path::new("/sbin/ldconfig")), Linkage::Static);
        assert_eq!(linkage(Path::new("/nonexistent")), Linkage::Unknown);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(linkage(&script), Linkage::Dynamic);
    }
}
