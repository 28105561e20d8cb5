//! `socksgate inspect`: a capture file, or stdin (`-`), read as a stream through the
//! inspector; gzip and zstd captures are decompressed on the fly (recognised by their magic
//! numbers, not their names). `--json-lines` prints each session as its connection ends;
//! `--json` writes each session, in first-packet order, as soon as its place is settled to an
//! unnamed temporary file and prints the document at the end (its `capture` facts come first
//! but are known last), so memory holds the live connections, not the sessions; the text
//! rendering keeps the whole report. Output to a pipe that closes early (`| head`) ends the
//! command quietly.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, BufWriter, IsTerminal as _, Read, Seek as _, Write};

use anyhow::{Context as _, Result};
use socksgate::cli::InspectArgs;
use socksgate_inspect::{DocumentWriter, Inspector, Options, PrettyJson};

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

fn inspect(input: Box<dyn Read>, args: &InspectArgs, name: &str) -> Result<()> {
    if args.json {
        return inspect_document(input, args, name);
    }
    inspect_whole(input, args, name)
}

/// Reads the next chunk of `input` into `buf`; `None` at the end.
fn read_chunk<'b>(input: &mut dyn Read, buf: &'b mut [u8], name: &str) -> Result<Option<&'b [u8]>> {
    loop {
        match input.read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(buf.get(..n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    }
}

/// `--json`: the contract document, byte for byte `Report::to_json`, without holding it. The
/// sessions go to an unnamed temporary file as they settle in first-packet order, compact
/// (less than half the pretty size); at the end the head (with the capture facts), the file
/// and the tail go to stdout through `PrettyJson`.
fn inspect_document(mut input: Box<dyn Read>, args: &InspectArgs, name: &str) -> Result<()> {
    let mut inspector = Inspector::new(Options::with_secrets(args.show_secrets));
    let mut document = DocumentWriter::new();
    let spill = tempfile::tempfile().context("creating a temporary file for the sessions")?;
    let mut body = BufWriter::with_capacity(READ_CHUNK, spill);
    let mut buf = vec![0u8; READ_CHUNK];
    while let Some(chunk) = read_chunk(&mut input, &mut buf, name)? {
        inspector.push(chunk).with_context(|| name.to_owned())?;
        for session in inspector.take_sessions_in_order() {
            document.write_session(&mut body, &session)?;
        }
    }
    let report = inspector.finish().with_context(|| name.to_owned())?;
    for session in &report.sessions {
        document.write_session(&mut body, session)?;
    }
    let mut spill = body.into_inner().map_err(io::IntoInnerError::into_error)?;
    spill.rewind()?;
    let mut out = PrettyJson::new(io::stdout().lock());
    out.write_all(document.head(&report.capture).as_bytes())?;
    io::copy(&mut spill, &mut out)?;
    out.write_all(document.tail().as_bytes())?;
    let mut out = out.into_inner()?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// `--json-lines` (streamed) and the text rendering (the whole report at the end).
fn inspect_whole(mut input: Box<dyn Read>, args: &InspectArgs, name: &str) -> Result<()> {
    let mut inspector = Inspector::new(Options::with_secrets(args.show_secrets));
    let mut sessions = Vec::new();
    // Buffered, flushed after each chunk read: stdout alone is line-buffered, one write per
    // session (183,000 writes on a handshake-only capture); the lines still leave as soon as
    // the chunk that ended their sessions is inspected.
    let mut out = BufWriter::with_capacity(READ_CHUNK, io::stdout().lock());
    let mut line = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    while let Some(chunk) = read_chunk(&mut input, &mut buf, name)? {
        inspector.push(chunk).with_context(|| name.to_owned())?;
        let ended = inspector.take_sessions();
        if args.json_lines {
            for session in &ended {
                write_line(&mut out, &mut line, session)?;
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
            write_line(&mut out, &mut line, session)?;
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
        write!(out, "{report}")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes `session` and a newline to `out`, serialised in `line` (reused: no allocation per
/// session; write errors stay `io::Error`s, so a closed pipe is recognised).
fn write_line(
    out: &mut impl Write,
    line: &mut Vec<u8>,
    session: &socksgate_inspect::Session,
) -> Result<()> {
    line.clear();
    serde_json::to_writer(&mut *line, session)?;
    line.push(b'\n');
    out.write_all(line)?;
    Ok(())
}

/// The last line of `--json-lines`.
#[derive(serde::Serialize)]
struct CaptureLine<'a> {
    capture: &'a socksgate_inspect::CaptureInfo,
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
