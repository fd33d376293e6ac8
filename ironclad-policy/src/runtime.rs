//! Rules added at run time (through a control API) beside the policy file's.
//!
//! A runtime rule is one item of a list of the policy, written as the policy file
//! writes it, on one line: `203.0.113.0/24` for `shield.deny`, `{exe: /usr/bin/curl,
//! dst: 192.0.2.0/24, action: deny}` for `egress.rules`. It is checked alone first
//! ([`RuntimeRule::validate`]: the same messages as the policy file's, located in the
//! rule's text as `rule:1:COLUMN`), then compiled with the policy file every time the
//! policy is compiled ([`crate::config::compile_file_with_rules`]):
//!
//! - **Which wins.** Runtime rules stay until removed: a reload of the policy file
//!   keeps them. In the lists where the first match decides (`egress.rules`,
//!   `firewall.rules`) they come first, in the order they were added, so a rule added
//!   to stop something now is not shadowed by the file. In the Shield's lists the
//!   longest prefix decides, as for the file's entries.
//! - **Conflicts.** A runtime rule that contradicts the file (the same prefix denied by
//!   one and allowed by the other), or a file whose section a runtime rule needs is
//!   gone, makes the whole compile fail, naming the rule (`api-3`): nothing of it is
//!   applied, as for any invalid policy.
//!
//! ```
//! use ironclad_policy::runtime::{RuleSection, RuntimeRule};
//!
//! let rule = RuntimeRule::new(3, RuleSection::ShieldDeny, "203.0.113.0/24");
//! assert!(rule.validate().is_ok());
//! let bad = RuntimeRule::new(4, RuleSection::ShieldDeny, "203.0.113.7/24");
//! let e = bad.validate().unwrap_err().to_string();
//! assert!(e.starts_with("rule:1:1: shield.deny[0]: `203.0.113.7/24` has host bits set"), "{e}");
//! ```

use std::path::Path;

use crate::config::{parse_for_rule, Config};
use crate::{ConfigError, Diagnostic, Origin, PolicyError};

/// The longest rule text accepted (a rule is one line of a list).
pub const MAX_RULE_BYTES: usize = 4096;

/// The list of the policy a runtime rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleSection {
    /// `shield.deny`.
    ShieldDeny,
    /// `shield.allow`.
    ShieldAllow,
    /// `egress.rules`.
    EgressRules,
    /// `firewall.rules`.
    FirewallRules,
}

impl RuleSection {
    /// Every section, in order.
    pub const ALL: [RuleSection; 4] = [
        RuleSection::ShieldDeny,
        RuleSection::ShieldAllow,
        RuleSection::EgressRules,
        RuleSection::FirewallRules,
    ];

    /// The list's path in the policy (`shield.deny`).
    pub fn field(self) -> &'static str {
        match self {
            RuleSection::ShieldDeny => "shield.deny",
            RuleSection::ShieldAllow => "shield.allow",
            RuleSection::EgressRules => "egress.rules",
            RuleSection::FirewallRules => "firewall.rules",
        }
    }

    /// The section whose [`field`](Self::field) is `field`.
    pub fn from_field(field: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.field() == field)
    }

    /// A policy with `rule` as the only item of this list, and the line and column the
    /// rule's text starts at in it.
    fn document(self, rule: &str) -> (String, u64, u64) {
        match self {
            RuleSection::ShieldDeny => (format!("shield:\n  deny:\n    - {rule}\n"), 3, 7),
            RuleSection::ShieldAllow => (format!("shield:\n  allow:\n    - {rule}\n"), 3, 7),
            RuleSection::EgressRules => (format!("egress:\n  rules:\n    - {rule}\n"), 3, 7),
            RuleSection::FirewallRules => (
                format!("firewall:\n  interfaces: [lo]\n  rules:\n    - {rule}\n"),
                4,
                7,
            ),
        }
    }
}

impl std::fmt::Display for RuleSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field())
    }
}

/// A rule added at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeRule {
    /// Its number, unique among the runtime rules; its id is `api-N`.
    pub id: u64,
    /// The list it belongs to.
    pub section: RuleSection,
    /// The rule, as one item of that list is written in the policy file.
    pub rule: String,
}

impl RuntimeRule {
    /// Rule `id` of `section`, written `rule`.
    pub fn new(id: u64, section: RuleSection, rule: impl Into<String>) -> Self {
        Self {
            id,
            section,
            rule: rule.into(),
        }
    }

    /// Its id as the API and `status` show it: `api-N`.
    pub fn label(&self) -> String {
        format!("api-{}", self.id)
    }

    /// Checks the rule alone, as the policy file's rules are checked (every field and
    /// value; an executable path must exist). Errors are located in the rule's text:
    /// `rule:1:COLUMN: FIELD: message`.
    ///
    /// # Errors
    /// The rule's problems, or that it is not one item of its list.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.parse().map(|_| ())
    }

    /// The policy of this rule alone, parsed, with the rule's origin set to its label.
    pub(crate) fn parse(&self) -> Result<Config, ConfigError> {
        let alone = |message: String| ConfigError {
            diagnostics: vec![Diagnostic {
                path: "rule".into(),
                line: 1,
                column: 0,
                message,
            }],
        };
        if self.rule.trim().is_empty() {
            return Err(alone(format!("{}: the rule is empty", self.section)));
        }
        if self.rule.len() > MAX_RULE_BYTES {
            return Err(alone(format!(
                "{}: the rule is {} bytes, more than {MAX_RULE_BYTES}",
                self.section,
                self.rule.len()
            )));
        }
        if self.rule.contains(['\n', '\r']) {
            return Err(alone(format!(
                "{}: a rule is one line (one item of the list; YAML flow or JSON for a mapping)",
                self.section
            )));
        }
        let (text, line, column) = self.section.document(&self.rule);
        let relocate = |mut e: ConfigError| {
            for d in &mut e.diagnostics {
                d.path = "rule".into();
                if d.line == line {
                    d.line = 1;
                    d.column = d.column.saturating_sub(column - 1);
                } else {
                    (d.line, d.column) = (1, 0);
                }
            }
            e
        };
        let mut config = parse_for_rule(&text, Path::new("rule")).map_err(relocate)?;
        let origin = Origin::field(self.label());
        // One item of the list, and nothing else: a rule cannot reach other settings.
        let items = match self.section {
            RuleSection::ShieldDeny | RuleSection::ShieldAllow => {
                config.shield.as_mut().map_or(0, |s| {
                    for e in s.deny.iter_mut().chain(s.allow.iter_mut()) {
                        e.origin = origin.clone();
                    }
                    s.deny.len() + s.allow.len()
                })
            }
            RuleSection::EgressRules => config.egress.as_mut().map_or(0, |e| {
                for r in &mut e.rules {
                    r.origin = origin.clone();
                }
                e.rules.len()
            }),
            RuleSection::FirewallRules => config.firewall.as_mut().map_or(0, |f| {
                for r in &mut f.rules {
                    r.origin = origin.clone();
                }
                f.rules.len()
            }),
        };
        if items != 1 {
            return Err(alone(format!(
                "{}: the rule must be exactly one item of the list, not {items}",
                self.section
            )));
        }
        Ok(config)
    }
}

/// Adds the runtime rules to `config` (the policy file's): see the module's text for
/// where they go. A rule whose section the policy lacks is a problem naming the rule.
pub(crate) fn merge(config: &mut Config, rules: &[RuntimeRule], problems: &mut Vec<PolicyError>) {
    let (mut egress, mut firewall) = (Vec::new(), Vec::new());
    for rule in rules {
        let parsed = match rule.parse() {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(PolicyError::Invalid {
                    origin: Origin::field(rule.label()),
                    message: format!("the runtime rule `{}` is invalid: {e}", rule.rule),
                });
                continue;
            }
        };
        let missing = |section: &str| {
            PolicyError::Invalid {
            origin: Origin::field(rule.label()),
            message: format!(
                "a runtime rule of {} (`{}`), but the policy has no `{section}` section: add the section or remove the rule",
                rule.section, rule.rule
            ),
        }
        };
        match rule.section {
            RuleSection::ShieldDeny | RuleSection::ShieldAllow => {
                match (config.shield.as_mut(), parsed.shield) {
                    (Some(shield), Some(mut new)) => {
                        shield.deny.append(&mut new.deny);
                        shield.allow.append(&mut new.allow);
                    }
                    _ => problems.push(missing("shield")),
                }
            }
            RuleSection::EgressRules => match (config.egress.is_some(), parsed.egress) {
                (true, Some(new)) => egress.extend(new.rules),
                _ => problems.push(missing("egress")),
            },
            RuleSection::FirewallRules => match (config.firewall.is_some(), parsed.firewall) {
                (true, Some(new)) => firewall.extend(new.rules),
                _ => problems.push(missing("firewall")),
            },
        }
    }
    if let Some(e) = config.egress.as_mut() {
        e.rules.splice(0..0, egress);
    }
    if let Some(f) = config.firewall.as_mut() {
        f.rules.splice(0..0, firewall);
    }
}
