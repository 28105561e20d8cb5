//! GSS-API-protected UDP datagrams (RFC 1961 §5): under integrity or confidentiality each
//! datagram between a SOCKS client and its relay is one `VER=1 MTYP=3 LEN TOKEN` message
//! whose token is one `gss_wrap` of the whole RFC 1928 UDP header and data.
//!
//! [`DatagramProtection`] does the cryptography for both ends — the server's relay
//! (`udp_relay`) and the client library's [`SocksDatagram`](crate::client::SocksDatagram):
//! [`seal`](DatagramProtection::seal) wraps and frames one datagram,
//! [`open`](DatagramProtection::open) unwraps one token in place. The framing and the
//! decisions about a datagram that fails are the core's ([`socksgate_core::udp::protected`]).
//!
//! The context is the one the TCP control connection negotiated; after the UDP ASSOCIATE
//! reply nothing else travels protected on that connection, so the datagrams continue its
//! sequence numbers. Unwrap checks integrity and replays (a datagram received twice fails);
//! a lost or reordered datagram is not an error unless the client asked the context for
//! sequence checking (`GSS_C_SEQUENCE_FLAG`): MIT's library then withholds the message it
//! reports out of sequence, and it is dropped like any datagram that fails.

use std::ops::Range;

use socksgate_core::gssapi::{
    EncapsulateError, GssapiError, ProtectionLevel, decapsulate_datagram_mut, encapsulate_datagram,
};

use crate::gssapi::{Context, GssError};
use crate::protected::Protection;

/// Why a datagram could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    /// Wrap or unwrap failed (integrity, replay, a defective token, …).
    #[error("{0}")]
    Gss(#[from] GssError),
    /// Not exactly one encapsulated message.
    #[error("GSS-API framing: {0}")]
    Framing(GssapiError),
    /// The wrapped datagram does not fit one message (more than 65,535 octets of token).
    #[error("wrapped datagram too large to encapsulate")]
    TooLarge,
}

impl DatagramError {
    /// The label of the datagram's drop in `socksgate_gssapi_datagrams_dropped_total` (the
    /// labels of `socksgate_gssapi_failures_total`).
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Gss(e) => e.cause.as_str(),
            Self::Framing(_) => "protocol",
            Self::TooLarge => "other",
        }
    }
}

/// An association's protection: the established context and whether it encrypts.
#[derive(Debug)]
pub struct DatagramProtection {
    context: Context,
    encrypt: bool,
}

impl DatagramProtection {
    /// The datagrams of the association whose control connection agreed `protection`.
    pub fn new(protection: Protection) -> Self {
        let (context, level) = protection.into_context();
        Self {
            context,
            // Selective is never granted by this server; were it agreed, encrypt everything.
            encrypt: !matches!(level, ProtectionLevel::None | ProtectionLevel::Integrity),
        }
    }

    /// Wraps `plain` (a UDP request header and its data) into the datagram to send, written to
    /// `out` (cleared first).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), DatagramError> {
        // The allocating `gss_wrap`, not the stream's `Context::wrap_in_place`: measured per
        // datagram (native/tests/gssapi_seal_cost.rs), wrapping in place costs a second library
        // call (`gss_wrap_iov_length`) that outweighs the allocation and copy it saves — 10 %
        // slower at 64 octets, 3–4 % at 512, even from about 1,200 on.
        let token = self.context.wrap(self.encrypt, plain)?;
        out.clear();
        out.resize(token.len() + 4, 0);
        match encapsulate_datagram(&token, out) {
            Ok(n) => {
                out.truncate(n);
                Ok(())
            }
            Err(EncapsulateError::TokenTooLong | EncapsulateError::BufferTooSmall(_)) => {
                Err(DatagramError::TooLarge)
            }
        }
    }

    /// Unwraps a datagram's wrapped `token` in place; returns where its plaintext (the UDP
    /// request header and data) lies in `token`.
    pub fn open_token(&mut self, token: &mut [u8]) -> Result<Range<usize>, DatagramError> {
        Ok(self.context.unwrap(token)?)
    }

    /// Decapsulates and unwraps a whole `datagram` in place; returns its plaintext.
    pub fn open<'d>(&mut self, datagram: &'d mut [u8]) -> Result<&'d [u8], DatagramError> {
        let token = decapsulate_datagram_mut(datagram).map_err(DatagramError::Framing)?;
        let range = self.open_token(token)?;
        Ok(token.get(range).unwrap_or_default())
    }
}
