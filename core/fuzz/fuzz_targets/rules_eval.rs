//! `rules::Rules` built from arbitrary text (each component through its `FromStr`, with
//! Display -> FromStr checked) and evaluated for arbitrary queries: never panics, `evaluate`
//! and `evaluate_resolved` agree with a naive first-match re-implementation, a `Decided`
//! verdict for a name is what every resolved address gives, and an IP destination is always
//! decided at once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use socksgate_core::Addr;
use socksgate_core::rules::{Action, Query, Rule, Rules, Verdict};
use socksgate_core_fuzz::rules::{QueryInput, RuleText, dst_addr, naive_verdict};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    rules: Vec<RuleText<'a>>,
    default_deny: bool,
    queries: Vec<QueryInput<'a>>,
}

fuzz_target!(|input: Input<'_>| {
    let rules: Vec<Rule> = input.rules.iter().take(16).map(RuleText::build).collect();
    let default = if input.default_deny {
        Action::Deny
    } else {
        Action::Allow
    };
    let set = Rules::new(&rules, default);
    for qi in input.queries.iter().take(8) {
        let (name, port, ip) = qi.dst_text();
        let user = qi.user();
        let dst = dst_addr(&name, port, ip);
        let q = Query {
            client: qi.client,
            user: user.as_deref(),
            command: qi.command(),
            dst,
        };
        let (name, ip) = match dst.normalized() {
            Addr::Ip(sa) => (None, Some(sa.ip())),
            Addr::Domain(n, _) => (Some(n.as_bytes()), None),
        };
        let verdict = set.evaluate(&q);
        let port = dst.port();
        assert_eq!(
            verdict,
            naive_verdict(&rules, default, &q, name, ip, port),
            "{q:?}"
        );
        if let Some(ip) = ip {
            assert_eq!(verdict, Verdict::Decided(set.evaluate_resolved(&q, ip)));
        }
        for &r in qi.resolved.iter().take(4) {
            let d = set.evaluate_resolved(&q, r);
            let naive = naive_verdict(&rules, default, &q, name, Some(r), port);
            assert_eq!(Verdict::Decided(d), naive, "{q:?} resolved to {r}");
            if let (Verdict::Decided(before), Some(_)) = (verdict, name) {
                assert_eq!(
                    d, before,
                    "{q:?}: resolving to {r} changed a decided verdict"
                );
            }
        }
    }
});
