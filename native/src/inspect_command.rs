//! `socksgate inspect`: a capture file, or stdin (`-`), read as a stream through the
//! inspector; gzip and zstd captures are decompressed on the fly (recognised by their magic
//! numbers, not their names). `--json-lines` prints each session as its connection ends;
//! `--json` and the text rendering print the whole report at the end. Output to a pipe that
//! closes early (`| head`) ends the command quietly.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, IsTerminal as _, Read, Write};

use anyhow::{Context as _, Result};
use socksgate::cli::InspectArgs;
use socksgate_inspect::{Inspector, Options, Report};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const READ_CHUNK: usize = 256 * 1024;

/// Runs the command.
pub(crate) fn run(args: &InspectArgs) -> Result<()> {
    let stdin = args.file.as_os_str() == "-";
    let name = if stdin {
        "stdin".to_owned()
    } else {
        args.file.display().to_string()
    };
    let (raw, size): (Box<dyn Read>, Option<u64>) = if stdin {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(&args.file).with_context(|| format!("reading {name}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    // A bar only for a file of known size, and only when a person watches stderr.
    let bar = match size {
        Some(len) if io::stderr().is_terminal() => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        _ => indicatif::ProgressBar::hidden(),
    };
    let input = decompressed(BufReader::new(bar.wrap_read(raw)))
        .with_context(|| format!("reading {name}"))?;
    let result = inspect(input, args, &name);
    bar.finish_and_clear();
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// `input` itself, or its decompression when it starts with a gzip or zstd magic number.
fn decompressed(mut input: BufReader<impl Read + 'static>) -> io::Result<Box<dyn Read>> {
    let head = input.fill_buf()?;
    if head.starts_with(&GZIP_MAGIC) {
        // Multi-member: `cat a.gz b.gz` and pigz/bgzip output decode whole.
        Ok(Box::new(flate2::read::MultiGzDecoder::new(input)))
    } else if head.starts_with(&ZSTD_MAGIC) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(input)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(input))
    }
}

fn inspect(mut input: Box<dyn Read>, args: &InspectArgs, name: &str) -> Result<()> {
    let mut inspector = Inspector::new(Options::with_secrets(args.show_secrets));
    let mut sessions = Vec::new();
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        };
        inspector
            .push(buf.get(..n).unwrap_or_default())
            .with_context(|| name.to_owned())?;
        let ended = inspector.take_sessions();
        if args.json_lines {
            for session in &ended {
                writeln!(out, "{}", serde_json::to_string(session)?)?;
            }
            if !ended.is_empty() {
                out.flush()?;
            }
        } else {
            sessions.extend(ended);
        }
    }
    let mut report = inspector.finish().with_context(|| name.to_owned())?;
    if args.json_lines {
        for session in &report.sessions {
            writeln!(out, "{}", serde_json::to_string(session)?)?;
        }
        // The last line: the facts about the file, once they are all known.
        let line = CaptureLine {
            capture: &report.capture,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        sessions.append(&mut report.sessions);
        sessions.sort_by_key(|s| s.first_frame);
        report.sessions = sessions;
        write_report(&mut out, &report, args.json)?;
    }
    out.flush()?;
    Ok(())
}

/// The last line of `--json-lines`.
#[derive(serde::Serialize)]
struct CaptureLine<'a> {
    capture: &'a socksgate_inspect::CaptureInfo,
}

fn write_report(out: &mut impl Write, report: &Report, json: bool) -> io::Result<()> {
    if json {
        writeln!(out, "{}", report.to_json())
    } else {
        write!(out, "{report}")
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
