//! The statistics of `kvmtune experiment`: what each round measured, the median of the rounds
//! with a bootstrap 95% confidence interval, and which variant (if any) is measurably better.
//!
//! Method: the percentile bootstrap of the median (Efron and Tibshirani, *An Introduction to the
//! Bootstrap*, 1993, ch. 13): the rounds are drawn with replacement [`RESAMPLES`] times, the median
//! of each draw taken, and the 2.5th and 97.5th percentiles of those medians bound the interval.
//! The draws come from ChaCha8 seeded with the experiment's `--seed`, so a replay gives the same
//! intervals. A variant wins a measure only when its interval lies wholly on the better side of
//! every other variant's and its median is better than the runner-up's by at least
//! [`NOISE_PERCENT`]: with three rounds an interval is only as wide as the rounds' spread, and
//! two runs of the same VM differ by a little every time (criterion.rs draws the same line with
//! its noise threshold).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::exits::model::{ExitProfile, RowKind};
use crate::exits::reasons::is_idle;

/// Bootstrap draws per interval.
pub const RESAMPLES: usize = 4000;
/// Fewer rounds than this give no interval: two values cannot say how much they scatter.
pub const MIN_ROUNDS: usize = 3;
/// The smallest difference of medians, in percent of the runner-up's, that can make a winner.
pub const NOISE_PERCENT: f64 = 3.0;

/// What one round measured of one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundMeasure {
    /// 1-based.
    pub round: u32,
    /// Seconds recorded.
    pub seconds: f64,
    /// Exits per second by what KVM counts (`exits`, `halt_exits`, `io_exits`, ...).
    pub exits_per_s: BTreeMap<String, f64>,
    /// Microseconds spent handling exits per second of recording, by exit reason, where the
    /// recorder had `kvm_exit`/`kvm_entry` pairs (no host here has them: it stays empty).
    pub busy_us_per_s: BTreeMap<String, f64>,
    /// The workload's own figure: the number on the last line it printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<f64>,
}

impl RoundMeasure {
    /// The rates of a recording: counts over seconds of KVM's exit counters (the `exits` total
    /// and each kind), and handling time per second from the profile that has times.
    pub fn of_recording(round: u32, profiles: &[ExitProfile], workload: Option<f64>) -> Self {
        let mut measure = RoundMeasure { round, workload, ..RoundMeasure::default() };
        for profile in profiles {
            let Some(seconds) = profile.duration_s.filter(|s| *s > 0.0) else { continue };
            measure.seconds = measure.seconds.max(seconds);
            let times = profile.rows.iter().any(|row| row.time_us.is_some());
            for row in &profile.rows {
                if times {
                    if let Some(time) = row.time_us {
                        measure.busy_us_per_s.insert(row.name.clone(), time / seconds);
                    }
                } else if row.kind != RowKind::Event {
                    measure.exits_per_s.entry(row.name.clone()).or_insert(row.count as f64 / seconds);
                }
            }
        }
        measure
    }
}

/// One measure of the experiment, its direction and unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Measure {
    /// Exits per second of one KVM counter (`exits` is all of them).
    ExitsPerSecond(String),
    /// Microseconds of exit handling per second, of one reason.
    BusyPerSecond(String),
    /// The workload's own number.
    Workload,
}

impl Measure {
    pub fn label(&self) -> String {
        match self {
            Measure::ExitsPerSecond(name) if name == "exits" => "all exits/s".to_string(),
            Measure::ExitsPerSecond(name) => format!("{name}/s"),
            Measure::BusyPerSecond(name) => format!("{name} handling µs/s"),
            Measure::Workload => "workload figure".to_string(),
        }
    }

    fn value(&self, round: &RoundMeasure) -> Option<f64> {
        match self {
            Measure::ExitsPerSecond(name) => round.exits_per_s.get(name).copied(),
            Measure::BusyPerSecond(name) => round.busy_us_per_s.get(name).copied(),
            Measure::Workload => round.workload,
        }
    }
}

/// Which way a workload's figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Goal {
    /// Frames or operations per second, a score.
    Higher,
    /// A time, a latency.
    Lower,
}

/// The median of a variant's rounds and, from [`MIN_ROUNDS`] on, its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub median: f64,
    pub rounds: usize,
    /// The 95% interval, `(low, high)`; None with fewer than [`MIN_ROUNDS`] rounds.
    pub interval: Option<(f64, f64)>,
    /// Each round's value, in round order.
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// `variant` is better than every other, with `by_percent` over the runner-up's median.
    Winner { variant: String, by_percent: f64 },
    /// `variants` are each better than every other variant, by `by_percent` at the least,
    /// but not measurably different among themselves.
    Leaders { variants: Vec<String>, by_percent: f64 },
    /// The intervals overlap or the medians are within [`NOISE_PERCENT`].
    NoMeasurableDifference,
    /// Idle time, not cost: more halts are a guest with less to do, so no side is better.
    NotRanked,
    /// Some variant has fewer than [`MIN_ROUNDS`] rounds of this measure.
    TooFewRounds,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureSummary {
    pub measure: Measure,
    pub label: String,
    /// True when less is better (exits, handling time, a workload time).
    pub lower_is_better: bool,
    /// Per variant, in the experiment's variant order; None where a variant never had it.
    pub estimates: Vec<Option<Estimate>>,
    pub verdict: Verdict,
}

/// Every measure the rounds have, summarized: all exits first, then each exit kind by its
/// largest median, the handling times, and the workload's figure.
pub fn summarize(
    variants: &[String],
    rounds: &[Vec<RoundMeasure>],
    workload_goal: Goal,
    seed: u64,
) -> Vec<MeasureSummary> {
    let mut measures: Vec<Measure> = rounds
        .iter()
        .flatten()
        .flat_map(|round| {
            let exits = round.exits_per_s.keys().cloned().map(Measure::ExitsPerSecond);
            let busy = round.busy_us_per_s.keys().cloned().map(Measure::BusyPerSecond);
            let workload = round.workload.map(|_| Measure::Workload);
            exits.chain(busy).chain(workload).collect::<Vec<_>>()
        })
        .collect();
    measures.sort();
    measures.dedup();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut summaries: Vec<MeasureSummary> = measures
        .into_iter()
        .map(|measure| {
            let lower_is_better = measure != Measure::Workload || workload_goal == Goal::Lower;
            let estimates: Vec<Option<Estimate>> = rounds
                .iter()
                .map(|of_variant| {
                    let values: Vec<f64> = of_variant.iter().filter_map(|r| measure.value(r)).collect();
                    estimate(values, &mut rng)
                })
                .collect();
            let verdict = match &measure {
                Measure::ExitsPerSecond(name) | Measure::BusyPerSecond(name) if is_idle(name) => {
                    Verdict::NotRanked
                }
                _ => verdict(variants, &estimates, lower_is_better),
            };
            MeasureSummary { label: measure.label(), measure, lower_is_better, estimates, verdict }
        })
        .collect();
    let largest = |s: &MeasureSummary| s.estimates.iter().flatten().map(|e| e.median).fold(0.0_f64, f64::max);
    summaries.sort_by(|a, b| {
        let rank = |s: &MeasureSummary| match &s.measure {
            Measure::ExitsPerSecond(name) if name == "exits" => 0,
            Measure::ExitsPerSecond(_) => 1,
            Measure::BusyPerSecond(_) => 2,
            Measure::Workload => 3,
        };
        rank(a).cmp(&rank(b)).then(largest(b).total_cmp(&largest(a)))
    });
    summaries
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The median and its percentile-bootstrap interval; None for no values.
pub fn estimate(values: Vec<f64>, rng: &mut impl Rng) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let interval = (values.len() >= MIN_ROUNDS).then(|| {
        let mut medians: Vec<f64> = (0..RESAMPLES)
            .map(|_| {
                let mut draw: Vec<f64> =
                    (0..values.len()).map(|_| values[rng.random_range(0..values.len())]).collect();
                draw.sort_by(f64::total_cmp);
                median(&draw)
            })
            .collect();
        medians.sort_by(f64::total_cmp);
        let at = |q: f64| medians[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
        (at(0.025), at(0.975))
    });
    Some(Estimate { median: median(&sorted), rounds: values.len(), interval, values })
}

fn verdict(variants: &[String], estimates: &[Option<Estimate>], lower_is_better: bool) -> Verdict {
    let mut present: Vec<(usize, &Estimate, (f64, f64))> = Vec::new();
    for (index, estimate) in estimates.iter().enumerate() {
        // A variant without the measure, or without an interval, leaves nothing to rank.
        let Some(estimate) = estimate else { return Verdict::TooFewRounds };
        let Some(interval) = estimate.interval else { return Verdict::TooFewRounds };
        present.push((index, estimate, interval));
    }
    if present.len() < 2 {
        return Verdict::TooFewRounds;
    }
    // Best first.
    present.sort_by(|(_, a, _), (_, b, _)| {
        if lower_is_better { a.median.total_cmp(&b.median) } else { b.median.total_cmp(&a.median) }
    });
    // The smallest leading group each of whose intervals is clear of every interval behind it,
    // with the medians on either side of the cut apart by more than noise.
    for cut in 1..present.len() {
        let (ahead, behind) = present.split_at(cut);
        let clear = ahead.iter().all(|(_, _, (low, high))| {
            behind.iter().all(
                |(_, _, (other_low, other_high))| {
                    if lower_is_better { high < other_low } else { low > other_high }
                },
            )
        });
        let (last_ahead, first_behind) = (ahead[cut - 1].1.median, behind[0].1.median);
        let by_percent = if first_behind == 0.0 {
            if last_ahead == 0.0 { 0.0 } else { 100.0 }
        } else {
            ((first_behind - last_ahead) / first_behind * 100.0).abs()
        };
        if clear && last_ahead != first_behind && by_percent >= NOISE_PERCENT {
            let names: Vec<String> = ahead.iter().map(|(i, _, _)| variants[*i].clone()).collect();
            return if cut == 1 {
                Verdict::Winner { variant: names[0].clone(), by_percent }
            } else {
                Verdict::Leaders { variants: names, by_percent }
            };
        }
    }
    Verdict::NoMeasurableDifference
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(values: &[&[f64]]) -> Vec<Vec<RoundMeasure>> {
        values
            .iter()
            .map(|of_variant| {
                of_variant
                    .iter()
                    .enumerate()
                    .map(|(i, v)| RoundMeasure {
                        round: i as u32 + 1,
                        seconds: 1.0,
                        exits_per_s: BTreeMap::from([("exits".to_string(), *v)]),
                        ..RoundMeasure::default()
                    })
                    .collect()
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("v{i}")).collect()
    }

    #[test]
    fn separated_rounds_name_the_lower_variant() {
        let summary =
            summarize(&names(2), &rounds(&[&[900.0, 1000.0, 950.0], &[20.0, 19.0, 21.0]]), Goal::Higher, 7);
        let Verdict::Winner { variant, by_percent } = &summary[0].verdict else { panic!("{summary:?}") };
        assert_eq!(variant, "v1");
        assert!((by_percent - 100.0 * (950.0 - 20.0) / 950.0).abs() < 1e-9, "{by_percent}");
        let interval = summary[0].estimates[1].as_ref().unwrap().interval.unwrap();
        assert!(interval.0 >= 19.0 && interval.1 <= 21.0, "{interval:?}");
    }

    #[test]
    fn overlapping_or_close_rounds_name_no_winner() {
        let overlapping =
            summarize(&names(2), &rounds(&[&[10.0, 30.0, 20.0], &[15.0, 25.0, 22.0]]), Goal::Higher, 1);
        assert_eq!(overlapping[0].verdict, Verdict::NoMeasurableDifference);
        // Apart, but by less than the noise threshold.
        let close =
            summarize(&names(2), &rounds(&[&[100.0, 100.1, 100.2], &[101.0, 101.1, 101.2]]), Goal::Higher, 1);
        assert_eq!(close[0].verdict, Verdict::NoMeasurableDifference);
    }

    #[test]
    fn a_leading_group_is_named_when_no_single_variant_wins() {
        let data = rounds(&[&[150_000.0, 160_000.0, 131_000.0], &[20.3, 20.7, 20.3], &[20.0, 19.7, 20.0]]);
        let summary = summarize(&names(3), &data, Goal::Higher, 9);
        let Verdict::Leaders { variants, by_percent } = &summary[0].verdict else { panic!("{summary:?}") };
        assert_eq!(variants, &["v2".to_string(), "v1".to_string()]);
        assert!(*by_percent > 99.0);
    }

    #[test]
    fn halts_are_shown_but_never_ranked() {
        let mut data = rounds(&[&[10.0, 11.0, 10.5], &[1000.0, 1010.0, 990.0]]);
        for (variant, halts) in data.iter_mut().zip([0.0, 18.0]) {
            for round in variant.iter_mut() {
                round.exits_per_s.insert("halt_exits".into(), halts);
            }
        }
        let summary = summarize(&names(2), &data, Goal::Higher, 2);
        let halts =
            summary.iter().find(|s| s.measure == Measure::ExitsPerSecond("halt_exits".into())).unwrap();
        assert_eq!(halts.verdict, Verdict::NotRanked);
    }

    #[test]
    fn two_rounds_are_too_few_and_the_seed_replays() {
        let two = summarize(&names(2), &rounds(&[&[900.0, 1000.0], &[20.0, 21.0]]), Goal::Higher, 3);
        assert_eq!(two[0].verdict, Verdict::TooFewRounds);
        assert_eq!(two[0].estimates[0].as_ref().unwrap().median, 950.0);
        let data = rounds(&[&[1.0, 5.0, 2.0, 9.0, 3.0], &[4.0, 4.5, 6.0, 5.0, 7.0]]);
        assert_eq!(
            summarize(&names(2), &data, Goal::Higher, 42),
            summarize(&names(2), &data, Goal::Higher, 42)
        );
    }

    #[test]
    fn a_workload_figure_follows_its_goal() {
        let mut data = rounds(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0]]);
        for (variant, figures) in data.iter_mut().zip([[60.0, 61.0, 59.0], [90.0, 91.0, 92.0]]) {
            for (round, figure) in variant.iter_mut().zip(figures) {
                round.workload = Some(figure);
            }
        }
        let higher = summarize(&names(2), &data, Goal::Higher, 5);
        let workload = higher.iter().find(|s| s.measure == Measure::Workload).unwrap();
        assert!(matches!(&workload.verdict, Verdict::Winner { variant, .. } if variant == "v1"));
        let lower = summarize(&names(2), &data, Goal::Lower, 5);
        let workload = lower.iter().find(|s| s.measure == Measure::Workload).unwrap();
        assert!(matches!(&workload.verdict, Verdict::Winner { variant, .. } if variant == "v0"));
    }
}
