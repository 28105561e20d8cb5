//! Inputs and checks for the `gssapi_stream` and `session_gssapi` targets.

use arbitrary::Arbitrary;
use socksgate_core::gssapi::{
    Decapsulator, EncapsulateError, GssapiError, decapsulate_datagram, decapsulate_datagram_mut,
    encapsulate_datagram,
};
use socksgate_core::udp::protected;
use socksgate_core::wire::gssapi::{GssapiMessage, GssapiMessageType};
use socksgate_core::{BufferTooSmall, Status};

use crate::session::{Fact, SessionInput};

/// What a [`Decapsulator`] made of a stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Whole tokens, in order.
    pub tokens: Vec<Vec<u8>>,
    /// The token cut off at the end of the stream.
    pub partial: Vec<u8>,
    /// The error that ended the stream.
    pub error: Option<GssapiError>,
    /// Whether the stream ended between messages.
    pub at_boundary: bool,
}

/// Decodes `stream` in chunks of the given sizes (cycled; 1–256), or at once when `sizes`
/// is empty, checking `decode`'s contract: it takes at least one octet of non-empty input
/// and never more than offered, an error is final.
pub fn decode_stream(stream: &[u8], sizes: &[u8]) -> Decoded {
    let mut d = Decapsulator::new();
    let mut out = Decoded {
        tokens: Vec::new(),
        partial: Vec::new(),
        error: None,
        at_boundary: true,
    };
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&n) => usize::from(n) + 1,
            None => rest.len(),
        };
        i += 1;
        let mut chunk = &rest[..size.min(rest.len())];
        rest = &rest[chunk.len()..];
        while !chunk.is_empty() {
            match d.decode(chunk) {
                Ok((n, piece)) => {
                    assert!(n > 0 && n <= chunk.len(), "took {n} of {}", chunk.len());
                    if let Some(p) = piece {
                        // The piece is the last octets taken.
                        assert!(p.bytes.len() <= n);
                        assert_eq!(p.bytes, &chunk[n - p.bytes.len()..n]);
                        out.partial.extend_from_slice(p.bytes);
                        if p.last {
                            out.tokens.push(core::mem::take(&mut out.partial));
                        }
                    }
                    chunk = &chunk[n..];
                }
                Err(e) => {
                    let _ = e.to_string();
                    assert_eq!(d.decode(b"\x01\x03\x00\x00"), Err(e), "error not final");
                    out.error = Some(e);
                    out.at_boundary = false;
                    return out;
                }
            }
        }
    }
    assert_eq!(d.decode(&[]), Ok((0, None)));
    out.at_boundary = d.at_boundary();
    out
}

/// The same stream decoded by [`GssapiMessage::parse`], message by message: the model the
/// decoder must agree with (up to how the last, cut-off token is reported).
pub fn model(stream: &[u8]) -> (Vec<Vec<u8>>, Option<GssapiError>) {
    let mut tokens = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        match GssapiMessage::parse(rest) {
            Ok(Status::Complete((m, n))) => match m.kind {
                GssapiMessageType::Encapsulated => {
                    tokens.push(m.token.to_vec());
                    rest = &rest[n..];
                }
                GssapiMessageType::Abort => return (tokens, Some(GssapiError::Aborted)),
                other => return (tokens, Some(GssapiError::UnexpectedMessage(other))),
            },
            Ok(Status::Partial) => {
                // A cut-off header or token; an abort or a wrong type show as soon as the
                // MTYP octet is there, before LEN.
                if rest.len() >= 2 && rest[1] != 3 && rest[0] == 1 {
                    let kind = GssapiMessageType::from(rest[1]);
                    if kind == GssapiMessageType::Abort {
                        return (tokens, Some(GssapiError::Aborted));
                    }
                    return (tokens, Some(GssapiError::UnexpectedMessage(kind)));
                }
                return (tokens, None);
            }
            Err(e) => return (tokens, Some(GssapiError::Malformed(e))),
        }
    }
    (tokens, None)
}

/// The datagram helpers on one datagram: decapsulate agrees with the stream decoder on a
/// lone message, and encapsulate → decapsulate gives the token back.
pub fn check_datagram(datagram: &[u8]) {
    let lone = decapsulate_datagram(datagram);
    if let Ok(token) = lone {
        assert_eq!(token.len() + 4, datagram.len());
        let decoded = decode_stream(datagram, &[]);
        assert_eq!(decoded.tokens, [token.to_vec()]);
        assert!(decoded.at_boundary);
    }
    // The in-place form agrees, and so does a protected association's check of its client's
    // datagram (a stranger's is never decapsulated).
    let mut copy = datagram.to_vec();
    assert_eq!(
        decapsulate_datagram_mut(&mut copy).map(|t| t.to_vec()),
        lone.map(<[u8]>::to_vec)
    );
    let client: core::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let association = socksgate_core::udp::Association::<socksgate_core::udp::PeerList<1>, 16>::new(
        client.ip(),
        socksgate_core::Addr::Ip(client),
        None,
        socksgate_core::udp::PeerList::new(),
        core::time::Duration::from_secs(1),
        socksgate_core::time::Instant::from_millis(0),
    );
    let mut copy = datagram.to_vec();
    assert_eq!(
        protected::client_token(&association, client, &mut copy).map(|t| t.to_vec()),
        lone.map(<[u8]>::to_vec)
            .map_err(protected::ProtectedDrop::Framing)
    );
    let stranger: core::net::SocketAddr = "192.0.2.1:5001".parse().unwrap();
    assert_eq!(
        protected::client_token(&association, stranger, &mut copy).map(|t| t.to_vec()),
        Err(protected::ProtectedDrop::Stranger)
    );
    let mut out = vec![0u8; datagram.len() + 4];
    match encapsulate_datagram(datagram, &mut out) {
        Ok(n) => {
            assert_eq!(n, datagram.len() + 4);
            assert_eq!(decapsulate_datagram(&out[..n]), Ok(datagram));
        }
        Err(EncapsulateError::TokenTooLong) => assert!(datagram.len() > 65_535),
        Err(EncapsulateError::BufferTooSmall(BufferTooSmall { required })) => {
            panic!("needs {required} octets of {}", out.len())
        }
    }
}

/// One message of the client's GSS-API conversation, for `session_gssapi`.
#[derive(Arbitrary, Clone, Debug)]
pub enum ClientMessage {
    /// A context token of this many octets (up to 65,535).
    Context(u16),
    /// A protected-form protection message of this many octets (1 makes it the NEC form).
    Protection(u16),
    /// The NEC form: one raw level octet.
    Nec(u8),
    /// A §5 message of this many octets of the given SOCKS request, cut or padded.
    Encapsulated(u16),
    /// The abort message.
    Abort,
    /// Raw octets.
    Raw(Vec<u8>),
}

/// A session whose client offers GSS-API and whose messages are built from a script, so
/// the fuzzer reaches long tokens and the protection stages quickly.
#[derive(Arbitrary, Debug)]
pub struct GssapiSessionInput {
    gssapi: u8,
    /// Also offer username/password.
    offer_password: bool,
    rules: u8,
    chunks: Vec<u8>,
    facts: Vec<Fact>,
    messages: Vec<ClientMessage>,
    /// The SOCKS request after the negotiation (plain or encapsulated).
    request: Vec<u8>,
}

const CONNECT: [u8; 10] = [5, 1, 0, 1, 192, 0, 2, 1, 0, 80];

impl GssapiSessionInput {
    /// The equivalent [`SessionInput`]: password and GSS-API enabled, the script as bytes.
    pub fn session_input(&self) -> SessionInput {
        let mut bytes = if self.offer_password {
            vec![5, 2, 1, 2]
        } else {
            vec![5, 1, 1]
        };
        for m in &self.messages {
            match m {
                ClientMessage::Context(len) => message(&mut bytes, 1, &vec![0xa1; (*len).into()]),
                ClientMessage::Protection(len) => {
                    message(&mut bytes, 2, &vec![0x02; (*len).into()]);
                }
                ClientMessage::Nec(level) => message(&mut bytes, 2, &[*level]),
                ClientMessage::Encapsulated(len) => {
                    let body: Vec<u8> = CONNECT
                        .iter()
                        .copied()
                        .cycle()
                        .take((*len).into())
                        .collect();
                    message(&mut bytes, 3, &body);
                }
                ClientMessage::Abort => bytes.extend_from_slice(&[1, 0xff]),
                ClientMessage::Raw(raw) => bytes.extend_from_slice(raw),
            }
        }
        bytes.extend_from_slice(&self.request);
        SessionInput {
            auth: 3,
            gssapi: self.gssapi,
            rules: self.rules,
            chunks: self.chunks.clone(),
            facts: self.facts.clone(),
            bytes,
        }
    }
}

fn message(out: &mut Vec<u8>, kind: u8, token: &[u8]) {
    out.extend_from_slice(&[1, kind]);
    out.extend_from_slice(&u16::try_from(token.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&token[..token.len().min(65_535)]);
}
