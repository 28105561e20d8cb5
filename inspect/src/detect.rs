//! Is this TCP connection SOCKS? Decided from the first bytes of each direction with the
//! core's parsers, on any port — there is no port list.
//!
//! A connection is SOCKS when the client's first bytes parse as a complete SOCKS5 greeting or
//! SOCKS4/4a request and the server's first bytes (if any were captured) parse as the matching
//! answer: a method selection choosing an offered method (or 0xFF), or a SOCKS4 reply with
//! VN 0 and CD 90–93. Anything the parsers reject, or a server that speaks first, is not SOCKS.

use socksgate_core::Status;
use socksgate_core::server::MAX_MESSAGE_LEN;
use socksgate_core::wire::Socks4Code;
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks4::{Socks4Reply, Socks4Request};

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

/// Longest client prefix that can still be an incomplete first SOCKS message: the core's
/// bound on a handshake message.
const MAX_FIRST_MESSAGE: usize = MAX_MESSAGE_LEN;

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
        Some(5) => match MethodRequest::parse(up) {
            Ok(Status::Complete((greeting, _))) => {
                if down.is_empty() {
                    return if last {
                        Verdict::Socks5
                    } else {
                        Verdict::Undecided
                    };
                }
                match MethodReply::parse(down) {
                    Ok(Status::Complete((reply, _))) => {
                        let m = u8::from(reply.method);
                        if m == 0xff || greeting.raw_methods().contains(&m) {
                            Verdict::Socks5
                        } else {
                            Verdict::NotSocks
                        }
                    }
                    Ok(Status::Partial) => wait(up.len()),
                    Err(_) => Verdict::NotSocks,
                }
            }
            Ok(Status::Partial) => wait(up.len()),
            Err(_) => Verdict::NotSocks,
        },
        Some(4) => match Socks4Request::parse(up) {
            Ok(Status::Complete(_)) => {
                if down.is_empty() {
                    return if last {
                        Verdict::Socks4
                    } else {
                        Verdict::Undecided
                    };
                }
                match Socks4Reply::parse(down) {
                    Ok(Status::Complete((reply, _))) => match reply.code {
                        Socks4Code::Unknown(_) => Verdict::NotSocks,
                        _ => Verdict::Socks4,
                    },
                    Ok(Status::Partial) => wait(up.len()),
                    Err(_) => Verdict::NotSocks,
                }
            }
            Ok(Status::Partial) => wait(up.len()),
            Err(_) => Verdict::NotSocks,
        },
        Some(_) => Verdict::NotSocks,
    }
}
