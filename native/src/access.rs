//! Access rules from the configuration, evaluated by `socksgate_core::rules`.

use std::net::IpAddr;
use std::path::Path;

use socksgate_core::Addr;
use socksgate_core::wire::Command;

use crate::config::{ConfigError, RuleAction, RuleConfig, line_column};
use crate::connect::ConnectError;

/// A rule field that cannot be compiled, with its location in the file.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RuleError {
    /// Byte range in the config text.
    pub span: core::ops::Range<usize>,
    /// What is wrong.
    pub message: String,
}

impl RuleError {
    /// Turns this into a [`ConfigError`] pointing at the line and column.
    pub fn locate(self, text: &str, path: &Path) -> ConfigError {
        let (line, column) = line_column(text, self.span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message: self.message,
        }
    }
}

/// What a rule is asked about.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The client's IP.
    pub client: IpAddr,
    /// The authenticated user or SOCKS4 USERID.
    pub user: Option<&'a [u8]>,
    /// The command.
    pub command: Command,
    /// The destination (normalised: IP literals as IPs).
    pub dest: Addr<'a>,
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct AccessRules {
    default: RuleAction,
}

impl AccessRules {
    /// Evaluates `query`; a denial names the rule.
    pub fn check(&self, _query: &Query<'_>) -> Result<(), ConnectError> {
        match self.default {
            RuleAction::Allow => Ok(()),
            RuleAction::Deny => Err(ConnectError::Denied("the default action".into())),
        }
    }
}

/// Checks and compiles the configured rules.
pub fn compile(rules: &[RuleConfig], default: RuleAction) -> Result<AccessRules, RuleError> {
    for rule in rules {
        for c in &rule.commands {
            if !matches!(c.get_ref().as_str(), "connect" | "bind" | "udp_associate") {
                return Err(RuleError {
                    span: c.span(),
                    message: format!(
                        "unknown command {:?} (expected connect, bind or udp_associate)",
                        c.get_ref()
                    ),
                });
            }
        }
    }
    Ok(AccessRules { default })
}
