//! `session::Session` through GSS-API (RFC 1961): a client offering method 1 whose context
//! tokens (up to 65,535 octets), protection messages (protected and NEC form), §5 messages
//! and raw bytes come from a script, an arbitrary GSS-API policy and arbitrary driver
//! answers. Never panics, pieces reassemble to the tokens sent, a principal becomes the
//! user, and feeding the bytes in arbitrary chunks gives the same events, tokens, output,
//! payload and outcome as feeding them at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::gssapi::GssapiSessionInput;
use socksgate_core_fuzz::session::drive_session;

fuzz_target!(|input: GssapiSessionInput| {
    let input = input.session_input();
    let whole = drive_session(&input, false);
    let chunked = drive_session(&input, true);
    assert_eq!(whole, chunked, "chunking changed the session's decisions");
});
