//! Before and after: per-reason deltas, total and busy-time ratios, and a verdict.

use serde::Serialize;

use crate::analysis::exit_diagnosis::diagnose_with;
use crate::analysis::exit_patterns::ExitContext;
use crate::analysis::exit_rules::Guest;
use crate::analysis::exit_rules::{busy_time_us, exit_total};
use crate::analysis::exit_side_tables::SideTable;
use crate::exits::ExitProfile;
use crate::exits::reasons::is_idle;

#[derive(Debug, Clone, Serialize)]
pub struct ReasonDelta {
    pub name: String,
    pub before: u64,
    pub after: u64,
    /// What the row is where it is not an exit of its own (`event`, `total`, `part`): then it
    /// has a count and no share of the exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_a_share: Option<&'static str>,
    /// Share of all exits, before and after; `None` for a row that is not an exit.
    pub before_share: Option<f64>,
    pub after_share: Option<f64>,
    /// Handling time in microseconds, where the profiles have it.
    pub before_time_us: Option<f64>,
    pub after_time_us: Option<f64>,
    /// Mean handling time per exit in microseconds: what a change that makes each exit
    /// cheaper moves, while the count stays.
    pub before_mean_us: Option<f64>,
    pub after_mean_us: Option<f64>,
    /// Whether the change of the mean is within the noise perf prints with each (`( +- N% )`,
    /// the standard error of the mean): the means differ by less than two standard errors of
    /// their difference. `None` where either table has no error for the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_change_within_noise: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What the profiles count (`VM-EXIT`, `KVM vCPU stats`, ...).
    pub event: String,
    /// Seconds each profile covers, where known.
    pub before_duration_s: Option<f64>,
    pub after_duration_s: Option<f64>,
    pub before_exits: u64,
    pub after_exits: u64,
    /// after / before; per second when both profiles know their duration, else per profile.
    pub exit_ratio: f64,
    pub rates_per_second: bool,
    pub before_busy_us: Option<f64>,
    pub after_busy_us: Option<f64>,
    pub busy_time_ratio: Option<f64>,
    pub reasons: Vec<ReasonDelta>,
    /// Diagnosis findings present before and gone after.
    pub resolved: Vec<&'static str>,
    /// Findings new after whose reasons rose, in count or handling time.
    pub appeared: Vec<&'static str>,
    /// Findings new after only because their share rose while everything else fell.
    pub more_visible: Vec<&'static str>,
    /// `better`, `worse` or `no clear change`.
    pub verdict: String,
    pub summary: String,
}

pub fn compare(before: &ExitProfile, after: &ExitProfile) -> Comparison {
    compare_for(before, after, Guest::Unknown)
}

/// [`compare`], with the findings worded for `guest`.
pub fn compare_for(before: &ExitProfile, after: &ExitProfile, guest: Guest) -> Comparison {
    let context = ExitContext { guest, ..ExitContext::default() };
    let diagnose = |profile: &ExitProfile| diagnose_with(profile, &context);
    let (before_exits, after_exits) = (exit_total(before), exit_total(after));
    let rates_per_second = before.duration_s.is_some() && after.duration_s.is_some();
    let rate = |exits: u64, profile: &ExitProfile| {
        exits as f64 / profile.duration_s.filter(|_| rates_per_second).unwrap_or(1.0)
    };
    let exit_ratio = rate(after_exits, after) / rate(before_exits, before).max(f64::MIN_POSITIVE);
    let (before_busy, after_busy) = (busy_time_us(before), busy_time_us(after));
    let busy_time_ratio = match (before_busy, after_busy) {
        (Some(b), Some(a)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut names: Vec<String> = before.rows.iter().chain(&after.rows).map(|r| r.name.clone()).collect();
    names.sort();
    names.dedup();
    let mut reasons: Vec<ReasonDelta> = names
        .into_iter()
        .map(|name| {
            let (before_row, after_row) = (before.row(&name), after.row(&name));
            let count = |row: Option<&crate::exits::ExitRow>| row.map_or(0, |r| r.count);
            let not_a_share = before_row.or(after_row).and_then(|r| r.not_a_share());
            let share =
                |count: u64, exits: u64| not_a_share.is_none().then(|| count as f64 / exits.max(1) as f64);
            ReasonDelta {
                not_a_share,
                before: count(before_row),
                after: count(after_row),
                before_share: share(count(before_row), before_exits),
                after_share: share(count(after_row), after_exits),
                before_time_us: before_row.and_then(|r| r.time_us),
                after_time_us: after_row.and_then(|r| r.time_us),
                before_mean_us: before_row.and_then(mean_us),
                after_mean_us: after_row.and_then(mean_us),
                mean_change_within_noise: mean_change_within_noise(before_row, after_row),
                name,
            }
        })
        .collect();
    reasons.sort_by_key(|d| std::cmp::Reverse(d.before.max(d.after)));
    let before_rules: Vec<&'static str> = diagnose(before).iter().map(|f| f.rule).collect();
    let after_findings = diagnose(after);
    let after_rules: Vec<&'static str> = after_findings.iter().map(|f| f.rule).collect();
    let resolved: Vec<_> = before_rules.iter().filter(|r| !after_rules.contains(r)).copied().collect();
    // A cause is new after only where its reasons rose, in count (per second where both
    // durations are known) or in handling time; one whose share rose only because everything
    // else fell stands out more, but is not new.
    // Idle is not cost: a guest that halts more after a fix (its HLT time grows) has no new
    // cause, so a finding made only of idle reasons never appears.
    let rose = |finding: &crate::analysis::exit_rules::ExitFinding| {
        finding.reasons.iter().any(|reason| !is_idle(&reason.name))
            && finding.reasons.iter().any(|reason| {
                let was = before.row(&reason.name);
                let now = after.row(&reason.name);
                let count_rose =
                    rate(now.map_or(0, |r| r.count), after) > rate(was.map_or(0, |r| r.count), before);
                let time_rose = match (now.and_then(|r| r.time_us), was.and_then(|r| r.time_us)) {
                    (Some(now), Some(was)) => now > was,
                    (Some(now), None) => now > 0.0,
                    _ => false,
                };
                count_rose || time_rose
            })
    };
    let (appeared, more_visible): (Vec<_>, Vec<_>) =
        after_findings.iter().filter(|f| !before_rules.contains(&f.rule)).partition(|f| rose(f));
    let appeared: Vec<&'static str> = appeared.into_iter().map(|f| f.rule).collect();
    let more_visible: Vec<&'static str> = more_visible.into_iter().map(|f| f.rule).collect();
    // The deciding measure is busy handling time where both have it, else the exit count.
    let decisive = busy_time_ratio.unwrap_or(exit_ratio);
    let verdict = if decisive < 0.9 {
        "better"
    } else if decisive > 1.1 {
        "worse"
    } else {
        "no clear change"
    };
    let summary = format!(
        "{verdict}: exits x{exit_ratio:.2}{}{}",
        if rates_per_second { " per second" } else { " (per profile; durations unknown)" },
        busy_time_ratio.map_or(String::new(), |r| format!(", busy handling time x{r:.2}")),
    );
    Comparison {
        event: after.event.clone(),
        before_duration_s: before.duration_s,
        after_duration_s: after.duration_s,
        before_exits,
        after_exits,
        exit_ratio,
        rates_per_second,
        before_busy_us: before_busy,
        after_busy_us: after_busy,
        busy_time_ratio,
        reasons,
        resolved,
        appeared,
        more_visible,
        verdict: verdict.to_string(),
        summary,
    }
}

/// What a table counts, for pairing: exit reasons, ports or MSRs, or another event.
fn table_kind(profile: &ExitProfile) -> String {
    match SideTable::of(profile) {
        Some(SideTable::Ports) => "ports".to_string(),
        Some(SideTable::Msrs) => "msrs".to_string(),
        None if profile.lists_every_reason() => "exits".to_string(),
        None => profile.event.clone(),
    }
}

/// Which before profile is compared with which after profile: like with like, a `VM-EXIT`
/// table with a `VM-EXIT` table and a port table with a port table, never one kind with
/// another. Where a file has several tables of a kind (one per snapshot, one per recording
/// source), its last is compared, the summary perf and the recorder write last. Kinds in only
/// one file are left out.
pub fn pair_profiles<'a>(
    before: &'a [ExitProfile],
    after: &'a [ExitProfile],
) -> Vec<(&'a ExitProfile, &'a ExitProfile)> {
    let mut kinds: Vec<String> = before.iter().map(table_kind).collect();
    kinds.dedup();
    let mut seen = Vec::new();
    kinds
        .into_iter()
        .filter(|kind| {
            let first = !seen.contains(kind);
            seen.push(kind.clone());
            first
        })
        .filter_map(|kind| {
            let last_of = |profiles: &'a [ExitProfile]| profiles.iter().rev().find(|p| table_kind(p) == kind);
            Some((last_of(before)?, last_of(after)?))
        })
        .collect()
}

/// A row's mean handling time per exit, as printed or from its total.
/// Two means whose difference is under two standard errors of it (each mean's error from
/// perf's `+-`, the two independent) have not moved beyond what sampling alone gives.
fn mean_change_within_noise(
    before: Option<&crate::exits::ExitRow>,
    after: Option<&crate::exits::ExitRow>,
) -> Option<bool> {
    let error = |row: &crate::exits::ExitRow| Some(row.mean_us? * row.mean_error_percent? / 100.0);
    let (before, after) = (before?, after?);
    let (before_error, after_error) = (error(before)?, error(after)?);
    let difference = (after.mean_us? - before.mean_us?).abs();
    Some(difference < 2.0 * before_error.hypot(after_error))
}

fn mean_us(row: &crate::exits::ExitRow) -> Option<f64> {
    row.mean_us.or_else(|| Some(row.time_us? / row.count.max(1) as f64))
}

/// Every pair [`pair_profiles`] finds, compared.
pub fn compare_all(before: &[ExitProfile], after: &[ExitProfile], guest: Guest) -> Vec<Comparison> {
    pair_profiles(before, after).into_iter().map(|(b, a)| compare_for(b, a, guest)).collect()
}
