//! The access record: one log line and one metrics sample per session.

use std::borrow::Cow;
use std::net::SocketAddr;

use socksgate_core::Target;
use socksgate_core::server::Version;
use socksgate_core::wire::{Command, ReplyCode};

/// How a session ended, for the access log and `socksgate_sessions_total{outcome}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// The request succeeded (reply 0 / 90) and the command ran to its end.
    Succeeded,
    /// The request got a failure reply (denied, unreachable, refused, …).
    Refused,
    /// Username/password rejected.
    AuthFailed,
    /// Malformed, timed out or abandoned before a request.
    #[default]
    HandshakeFailed,
    /// Refused by a `[limits]` setting.
    Limited,
    /// A request arrived but the connection failed before a reply.
    Error,
}

impl Outcome {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::AuthFailed => "auth_failed",
            Self::HandshakeFailed => "handshake_failed",
            Self::Limited => "limited",
            Self::Error => "error",
        }
    }
}

/// A command's name as in the rules, logs and metrics (the core's names).
pub fn command_name(c: Command) -> Cow<'static, str> {
    c.name()
        .map_or_else(|| Cow::Owned(c.to_string()), Cow::Borrowed)
}

/// The destination as the access log shows it: an address as such (no text kept), a name
/// as text (names are rarer and cost a lookup anyway), `-` before a request.
#[derive(Debug, Default)]
pub(crate) enum Dst {
    #[default]
    None,
    Ip(SocketAddr),
    Name(String),
}

impl From<&Target> for Dst {
    fn from(target: &Target) -> Self {
        match target {
            Target::Ip(sa) => Self::Ip(*sa),
            Target::Domain(..) => Self::Name(target.to_string()),
        }
    }
}

impl std::fmt::Display for Dst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(sa) => sa.fmt(f),
            Self::Name(name) => f.write_str(name),
            Self::None => f.write_str("-"),
        }
    }
}

/// What the access log line says about a session.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) version: Option<Version>,
    pub(crate) command: Option<Command>,
    pub(crate) dst: Dst,
    /// The user name as sent (RFC 1929 names are octets).
    pub(crate) user: Option<Vec<u8>>,
    pub(crate) reply: Option<ReplyCode>,
    pub(crate) bytes: (u64, u64),
    pub(crate) outcome: Outcome,
}

impl Record {
    /// The reply code as sent: SOCKS5 REP, or SOCKS4 CD (90 granted, 91 rejected).
    pub(crate) fn reply_code(&self) -> Option<u8> {
        let code = self.reply?;
        Some(match self.version {
            Some(Version::Socks5) | None => u8::from(code),
            Some(_) => u8::from(socksgate_core::wire::Socks4Code::from(code)),
        })
    }

    /// Writes the access-log line (target `socksgate::access`) and the session's metrics
    /// sample.
    pub(crate) fn log(
        &self,
        peer: SocketAddr,
        duration: std::time::Duration,
        error: Option<&dyn std::fmt::Display>,
        metrics: &crate::metrics::Metrics,
    ) {
        let command = self.command.map_or_else(|| "none".into(), command_name);
        tracing::info!(
            target: "socksgate::access",
            client = %peer,
            user = %self.user.as_deref().map_or("-".into(), String::from_utf8_lossy),
            %command,
            dst = %self.dst,
            reply = self.reply_code().map_or(-1, i16::from),
            up = self.bytes.0,
            down = self.bytes.1,
            duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome = self.outcome.as_str(),
            error = error.map(tracing::field::display),
            "session"
        );
        metrics.session(command, self.outcome.as_str());
    }
}
