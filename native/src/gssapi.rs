//! GSS-API with the Kerberos V5 mechanism, through the system's library (MIT krb5's
//! `libgssapi_krb5`, via the `libgssapi` crate): the cryptography behind RFC 1961.
//!
//! The SOCKS side of GSS-API — message framing, the protection-level sub-negotiation, the
//! per-message encapsulation — is the core's; this module only does what the core asks for:
//!
//! * [`Acceptor`] — the server's credential, from a keytab file (`[gssapi] keytab`), for any
//!   service principal in it or the one `[gssapi] principal` names; [`Acceptor::start`]
//!   begins a context per session, [`AcceptContext::step`] answers each client token, and the
//!   finished context names the client's principal ([`Context::peer`]).
//! * [`Initiator`] — the client's side, from the user's credential cache (`KRB5CCNAME`),
//!   for a service name built as curl builds it ([`ServiceName`]).
//! * [`Context`] — an established context: [`Context::wrap`] with integrity or
//!   confidentiality ([`Context::wrap_in_place`] without copying the message),
//!   [`Context::unwrap`] in place (integrity, order and replay checked).
//!
//! Every failure is a [`GssError`] whose [`Cause`] says what went wrong in terms an operator
//! can act on (an expired ticket, a ticket for another service, a garbled token, a message
//! that failed its integrity check), for the log line and the metric label.
//!
//! All calls are synchronous and quick (no network: the client's ticket was fetched by
//! `kinit`, the acceptor reads its keytab); they run on the session's task.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::error::{Error as LibError, MajorFlags};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL, OidSet};
use libgssapi::util::{Buf, GssIov, GssIovFake, GssIovType};

/// What went wrong, in an operator's terms; [`Cause::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No usable credential: no ticket in the client's cache, or no key in the keytab.
    NoCredentials,
    /// A ticket or context past its end time (or a clock too far off the KDC's).
    Expired,
    /// A ticket for a service principal other than ours (another service, another realm, an
    /// old key version).
    WrongService,
    /// A token that is not a valid GSS-API/Kerberos token (garbled or truncated).
    DefectiveToken,
    /// A protected message whose integrity check failed (altered, or not from the peer).
    Integrity,
    /// A protected message replayed, reordered or missing from the sequence.
    Sequence,
    /// Anything else the library reported.
    Other,
}

impl Cause {
    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::Expired => "expired",
            Self::WrongService => "wrong_service",
            Self::DefectiveToken => "defective_token",
            Self::Integrity => "integrity",
            Self::Sequence => "sequence",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCredentials => "no credentials",
            Self::Expired => "ticket or context expired",
            Self::WrongService => "ticket for another service principal",
            Self::DefectiveToken => "defective token",
            Self::Integrity => "integrity check failed",
            Self::Sequence => "message replayed or out of sequence",
            Self::Other => "GSS-API failure",
        })
    }
}

/// A GSS-API failure: its [`Cause`] and the library's own words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}: {detail}")]
pub struct GssError {
    /// What went wrong.
    pub cause: Cause,
    /// The library's message (major and minor status), or ours.
    pub detail: String,
}

impl GssError {
    fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Self {
            cause,
            detail: detail.into(),
        }
    }
}

// Kerberos minor status codes (krb5.h, com_err table "krb5") that tell the causes apart.
const KRB5KRB_AP_ERR_TKT_EXPIRED: i32 = -1_765_328_352;
const KRB5KRB_AP_ERR_TKT_NYV: i32 = -1_765_328_351;
const KRB5KRB_AP_ERR_SKEW: i32 = -1_765_328_347;
const KRB5KRB_AP_ERR_NOT_US: i32 = -1_765_328_349;
const KRB5KRB_AP_WRONG_PRINC: i32 = -1_765_328_240;
const KRB5KRB_AP_ERR_BADKEYVER: i32 = -1_765_328_340;
const KRB5KRB_AP_ERR_NOKEY: i32 = -1_765_328_339;
const KRB5_KT_NOTFOUND: i32 = -1_765_328_203;
const KRB5_KT_KVNONOTFOUND: i32 = -1_765_328_154;
const KRB5KRB_AP_ERR_BAD_INTEGRITY: i32 = -1_765_328_353;
const KRB5KRB_AP_ERR_MODIFIED: i32 = -1_765_328_343;
const KRB5KRB_AP_ERR_REPEAT: i32 = -1_765_328_350;
const KRB5_FCC_NOFILE: i32 = -1_765_328_189;
const KRB5_CC_NOTFOUND: i32 = -1_765_328_243;
const KRB5_CC_END: i32 = -1_765_328_242;
/// The "asn1" com_err table (`ASN1_BAD_ID` and its neighbours): a Kerberos message that does
/// not decode.
const ASN1_ERRORS: std::ops::Range<i32> = 1_859_794_432..1_859_794_688;
/// The minor status MIT's mechanism glue gives with `GSS_S_FAILURE` for a context token it
/// cannot parse at all (observed for tokens without a GSS-API header and truncated ones).
const MECHGLUE_UNPARSEABLE_TOKEN: u32 = 100_001;

/// The routine-error field of a major status (a number, not a set of bits).
fn routine(major: MajorFlags) -> u32 {
    major.bits() & 0x00ff_0000
}

impl From<LibError> for GssError {
    fn from(e: LibError) -> Self {
        let detail = e.to_string();
        let minor = e.minor as i32;
        let r = routine(e.major);
        let is = |flag: MajorFlags| r != 0 && r == routine(flag);
        let cause = match minor {
            KRB5KRB_AP_ERR_TKT_EXPIRED | KRB5KRB_AP_ERR_TKT_NYV | KRB5KRB_AP_ERR_SKEW => {
                Cause::Expired
            }
            KRB5KRB_AP_ERR_NOT_US
            | KRB5KRB_AP_WRONG_PRINC
            | KRB5KRB_AP_ERR_BADKEYVER
            | KRB5KRB_AP_ERR_NOKEY
            | KRB5_KT_NOTFOUND
            | KRB5_KT_KVNONOTFOUND => Cause::WrongService,
            KRB5KRB_AP_ERR_BAD_INTEGRITY | KRB5KRB_AP_ERR_MODIFIED => Cause::Integrity,
            KRB5KRB_AP_ERR_REPEAT => Cause::Sequence,
            KRB5_FCC_NOFILE | KRB5_CC_NOTFOUND | KRB5_CC_END => Cause::NoCredentials,
            _ if ASN1_ERRORS.contains(&minor) => Cause::DefectiveToken,
            _ if is(MajorFlags::GSS_S_BAD_SIG) => Cause::Integrity,
            _ if is(MajorFlags::GSS_S_DEFECTIVE_TOKEN) => Cause::DefectiveToken,
            _ if is(MajorFlags::GSS_S_CREDENTIALS_EXPIRED)
                || is(MajorFlags::GSS_S_CONTEXT_EXPIRED) =>
            {
                Cause::Expired
            }
            _ if is(MajorFlags::GSS_S_NO_CRED) => Cause::NoCredentials,
            // No routine error but a supplementary one: gss_unwrap's verdict on order.
            _ if r == 0
                && e.major.intersects(
                    MajorFlags::GSS_S_DUPLICATE_TOKEN
                        | MajorFlags::GSS_S_OLD_TOKEN
                        | MajorFlags::GSS_S_UNSEQ_TOKEN
                        | MajorFlags::GSS_S_GAP_TOKEN,
                ) =>
            {
                Cause::Sequence
            }
            _ => Cause::Other,
        };
        Self { cause, detail }
    }
}

/// The Kerberos V5 mechanism alone: SOCKS's GSS-API method is Kerberos in practice (curl,
/// Dante and the NEC reference use it directly, not SPNEGO).
fn krb5_only() -> Result<OidSet, GssError> {
    let mut set = OidSet::new();
    set.add(GSS_MECH_KRB5)?;
    Ok(set)
}

/// The server's GSS-API credential: the keys of a keytab file.
#[derive(Debug, Clone)]
pub struct Acceptor {
    cred: Cred,
    keytab: PathBuf,
    principal: Option<String>,
}

impl Acceptor {
    /// Reads `keytab` (a file path) for a credential that accepts tickets for any service
    /// principal in it, or only for `principal` (`service/host@REALM`, or `service/host` in
    /// any realm) when given. Fails if the file is missing, unreadable or holds no keys.
    pub fn from_keytab(keytab: &Path, principal: Option<&str>) -> Result<Self, GssError> {
        let meta = std::fs::metadata(keytab).map_err(|e| {
            GssError::new(Cause::NoCredentials, format!("{}: {e}", keytab.display()))
        })?;
        if !meta.is_file() || meta.len() == 0 {
            return Err(GssError::new(
                Cause::NoCredentials,
                format!("{}: not a keytab (empty or not a file)", keytab.display()),
            ));
        }
        let cred = keytab_store::acquire_acceptor(keytab)?;
        Ok(Self {
            cred,
            keytab: keytab.to_path_buf(),
            principal: principal.map(str::to_owned),
        })
    }

    /// The keytab file this credential came from.
    pub fn keytab(&self) -> &Path {
        &self.keytab
    }

    /// The one service principal accepted, if the configuration named one.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// A new acceptor context for one session.
    pub fn start(&self) -> AcceptContext {
        AcceptContext {
            ctx: ServerCtx::new(Some(self.cred.clone())),
            principal: self.principal.clone(),
        }
    }
}

/// The acceptor `[gssapi]` configures, its keytab read now (`serve`, `check-config` and each
/// reload call it, so that a bad keytab fails before it is used); `None` without `[gssapi]`.
pub fn load(config: &crate::config::Config) -> Result<Option<Acceptor>, GssError> {
    let Some(g) = &config.gssapi else {
        return Ok(None);
    };
    let keytab = g.keytab.get_ref();
    Acceptor::from_keytab(keytab, g.principal.as_ref().map(|p| p.get_ref().as_str()))
        .map(Some)
        .map_err(|e| GssError {
            detail: format!("[gssapi] keytab {}: {}", keytab.display(), e.detail),
            ..e
        })
}

/// One session's acceptor context while it is being established.
#[derive(Debug)]
pub struct AcceptContext {
    ctx: ServerCtx,
    principal: Option<String>,
}

/// What a context-establishment step produced.
#[derive(Debug)]
pub enum Step<C> {
    /// Send this token to the peer and wait for its next one.
    Continue(Token, C),
    /// The context is established; send the token, if any (the acceptor's mutual
    /// authentication reply), and use the context.
    Done(Option<Token>, Context),
}

impl AcceptContext {
    /// Answers the client's context token. A token for a principal other than the configured
    /// one fails with [`Cause::WrongService`].
    pub fn step(mut self, token: &[u8]) -> Result<Step<Self>, GssError> {
        let out = match self.ctx.step(token, None) {
            Ok(out) => out.map(Token),
            // The mechanism glue's answer to a token it cannot assign to a mechanism (no
            // GSS-API header, or a header whose length runs past the token's end).
            Err(e)
                if e.minor == MECHGLUE_UNPARSEABLE_TOKEN
                    && routine(e.major) == routine(MajorFlags::GSS_S_FAILURE) =>
            {
                return Err(GssError::new(
                    Cause::DefectiveToken,
                    "not a GSS-API context token (garbled or truncated)",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if !self.ctx.is_complete() {
            let out = out.ok_or_else(|| {
                GssError::new(Cause::Other, "acceptor wants more without a token to send")
            })?;
            return Ok(Step::Continue(out, self));
        }
        let context = Context::finish(Role::Server(self.ctx))?;
        if let Some(want) = &self.principal
            && !principal_matches(want, &context.local)
        {
            return Err(GssError::new(
                Cause::WrongService,
                format!("ticket for {}, not {want}", context.local),
            ));
        }
        Ok(Step::Done(out, context))
    }
}

/// `want` is `service/host@REALM` (exact) or `service/host` (any realm).
fn principal_matches(want: &str, got: &str) -> bool {
    if want.contains('@') {
        want == got
    } else {
        got.rsplit_once('@').map_or(got, |(name, _)| name) == want
    }
}

/// How a client names the proxy's service principal, as curl does: `service` alone (curl's
/// default `rcmd`) is the host-based name `service@proxy-host`, which Kerberos maps to
/// `service/proxy-host@REALM`; a `service` with a `/` is a full principal name used as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// `rcmd`, `socks`, or `socks/proxy.example.com@EXAMPLE.COM`.
    pub service: String,
    /// The proxy's host name (from the proxy URL), for the host-based form.
    pub host: String,
}

/// The default service name curl and the NEC reference client use.
pub const DEFAULT_SERVICE: &str = "rcmd";

impl ServiceName {
    fn import(&self) -> Result<Name, GssError> {
        if self.service.contains('/') {
            Ok(Name::new(
                self.service.as_bytes(),
                Some(GSS_NT_KRB5_PRINCIPAL),
            )?)
        } else {
            let host = self.host.trim_start_matches('[').trim_end_matches(']');
            let name = format!("{}@{host}", self.service);
            Ok(Name::new(name.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))?)
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.service.contains('/') {
            f.write_str(&self.service)
        } else {
            write!(f, "{}@{}", self.service, self.host)
        }
    }
}

/// The client's side: the user's tickets (the default credential cache, `KRB5CCNAME`).
#[derive(Debug)]
pub struct Initiator {
    ctx: ClientCtx,
}

impl Initiator {
    /// Starts a context for `target` with the default credential cache, asking for mutual
    /// authentication, integrity, confidentiality and sequence checks. Returns the first
    /// token to send. Fails with [`Cause::NoCredentials`] without a ticket-granting ticket,
    /// [`Cause::Expired`] with an expired one, or when the KDC refuses a ticket for `target`.
    pub fn start(target: &ServiceName) -> Result<Step<Self>, GssError> {
        Self::begin(target, false)
    }

    /// [`start`](Self::start) for a context that is to protect datagrams (UDP ASSOCIATE),
    /// which may be lost or reordered: replay detection without sequence checks.
    pub fn start_for_datagrams(target: &ServiceName) -> Result<Step<Self>, GssError> {
        Self::begin(target, true)
    }

    fn begin(target: &ServiceName, datagrams: bool) -> Result<Step<Self>, GssError> {
        let mechs = krb5_only()?;
        let cred = Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))?;
        let mut flags = CtxFlags::GSS_C_MUTUAL_FLAG
            | CtxFlags::GSS_C_INTEG_FLAG
            | CtxFlags::GSS_C_CONF_FLAG
            | CtxFlags::GSS_C_REPLAY_FLAG;
        if !datagrams {
            // With it, MIT's unwrap withholds a message after a gap (a lost datagram).
            flags |= CtxFlags::GSS_C_SEQUENCE_FLAG;
        }
        let ctx = ClientCtx::new(Some(cred), target.import()?, flags, Some(GSS_MECH_KRB5));
        Self { ctx }.step(None)
    }

    /// Feeds the server's token (none on the first call).
    pub fn step(mut self, token: Option<&[u8]>) -> Result<Step<Self>, GssError> {
        let out = self.ctx.step(token, None)?.map(Token);
        if self.ctx.is_complete() {
            return Ok(Step::Done(out, Context::finish(Role::Client(self.ctx))?));
        }
        match out {
            Some(out) => Ok(Step::Continue(out, self)),
            None => Err(GssError::new(
                Cause::Other,
                "initiator wants more without a token to send",
            )),
        }
    }
}

/// A token from the library (freed by it on drop).
pub struct Token(Buf);

impl std::ops::Deref for Token {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

#[derive(Debug)]
enum Role {
    Server(ServerCtx),
    Client(ClientCtx),
}

/// An established security context: the peer's and our principal, and per-message
/// protection.
#[derive(Debug)]
pub struct Context {
    role: Role,
    peer: String,
    local: String,
    flags: CtxFlags,
}

impl Context {
    fn finish(role: Role) -> Result<Self, GssError> {
        let (peer, local, flags) = match &role {
            Role::Server(c) => (c.source_name()?, c.target_name()?, c.flags()?),
            Role::Client(c) => (c.target_name()?, c.source_name()?, c.flags()?),
        };
        Ok(Self {
            peer: peer.to_string(),
            local: local.to_string(),
            flags,
            role,
        })
    }

    fn sc(&mut self) -> &mut dyn SecurityContext {
        match &mut self.role {
            Role::Server(c) => c,
            Role::Client(c) => c,
        }
    }

    /// The peer's principal (`alice@EXAMPLE.COM` for the server; the service principal for
    /// the client).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Our own principal (for the server, the service principal the ticket was for).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// Whether the context can encrypt (the mechanism and both sides agreed).
    pub fn confidentiality_available(&self) -> bool {
        self.flags.contains(CtxFlags::GSS_C_CONF_FLAG)
    }

    /// Protects `message`: integrity always, and confidentiality when `encrypt`. The result
    /// is a GSS-API wrap token.
    pub fn wrap(&mut self, encrypt: bool, message: &[u8]) -> Result<Token, GssError> {
        Ok(Token(self.sc().wrap(encrypt, message)?))
    }

    /// Wraps the plaintext `buf[data]` where it lies (`gss_wrap_iov`): the token's header is
    /// written into the octets just before `data`, its padding and trailer into those just
    /// after, and the plaintext is encrypted (or only checksummed) in place. Returns where
    /// the token lies in `buf`, one contiguous `gss_wrap` token; `None`, with nothing
    /// written, when the room around `data` is too small for this mechanism's token.
    ///
    /// Unlike [`wrap`](Self::wrap), the library neither allocates the token nor copies the
    /// message into it.
    pub fn wrap_in_place(
        &mut self,
        encrypt: bool,
        buf: &mut [u8],
        data: std::ops::Range<usize>,
    ) -> Result<Option<std::ops::Range<usize>>, GssError> {
        let Some((before, rest)) = buf.split_at_mut_checked(data.start) else {
            return Ok(None);
        };
        let Some((plain, after)) = rest.split_at_mut_checked(data.len()) else {
            return Ok(None);
        };
        let mut lengths = [
            GssIovFake::new(GssIovType::Header),
            GssIov::new(GssIovType::Data, plain).as_fake(),
            GssIovFake::new(GssIovType::Padding),
            GssIovFake::new(GssIovType::Trailer),
        ];
        self.sc().wrap_iov_length(encrypt, &mut lengths)?;
        let [header_len, _, padding_len, trailer_len] = lengths.each_ref().map(GssIovFake::len);
        let Some(header_at) = before.len().checked_sub(header_len) else {
            return Ok(None);
        };
        let Some((_, header)) = before.split_at_mut_checked(header_at) else {
            return Ok(None);
        };
        let Some((padding, after)) = after.split_at_mut_checked(padding_len) else {
            return Ok(None);
        };
        let Some((trailer, _)) = after.split_at_mut_checked(trailer_len) else {
            return Ok(None);
        };
        let mut iov = [
            GssIov::new(GssIovType::Header, header),
            GssIov::new(GssIovType::Data, plain),
            GssIov::new(GssIovType::Padding, padding),
            GssIov::new(GssIovType::Trailer, trailer),
        ];
        self.sc().wrap_iov(encrypt, &mut iov)?;
        // The parts must still be the ones asked for, or the token is not contiguous.
        if [header_len, data.len(), padding_len, trailer_len] != iov.each_ref().map(|b| b.len()) {
            return Err(GssError::new(
                Cause::Other,
                "gss_wrap_iov changed the token's layout",
            ));
        }
        Ok(Some(header_at..data.end + padding_len + trailer_len))
    }

    /// Checks and opens a wrap token from the peer, in place: its integrity, and its place in
    /// the sequence (a replayed, reordered or dropped message fails). Returns where the
    /// message lies in `token` afterwards.
    ///
    /// In place because MIT's `gss_unwrap` writes into its input token (it moves the data of
    /// an integrity-only token), which a shared `&[u8]` must not allow: the stream form of
    /// `gss_unwrap_iov` is given the buffer mutably and points into it.
    pub fn unwrap(&mut self, token: &mut [u8]) -> Result<std::ops::Range<usize>, GssError> {
        let mut iov = [
            GssIov::new(GssIovType::Stream, token),
            GssIov::new(GssIovType::Data, &mut []),
        ];
        self.sc().unwrap_iov(&mut iov)?;
        let start = iov[0]
            .header_length(&iov[1])
            .ok_or_else(|| GssError::new(Cause::DefectiveToken, "no data in the wrap token"))?;
        let end = start + iov[1].len();
        if end > iov[0].len() {
            return Err(GssError::new(
                Cause::DefectiveToken,
                "data outside the wrap token",
            ));
        }
        Ok(start..end)
    }

    /// [`unwrap`](Self::unwrap) into a new vector (for tests and small messages).
    pub fn unwrap_to_vec(&mut self, token: &[u8]) -> Result<Vec<u8>, GssError> {
        let mut buf = token.to_vec();
        let range = self.unwrap(&mut buf)?;
        Ok(buf.get(range).unwrap_or_default().to_vec())
    }
}

/// Acceptor credentials from a keytab named in the configuration, not from the process-wide
/// `KRB5_KTNAME`: `gss_acquire_cred_from` with a `keytab` credential store (MIT krb5 1.11+),
/// which the `libgssapi` crate does not wrap.
#[allow(unsafe_code)]
mod keytab_store {
    use super::*;
    use libgssapi_sys::{
        OM_uint32, gss_OID_set, gss_acquire_cred_from, gss_cred_id_t, gss_key_value_element_desc,
        gss_key_value_set_desc,
    };

    /// `GSS_C_ACCEPT`.
    const ACCEPT: i32 = 2;
    /// `GSS_C_INDEFINITE`.
    const INDEFINITE: OM_uint32 = 0xffff_ffff;

    pub(super) fn acquire_acceptor(keytab: &Path) -> Result<Cred, GssError> {
        let path = CString::new(format!("FILE:{}", keytab.display()))
            .map_err(|_| GssError::new(Cause::NoCredentials, "keytab path contains a NUL byte"))?;
        let mut element = gss_key_value_element_desc {
            key: c"keytab".as_ptr(),
            value: path.as_ptr(),
        };
        let store = gss_key_value_set_desc {
            count: 1,
            elements: &mut element,
        };
        let mut minor: OM_uint32 = 0;
        let mut cred: gss_cred_id_t = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `store` and the strings it points to
        // live until it returns; a null name (GSS_C_NO_NAME) and a null mechanism set
        // (GSS_C_NO_OID_SET, the default mechanisms) are documented inputs; the outputs we do
        // not want are null, which the API allows. On success `cred` is a new credential we
        // own, handed to `Cred::from_c` exactly once.
        let major = unsafe {
            gss_acquire_cred_from(
                &mut minor,
                std::ptr::null_mut(),
                INDEFINITE,
                std::ptr::null_mut::<libgssapi_sys::gss_OID_set_desc>() as gss_OID_set,
                ACCEPT,
                &store,
                &mut cred,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if major != 0 {
            return Err(LibError {
                major: MajorFlags::from_bits_retain(major),
                minor,
            }
            .into());
        }
        // SAFETY: see above; `cred` is non-null and owned by nobody else.
        Ok(unsafe { Cred::from_c(cred) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_principal_matches_with_or_without_realm() {
        assert!(principal_matches(
            "rcmd/localhost@A.B",
            "rcmd/localhost@A.B"
        ));
        assert!(!principal_matches(
            "rcmd/localhost@A.B",
            "rcmd/localhost@C.D"
        ));
        assert!(principal_matches("rcmd/localhost", "rcmd/localhost@C.D"));
        assert!(!principal_matches("rcmd/localhost", "host/localhost@C.D"));
    }

    #[test]
    fn service_names_follow_curl() {
        let host = ServiceName {
            service: "rcmd".into(),
            host: "proxy.example".into(),
        };
        assert_eq!(host.to_string(), "rcmd@proxy.example");
        let full = ServiceName {
            service: "socks/proxy@EX.COM".into(),
            host: "ignored".into(),
        };
        assert_eq!(full.to_string(), "socks/proxy@EX.COM");
    }

    #[test]
    fn a_missing_keytab_is_no_credentials() {
        let e = Acceptor::from_keytab(Path::new("/nonexistent/keytab"), None).unwrap_err();
        assert_eq!(e.cause, Cause::NoCredentials);
    }
}
