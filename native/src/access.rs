//! Access rules from the configuration, evaluated by `socksgate_core::rules`.

use std::path::Path;

use crate::config::{ConfigError, RuleAction, RuleConfig, line_column};

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

/// Checks and compiles the configured rules.
pub fn compile(rules: &[RuleConfig], _default: RuleAction) -> Result<(), RuleError> {
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
    Ok(())
}
