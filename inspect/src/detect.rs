//! Is this TCP connection SOCKS? Decided from the first bytes of each direction with the
//! core's parsers, on any port — there is no port list.
//!
//! A connection is SOCKS when the client's first bytes parse as a complete SOCKS5 greeting or
//! SOCKS4/4a request and the server's first bytes (if any were captured) parse as the matching
//! answer: a method selection choosing an offered method (or 0xFF), or a SOCKS4 reply with
//! VN 0 and CD 90–93. Anything the parsers reject, or a server that speaks first, is not SOCKS.

use crate::socks::{self, Info, Step};

/// The verdict on a connection so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes yet.
    Undecided,
    /// SOCKS4 or SOCKS4a.
    Socks4,
    /// SOCKS5.
    Socks5,
    /// Something else.
    NotSocks,
}

/// Longest client prefix that can still be an incomplete first SOCKS message (SOCKS4a: 8 bytes,
/// USERID and hostname of up to 255 bytes plus NULs).
const MAX_FIRST_MESSAGE: usize = 8 + 256 + 256;

/// Judges the first bytes `up` (client → server) and `down`. `last` means no more bytes will
/// arrive; `server_first` that the server sent payload before the client.
pub fn judge(up: &[u8], down: &[u8], server_first: bool, last: bool) -> Verdict {
    if server_first {
        return Verdict::NotSocks;
    }
    let wait = |up_len: usize| {
        if last || up_len > MAX_FIRST_MESSAGE {
            Verdict::NotSocks
        } else {
            Verdict::Undecided
        }
    };
    match up.first() {
        None => wait(0),
        Some(5) => match socks::method_request(up) {
            Step::Done(p, _) => {
                let Info::Greeting { methods } = p.info else {
                    return Verdict::NotSocks;
                };
                if down.is_empty() {
                    return if last {
                        Verdict::Socks5
                    } else {
                        Verdict::Undecided
                    };
                }
                match socks::method_reply(down) {
                    Step::Done(r, _) => match r.info {
                        Info::MethodChoice { method }
                            if method == 0xff || methods.contains(&method) =>
                        {
                            Verdict::Socks5
                        }
                        _ => Verdict::NotSocks,
                    },
                    Step::Partial => wait(up.len()),
                    Step::Bad(_) => Verdict::NotSocks,
                }
            }
            Step::Partial => wait(up.len()),
            Step::Bad(_) => Verdict::NotSocks,
        },
        Some(4) => match socks::socks4_request(up) {
            Step::Done(..) => {
                if down.is_empty() {
                    return if last {
                        Verdict::Socks4
                    } else {
                        Verdict::Undecided
                    };
                }
                match socks::socks4_reply(down) {
                    Step::Done(r, _) => match r.info {
                        Info::Socks4Reply { code: 90..=93, .. } => Verdict::Socks4,
                        _ => Verdict::NotSocks,
                    },
                    Step::Partial => wait(up.len()),
                    Step::Bad(_) => Verdict::NotSocks,
                }
            }
            Step::Partial => wait(up.len()),
            Step::Bad(_) => Verdict::NotSocks,
        },
        Some(_) => Verdict::NotSocks,
    }
}
