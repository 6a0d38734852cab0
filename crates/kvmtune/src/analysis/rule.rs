//! The one registry of rules, the top of `analysis`: it reads every rule table, and no table
//! reads it. Host, VM-config and exit rules share one metadata type ([`RuleMeta`], declared in
//! [`crate::analysis::meta`] beside the tables that use it), and one lookup, [`find`] / [`lookup`], that answers `kvmtune rules`,
//! `kvmtune explain` and `--select` alike. Ids are unique across all three kinds (a test says so).
//!
//! Where a rule goes: a host rule is one entry in [`crate::analysis::host_rules::HOST_RULES`],
//! a VM-config rule one declaration beside its check in its family's file under
//! [`crate::analysis::vm_rules`], an exit cause one entry in
//! [`crate::analysis::exit_rules::EXIT_RULES`], a cause read from a port or MSR table one entry in
//! [`crate::analysis::exit_side_tables::SIDE_TABLE_RULES`], a difference between a config and what its
//! guest sees one entry in [`crate::analysis::verify_rules::VERIFY_RULES`]. Nothing here needs to change for a
//! new rule.

use serde::Serialize;

use crate::analysis::exit_patterns::{PATTERN_RULES, PatternRule};
use crate::analysis::exit_rules::{EXIT_RULES, ExitRule};
use crate::analysis::exit_side_tables::{SIDE_TABLE_RULES, SideTableRule};
use crate::analysis::host_rules::{HOST_RULES, HostRule};
use crate::analysis::verify_rules::{VERIFY_RULES, VerifyRule};
use crate::analysis::vm_rules::{VM_RULES, VmRule};

pub use crate::analysis::meta::{Category, RuleMeta};

/// Which engine runs a rule, and on what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// Host facts (`kvmtune probe`).
    Host,
    /// A VM's configuration (`kvmtune check`).
    VmConfig,
    /// VM-exit statistics (`kvmtune exits analyze`).
    Exit,
    /// A VM's configuration against what its guest sees (`kvmtune verify`).
    Verify,
}

impl RuleKind {
    pub fn label(self) -> &'static str {
        match self {
            RuleKind::Host => "host",
            RuleKind::VmConfig => "config",
            RuleKind::Exit => "exits",
            RuleKind::Verify => "verify",
        }
    }

    /// The command whose output shows this kind's findings.
    pub fn command(self) -> &'static str {
        match self {
            RuleKind::Host => "kvmtune probe",
            RuleKind::VmConfig => "kvmtune check",
            RuleKind::Exit => "kvmtune exits analyze",
            RuleKind::Verify => "kvmtune verify",
        }
    }
}

/// A rule of any kind, as the registry hands it out.
#[derive(Clone, Copy)]
pub enum Rule {
    Host(&'static HostRule),
    VmConfig(&'static VmRule),
    Exit(&'static ExitRule),
    /// A cause read from several reasons at once (and the config and host).
    ExitPattern(&'static PatternRule),
    /// A cause read from a port or MSR table.
    ExitSideTable(&'static SideTableRule),
    /// A difference between a VM's configuration and what its guest sees.
    Verify(&'static VerifyRule),
}

impl Rule {
    pub fn meta(self) -> &'static RuleMeta {
        match self {
            Rule::Host(rule) => &rule.meta,
            Rule::VmConfig(rule) => &rule.meta,
            Rule::Exit(rule) => &rule.meta,
            Rule::ExitPattern(rule) => &rule.meta,
            Rule::ExitSideTable(rule) => &rule.meta,
            Rule::Verify(rule) => &rule.meta,
        }
    }

    pub fn kind(self) -> RuleKind {
        match self {
            Rule::Host(_) => RuleKind::Host,
            Rule::VmConfig(_) => RuleKind::VmConfig,
            Rule::Exit(_) | Rule::ExitPattern(_) | Rule::ExitSideTable(_) => RuleKind::Exit,
            Rule::Verify(_) => RuleKind::Verify,
        }
    }

    /// VM-config rules that run only with host facts.
    pub fn needs_host(self) -> bool {
        matches!(self, Rule::VmConfig(rule) if rule.needs_host)
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.meta().id, self.kind().label())
    }
}

/// Every rule: host rules, then VM-config rules, then exit rules, then verify rules.
pub fn all() -> impl Iterator<Item = Rule> {
    HOST_RULES
        .iter()
        .map(Rule::Host)
        .chain(VM_RULES.iter().map(Rule::VmConfig))
        .chain(EXIT_RULES.iter().map(Rule::Exit))
        .chain(PATTERN_RULES.iter().map(Rule::ExitPattern))
        .chain(SIDE_TABLE_RULES.iter().map(Rule::ExitSideTable))
        .chain(VERIFY_RULES.iter().map(Rule::Verify))
}

/// The rule with this id (any case) or name.
pub fn find(query: &str) -> Option<Rule> {
    all().find(|rule| rule.meta().id.eq_ignore_ascii_case(query) || rule.meta().name == query)
}

/// A rule id or name that no rule has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no rule `{query}`{}; `kvmtune rules` lists them", suggestion(.closest))]
pub struct UnknownRule {
    pub query: String,
    /// The nearest known ids, closest first.
    pub closest: Vec<&'static str>,
}

fn suggestion(closest: &[&str]) -> String {
    match closest {
        [] => String::new(),
        [one] => format!(" (did you mean {one}?)"),
        many => format!(" (did you mean one of {}?)", many.join(", ")),
    }
}

/// [`find`], or an error naming the closest ids.
pub fn lookup(query: &str) -> Result<Rule, UnknownRule> {
    find(query).ok_or_else(|| UnknownRule { query: query.to_string(), closest: closest(query) })
}

/// A `--select` list that names a rule `check` does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Unknown(#[from] UnknownRule),
    #[error("{id} is a {} rule, which `{}` reports; `kvmtune check` runs config rules only", .kind.label(), .kind.command())]
    NotAConfigRule { id: &'static str, kind: RuleKind },
}

/// The VM-config rules `--select` names (ids or names); every entry must be one.
pub fn select_vm_rules<S: AsRef<str>>(queries: &[S]) -> Result<Vec<&'static VmRule>, SelectError> {
    queries
        .iter()
        .map(|query| match lookup(query.as_ref())? {
            Rule::VmConfig(rule) => Ok(rule),
            other => Err(SelectError::NotAConfigRule { id: other.meta().id, kind: other.kind() }),
        })
        .collect()
}

/// The ids nearest to `query` (by id or name, at most two edits away): those at the smallest
/// distance found, up to three.
fn closest(query: &str) -> Vec<&'static str> {
    let wanted = query.to_ascii_uppercase();
    let mut scored: Vec<(usize, &'static str)> = all()
        .map(|rule| {
            let meta = rule.meta();
            let by_id = strsim::damerau_levenshtein(&wanted, meta.id);
            let by_name = strsim::damerau_levenshtein(query, meta.name);
            (by_id.min(by_name), meta.id)
        })
        .filter(|(distance, _)| *distance <= 2)
        .collect();
    scored.sort();
    let best = scored.first().map(|(distance, _)| *distance);
    scored.into_iter().take_while(|(distance, _)| Some(*distance) == best).take(3).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_across_every_kind() {
        let rules: Vec<Rule> = all().collect();
        for (index, rule) in rules.iter().enumerate() {
            for other in &rules[index + 1..] {
                assert_ne!(rule.meta().id, other.meta().id);
                assert_ne!(rule.meta().name, other.meta().name);
            }
        }
    }

    #[test]
    fn every_rule_is_documented() {
        for rule in all() {
            let meta = rule.meta();
            for (what, text) in [
                ("title", meta.title),
                ("explanation", meta.explanation),
                ("example", meta.example),
                ("fix", meta.fix),
                ("source", meta.source),
            ] {
                assert!(!text.trim().is_empty(), "{} has no {what}", meta.id);
            }
        }
    }

    #[test]
    fn check_rules_named_by_exit_rules_exist() {
        let named = EXIT_RULES
            .iter()
            .map(|r| (r.meta.id, r.check_rules))
            .chain(PATTERN_RULES.iter().map(|r| (r.meta.id, r.check_rules)))
            .chain(SIDE_TABLE_RULES.iter().map(|r| (r.meta.id, r.check_rules)));
        for (exit_rule, check_rules) in named {
            for id in check_rules {
                assert!(
                    matches!(find(id), Some(Rule::VmConfig(_))),
                    "{exit_rule} names {id}, which is no VM-config rule"
                );
            }
        }
    }

    #[test]
    fn patterns_supersede_only_exit_rules_that_exist() {
        for pattern in PATTERN_RULES {
            for id in pattern.supersedes {
                assert!(
                    matches!(find(id), Some(Rule::Exit(_))),
                    "{} supersedes {id}, no exit rule",
                    pattern.meta.id
                );
            }
        }
    }

    #[test]
    fn lookup_finds_every_kind_and_suggests_for_typos() {
        assert_eq!(lookup("HOST004").unwrap().kind(), RuleKind::Host);
        assert_eq!(lookup("time005").unwrap().kind(), RuleKind::VmConfig);
        assert_eq!(lookup("port-io-timers").unwrap().kind(), RuleKind::Exit);
        let error = lookup("TIEM005").unwrap_err();
        assert_eq!(error.closest.first(), Some(&"TIME005"));
        assert!(error.to_string().contains("did you mean"), "{error}");
        assert!(lookup("nothing-like-a-rule").unwrap_err().closest.is_empty());
    }

    #[test]
    fn select_takes_config_rules_only() {
        let selected = select_vm_rules(&["TIME005", "pit-tickpolicy-refused"]).unwrap();
        assert_eq!(selected.iter().map(|r| r.meta.id).collect::<Vec<_>>(), ["TIME005", "TIME003"]);
        assert!(matches!(select_vm_rules(&["TIEM005"]), Err(SelectError::Unknown(_))));
        assert!(matches!(
            select_vm_rules(&["HOST004"]),
            Err(SelectError::NotAConfigRule { id: "HOST004", kind: RuleKind::Host })
        ));
    }
}
