//! `udp::Association` over arbitrary datagrams from the client, strangers and destinations:
//! never panics, never sends a stranger's datagram, never relays to the client from a
//! source the client did not contact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::session::{UdpInput, drive_association};

fuzz_target!(|input: UdpInput| drive_association(&input));
