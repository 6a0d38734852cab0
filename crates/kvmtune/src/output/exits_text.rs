//! `kvmtune exits analyze` and `compare` for people: a table like perf's, then the diagnosis.

use std::fmt::Write;

use crate::analysis::check::Diagnostic;
use crate::analysis::exit_compare::{Comparison, ReasonDelta};
use crate::analysis::exit_rules::{ExitFinding, busy_time, exit_total, handling_time};
use crate::exits::ExitProfile;

/// `108.5k`, `18`, `1.2M`, `0.25`.
pub fn human_number(value: f64) -> String {
    if value.fract() == 0.0 && value < 1e4 {
        format!("{value:.0}")
    } else if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// `108.5k/s`, `18/s`, `1.2M/s`.
pub fn human_rate(per_second: f64) -> String {
    format!("{}/s", human_number(per_second))
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A compared reason's share of the exits as a table cell: the percentage, or for a row that is
/// not an exit of its own what it is (`event`, `total`, `part`). Text and HTML both show it.
pub fn share_cell(delta: &ReasonDelta, share: Option<f64>) -> String {
    share.map_or_else(|| delta.not_a_share.unwrap_or("").to_string(), percent)
}

pub fn render_profile(path: &str, profile: &ExitProfile) -> String {
    let mut out = String::new();
    let total = exit_total(profile);
    let _ = writeln!(
        out,
        "{path}: {} ({:?}), {} {}{}",
        profile.format,
        profile.isa,
        total,
        profile.event,
        if profile.truncated { " (rows elided in the input)" } else { "" }
    );
    let busy = busy_time(profile);
    let mut rows: Vec<_> = profile.rows.iter().collect();
    rows.sort_by(|a, b| {
        let key = |r: &crate::exits::ExitRow| r.time_us.unwrap_or(r.count as f64);
        key(b).partial_cmp(&key(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    if let Some(seconds) = profile.duration_s {
        let _ = writeln!(out, "  over {seconds:.1} s");
    }
    for note in &profile.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>10} {:>8} {:>11} {:>12}",
        "reason", "count", "rate", "exits%", "busy-time%", "mean"
    );
    let zero_rows = rows.iter().filter(|r| r.count == 0 && r.time_us.is_none()).count();
    let side_table = crate::analysis::exit_side_tables::SideTable::of(profile).is_some();
    for row in rows.into_iter().filter(|r| r.count > 0 || r.time_us.is_some()) {
        let exit_share = match row.not_a_share() {
            Some(word) => word.to_string(),
            // A table cut short without its totals: the share perf printed is of the whole table.
            None => match row.sample_percent.filter(|_| profile.declared_samples.is_none()) {
                Some(printed) => percent(printed / 100.0),
                None => percent(row.count as f64 / total.max(1) as f64),
            },
        };
        let time_share = match (handling_time(profile, row), busy) {
            // A port or MSR table has no idle rows: perf's Time% is the busy share, of the
            // whole table even when it was cut short.
            _ if side_table && profile.declared_time_us.is_none() && row.time_percent.is_some() => {
                percent(row.time_percent.unwrap_or_default() / 100.0)
            }
            (Some(time), Some(busy)) if busy > 0.0 && !crate::exits::reasons::is_idle(&row.name) => {
                percent(time / busy)
            }
            (Some(_), Some(_)) => "idle".to_string(),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<28} {:>10} {:>10} {:>8} {:>11} {:>12}",
            row.name,
            row.count,
            match (row.rate_per_s, profile.duration_s.filter(|s| *s > 0.0)) {
                (Some(rate), _) => human_rate(rate),
                (None, Some(seconds)) => human_rate(row.count as f64 / seconds),
                (None, None) => "-".to_string(),
            },
            exit_share,
            time_share,
            row.mean_us.map_or("-".to_string(), |m| format!("{m:.2}us"))
        );
    }
    if zero_rows > 0 {
        let _ = writeln!(out, "  ({zero_rows} counters at zero not shown)");
    }
    out
}

pub fn render_findings(
    findings: &[ExitFinding],
    config_diagnostics: &[Diagnostic],
    config_path: Option<&str>,
) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        let _ = writeln!(out, "no exit cause stands out");
    }
    for finding in findings {
        let _ = writeln!(
            out,
            "{}[{}] {}: {}",
            finding.severity.label(),
            finding.rule,
            finding.name,
            finding.title
        );
        let shows: Vec<String> = finding
            .reasons
            .iter()
            .map(|r| {
                format!(
                    "{} {} of exits{}",
                    r.name,
                    percent(r.exit_share),
                    r.time_share.map_or(String::new(), |t| format!(", {} of busy time", percent(t)))
                )
            })
            .collect();
        let _ = writeln!(out, "  = shows: {}", shows.join("; "));
        if let Some(evidence) = &finding.evidence {
            let _ = writeln!(out, "  = evidence: {evidence}");
        }
        let _ = writeln!(out, "  = why: {}", finding.explanation);
        let _ = writeln!(out, "  = fix: {}", finding.fix);
        let related: Vec<&Diagnostic> =
            config_diagnostics.iter().filter(|d| finding.check_rules.contains(&d.rule)).collect();
        match (config_path, related.is_empty()) {
            (Some(path), false) => {
                for d in related {
                    let _ =
                        writeln!(out, "  = in the config: {}", crate::output::diagnostics::one_line(d, path));
                }
            }
            (Some(path), true) if !finding.check_rules.is_empty() => {
                let _ =
                    writeln!(out, "  = in the config: {path} has none of {}", finding.check_rules.join(", "));
            }
            _ if !finding.check_rules.is_empty() => {
                let _ = writeln!(
                    out,
                    "  = check rules: {} (give --config to point at the line)",
                    finding.check_rules.join(", ")
                );
            }
            _ => {}
        }
        let _ = writeln!(out, "  = source: {}", finding.source);
        let _ = writeln!(out);
    }
    out
}

pub fn render_comparison(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}:", comparison.event);
    // Mean time per exit where both profiles have times: a change that makes each exit cheaper
    // shows there, not in the counts.
    let means = comparison.reasons.iter().any(|d| d.before_mean_us.is_some() && d.after_mean_us.is_some());
    let _ =
        write!(out, "  {:<28} {:>10} {:>8} {:>10} {:>8}", "reason", "before", "exits%", "after", "exits%");
    let _ = writeln!(out, "{}", if means { format!(" {:>22}", "mean per exit") } else { String::new() });
    for delta in &comparison.reasons {
        let _ = write!(
            out,
            "  {:<28} {:>10} {:>8} {:>10} {:>8}",
            delta.name,
            delta.before,
            share_cell(delta, delta.before_share),
            delta.after,
            share_cell(delta, delta.after_share)
        );
        let mean = match (delta.before_mean_us, delta.after_mean_us) {
            (Some(before), Some(after)) if means => {
                let noise = if delta.mean_change_within_noise == Some(true) { " (within noise)" } else { "" };
                format!(" {:>22}{noise}", format!("{before:.2}us -> {after:.2}us"))
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "{mean}");
    }
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>8} {:>10}",
        "total", comparison.before_exits, "", comparison.after_exits
    );
    if let (Some(before), Some(after)) = (comparison.before_busy_us, comparison.after_busy_us) {
        let _ = writeln!(out, "  busy handling time: {before:.0}us -> {after:.0}us");
    }
    if !comparison.resolved.is_empty() {
        let _ = writeln!(out, "  gone after: {}", comparison.resolved.join(", "));
    }
    if !comparison.more_visible.is_empty() {
        let _ = writeln!(
            out,
            "  stands out more after (its exits did not rise; the rest fell): {}",
            comparison.more_visible.join(", ")
        );
    }
    if !comparison.appeared.is_empty() {
        let _ = writeln!(out, "  new after: {}", comparison.appeared.join(", "));
    }
    let _ = writeln!(out, "{}", comparison.summary);
    out
}
