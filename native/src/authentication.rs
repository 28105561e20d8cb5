//! `[[auth]]`: which clients authenticate how, by client network and listener.
//!
//! With `[gssapi]` configured, `"gssapi"` (RFC 1961, Kerberos) is a method too, alone or
//! beside `"password"` (the client then chooses among the two it offers, `[gssapi] prefer`
//! deciding when it offers both), and the default for clients no entry matches adds it.
//!
//! Each entry is compiled into one core
//! [`AuthenticationRule`] per (network, listener) pair, in order, so "first match wins" keeps
//! its meaning; the core's [`AuthenticationRules`](socksgate_core::policy::AuthenticationRules)
//! chooses for each connection. An entry gives a whole
//! [`Authentication`]: `["none"]` is SOCKS5 without authentication (and SOCKS4/4a unless
//! `socks4 = false`), `["password"]` is RFC 1929 against the users file (SOCKS4 refused, as
//! it cannot carry a password). Offering both to the same clients is refused: a client that
//! may skip the password needs none, and "optional" would let SOCKS4 in where a password is
//! expected.

use std::net::SocketAddr;

use socksgate_core::Authentication;
use socksgate_core::policy::AuthenticationRule;
use socksgate_core::rules::Cidr;

use crate::access::RuleError;
use crate::config::AuthConfig;

/// The default for connections no entry matches: GSS-API when `[gssapi]` is configured, a
/// password when a users file is set (either or both: the client picks among those it
/// offers), otherwise none (SOCKS4 per `socks4`).
pub fn default_authentication(users: bool, gssapi: bool, socks4: bool) -> Authentication {
    if users || gssapi {
        Authentication::Required {
            password: users,
            gssapi,
        }
    } else {
        Authentication::None { socks4 }
    }
}

/// Checks and compiles the `[[auth]]` entries. `users`: whether a users file is configured
/// (`methods = ["password"]` needs one); `gssapi`: whether `[gssapi]` is (`"gssapi"` needs
/// it); `socks4`: whether SOCKS4 is accepted where no authentication is required.
pub fn compile(
    entries: &[AuthConfig],
    users: bool,
    gssapi: bool,
    socks4: bool,
) -> Result<Vec<AuthenticationRule>, RuleError> {
    let mut out = Vec::new();
    for entry in entries {
        let methods = entry.methods.get_ref();
        let (mut none, mut password, mut kerberos) = (false, false, false);
        for m in methods {
            match m.get_ref().as_str() {
                "none" => none = true,
                "password" if users => password = true,
                "password" => {
                    return Err(RuleError {
                        span: m.span(),
                        message: "[[auth]] methods \"password\" needs a users file (`users` or \
                                  --users)"
                            .into(),
                    });
                }
                "gssapi" if gssapi => kerberos = true,
                "gssapi" => {
                    return Err(RuleError {
                        span: m.span(),
                        message: "[[auth]] methods \"gssapi\" needs a [gssapi] table with a keytab"
                            .into(),
                    });
                }
                other => {
                    return Err(RuleError {
                        span: m.span(),
                        message: format!(
                            "[[auth]] method {other:?}: expected \"none\", \"password\" or \"gssapi\""
                        ),
                    });
                }
            }
            if none && (password || kerberos) {
                return Err(RuleError {
                    span: m.span(),
                    message: "[[auth]] methods: give either [\"none\"] or methods that \
                              authenticate; a client that may skip authentication needs none"
                        .into(),
                });
            }
        }
        let authentication = if none {
            Authentication::None { socks4 }
        } else if password || kerberos {
            Authentication::Required {
                password,
                gssapi: kerberos,
            }
        } else {
            return Err(RuleError {
                span: entry.methods.span(),
                message: "[[auth]] methods is empty: expected [\"none\"], [\"password\"] or \
                          [\"gssapi\"]"
                    .into(),
            });
        };
        let clients = entry
            .from
            .iter()
            .map(|f| {
                f.get_ref()
                    .parse::<Cidr>()
                    .map(Some)
                    .map_err(|e| RuleError {
                        span: f.span(),
                        message: format!("[[auth]] client address {:?}: {e}", f.get_ref()),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listeners = entry
            .listeners
            .iter()
            .map(|l| {
                l.get_ref()
                    .parse::<SocketAddr>()
                    .map(Some)
                    .map_err(|_| RuleError {
                        span: l.span(),
                        message: format!(
                            "[[auth]] listener {:?}: expected an address and port such as \
                             \"0.0.0.0:1080\" or \"[::]:1080\"",
                            l.get_ref()
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for client in or_any(clients) {
            for listener in or_any(listeners.clone()) {
                out.push(AuthenticationRule {
                    client,
                    listener,
                    authentication,
                });
            }
        }
    }
    Ok(out)
}

fn or_any<T>(v: Vec<Option<T>>) -> Vec<Option<T>> {
    if v.is_empty() { vec![None] } else { v }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use socksgate_core::policy::AuthenticationRules;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn entries_choose_by_network_and_listener() {
        let c = parse(
            r#"
users = "/nonexistent/users"

[[auth]]
from = ["127.0.0.2", "10.0.0.0/8"]
methods = ["none"]

[[auth]]
listeners = ["127.0.0.1:1081"]
methods = ["none"]
"#,
        )
        .unwrap();
        let rules = compile(&c.auth, true, false, c.socks4).unwrap();
        assert_eq!(rules.len(), 3);
        let auth =
            AuthenticationRules::new(default_authentication(true, false, true)).with_rules(&rules);
        let on = |s: &str| s.parse::<SocketAddr>().unwrap();
        let open = Authentication::None { socks4: true };
        assert_eq!(
            auth.for_client("127.0.0.2".parse().unwrap(), on("127.0.0.1:1080")),
            open
        );
        assert_eq!(
            auth.for_client("127.0.0.3".parse().unwrap(), on("127.0.0.1:1080")),
            Authentication::PASSWORD
        );
        assert_eq!(
            auth.for_client("127.0.0.3".parse().unwrap(), on("127.0.0.1:1081")),
            open
        );
        // socks4 = false reaches the "none" entries too.
        let c = parse("socks4 = false\n[[auth]]\nmethods = [\"none\"]\n").unwrap();
        let rules = compile(&c.auth, false, false, c.socks4).unwrap();
        assert_eq!(
            rules[0].authentication,
            Authentication::None { socks4: false }
        );
    }

    #[test]
    fn bad_entries_point_at_their_line_and_column() {
        for (text, needle, why) in [
            (
                "[[auth]]\nmethods = [\"password\"]\n",
                "t.toml:2:12",
                "needs a users file",
            ),
            (
                "users = \"u\"\n[[auth]]\nmethods = [\"none\", \"password\"]\n",
                "t.toml:3:20",
                "either",
            ),
            (
                "[[auth]]\nmethods = [\"gssapi\"]\n",
                "t.toml:2:12",
                "needs a [gssapi] table",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\n[[auth]]\nmethods = [\"gssapi\", \"none\"]\n",
                "t.toml:4:22",
                "either",
            ),
            (
                "[[auth]]\nmethods = [\"kerberos\"]\n",
                "t.toml:2:12",
                "expected",
            ),
            ("[[auth]]\nmethods = []\n", "t.toml:2:11", "empty"),
            (
                "[[auth]]\nfrom = [\"10.0.0.1/8\"]\nmethods = [\"none\"]\n",
                "t.toml:2:9",
                "bits set",
            ),
            (
                "[[auth]]\nfrom = [\"10.0.0.0/33\"]\nmethods = [\"none\"]\n",
                "t.toml:2:9",
                "prefix",
            ),
            (
                "[[auth]]\nlisteners = [\"0.0.0.0\"]\nmethods = [\"none\"]\n",
                "t.toml:2:14",
                "address and port",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.starts_with(needle) && e.contains(why),
                "{e} (wanted {needle}, {why})"
            );
        }
        let e = parse("[[auth]]\nfrom = [\"10.0.0.0/8\"]\n").unwrap_err();
        assert!(e.contains("methods"), "{e}");
        // GSS-API alone, or beside a password.
        let c = parse(
            "users = \"u\"\n[gssapi]\nkeytab = \"k\"\n[[auth]]\nfrom = [\"10.0.0.0/8\"]\nmethods = [\"gssapi\"]\n[[auth]]\nmethods = [\"password\", \"gssapi\"]\n",
        )
        .unwrap();
        let rules = compile(&c.auth, true, true, c.socks4).unwrap();
        assert_eq!(
            rules[0].authentication,
            Authentication::Required {
                password: false,
                gssapi: true
            }
        );
        assert_eq!(
            rules[1].authentication,
            Authentication::Required {
                password: true,
                gssapi: true
            }
        );
        assert_eq!(
            default_authentication(false, true, true),
            Authentication::Required {
                password: false,
                gssapi: true
            }
        );
        let e = parse("[[auth]]\nfrom = [\"10.0.0.0/8\"]\n").unwrap_err();
        assert!(e.contains("methods"), "{e}");
    }
}
