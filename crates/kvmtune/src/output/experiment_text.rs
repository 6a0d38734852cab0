//! `kvmtune experiment`'s result for people: each measure's median and interval per variant,
//! its verdict, each variant's diagnosis, and what the rounds cannot tell.

use std::fmt::Write;

use crate::analysis::experiment::{Estimate, Measure, MeasureSummary, Verdict};
use crate::experiment::ExperimentResult;
use crate::values::escape::terminal;

/// Exit kinds shown besides all exits: the busiest, where any variant had some.
const KINDS_SHOWN: usize = 8;

/// The measures worth showing: those any variant had, with the busiest [`KINDS_SHOWN`] exit
/// kinds; what the HTML report shows too.
pub fn shown_measures(result: &ExperimentResult) -> Vec<&MeasureSummary> {
    let mut kinds = 0;
    result
        .summaries
        .iter()
        .filter(|s| s.estimates.iter().flatten().any(|e| e.median > 0.0))
        .filter(|s| {
            let kind = matches!(&s.measure, Measure::ExitsPerSecond(name) if name != "exits");
            kinds += usize::from(kind);
            !kind || kinds <= KINDS_SHOWN
        })
        .collect()
}

pub fn render(result: &ExperimentResult) -> String {
    let mut out = String::new();
    let names: Vec<String> = result.variants.iter().map(|v| terminal(&v.name).into_owned()).collect();
    let _ = writeln!(
        out,
        "experiment: {} variants ({}), {} round{} in random order (--seed {}), warm-up {} s, {} s recorded each",
        names.len(),
        names.join(", "),
        result.repeat,
        if result.repeat == 1 { "" } else { "s" },
        result.seed,
        trim(result.warmup_s),
        trim(result.duration_s),
    );
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(7);
    for summary in shown_measures(result) {
        let direction = match summary.verdict {
            Verdict::NotRanked => "",
            _ if summary.lower_is_better => " (lower is better)",
            _ => " (higher is better)",
        };
        let _ = writeln!(out, "\n{}{direction}", summary.label);
        let _ = writeln!(out, "  {:width$}  {:>12}  {:>27}  rounds", "variant", "median", "95% interval");
        for (name, estimate) in names.iter().zip(&summary.estimates) {
            match estimate {
                Some(estimate) => {
                    let _ = writeln!(
                        out,
                        "  {name:width$}  {:>12}  {:>27}  {}",
                        number(estimate.median),
                        interval(estimate),
                        estimate.values.iter().map(|v| number(*v)).collect::<Vec<_>>().join(" "),
                    );
                }
                None => {
                    let _ = writeln!(out, "  {name:width$}  {:>12}", "-");
                }
            }
        }
        let _ = writeln!(out, "  => {}", verdict(&summary.verdict));
    }
    for variant in &result.variants {
        let name = terminal(&variant.name);
        if variant.findings.is_empty() {
            let _ = writeln!(out, "\n{name}: no cause stands out in its median round");
            continue;
        }
        let _ = writeln!(out, "\n{name}: its median round's diagnosis");
        for finding in &variant.findings {
            let _ = writeln!(out, "  {} {}: {}", finding.severity.label(), finding.rule, finding.title);
        }
    }
    for caution in &result.cautions {
        let _ = writeln!(out, "\nnote: {caution}");
    }
    out
}

/// The verdict in a sentence.
pub fn verdict(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Winner { variant, by_percent } => format!(
            "{} is better, by {by_percent:.1}% over the next, with intervals apart",
            terminal(variant)
        ),
        Verdict::Leaders { variants, by_percent } => format!(
            "{} are better than the rest, by {by_percent:.1}% at the least, with intervals apart; among them, no measurable difference",
            variants.iter().map(|v| terminal(v)).collect::<Vec<_>>().join(" and ")
        ),
        Verdict::NotRanked => "not ranked: halts are the guest idling, so fewer is not faster".to_string(),
        Verdict::NoMeasurableDifference => format!(
            "no measurable difference (the intervals overlap, or the medians are within {}%)",
            crate::analysis::experiment::NOISE_PERCENT
        ),
        Verdict::TooFewRounds => format!(
            "not told: fewer than {} rounds give no interval",
            crate::analysis::experiment::MIN_ROUNDS
        ),
    }
}

fn interval(estimate: &Estimate) -> String {
    match estimate.interval {
        Some((low, high)) => format!("{} - {}", number(low), number(high)),
        None => "-".to_string(),
    }
}

/// Four significant digits at most, no exponent; a whole number as it is.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        return format!("{value:.0}");
    }
    let digits = value.abs().log10().floor() as i32 + 1;
    let decimals = (4 - digits).clamp(0, 3) as usize;
    format!("{value:.decimals$}")
}

pub fn trim(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_digits() {
        assert_eq!(number(18.2049), "18.20");
        assert_eq!(number(481_234.7), "481235");
        assert_eq!(number(0.01234), "0.012");
        assert_eq!(number(41.0), "41");
        assert_eq!(number(0.0), "0");
        assert_eq!(trim(10.0), "10");
        assert_eq!(trim(0.5), "0.5");
    }
}
