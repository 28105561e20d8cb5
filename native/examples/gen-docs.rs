//! Writes the man pages and shell completions of `socksgate`, generated from its clap
//! definitions, into the directory given as the only argument:
//!
//! * `DIR/man/socksgate.1.gz`, and `socksgate-SUBCOMMAND.1.gz` for each subcommand (gzip,
//!   as Debian installs man pages);
//! * `DIR/completions/socksgate.bash`, `_socksgate` (zsh) and `socksgate.fish`.
//!
//! The Debian package installs them (see "Installing from the Debian package" in
//! native/README.md). An example rather than a subcommand, so the server binary carries
//! neither generator:
//!
//! ```sh
//! cargo run -p socksgate --example gen-docs -- target/release/docs
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};
use flate2::Compression;
use flate2::write::GzEncoder;
use socksgate::cli::Cli;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs DIR");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    // `build` names the subcommands `socksgate-serve` and so on, as their pages are called.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut page = Vec::new();
    Man::new(cli.clone()).render(&mut page)?;
    page.extend_from_slice(files_and_see_also().as_bytes());
    write_gzip(&man.join("socksgate.1.gz"), &page)?;
    subcommand_pages(&cli, &man)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "socksgate", &completions)?;
    }
    println!(
        "man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(())
}

/// One page per visible subcommand, at every depth.
fn subcommand_pages(cmd: &clap::Command, man: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = Man::new(sub.clone());
        let mut text = Vec::new();
        page.render(&mut text)?;
        write_gzip(&man.join(format!("{}.gz", page.get_filename())), &text)?;
        subcommand_pages(sub, man)?;
    }
    Ok(())
}

/// The top page's FILES and SEE ALSO: where the package puts things, and the full guide.
fn files_and_see_also() -> String {
    Roff::new()
        .control("SH", ["FILES"])
        .control("TP", [])
        .text([roman("/etc/socksgate/socksgate.toml")])
        .text([roman(
            "The configuration file the systemd unit starts socksgate with; \
             check it with socksgate check-config.",
        )])
        .control("TP", [])
        .text([roman(
            "/usr/lib/systemd/system/socksgate.service, socksgate.socket",
        )])
        .text([roman(
            "The systemd units; logs go to the journal (journalctl -u socksgate).",
        )])
        .control("SH", ["SEE ALSO"])
        .text([roman(
            "/usr/share/doc/socksgate/README.md: the operator guide and the configuration \
             reference.",
        )])
        .render()
}

/// gzip with no name and no timestamp in the header, so the same page gives the same bytes.
fn write_gzip(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(data)?;
    std::fs::write(path, gz.finish()?)
}
