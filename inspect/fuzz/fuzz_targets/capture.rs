//! The inspector's whole capture path on arbitrary bytes: pcap/pcapng framing, link layers,
//! IP, TCP reassembly (with a small buffer cap, so gaps are exercised), SOCKS detection and
//! decoding, UDP matching, and the JSON and text renderings. Seeded with real captures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_inspect::{Options, inspect};

fuzz_target!(|data: &[u8]| {
    let mut masked = Options::default();
    masked.reassembly_cap = 4096;
    let mut shown = masked.clone();
    shown.show_secrets = true;
    match (inspect(data, &masked), inspect(data, &shown)) {
        (Ok(a), Ok(b)) => {
            // Revealing secrets changes what is printed, never what is found.
            assert_eq!(a.sessions.len(), b.sessions.len());
            assert_eq!(a.capture.packets, b.capture.packets);
            let json = a.to_json();
            assert!(json.starts_with('{'));
            let _ = a.to_string();
        }
        (Err(_), Err(_)) => {}
        _ => panic!("show_secrets changed whether the capture parses"),
    }
});
