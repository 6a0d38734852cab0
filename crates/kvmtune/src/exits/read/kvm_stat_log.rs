//! `kvm_stat -l` logs (tools/kvm/kvm_stat/kvm_stat, `log`): a banner of event names, then one
//! line of per-interval deltas (each interval one second), each line after a date and time;
//! with `-L`/`--csv`, the same as comma-separated values with a `timestamp` column. The banner
//! repeats every 20 lines. The deltas are summed into one profile covering all the intervals.

use crate::exits::model::ExitProfile;
use crate::exits::read::text::Pasted;
use crate::exits::read::{ExitParseError, Format, settle_isa};

pub const FORMAT: Format = Format { name: "kvm_stat -l log", sniff, read };

fn sniff(pasted: &Pasted) -> bool {
    log(pasted).is_some()
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    Ok(log(pasted).into_iter().collect())
}

fn log(pasted: &Pasted) -> Option<ExitProfile> {
    let csv = pasted.lines.iter().any(|l| l.body.starts_with("timestamp,"));
    let mut keys: Vec<String> = Vec::new();
    let mut totals: Vec<u64> = Vec::new();
    let mut intervals = 0u64;
    let mut first = 0;
    for line in &pasted.lines {
        let fields: Vec<&str> = if csv { line.body.split(',').collect() } else { line.words() };
        if fields.is_empty() || fields == [""] {
            continue;
        }
        let is_banner = fields.iter().any(|f| f.starts_with("kvm_") || f.contains('('));
        if is_banner {
            let banner: Vec<String> =
                fields.iter().filter(|f| **f != "timestamp").map(|f| f.to_string()).collect();
            if banner != keys {
                keys = banner;
                totals = vec![0; keys.len()];
                intervals = 0;
                first = line.number;
            }
            continue;
        }
        if keys.is_empty() {
            continue;
        }
        let numbers: Vec<u64> = fields.iter().filter_map(|f| f.trim().parse().ok()).collect();
        if numbers.len() < keys.len() {
            continue;
        }
        for (total, value) in totals.iter_mut().zip(&numbers[numbers.len() - keys.len()..]) {
            *total = total.saturating_add(*value);
        }
        intervals += 1;
    }
    if keys.is_empty() || intervals == 0 {
        return None;
    }
    let mut profile = ExitProfile::new("kvm_stat log", "kvm_stat events");
    profile.line = first;
    profile.rows = keys
        .iter()
        .zip(totals)
        .map(|(name, count)| {
            let mut row = crate::exits::read::kvm_stat::event_row(name, count, None, 0);
            row.rate_per_s = Some(count as f64 / intervals as f64);
            row
        })
        .collect();
    profile.duration_s = Some(intervals as f64);
    settle_isa(&mut profile);
    Some(profile)
}
