//! `client::Client` with an arbitrary configuration over arbitrary proxy bytes: never
//! panics, `feed` never consumes more than given, and feeding the bytes in arbitrary chunks
//! yields the same events, output, outcome and leftover as feeding them at once. Input
//! layout: see `socksgate_core_fuzz` (`[H, header…, proxy bytes…]`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::{ClientPlan, drive_client, split};

fuzz_target!(|data: &[u8]| {
    let (mut header, input) = split(data);
    let plan = ClientPlan::new(&mut header);
    let whole = drive_client(&plan, input, false);
    let chunked = drive_client(&plan, input, true);
    assert_eq!(whole, chunked, "chunking changed the outcome ({plan:?})");
});
