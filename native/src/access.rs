//! Access rules from the configuration, evaluated by `socksgate_core::rules`.
//!
//! A `[[rule]]` in the config may list several clients, destinations, ports and users; it is
//! expanded into one core rule per combination (all pointing back at the config rule), so
//! "first match wins" keeps its meaning. The core's session evaluates them (before resolving,
//! then for each resolved address); this module names the rule behind a decision for logs
//! and finds the `[[upstream]]` an allow rule routes through.

use std::path::Path;

use socksgate_core::family::AddressFamily;
use socksgate_core::rules::{
    Action, Cidr, CommandSet, Decision, HostPattern, PortRange, Rule, Rules, UserName,
};
use toml::Spanned;

use crate::config::{ConfigError, RuleAction, RuleConfig};

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
        ConfigError::at(text, path, self.span, self.message)
    }
}

/// The compiled rules.
#[derive(Debug)]
pub struct AccessRules {
    rules: Vec<Rule>,
    /// For each core rule, the index of the config rule it came from.
    origin: Vec<usize>,
    /// For each config rule, how logs name it.
    labels: Vec<String>,
    /// For each config rule, the `[[upstream]]` it sends requests through.
    upstreams: Vec<Option<String>>,
    /// For each config rule, the `[[egress]]` profile its sessions leave by.
    egresses: Vec<Option<String>>,
    /// For each core rule, the address family of its config rule, if it sets one.
    families: Vec<Option<AddressFamily>>,
    default: Action,
}

impl Default for AccessRules {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            origin: Vec::new(),
            labels: Vec::new(),
            upstreams: Vec::new(),
            egresses: Vec::new(),
            families: Vec::new(),
            default: Action::Allow,
        }
    }
}

impl AccessRules {
    /// The rules, for the core's [`Policy`](socksgate_core::Policy).
    pub(crate) fn rules(&self) -> Rules<'_> {
        Rules::new(&self.rules, self.default)
    }

    /// How logs name the rule behind `decision`: the config rule's label, or the default.
    pub fn label(&self, decision: Decision) -> &str {
        decision
            .rule
            .and_then(|i| self.origin.get(i))
            .and_then(|o| self.labels.get(*o))
            .map_or("default_action = \"deny\"", String::as_str)
    }

    /// The `[[upstream]]` of the allow rule behind `decision`, if it has one.
    pub fn upstream(&self, decision: Decision) -> Option<&str> {
        if !decision.is_allowed() {
            return None;
        }
        let origin = self.origin.get(decision.rule?)?;
        self.upstreams.get(*origin)?.as_deref()
    }

    /// The `[[egress]]` profile of the allow rule behind `decision`, if it names one.
    pub fn egress(&self, decision: Decision) -> Option<&str> {
        if !decision.is_allowed() {
            return None;
        }
        let origin = self.origin.get(decision.rule?)?;
        self.egresses.get(*origin)?.as_deref()
    }

    /// For each core rule, by index, the address family its config rule sets (the core's
    /// [`AddressFamilies`](socksgate_core::family::AddressFamilies)).
    pub fn families(&self) -> &[Option<AddressFamily>] {
        &self.families
    }

    /// Number of core rules after expansion.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn parse_each<T: core::str::FromStr<Err = socksgate_core::rules::ParseError>>(
    list: &[Spanned<String>],
    what: &str,
) -> Result<Vec<T>, RuleError> {
    list.iter()
        .map(|s| {
            s.get_ref().parse::<T>().map_err(|e| RuleError {
                span: s.span(),
                message: format!("{what} {:?}: {e}", s.get_ref()),
            })
        })
        .collect()
}

/// Checks and compiles the configured rules. `lines[i]`, when known, is the config line of
/// rule `i` (for log messages).
pub fn compile(
    rules: &[RuleConfig],
    default: RuleAction,
    lines: &[usize],
) -> Result<AccessRules, RuleError> {
    let mut out = AccessRules {
        default: action(default),
        ..AccessRules::default()
    };
    for (i, rc) in rules.iter().enumerate() {
        let clients: Vec<Option<Cidr>> = wrap(parse_each::<Cidr>(&rc.from, "client address")?);
        let dsts: Vec<HostPattern> = or_any(
            parse_each::<HostPattern>(&rc.to, "destination")?,
            HostPattern::Any,
        );
        let ports: Vec<PortRange> =
            or_any(parse_each::<PortRange>(&rc.ports, "port")?, PortRange::ANY);
        let users: Vec<Option<UserName>> = wrap(parse_each::<UserName>(&rc.users, "user")?);
        if let Some(family) = &rc.address_family
            && rc.action != RuleAction::Allow
        {
            return Err(RuleError {
                span: family.span(),
                message: "address_family is only meaningful on an allow rule".into(),
            });
        }
        let family = rc.address_family.as_ref().map(|f| f.get_ref().0);
        let commands = if rc.commands.is_empty() {
            CommandSet::ANY
        } else {
            parse_each::<CommandSet>(&rc.commands, "command")?
                .into_iter()
                .fold(CommandSet::NONE, |a, b| a | b)
        };
        for client in &clients {
            for dst in &dsts {
                for port in &ports {
                    for user in &users {
                        out.rules.push(Rule {
                            action: action(rc.action),
                            client: *client,
                            user: user.clone(),
                            commands,
                            dst: dst.clone(),
                            ports: *port,
                        });
                        out.origin.push(i);
                        out.families.push(family);
                    }
                }
            }
        }
        out.upstreams
            .push(rc.upstream.as_ref().map(|u| u.get_ref().clone()));
        out.egresses
            .push(rc.egress.as_ref().map(|e| e.get_ref().clone()));
        out.labels.push(match lines.get(i) {
            Some(line) => format!("rule #{} (line {line}, {})", i + 1, describe(rc)),
            None => format!("rule #{} ({})", i + 1, describe(rc)),
        });
    }
    Ok(out)
}

fn describe(rc: &RuleConfig) -> String {
    let mut parts = vec![match rc.action {
        RuleAction::Allow => "allow".to_owned(),
        RuleAction::Deny => "deny".to_owned(),
    }];
    for (name, list) in [
        ("from", &rc.from),
        ("to", &rc.to),
        ("ports", &rc.ports),
        ("commands", &rc.commands),
        ("users", &rc.users),
    ] {
        if !list.is_empty() {
            let items: Vec<&str> = list.iter().map(|s| s.get_ref().as_str()).collect();
            parts.push(format!("{name}={}", items.join(",")));
        }
    }
    parts.join(" ")
}

fn action(a: RuleAction) -> Action {
    match a {
        RuleAction::Allow => Action::Allow,
        RuleAction::Deny => Action::Deny,
    }
}

fn wrap<T>(v: Vec<T>) -> Vec<Option<T>> {
    if v.is_empty() {
        vec![None]
    } else {
        v.into_iter().map(Some).collect()
    }
}

fn or_any<T>(v: Vec<T>, any: T) -> Vec<T> {
    if v.is_empty() { vec![any] } else { v }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use socksgate_core::rules::{Query, Verdict};
    use socksgate_core::wire::Command;
    use socksgate_core::{Addr, Domain};

    use super::*;
    use crate::config::Config;

    fn compiled(text: &str) -> AccessRules {
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        compile(&c.rules, c.default_action, &c.rule_lines).unwrap()
    }

    fn q<'a>(client: &str, user: Option<&'a [u8]>, command: Command, dst: Addr<'a>) -> Query<'a> {
        Query {
            client: client.parse().unwrap(),
            user,
            command,
            dst,
        }
    }

    #[derive(Debug, PartialEq)]
    enum Pass {
        Allowed,
        PerAddress,
    }

    /// Step one as the session takes it; a denial is the label logs show.
    fn check(r: &AccessRules, query: &Query<'_>) -> Result<Pass, String> {
        match r.rules().evaluate(query) {
            Verdict::Decided(d) if d.is_allowed() => Ok(Pass::Allowed),
            Verdict::Decided(d) => Err(r.label(d).to_owned()),
            Verdict::NeedsResolution => Ok(Pass::PerAddress),
        }
    }

    fn check_resolved(r: &AccessRules, query: &Query<'_>, ip: IpAddr) -> Result<(), String> {
        let d = r.rules().evaluate_resolved(query, ip);
        if d.is_allowed() {
            Ok(())
        } else {
            Err(r.label(d).to_owned())
        }
    }

    #[test]
    fn first_match_wins_and_denials_name_the_rule() {
        let r = compiled(
            r#"
default_action = "deny"

[[rule]]
action = "deny"
to = ["10.0.0.0/8", ".internal.example"]

[[rule]]
action = "allow"
from = ["127.0.0.0/8", "::1"]
ports = ["80", "443", "8000-8999"]
commands = ["connect"]
"#,
        );
        let ip = |s: &str| Addr::Ip(s.parse().unwrap());
        assert_eq!(
            check(
                &r,
                &q("127.0.0.1", None, Command::Connect, ip("192.0.2.1:443"))
            )
            .unwrap(),
            Pass::Allowed
        );
        assert!(check(&r, &q("::1", None, Command::Connect, ip("192.0.2.1:8080"))).is_ok());
        // Wrong port, wrong client, wrong command: the default denies.
        let e = check(
            &r,
            &q("127.0.0.1", None, Command::Connect, ip("192.0.2.1:22")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("default_action"), "{e}");
        assert!(
            check(
                &r,
                &q("192.0.2.9", None, Command::Connect, ip("192.0.2.1:443"))
            )
            .is_err()
        );
        assert!(
            check(
                &r,
                &q("127.0.0.1", None, Command::Bind, ip("192.0.2.1:443"))
            )
            .is_err()
        );
        // Rule 1 by address and by name, and its line.
        let e = check(
            &r,
            &q("127.0.0.1", None, Command::Connect, ip("10.1.2.3:443")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rule #1 (line 4"), "{e}");
        // By name: denied whatever it resolves to (the CIDR rule before it may need the
        // address first, so the core may ask for it).
        let name = Addr::Domain(Domain::new(b"db.internal.example").unwrap(), 443);
        let query = q("127.0.0.1", None, Command::Connect, name);
        assert!(matches!(check(&r, &query), Ok(Pass::PerAddress) | Err(_)));
        assert!(check_resolved(&r, &query, "192.0.2.1".parse().unwrap()).is_err());
        // A name that may resolve into 10/8: decided per address.
        let name = Addr::Domain(Domain::new(b"www.example.com").unwrap(), 443);
        let query = q("127.0.0.1", None, Command::Connect, name);
        assert_eq!(check(&r, &query).unwrap(), Pass::PerAddress);
        assert!(check_resolved(&r, &query, "10.0.0.1".parse().unwrap()).is_err());
        assert!(check_resolved(&r, &query, "192.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn users_in_rules() {
        let r = compiled(
            "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nusers = [\"alice\", \"bob\"]\n",
        );
        let dst = Addr::Ip("192.0.2.1:80".parse().unwrap());
        assert!(check(&r, &q("127.0.0.1", Some(b"alice"), Command::Connect, dst)).is_ok());
        assert!(check(&r, &q("127.0.0.1", Some(b"bob"), Command::Connect, dst)).is_ok());
        assert!(check(&r, &q("127.0.0.1", Some(b"carol"), Command::Connect, dst)).is_err());
        assert!(check(&r, &q("127.0.0.1", None, Command::Connect, dst)).is_err());
    }

    #[test]
    fn address_family_per_rule() {
        let r = compiled(
            "[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\", \"::1\"]\naddress_family = \"ipv4_only\"\n[[rule]]\naction = \"allow\"\n",
        );
        assert_eq!(
            r.families(),
            [
                Some(AddressFamily::Ipv4Only),
                Some(AddressFamily::Ipv4Only),
                None
            ]
        );
        for (text, needle) in [
            (
                "[[rule]]\naction = \"allow\"\naddress_family = \"ipv4\"\n",
                "line 3",
            ),
            (
                "[[rule]]\naction = \"deny\"\naddress_family = \"ipv4_only\"\n",
                "t.toml:3:18",
            ),
            ("address_family = \"v6\"\n", "line 1"),
        ] {
            let e = Config::parse(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e} (wanted {needle})");
        }
    }

    #[test]
    fn bad_values_point_at_their_line_and_column() {
        for (text, needle) in [
            (
                "[[rule]]\naction = \"deny\"\nto = [\"10.0.0.1/8\"]\n",
                "t.toml:3:7",
            ),
            (
                "[[rule]]\naction = \"deny\"\nfrom = [\"nonsense\"]\n",
                "t.toml:3:9",
            ),
            (
                "[[rule]]\naction = \"deny\"\n\nports = [\"90-80\"]\n",
                "t.toml:4:10",
            ),
            (
                "[[rule]]\naction = \"deny\"\ncommands = [\"connect\", \"fly\"]\n",
                "t.toml:3:24",
            ),
            (
                "[[rule]]\naction = \"deny\"\nto = [\"*.example.com\"]\n",
                "t.toml:3:7",
            ),
        ] {
            let e = Config::parse(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(needle), "{e} (wanted {needle})");
        }
        let e = Config::parse("[[rule]]\naction = \"maybe\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
