//! `observe::Conversation` over arbitrary client and server streams: never panics, `feed`
//! never takes more than offered, messages and payload tile each stream, and feeding the
//! streams in arbitrary chunks and interleavings yields the same messages and anomalies (and
//! the same payload ranges) as feeding each in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::observe::{Input, drive_observer};

fuzz_target!(|input: Input| {
    let whole = drive_observer(&input, false);
    let chunked = drive_observer(&input, true);
    assert_eq!(whole, chunked, "chunking changed what was observed");
});
