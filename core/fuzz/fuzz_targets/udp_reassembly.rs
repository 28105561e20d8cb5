//! `udp::Reassembler` under arbitrary fragments, datagrams, resets and clock moves, checked
//! step by step against the reference model in `socksgate_core_fuzz::udp` (the outcome table
//! of the module documentation): same results, same pending state, same timer.
#![no_main]

use core::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use socksgate_core::udp::{Instant, Reassembler};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core_fuzz::udp::{CAPACITY, Clock, Model, Op, Outcome, destination};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    timeout_ms: u32,
    steps: Vec<(Clock, Op<'a>)>,
}

fuzz_target!(|input: Input<'_>| {
    let mut r =
        Reassembler::<CAPACITY>::with_timeout(Duration::from_millis(input.timeout_ms.into()));
    assert!(r.timeout() >= Reassembler::<CAPACITY>::MIN_TIMEOUT);
    let mut model = Model::new(r.timeout());
    let mut now = 0u64;
    for (clock, op) in input.steps.iter().take(64) {
        now = match *clock {
            Clock::Advance(ms) => now.saturating_add(ms.into()),
            Clock::AdvanceSecs(s) => now.saturating_add(u64::from(s) * 1000),
            Clock::Set(t) => t,
        };
        let t = Instant::from_millis(now);
        let owned = |o: Result<Option<socksgate_core::udp::Reassembled<'_>>, _>| -> Outcome {
            o.map(|w| w.map(|w| (w.dst.to_target(), w.data.to_vec(), w.fragments)))
        };
        let (got, want) = match op {
            Op::Push { frag, dst, payload } => {
                let dst = destination(*dst);
                (
                    owned(r.push(t, *frag, dst, payload)),
                    model.push(now, *frag, dst, payload),
                )
            }
            Op::Datagram { frag, dst, payload } => {
                let header = UdpHeader {
                    frag: *frag,
                    dst: destination(*dst),
                };
                let mut datagram = vec![0u8; header.buffer_len()];
                header.emit(&mut datagram).unwrap();
                datagram.extend_from_slice(payload);
                (
                    owned(r.push_datagram(t, &datagram)),
                    model.push_datagram(now, &datagram),
                )
            }
            Op::Raw(bytes) => (
                owned(r.push_datagram(t, bytes)),
                model.push_datagram(now, bytes),
            ),
            Op::Timeout => {
                assert_eq!(r.handle_timeout(t), model.timeout(now));
                (Ok(None), Ok(None))
            }
            Op::Reset => {
                r.reset();
                model.reset();
                (Ok(None), Ok(None))
            }
        };
        if let Err(e) = &got {
            let _ = e.to_string();
        }
        assert_eq!(got, want, "{op:?} at {now}");
        assert_eq!(
            (r.is_pending(), r.pending_len(), r.poll_timeout()),
            model.pending()
        );
    }
});
