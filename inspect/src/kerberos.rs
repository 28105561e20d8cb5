//! What an RFC 1961 context token says in clear: the GSS-API mechanism of the client's initial
//! context token (RFC 2743 §3.1) and, for Kerberos V5 (RFC 4121 §4.1), the AP-REQ's service
//! principal and realm, which are in the ticket's unencrypted part (RFC 4120 §5.3). Nothing
//! here needs a key; the authenticator and the ticket's encrypted part stay opaque.
//!
//! The ASN.1 is read by `der-parser` and `kerberos-parser` (pure Rust, so the browser build
//! decodes the same); only the token framing between them (OID, TOK_ID) is laid out here.

use core::ops::Range;

use der_parser::asn1_rs::{Class, FromDer as _, Length};
use der_parser::ber::ber_read_element_header;
use der_parser::der::parse_der_oid;

/// The Kerberos V5 GSS-API mechanism (RFC 1964).
pub(crate) const KERBEROS_OID: &str = "1.2.840.113554.1.2.2";
/// SPNEGO (RFC 4178), named when seen though its inner tokens are not followed.
const SPNEGO_OID: &str = "1.3.6.1.5.5.2";
/// TOK_ID of a Kerberos AP-REQ inside the initial context token (RFC 4121 §4.1).
const TOK_ID_AP_REQ: [u8; 2] = [0x01, 0x00];

/// An initial context token, with byte ranges relative to the token's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitialToken {
    /// The mechanism OID, dotted.
    pub(crate) mech: String,
    /// Where the OID (tag, length and value) is.
    pub(crate) mech_at: Range<usize>,
    /// The Kerberos TOK_ID after the OID (RFC 4121 §4.1), right after `mech_at`.
    pub(crate) tok_id: Option<[u8; 2]>,
    /// The Kerberos AP-REQ, when the mechanism is Kerberos and TOK_ID says AP-REQ.
    pub(crate) ap_req: Option<ApReq>,
}

/// The clear parts of a Kerberos AP-REQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApReq {
    /// Where TOK_ID (`01 00`) is.
    pub(crate) tok_id_at: Range<usize>,
    /// Where the AP-REQ's DER encoding is.
    pub(crate) at: Range<usize>,
    /// The ticket's service principal name (`service/host`), without the realm.
    pub(crate) service: String,
    /// The ticket's realm (the service's realm).
    pub(crate) realm: String,
}

impl ApReq {
    /// `service/host@REALM`.
    pub(crate) fn principal(&self) -> String {
        format!("{}@{}", self.service, self.realm)
    }
}

/// A Kerberos TOK_ID's meaning (RFC 4121 §4.1).
pub(crate) fn tok_id_name(tok_id: [u8; 2]) -> &'static str {
    match tok_id {
        [1, 0] => "AP-REQ",
        [2, 0] => "AP-REP",
        [3, 0] => "KRB-ERROR",
        _ => "unknown",
    }
}

/// The mechanism's name for reports: `"kerberos"`, `"spnego"`, or the dotted OID.
pub(crate) fn mech_name(oid: &str) -> String {
    match oid {
        KERBEROS_OID => "kerberos".to_owned(),
        SPNEGO_OID => "spnego".to_owned(),
        other => other.to_owned(),
    }
}

/// Reads `token` as an initial context token: `[APPLICATION 0] { OID, inner token }`.
/// `None` when it is not one (a later token of the exchange, or garbage).
pub(crate) fn initial_context_token(token: &[u8]) -> Option<InitialToken> {
    let (rest, header) = ber_read_element_header(token).ok()?;
    if header.class() != Class::Application || header.tag().0 != 0 || !header.is_constructed() {
        return None;
    }
    // A token cut short (or longer than its header says) is read as far as it goes.
    let inner = match header.length() {
        Length::Definite(n) => rest.get(..n).unwrap_or(rest),
        Length::Indefinite => rest,
    };
    let inner_at = token.len() - rest.len();
    let (after_oid, oid) = parse_der_oid(inner).ok()?;
    let mech = oid.as_oid().ok()?.to_id_string();
    let mech_at = inner_at..inner_at + (inner.len() - after_oid.len());
    let kerberos = mech == KERBEROS_OID;
    let tok_id = match after_oid {
        &[a, b, ..] if kerberos => Some([a, b]),
        _ => None,
    };
    let ap_req = kerberos.then(|| ap_req(after_oid, mech_at.end)).flatten();
    Some(InitialToken {
        mech,
        mech_at,
        tok_id,
        ap_req,
    })
}

/// The Kerberos inner token at `at` in the context token: TOK_ID, then the AP-REQ.
fn ap_req(inner: &[u8], at: usize) -> Option<ApReq> {
    let (tok_id, der) = (inner.get(..2)?, inner.get(2..)?);
    if tok_id != TOK_ID_AP_REQ {
        return None;
    }
    let (rest, req) = kerberos_parser::krb5::ApReq::from_der(der).ok()?;
    let start = at + 2;
    Some(ApReq {
        tok_id_at: at..start,
        at: start..start + (der.len() - rest.len()),
        service: req.ticket.sname.to_string(),
        realm: req.ticket.realm.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real token from MIT Kerberos (inspect/tests/fixtures/gssapi/generate.py).
    const AP_REQ: &[u8] = include_bytes!("../tests/fixtures/gssapi/ap_req.bin");

    #[test]
    fn reads_the_service_principal_of_a_real_ap_req() {
        let t = initial_context_token(AP_REQ).expect("an initial context token");
        assert_eq!(t.mech, KERBEROS_OID);
        assert_eq!(mech_name(&t.mech), "kerberos");
        assert_eq!(t.mech_at, 4..15);
        let req = t.ap_req.expect("an AP-REQ");
        assert_eq!(req.tok_id_at, 15..17);
        assert_eq!(req.at, 17..AP_REQ.len());
        assert_eq!(req.principal(), "rcmd/proxy.socksgate.test@SOCKSGATE.TEST");
    }

    #[test]
    fn other_tokens_and_every_prefix_are_handled() {
        // The server's AP-REP is not an initial context token: it has no mechanism to name.
        let ap_rep = include_bytes!("../tests/fixtures/gssapi/ap_rep.bin");
        let t = initial_context_token(ap_rep).expect("the AP-REP's framing");
        assert_eq!((t.tok_id, t.ap_req), (Some([2, 0]), None));
        assert_eq!(tok_id_name([2, 0]), "AP-REP");
        assert_eq!(initial_context_token(&[0x60; 40]), None);
        for cut in 0..AP_REQ.len() {
            let _ = initial_context_token(&AP_REQ[..cut]);
        }
        let mut flipped = AP_REQ.to_vec();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = initial_context_token(&flipped);
            flipped[i] ^= 0xff;
        }
    }
}
