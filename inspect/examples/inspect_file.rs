//! Inspects a capture file and prints the report (text, or JSON with `--json`) and, on
//! stderr, the throughput. A stand-in for `socksgate inspect` and the native benchmark:
//!
//! ```text
//! cargo run --release -p socksgate-inspect --example inspect_file -- FILE [--json] [--show-secrets] [--quiet]
//! ```

use std::time::Instant;

use socksgate_inspect::{Options, inspect};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: inspect_file FILE [--json] [--show-secrets] [--quiet]");
        std::process::exit(2);
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    });
    let t = Instant::now();
    let report = match inspect(&bytes, &Options::with_secrets(flag("--show-secrets"))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let secs = t.elapsed().as_secs_f64();
    if !flag("--quiet") {
        if flag("--json") {
            println!("{}", report.to_json());
        } else {
            print!("{report}");
        }
    }
    eprintln!(
        "{:.1} MB in {:.3} s = {:.0} MB/s ({} packets, {} sessions)",
        bytes.len() as f64 / 1e6,
        secs,
        bytes.len() as f64 / 1e6 / secs,
        report.capture.packets,
        report.sessions.len()
    );
}
