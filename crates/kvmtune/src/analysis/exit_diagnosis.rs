//! The exit diagnosis of a profile: the single-reason causes ([`crate::analysis::exit_rules`])
//! and the patterns read from several reasons at once ([`crate::analysis::exit_patterns`]),
//! where a pattern that fires replaces the single-reason findings it explains better.

use crate::analysis::exit_patterns::{ExitContext, diagnose_patterns};
use crate::analysis::exit_rules::{ExitFinding, diagnose_reasons};
use crate::analysis::exit_side_tables::{SideTable, diagnose_side_table};
use crate::exits::ExitProfile;

/// [`diagnose_with`] without a config or host facts.
pub fn diagnose(profile: &ExitProfile) -> Vec<ExitFinding> {
    diagnose_with(profile, &ExitContext::default())
}

/// The single-reason causes and the patterns; a pattern that fires replaces the single-reason
/// findings it explains better.
pub fn diagnose_with(profile: &ExitProfile, context: &ExitContext) -> Vec<ExitFinding> {
    // A port or MSR table's rows are devices and registers, not exit reasons.
    if SideTable::of(profile).is_some() {
        let mut findings = diagnose_side_table(profile);
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
        return findings;
    }
    let patterns = diagnose_patterns(profile, context);
    let superseded: Vec<&str> = patterns.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    let mut findings: Vec<ExitFinding> =
        diagnose_reasons(profile).into_iter().filter(|f| !superseded.contains(&f.rule)).collect();
    findings.extend(patterns.into_iter().map(|(finding, _)| finding));
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    findings
}
