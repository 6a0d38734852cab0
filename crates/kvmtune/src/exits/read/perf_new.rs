//! The newer `perf kvm stat report` layout (perf 6.x, `Event name  Samples  Sample%  Time (ns)
//! Time%  Max Time (ns)  Min Time (ns)  Mean Time (ns)`): integer nanoseconds, no deviation
//! and no totals line. The table ends at the first line that is not a row.

use crate::exits::model::{ExitProfile, ExitRow, RowKind};
use crate::exits::read::text::Pasted;
use crate::exits::read::{ExitParseError, Format, number, settle_isa};

pub const FORMAT: Format = Format { name: "perf kvm stat (new layout)", sniff, read };

fn is_header(words: &[&str]) -> bool {
    words.starts_with(&["Event", "name"]) && words.windows(3).any(|w| w == ["Mean", "Time", "(ns)"])
}

fn sniff(pasted: &Pasted) -> bool {
    pasted.lines.iter().any(|l| is_header(&l.words()))
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut profiles = Vec::new();
    let mut current: Option<ExitProfile> = None;
    for line in &pasted.lines {
        let words = line.words();
        if is_header(&words) {
            profiles.extend(current.take());
            let mut profile = ExitProfile::new("perf kvm stat (new layout)", "VM-EXIT");
            profile.line = line.number;
            current = Some(profile);
            continue;
        }
        let Some(profile) = current.as_mut() else { continue };
        if line.is_blank() && profile.rows.is_empty() {
            continue;
        }
        match row(&words, line.number) {
            Ok(row) => profile.rows.push(row),
            // A row-shaped line that does not read costs that row; anything else ends the table.
            Err(why) if words.len() == 8 => profile.notes.push(pasted.skipped_row(line, why)),
            Err(_) => profiles.extend(current.take()),
        }
    }
    profiles.extend(current);
    profiles.iter_mut().for_each(settle_isa);
    // As in the classic layout: a report unless the input shows a live screen.
    let live = pasted.shows_perf_live();
    profiles.iter_mut().for_each(|p| p.times_within_span = !live);
    Ok(profiles)
}

/// `name samples sample% time_ns time% max_ns min_ns mean_ns`.
fn row(words: &[&str], line: u32) -> Result<ExitRow, &'static str> {
    let [name, samples, _, time, time_percent, max, min, mean] = words else {
        return Err("a row needs a name and seven numbers");
    };
    let ns = |token: &str| number::<f64>(token).map(|n| n / 1000.0).ok_or("a time is not a number");
    let mut row =
        ExitRow::count_only(name.to_string(), number(samples).ok_or("sample count is not a number")?, line);
    row.kind = RowKind::Exit;
    row.time_us = Some(ns(time)?);
    row.max_us = Some(ns(max)?);
    row.min_us = Some(ns(min)?);
    row.mean_us = Some(ns(mean)?);
    row.time_percent = number(time_percent);
    Ok(row)
}
