//! Streaming against batch: the first two input bytes choose a chunking (sizes cycling from
//! 1 to 256 bytes), the rest is the capture. Pushed through `Inspector` in those chunks it
//! must give exactly the batch `inspect`'s report (sessions sorted by first packet), or the
//! same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_inspect::{Inspector, Options, inspect};

fuzz_target!(|data: &[u8]| {
    let (seed, capture) = data.split_at(data.len().min(2));
    let (a, b) = (
        usize::from(seed.first().copied().unwrap_or(1)),
        usize::from(seed.get(1).copied().unwrap_or(7)),
    );
    let mut options = Options::default();
    options.reassembly_cap = 4096;
    let batch = inspect(capture, &options);

    let mut inspector = Inspector::new(options);
    let mut sessions = Vec::new();
    let mut at = 0;
    let mut turn = 0usize;
    let streamed = loop {
        if at >= capture.len() {
            break inspector.finish().map(|mut report| {
                sessions.append(&mut report.sessions);
                sessions.sort_by_key(|s| s.first_frame);
                report.sessions = sessions;
                report
            });
        }
        let size = 1 + if turn % 2 == 0 { a } else { b };
        turn += 1;
        let end = (at + size).min(capture.len());
        if let Err(e) = inspector.push(&capture[at..end]) {
            break Err(e);
        }
        sessions.extend(inspector.take_sessions());
        at = end;
    };
    match (batch, streamed) {
        (Ok(x), Ok(y)) => assert_eq!(x.to_json(), y.to_json()),
        (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string()),
        (x, y) => panic!("batch {x:?} but streamed {y:?}"),
    }
});
