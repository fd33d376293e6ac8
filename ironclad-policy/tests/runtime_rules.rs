//! Rules added at run time: checked alone with located messages, compiled with the
//! policy file (first in first-match lists), conflicts and missing sections refused.

#![allow(clippy::expect_used)]

use std::path::Path;

use ironclad_policy::config::{compile_str, compile_str_with_rules};
use ironclad_policy::runtime::{RuleSection, RuntimeRule};

const POLICY: &str = "shield:
  deny: [198.51.100.0/24]
  allow: [198.51.100.7]
egress:
  rules:
    - {dst: 192.0.2.0/24, action: allow}
firewall:
  interfaces: [lo]
  rules:
    - {direction: in, proto: tcp, dport: 22, action: accept}
";

fn messages(rule: &RuntimeRule) -> String {
    rule.validate().expect_err("invalid").to_string()
}

#[test]
fn each_section_s_rule_is_checked_alone_with_the_policy_file_s_messages_located_in_the_rule() {
    for (section, rule) in [
        (RuleSection::ShieldDeny, "203.0.113.0/24"),
        (RuleSection::ShieldAllow, "2001:db8::/32"),
        (
            RuleSection::EgressRules,
            "{dst: 192.0.2.0/24, ports: [443], action: deny}",
        ),
        (
            RuleSection::EgressRules,
            r#"{"exe": "/bin/sh", "action": "deny"}"#,
        ),
        (
            RuleSection::FirewallRules,
            "{direction: in, proto: tcp, dport: 8080, action: drop}",
        ),
    ] {
        RuntimeRule::new(1, section, rule)
            .validate()
            .unwrap_or_else(|e| panic!("{section} {rule}: {e}"));
    }
    // Located at the column of the rule's own text.
    let e = messages(&RuntimeRule::new(
        1,
        RuleSection::ShieldDeny,
        "198.51.100.1/24",
    ));
    assert!(e.starts_with("rule:1:1: shield.deny[0]:"), "{e}");
    assert!(e.contains("did you mean `198.51.100.0/24`"), "{e}");
    let e = messages(&RuntimeRule::new(
        1,
        RuleSection::EgressRules,
        "{dst: 192.0.2.0/24, acton: deny}",
    ));
    assert!(e.starts_with("rule:1:21: "), "{e}");
    assert!(e.contains("acton") && e.contains("action"), "{e}");
    let e = messages(&RuntimeRule::new(
        1,
        RuleSection::FirewallRules,
        "{direction: in, proto: tcp, dport: 70000, action: drop}",
    ));
    assert!(e.starts_with("rule:1:") && e.contains("70000"), "{e}");
    let e = messages(&RuntimeRule::new(
        1,
        RuleSection::EgressRules,
        "{exe: /nonexistent/ironclad-test, action: deny}",
    ));
    assert!(e.contains("/nonexistent/ironclad-test"), "{e}");
}

#[test]
fn a_rule_cannot_be_more_than_one_item_or_reach_other_settings() {
    for (section, rule, why) in [
        (RuleSection::ShieldDeny, "", "empty"),
        (RuleSection::ShieldDeny, "   ", "empty"),
        (
            RuleSection::ShieldDeny,
            "10.0.0.0/8\n  mode: dry-run",
            "one line",
        ),
        (RuleSection::ShieldDeny, "10.0.0.0/8\r", "one line"),
        (RuleSection::ShieldDeny, "[10.0.0.0/8, 10.1.0.0/16]", ""),
        (
            RuleSection::EgressRules,
            "[{action: deny}, {action: deny}]",
            "",
        ),
        (RuleSection::ShieldDeny, "10.0.0.0/8 # mode: dry-run", ""),
    ] {
        let rule = RuntimeRule::new(1, section, rule);
        match rule.validate() {
            Err(e) => assert!(e.to_string().contains(why), "{rule:?}: {e}"),
            // A YAML comment after the item is a comment, nothing more.
            Ok(()) => assert!(rule.rule.contains('#'), "{rule:?} accepted"),
        }
    }
    let long = RuntimeRule::new(1, RuleSection::ShieldDeny, "1".repeat(5000));
    assert!(messages(&long).contains("more than 4096"));
}

#[test]
fn runtime_rules_join_the_policy_first_in_first_match_lists() {
    let path = Path::new("policy.yaml");
    let rules = [
        RuntimeRule::new(3, RuleSection::ShieldDeny, "203.0.113.0/24"),
        RuntimeRule::new(
            4,
            RuleSection::EgressRules,
            "{dst: 192.0.2.9/32, action: deny}",
        ),
        RuntimeRule::new(
            5,
            RuleSection::FirewallRules,
            "{direction: in, proto: tcp, dport: 22, src: 203.0.113.0/24, action: drop}",
        ),
        RuntimeRule::new(
            6,
            RuleSection::EgressRules,
            "{dst: 192.0.2.10/32, action: deny}",
        ),
    ];
    let plain = compile_str(POLICY, path).expect("policy");
    let with = compile_str_with_rules(POLICY, path, None, &rules).expect("with rules");
    let shield = with.shield.as_ref().expect("shield");
    let added: Vec<_> = shield
        .rules
        .iter()
        .filter(|r| r.origin == "api-3")
        .map(|r| r.cidr.to_string())
        .collect();
    assert_eq!(added, ["203.0.113.0/24"]);
    assert_eq!(
        shield.rules.len(),
        plain.shield.as_ref().expect("shield").rules.len() + 1
    );
    let egress = with.egress.as_ref().expect("egress");
    let origins: Vec<&str> = egress.rules.iter().map(|r| r.origin.as_str()).collect();
    assert_eq!(origins[..2], ["api-4", "api-6"], "{origins:?}");
    assert_eq!(origins.len(), 3);
    let firewall = with.firewall.as_ref().expect("firewall");
    assert_eq!(firewall.rules[0].origin.field, "api-5");
    assert_eq!(firewall.rules.len(), 2);
    // Without rules: exactly the file.
    assert_eq!(
        compile_str_with_rules(POLICY, path, None, &[]).expect("same"),
        plain
    );
}

#[test]
fn a_conflict_with_the_file_or_a_missing_section_fails_the_compile_naming_the_rule() {
    let path = Path::new("policy.yaml");
    // The file allows 198.51.100.7; the rule denies it.
    let conflict = [RuntimeRule::new(
        8,
        RuleSection::ShieldDeny,
        "198.51.100.7/32",
    )];
    let e = compile_str_with_rules(POLICY, path, None, &conflict)
        .expect_err("conflict")
        .to_string();
    assert!(e.contains("api-8"), "{e}");
    let no_egress = "shield:\n  deny: [198.51.100.0/24]\n";
    let rules = [RuntimeRule::new(
        9,
        RuleSection::EgressRules,
        "{action: deny}",
    )];
    let e = compile_str_with_rules(no_egress, path, None, &rules)
        .expect_err("no egress section")
        .to_string();
    assert!(
        e.contains("api-9") && e.contains("no `egress` section"),
        "{e}"
    );
    assert_eq!(
        RuleSection::from_field("egress.rules"),
        Some(RuleSection::EgressRules)
    );
    assert_eq!(RuleSection::from_field("egress"), None);
}
