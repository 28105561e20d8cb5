//! `session::Session` over arbitrary policies, client bytes and driver facts: never panics,
//! never takes more input than offered, ends at most once, and feeding the bytes in
//! arbitrary chunks yields the same events, output, payload and outcome as feeding them at
//! once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::session::{SessionInput, drive_session};

fuzz_target!(|input: SessionInput| {
    let whole = drive_session(&input, false);
    let chunked = drive_session(&input, true);
    assert_eq!(whole, chunked, "chunking changed the session's decisions");
});
