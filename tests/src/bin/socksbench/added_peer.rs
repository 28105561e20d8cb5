//! Peers given on the command line: `--peer NAME=COMMAND` and `--peer-config NAME=FILE`. Any
//! SOCKS5 server that a shell command can start on a loopback port joins the run like Dante
//! and microsocks: the interleaved rounds, the table, the CPU and RSS accounting, the targets.
//!
//! `COMMAND` is run by `sh -c` with `{port}` replaced by the port the peer must listen on
//! (127.0.0.1) and `{config}` by the path of a file holding `FILE`'s text with its own
//! `{port}` replaced: the file is written fresh for every start, in the peer's temp
//! directory, so the port is chosen at run time and nothing is written next to `FILE`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Replaced by the peer's port, in the command and in the config text.
pub(crate) const PORT: &str = "{port}";
/// Replaced by the path of the written config file, in the command.
pub(crate) const CONFIG: &str = "{config}";

/// A peer from `--peer`, with its `--peer-config` if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AddedPeer {
    /// The column's name.
    pub(crate) name: &'static str,
    /// The shell command, with the placeholders still in it.
    pub(crate) command: String,
    /// The config file's text and where it came from.
    pub(crate) config: Option<PeerConfig>,
}

/// The text of a `--peer-config` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerConfig {
    /// The file given on the command line (for the report).
    pub(crate) source: PathBuf,
    /// Its text, `{port}` not yet replaced.
    pub(crate) text: String,
}

impl AddedPeer {
    /// The shell command that starts the peer on `port`, reading `config` if it has one.
    pub(crate) fn command_for(&self, port: u16, config: Option<&Path>) -> String {
        let mut cmd = self.command.replace(PORT, &port.to_string());
        if let Some(path) = config {
            cmd = cmd.replace(CONFIG, &shell_quote(&path.to_string_lossy()));
        }
        cmd
    }

    /// The config file's name in the peer's temp directory: the peer's name and the port,
    /// with `FILE`'s extension kept (some servers pick the format from it).
    pub(crate) fn config_file_name(&self, port: u16) -> Option<String> {
        let config = self.config.as_ref()?;
        let ext = config
            .source
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        Some(format!("{}-{port}{ext}", self.name))
    }

    /// The config text for `port`.
    pub(crate) fn config_for(&self, port: u16) -> Option<String> {
        self.config
            .as_ref()
            .map(|c| c.text.replace(PORT, &port.to_string()))
    }
}

/// `s` as one word for `sh`: as it is when it holds only characters the shell leaves alone,
/// else in single quotes.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Splits `NAME=VALUE` for `flag`, checking the name; `what` names the value in errors.
fn split<'a>(flag: &str, arg: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    let Some((name, value)) = arg.split_once('=') else {
        bail!(
            "{flag} {arg:?}: expected NAME={what}, e.g. {flag} hev={}",
            if flag == "--peer" {
                "'hev-socks5-server {config}'"
            } else {
                "hev.yml"
            }
        );
    };
    if name.is_empty() {
        bail!("{flag} {arg:?}: the name before `=` is empty");
    }
    let first_ok = name
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric);
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !first_ok || !rest_ok || name.len() > 32 {
        bail!(
            "{flag} {arg:?}: the name {name:?} must be 1–32 ASCII letters, digits, `-`, `_` or \
             `.`, starting with a letter or digit (it heads a table column and goes in --only)"
        );
    }
    if value.trim().is_empty() {
        bail!("{flag} {arg:?}: the {what} after `=` is empty");
    }
    Ok((name, value))
}

/// Parses every `--peer` and `--peer-config` argument (`NAME=…`, in the order given).
/// `reserved` are the names socksbench already uses (its systems and its measurements, which
/// `--only` takes alike). Config files are read here, so a missing one stops the run before
/// anything starts.
pub(crate) fn parse(
    peers: &[String],
    configs: &[String],
    reserved: &[&str],
) -> anyhow::Result<Vec<AddedPeer>> {
    let mut texts: Vec<(&str, PeerConfig)> = Vec::new();
    for arg in configs {
        let (name, file) = split("--peer-config", arg, "FILE")?;
        if texts.iter().any(|(n, _)| *n == name) {
            bail!("--peer-config {name}=…: given twice");
        }
        let source = PathBuf::from(file);
        let text = std::fs::read_to_string(&source)
            .with_context(|| format!("--peer-config {name}={file}: cannot read the file"))?;
        texts.push((name, PeerConfig { source, text }));
    }
    let mut out: Vec<AddedPeer> = Vec::new();
    for arg in peers {
        let (name, command) = split("--peer", arg, "COMMAND")?;
        if reserved.contains(&name) {
            bail!(
                "--peer {name}=…: `{name}` is a name socksbench already uses (systems and \
                 measurements: {}); pick another",
                reserved.join(", ")
            );
        }
        if out.iter().any(|p| p.name == name) {
            bail!("--peer {name}=…: given twice");
        }
        let config = texts
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| texts.swap_remove(i).1);
        match (&config, command.contains(CONFIG)) {
            (None, true) => bail!(
                "--peer {name}=…: the command has {CONFIG} but no --peer-config {name}=FILE \
                 gives its text"
            ),
            (Some(c), false) => bail!(
                "--peer-config {name}={}: the command of --peer {name} has no {CONFIG} to \
                 put the file's path in",
                c.source.display()
            ),
            _ => {}
        }
        let port_known =
            command.contains(PORT) || config.as_ref().is_some_and(|c| c.text.contains(PORT));
        if !port_known {
            bail!(
                "--peer {name}=…: neither the command nor its --peer-config text has {PORT}: \
                 the peer must listen on the port socksbench chooses"
            );
        }
        out.push(AddedPeer {
            // Kind is Copy with `&'static str` names throughout the report; a run adds a
            // handful of peers, once.
            name: Box::leak(name.to_owned().into_boxed_str()),
            command: command.to_owned(),
            config,
        });
    }
    if let Some((name, c)) = texts.first() {
        bail!(
            "--peer-config {name}={}: no --peer {name}=COMMAND to use it",
            c.source.display()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksgate_tests::tmp::TempDir;

    const RESERVED: &[&str] = &["direct", "socksgate", "dante", "udp"];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|&s| s.to_owned()).collect()
    }

    fn err(peers: &[&str], configs: &[&str]) -> String {
        format!(
            "{:#}",
            parse(&strings(peers), &strings(configs), RESERVED).unwrap_err()
        )
    }

    #[test]
    fn a_command_with_port() {
        let p = parse(
            &strings(&["ms=microsocks -p {port} -i 127.0.0.1"]),
            &[],
            RESERVED,
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "ms");
        assert_eq!(
            p[0].command_for(1234, None),
            "microsocks -p 1234 -i 127.0.0.1"
        );
        assert_eq!(p[0].config_for(1234), None);
        // Only the first `=` separates: the command may hold more.
        let p = parse(&strings(&["x=env A=1 srv --port={port}"]), &[], RESERVED).unwrap();
        assert_eq!(p[0].command_for(9, None), "env A=1 srv --port=9");
    }

    #[test]
    fn a_config_file_gets_the_port_and_its_path_goes_in_the_command() {
        let dir = TempDir::new();
        let file = dir.write("hev.yml", "main:\n  port: {port}\n");
        let p = parse(
            &strings(&["hev=hev-socks5-server {config}"]),
            &[format!("hev={}", file.display())],
            RESERVED,
        )
        .unwrap();
        assert_eq!(
            p[0].config_for(4321).as_deref(),
            Some("main:\n  port: 4321\n")
        );
        assert_eq!(p[0].config_file_name(4321).as_deref(), Some("hev-4321.yml"));
        assert_eq!(
            p[0].command_for(4321, Some(Path::new("/tmp/d/hev-4321.yml"))),
            "hev-socks5-server /tmp/d/hev-4321.yml"
        );
        assert_eq!(
            p[0].command_for(4321, Some(Path::new("/tmp/a b/it's.yml"))),
            r"hev-socks5-server '/tmp/a b/it'\''s.yml'"
        );
    }

    #[test]
    fn bad_peer_arguments_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["hev"], "expected NAME=COMMAND"),
            (&["=srv {port}"], "the name before `=` is empty"),
            (&["hev="], "the COMMAND after `=` is empty"),
            (&["hev=   "], "the COMMAND after `=` is empty"),
            (&["h v=srv {port}"], "must be 1–32 ASCII letters"),
            (&["a,b=srv {port}"], "must be 1–32 ASCII letters"),
            (&["-x=srv {port}"], "must be 1–32 ASCII letters"),
            (&["dante=srv {port}"], "already uses"),
            (&["udp=srv {port}"], "already uses"),
            (&["x=srv {port}", "x=other {port}"], "given twice"),
            (
                &["x=srv --listen 1080"],
                "neither the command nor its --peer-config text",
            ),
            (&["x=srv {config}"], "no --peer-config x=FILE"),
        ];
        for (peers, want) in cases {
            let e = err(peers, &[]);
            assert!(e.contains(want), "{peers:?}: {e}");
        }
    }

    #[test]
    fn bad_config_arguments_say_what_is_wrong() {
        let dir = TempDir::new();
        let with_port = dir.write("a.yml", "port: {port}\n");
        let without = dir.write("b.yml", "port: 1080\n");
        let a = format!("x={}", with_port.display());
        let e = err(&["x=srv {port}"], &[&a]);
        assert!(e.contains("has no {config}"), "{e}");
        let e = err(
            &["y=srv {config}"],
            &[&a, &format!("y={}", with_port.display())],
        );
        assert!(e.contains("no --peer x=COMMAND"), "{e}");
        let e = err(&["x=srv {config}"], &[&format!("x={}", without.display())]);
        assert!(e.contains("neither the command nor"), "{e}");
        let e = err(&["x=srv {config}"], &[&a, &a]);
        assert!(e.contains("given twice"), "{e}");
        let e = err(&["x=srv {config}"], &["x=/nonexistent/socksbench.yml"]);
        assert!(e.contains("cannot read the file"), "{e}");
        let e = err(&["x=srv {config}"], &["x.yml"]);
        assert!(e.contains("expected NAME=FILE"), "{e}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/x-1.yml"), "/tmp/x-1.yml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote(""), "''");
    }
}
