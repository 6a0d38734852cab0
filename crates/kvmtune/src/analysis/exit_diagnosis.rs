//! The exit diagnosis of a profile: the single-reason causes ([`crate::analysis::exit_rules`])
//! and the patterns read from several reasons at once ([`crate::analysis::exit_patterns`]),
//! where a pattern that fires replaces the single-reason findings it explains better.

use crate::analysis::exit_patterns::{ExitContext, PATTERN_RULES, diagnose_patterns};
use crate::analysis::exit_rules::{EXIT_RULES, ExitFinding, Guest, LinuxText, diagnose_reasons};
use crate::analysis::exit_side_tables::{SideTable, diagnose_side_table};
use crate::exits::ExitProfile;
use crate::exits::reasons::ExitCause;

/// A Windows fix that is Hyper-V enlightenments, against the config: with all of them on, what
/// else explains the exits; without a config, the fix as a condition on them.
fn for_config(mut finding: ExitFinding, context: &ExitContext) -> ExitFinding {
    let Some(fix) = EXIT_RULES.iter().find(|r| r.meta.id == finding.rule).and_then(|r| r.hyperv_fix) else {
        return finding;
    };
    let names: Vec<String> = fix.needs.iter().map(ToString::to_string).collect();
    match context.config {
        Some(config) if fix.needs.iter().all(|&hv| config.hyperv.is_on(hv)) => {
            finding.fix = format!("the config already has {}: {}", names.join(" and "), fix.residue);
        }
        Some(_) => {}
        None => {
            let verb = if names.len() == 1 { "is" } else { "are" };
            finding.fix = format!("if {} {verb} not on: {}", names.join(" and "), finding.fix);
        }
    }
    finding
}

/// The Linux text of the single-reason rule `id`, where it has one.
fn linux_text(id: &str) -> Option<LinuxText> {
    EXIT_RULES.iter().find(|r| r.meta.id == id).and_then(|r| r.linux)
}

/// A finding's explanation and fix for `guest`: the rule's own (Windows') text, its Linux
/// text, or with the guest unknown both, and what tells them apart.
fn for_guest(mut finding: ExitFinding, guest: Guest) -> ExitFinding {
    let Some(linux) = linux_text(finding.rule) else {
        return finding;
    };
    match guest {
        Guest::Windows => {}
        Guest::Linux => {
            finding.explanation = linux.explanation.to_string();
            finding.fix = linux.fix.to_string();
        }
        Guest::Unknown => both_guests(&mut finding, linux.explanation, linux.fix),
    }
    finding
}

/// With the guest unknown, a finding says what the table means in a Linux guest too, and
/// what tells the two apart.
fn both_guests(finding: &mut ExitFinding, linux_explanation: &str, linux_fix: &str) {
    finding.explanation = format!(
        "{} If the guest is Linux: {linux_explanation} (`--guest windows` or `--guest linux`, or a config given with --config, says which.)",
        finding.explanation
    );
    finding.fix = format!("Windows: {}. Linux: {linux_fix}", finding.fix);
}

/// A Windows-only pattern (Hyper-V enlightenments, Windows' timers) read with the guest
/// unknown: in a Linux guest the same table is what the single-reason rules it replaces say
/// for Linux, so the finding says that too (a VMM with no HPET, running Linux, once got
/// "Windows keeps time with the HPET" and nothing else).
fn pattern_for_guest(mut finding: ExitFinding, replaces: &[&str], guest: Guest) -> ExitFinding {
    let windows_only = PATTERN_RULES.iter().any(|r| r.meta.id == finding.rule && r.windows_only);
    if guest != Guest::Unknown || !windows_only {
        return finding;
    }
    let linux: Vec<LinuxText> = replaces.iter().filter_map(|id| linux_text(id)).collect();
    if linux.is_empty() {
        return finding;
    }
    let explanation: Vec<&str> = linux.iter().map(|l| l.explanation).collect();
    let fix: Vec<&str> = linux.iter().map(|l| l.fix).collect();
    both_guests(&mut finding, &explanation.join(" "), &fix.join("; "));
    finding
}

/// The findings of every table of one input (a post, a saved recording), each table's own,
/// and a side table's read into the exit table it explains: a port table's device named in the
/// port I/O finding of the `VM-EXIT` table beside it, an MSR table's register in the MSR one.
pub fn diagnose_input(profiles: &[ExitProfile], context: &ExitContext) -> Vec<Vec<ExitFinding>> {
    let mut all: Vec<Vec<ExitFinding>> = profiles.iter().map(|p| diagnose_with(p, context)).collect();
    // What each side table says, as the first sentence of its strongest finding's evidence.
    let side: Vec<(SideTable, String)> = profiles
        .iter()
        .zip(&all)
        .filter_map(|(profile, findings)| {
            Some((SideTable::of(profile)?, findings.first()?.evidence.clone()?))
        })
        .collect();
    for (profile, findings) in profiles.iter().zip(all.iter_mut()) {
        if SideTable::of(profile).is_some() {
            continue;
        }
        for finding in findings.iter_mut() {
            let explains = |table: SideTable| match table {
                SideTable::Ports => {
                    finding.reasons.iter().any(|r| ExitCause::of(&r.name) == ExitCause::PortIo)
                }
                SideTable::Msrs => finding.reasons.iter().any(|r| {
                    matches!(
                        ExitCause::of(&r.name),
                        ExitCause::MsrWrite | ExitCause::MsrRead | ExitCause::Msr
                    )
                }),
            };
            let said: Vec<String> = side
                .iter()
                .filter(|(table, _)| explains(*table))
                .map(|(table, evidence)| format!("the {} table beside it: {evidence}", table.noun()))
                .collect();
            if said.is_empty() {
                continue;
            }
            let beside = said.join("; ");
            finding.evidence = Some(match finding.evidence.take() {
                Some(own) => format!("{own}; {beside}"),
                None => beside,
            });
        }
    }
    all
}

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
    let mut findings: Vec<ExitFinding> = diagnose_reasons(profile)
        .into_iter()
        .filter(|f| !superseded.contains(&f.rule))
        .map(|f| for_config(f, context))
        .map(|f| for_guest(f, context.guest))
        .collect();
    findings.extend(
        patterns.into_iter().map(|(finding, replaces)| pattern_for_guest(finding, replaces, context.guest)),
    );
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    findings
}
