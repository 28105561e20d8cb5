//! `server::Server` over an arbitrary configuration, arbitrary client bytes and arbitrary
//! answers: never panics, `feed` never consumes more than given, and feeding the bytes in
//! arbitrary chunks yields the same events, output, outcome and leftover as feeding them at
//! once. Input layout: see `socksgate_core_fuzz` (`[H, header…, client bytes…]`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::{ServerPlan, drive_server, split};

fuzz_target!(|data: &[u8]| {
    let (mut header, input) = split(data);
    let plan = ServerPlan::new(&mut header);
    let whole = drive_server(&plan, input, false);
    let chunked = drive_server(&plan, input, true);
    assert_eq!(whole, chunked, "chunking changed the outcome ({plan:?})");
});
