//! `perf kvm stat report` and `perf kvm stat live` in the classic layout (tools/perf/builtin-kvm.c,
//! `print_result`): for each `--event=vmexit|ioport|mmio|msr`, a header (`VM-EXIT Samples
//! Samples% Time% Min Time Max Time Avg time`), one row per reason
//! (`NAME COUNT PCT% PCT% MINus MAXus AVGus ( +- DEV% )`) and a totals line (`Total Samples:N,
//! Total events handled time:Tus.`).
//!
//! Rows are read by recognising their fields wherever the line breaks fall, not by columns
//! counted from the line's end: copies from slides, mail and forums change the spacing, wrap
//! the lines, quote them, split the header over two lines and cut it short. Also read:
//! - rows pasted with no header at all (the reason names say which event they count);
//! - columns cut off by the poster (a header that stops at `Time%`, rows to match): the rows
//!   keep their `Time%`, which still gives each reason's share of handling time;
//! - `unknown kvm exit code:N on VMX` lines, which name the `UNKNOWN` row after them;
//! - rows elided as `[..]` (the table is marked truncated) and `Lost events:` lines.

use crate::exits::model::{ExitProfile, ExitRow, Isa, RowKind, saturating_sum};
use crate::exits::read::text::Pasted;
use crate::exits::read::{ExitParseError, Format, number, settle_isa};
use crate::values::text::plural;

pub const FORMAT: Format = Format { name: "perf kvm stat report/live", sniff, read };

const FORMAT_NAME: &str = "perf kvm stat";

fn sniff(pasted: &Pasted) -> bool {
    let lines = tokens(pasted);
    let stream: Vec<&Token> = lines.iter().flatten().collect();
    lines.iter().any(|line| is_header_line(line))
        || (0..stream.len())
            .filter(|&at| at == 0 || stream[at - 1].line != stream[at].line)
            .any(|at| matches!(row_at(&stream, at, Columns::FULL), Ok(Some(_))))
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut profiles = tables(pasted);
    // A table with nothing that says live is taken for a report: pastes rarely keep the
    // command, and the time of day above a live screen is what tells one apart.
    let live = pasted.shows_perf_live();
    profiles.iter_mut().for_each(|p| p.times_within_span = !live);
    Ok(profiles)
}

/// One word of a table, where it stood in the input.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    /// 0-based line index.
    line: usize,
    /// 1-based column in the input line.
    column: u32,
}

/// The words of every line (none for fences and prompts), `µs` spelt `us`, and the deviation's
/// parentheses split from what they are glued to (`1.43us(+-0.18%)` reads as
/// `1.43us ( +- 0.18% )`).
fn tokens(pasted: &Pasted) -> Vec<Vec<Token>> {
    pasted
        .lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            if line.fence || line.prompt {
                return Vec::new();
            }
            let mut tokens = Vec::new();
            let mut start: Option<(usize, usize)> = None;
            for (char_index, (byte, c)) in line.body.char_indices().enumerate() {
                if c.is_whitespace() {
                    if let Some((begin, column)) = start.take() {
                        push_split(&mut tokens, &line.body[begin..byte], index, column);
                    }
                } else if start.is_none() {
                    start = Some((byte, line.prefix_chars + char_index + 1));
                }
            }
            if let Some((begin, column)) = start {
                push_split(&mut tokens, &line.body[begin..], index, column);
            }
            tokens
        })
        .collect()
}

fn push_split(tokens: &mut Vec<Token>, word: &str, line: usize, column: usize) {
    let word = word.replace("µs", "us").replace("μs", "us");
    let spaced = word.replace('(', " ( ").replace(')', " ) ").replace("+-", " +- ");
    for part in spaced.split_whitespace() {
        tokens.push(Token { text: part.to_string(), line, column: column as u32 });
    }
}

/// Header words of the classic table, whole or cut short by a narrow copy.
fn is_header_word(word: &str) -> bool {
    const WORDS: &[&str] = &["Samples", "Samples%", "Time%", "Min", "Max", "Avg", "Time", "time", "#"];
    WORDS.contains(&word) || word.ends_with("...") || word.ends_with('…')
}

/// A line that opens a classic table: `Samples` with `Samples%` or `Time%` beside it, times in
/// microseconds (the newer layout's header says `Sample%` and `Time (ns)`).
fn is_header_line(tokens: &[Token]) -> bool {
    let words: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    words.contains(&"Samples")
        && (words.contains(&"Samples%") || words.contains(&"Time%"))
        && !words.contains(&"ns")
}

/// What perf prints as the table's first column: `VM-EXIT`, `IO Port Access`, `MMIO Access`,
/// `MSR Access`.
fn is_event_label(words: &[&str]) -> bool {
    matches!(words, ["VM-EXIT"]) || (words.len() >= 2 && words.last() == Some(&"Access"))
}

/// Which columns a table has after the sample count, as its header shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    /// `Samples%` and `Time%`: how many percentages each row has.
    percents: usize,
    /// `Min Time`, `Max Time`, `Avg time`.
    times: bool,
}

impl Columns {
    const FULL: Columns = Columns { percents: 2, times: true };

    fn of_header(words: &[&str]) -> Self {
        let percents = words.iter().filter(|w| matches!(**w, "Samples%" | "Time%")).count().min(2);
        let times = words
            .iter()
            .any(|w| matches!(*w, "Min" | "Max" | "Avg") || w.ends_with("...") || w.ends_with('…'));
        Columns { percents, times }
    }
}

/// What a table without a header counts, from its first reason's name: perf names ports
/// `0x70:POUT`, MSRs and MMIO addresses `0x6e0:W`, exit reasons by name.
fn event_of_name(name: &str) -> &'static str {
    let Some((address, access)) = name.split_once(':') else { return "VM-EXIT" };
    let Some(value) = address.strip_prefix("0x").and_then(|hex| u64::from_str_radix(hex, 16).ok()) else {
        return "VM-EXIT";
    };
    match access {
        "POUT" | "PIN" => "IO Port Access",
        // MSR indexes live in three ranges (Intel SDM vol. 4, AMD APM vol. 2, the TLFS's
        // 0x40000000 block); anything else is a guest-physical address.
        "R" | "W"
            if value < 0x2000
                || (0x4000_0000..0x4000_0100).contains(&value)
                || (0xc000_0000..0xc001_2000).contains(&value) =>
        {
            "MSR Access"
        }
        _ => "MMIO Access",
    }
}

fn new_profile(event: String, line: usize) -> ExitProfile {
    let mut profile = ExitProfile::new(FORMAT_NAME, &event);
    profile.line = line as u32 + 1;
    profile
}

/// Every classic table in the text, headed or not.
fn tables(pasted: &Pasted) -> Vec<ExitProfile> {
    let lines = tokens(pasted);
    let stream: Vec<&Token> = lines.iter().flatten().collect();
    let mut profiles: Vec<ExitProfile> = Vec::new();
    let mut current: Option<(ExitProfile, Columns)> = None;
    let mut unknown_code: Option<(String, Isa)> = None;
    let mut last_line: Option<usize> = None;
    let mut at = 0;
    let text_of = |i: usize| stream.get(i).map(|t| t.text.as_str());
    let next_line_start = |from: usize| match stream.get(from) {
        Some(token) => (from..stream.len()).find(|&i| stream[i].line != token.line).unwrap_or(stream.len()),
        None => stream.len(),
    };
    while at < stream.len() {
        let token = stream[at];
        let line_tokens = &lines[token.line];
        let starts_line = line_tokens.first().is_some_and(|first| std::ptr::eq(first, token));
        // A closing code fence ends the table above it.
        if let Some(previous) = last_line
            && (previous + 1..token.line).any(|l| pasted.lines[l].fence)
            && let Some((done, _)) = current.take()
        {
            profiles.push(done);
        }
        last_line = Some(token.line);
        // A header opens a table (closing the one before).
        if starts_line && is_header_line(line_tokens) {
            if let Some((done, _)) = current.take() {
                profiles.push(done);
            }
            let mut words: Vec<&str> = line_tokens.iter().map(|t| t.text.as_str()).collect();
            let before = words.iter().position(|w| *w == "Samples").unwrap_or(0);
            let mut event = words[..before].join(" ");
            let header_line = token.line;
            at += line_tokens.len();
            // The rest of a wrapped header, and an event label on a line of its own.
            while let Some(next) = stream.get(at) {
                let next_line = &lines[next.line];
                let next_words: Vec<&str> = next_line.iter().map(|t| t.text.as_str()).collect();
                if next_words.iter().all(|w| is_header_word(w)) {
                    words.extend(next_words);
                    at += next_line.len();
                } else if event.is_empty() && is_event_label(&next_words) {
                    event = next_words.join(" ");
                    at += next_line.len();
                } else {
                    break;
                }
            }
            if event.is_empty() {
                event = "VM-EXIT".to_string();
            }
            current = Some((new_profile(event, header_line), Columns::of_header(&words)));
            continue;
        }
        let Some((profile, columns)) = current.as_mut() else {
            // Rows with no header: a whole row at a line's start opens a table.
            if starts_line && let Ok(Some((row, next))) = row_at(&stream, at, Columns::FULL) {
                let mut profile = new_profile(event_of_name(&row.name).to_string(), token.line);
                profile.notes.push(
                    "no header: the rows are read as perf kvm stat's columns (Samples, Samples%, Time%, Min, Max, Avg)"
                        .to_string(),
                );
                profile.rows.push(row);
                current = Some((profile, Columns::FULL));
                at = next;
            } else {
                at = next_line_start(at);
            }
            continue;
        };
        // `Total Samples:70746, Total events handled time:1789115.74us.`, wrapped or not.
        if token.text == "Total" && text_of(at + 1).is_some_and(|t| t.starts_with("Samples:")) {
            let samples = text_of(at + 1)
                .and_then(|t| t.trim_start_matches("Samples:").trim_end_matches(',').parse().ok());
            let time = (at + 2..(at + 7).min(stream.len()))
                .find_map(|i| text_of(i).and_then(|t| t.strip_prefix("time:")))
                .and_then(|t| t.trim_end_matches('.').trim_end_matches("us").parse().ok());
            profile.declared_samples = samples;
            profile.declared_time_us = time;
            at = (at + 2..(at + 7).min(stream.len()))
                .find(|&i| text_of(i).is_some_and(|t| t.starts_with("time:")))
                .map_or(at + 2, |i| i + 1);
            if let Some((done, _)) = current.take() {
                profiles.push(done);
            }
            continue;
        }
        match token.text.as_str() {
            "[..]" | "..." | "…" => {
                profile.truncated = true;
                at += 1;
                continue;
            }
            "Lost" if text_of(at + 1) == Some("events:") => {
                at += 3;
                continue;
            }
            "unknown" if text_of(at + 1) == Some("kvm") && text_of(at + 2) == Some("exit") => {
                let code = text_of(at + 3).unwrap_or("").trim_start_matches("code:").to_string();
                let isa = match (text_of(at + 4), text_of(at + 5)) {
                    (Some("on"), Some("VMX")) => Isa::Vmx,
                    (Some("on"), Some("SVM")) => Isa::Svm,
                    _ => Isa::Unknown,
                };
                unknown_code = Some((code, isa));
                at += if text_of(at + 4) == Some("on") { 6 } else { 4 };
                continue;
            }
            _ => {}
        }
        // The rest of a row broken off before (numbers, a lost parenthesis): no row, no prose.
        if !could_be_name(&token.text) {
            at = next_line_start(at);
            continue;
        }
        match row_at(&stream, at, *columns) {
            Ok(Some((mut row, next))) => {
                if row.name == "UNKNOWN"
                    && let Some((code, isa)) = unknown_code.take()
                {
                    row.name = format!("UNKNOWN({code})");
                    if profile.isa == Isa::Unknown {
                        profile.isa = isa;
                    }
                }
                profile.rows.push(row);
                at = next;
            }
            Ok(None) => {
                // Prose after a table (a reply below a quoted table) ends it.
                if let Some((done, _)) = current.take() {
                    profiles.push(done);
                }
                at = next_line_start(at);
            }
            Err(why) => {
                let line = &pasted.lines[why.line];
                profile.notes.push(
                    pasted.skipped_row(
                        line,
                        &format!("{} at column {}: `{}`", why.what, why.column, why.token),
                    ),
                );
                at = next_line_start(at);
            }
        }
    }
    if let Some((done, _)) = current.take() {
        profiles.push(done);
    }
    for profile in &mut profiles {
        settle_isa(profile);
        check_totals(profile);
    }
    // A header with nothing under it is no table, unless rows were there but could not be read.
    profiles
        .into_iter()
        .filter(|p| {
            !p.rows.is_empty()
                || p.declared_samples.is_some()
                || p.notes.iter().any(|n| n.starts_with("warning"))
        })
        .collect()
}

/// Rows against the totals line: a table whose rows do not add up says so, a table cut short
/// says how many rows it kept, and an empty one says it is empty.
fn check_totals(profile: &mut ExitProfile) {
    let counted = saturating_sum(profile.rows.iter().map(|r| r.count));
    match profile.declared_samples {
        Some(0) if profile.rows.is_empty() => {
            profile.notes.push("the table has no rows: perf counted no events".to_string())
        }
        Some(declared) if declared != counted && !profile.truncated => profile.notes.push(format!(
            "warning: the rows add up to {counted} samples, the totals line says {declared} (difference {}): rows may be missing or garbled",
            declared.abs_diff(counted)
        )),
        Some(declared) if profile.truncated => profile.notes.push(format!(
            "truncated table: {} read, {counted} of {declared} samples",
            plural(profile.rows.len(), "row")
        )),
        None if profile.rows_cut() => profile.notes.push(format!(
            "rows left out: the {} kept hold {:.2}% of the samples (Samples%), so no cause is read from a reason's absence",
            plural(profile.rows.len(), "row"),
            100.0 * (1.0 - profile.missing_share().unwrap_or(0.0))
        )),
        None => profile
            .notes
            .push(format!("no totals line: {} read, the table may be cut short", plural(profile.rows.len(), "row"))),
        _ => {}
    }
}

/// A word that may name a reason, port, MSR or address (not a number, unit or parenthesis).
fn could_be_name(word: &str) -> bool {
    word.starts_with("0x") || word.chars().next().is_some_and(char::is_alphabetic)
}

/// Why a row that started like one could not be read.
struct BadRow {
    what: &'static str,
    token: String,
    /// 0-based line and 1-based column of the offending word.
    line: usize,
    column: u32,
}

/// One table row starting at `at`: `NAME COUNT [PCT% [PCT%]] [MINus MAXus AVGus] [( +- DEV% )]`,
/// with as many percentages and times as `columns` says. `Ok(None)` where the words there are
/// no row at all (prose), an error where they start like one and go wrong.
fn row_at(stream: &[&Token], at: usize, columns: Columns) -> Result<Option<(ExitRow, usize)>, BadRow> {
    let name = stream[at];
    let field = |offset: usize| stream.get(at + offset).copied();
    let fail = |index: usize, what: &'static str| {
        let token = stream.get(index).copied().unwrap_or(name);
        BadRow { what, token: token.text.clone(), line: token.line, column: token.column }
    };
    // Prose: none of the words after the name is a percentage or a time.
    let row_like = (1..=3).any(|o| field(o).is_some_and(|t| t.text.ends_with('%') || t.text.ends_with("us")));
    if !row_like || !could_be_name(&name.text) {
        return Ok(None);
    }
    let count: u64 = match field(1).map(|t| t.text.parse()) {
        Some(Ok(count)) => count,
        _ => return Err(fail(at + 1, "sample count is not a number")),
    };
    let mut next = at + 2;
    let mut percents = Vec::new();
    while percents.len() < 2
        && let Some(token) = stream.get(next)
        && token.text.ends_with('%')
        && token.text != "%"
    {
        percents.push(number::<f64>(&token.text).ok_or_else(|| fail(next, "a percentage is not a number"))?);
        next += 1;
    }
    if percents.len() < columns.percents {
        return Err(fail(next, "a percentage is missing"));
    }
    let mut times = None;
    if stream.get(next).is_some_and(|t| t.text.ends_with("us")) || columns.times {
        let mut read = [0.0f64; 3];
        for slot in &mut read {
            let Some(token) = stream.get(next) else { return Err(fail(next - 1, "a time is missing")) };
            if !token.text.ends_with("us") {
                return Err(fail(next, "time must be in us"));
            }
            *slot = number(&token.text).ok_or_else(|| fail(next, "time is not a number"))?;
            next += 1;
        }
        times = Some(read);
    }
    // The deviation: `( +- 0.24% )` in any spacing, its closing parenthesis possibly lost.
    let mut mean_error_percent = None;
    if stream.get(next).is_some_and(|t| t.text == "(") {
        next += 1;
        while let Some(t) = stream.get(next) {
            if t.text == "+-" {
                next += 1;
            } else if t.text.ends_with('%')
                && let Some(error) = number::<f64>(&t.text)
            {
                mean_error_percent = Some(error).filter(|e: &f64| e.is_finite() && *e >= 0.0);
                next += 1;
            } else {
                if t.text == ")" {
                    next += 1;
                }
                break;
            }
        }
    }
    let mut row = ExitRow::count_only(name.text.clone(), count, name.line as u32 + 1);
    // Everything in a perf table is an exit (or a port, MSR or address accessed through one).
    row.kind = RowKind::Exit;
    row.time_percent = percents.get(1).copied();
    // With both columns, the first is Samples%.
    row.sample_percent = percents.get(1).and(percents.first().copied());
    if let Some([min, max, mean]) = times {
        row.time_us = Some(mean * count as f64);
        row.min_us = Some(min);
        row.max_us = Some(max);
        row.mean_us = Some(mean);
        row.mean_error_percent = mean_error_percent;
    }
    Ok(Some((row, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Vec<ExitProfile> {
        tables(&Pasted::new("t", text))
    }

    #[test]
    fn headerless_rows_read_as_a_vm_exit_table_and_prose_stays_quiet() {
        let text = "The hrtimer flood hits on this:\n\n   MSR_WRITE  338793  56.54%  5.51%  0.33us  34.44us  0.44us ( +-  0.20% )\n   HLT  65  0.01%  90.64%  0.49us 319933.79us  37562.71us ( +-  21.68% )\n\nSo 12 of 50% went up by 3us in total.\n";
        let profiles = read_text(text);
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].event, "VM-EXIT");
        assert_eq!(profiles[0].rows.len(), 2);
        assert_eq!(profiles[0].line, 3);
        assert!(read_text("We saw 12 exits, 50% of them 3us long.\n").is_empty());
    }

    #[test]
    fn a_header_cut_after_time_percent_keeps_the_time_shares() {
        let text = "             VM-EXIT    Samples  Samples%     Time%\n\n       EPT_VIOLATION    9833984    63.41%    15.96%\n      IO_INSTRUCTION    2160843    13.93%    50.07%\n\nafter:\n";
        let profile = &read_text(text)[0];
        assert_eq!(profile.rows.len(), 2);
        assert_eq!(profile.rows[1].time_percent, Some(50.07));
        assert_eq!(profile.rows[1].time_us, None);
    }

    #[test]
    fn a_bad_row_costs_that_row_only() {
        let text = "VM-EXIT Samples Samples% Time% Min Time Max Time Avg time\nHLT 12 50.00% oops 1.00us 2.00us 1.50us\nMSR_WRITE 12 50.00% 10.00% 1.00us 2.00us 1.50us ( +- 1.00% )\n";
        let profile = &read_text(text)[0];
        assert_eq!(profile.rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["MSR_WRITE"]);
        assert!(
            profile.notes.iter().any(|n| n.contains("t:2") && n.contains("`oops`")),
            "{:?}",
            profile.notes
        );
    }

    #[test]
    fn an_empty_table_says_so() {
        let text = "  VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\n  Total Samples:0, Total events handled time:0.00us.\n";
        let profile = &read_text(text)[0];
        assert!(profile.rows.is_empty());
        assert_eq!(profile.declared_samples, Some(0));
        assert!(profile.notes.iter().any(|n| n.contains("no rows")), "{:?}", profile.notes);
    }

    #[test]
    fn the_event_of_a_headerless_table_comes_from_its_names() {
        assert_eq!(event_of_name("0x70:POUT"), "IO Port Access");
        assert_eq!(event_of_name("0x830:W"), "MSR Access");
        assert_eq!(event_of_name("0x40000070:W"), "MSR Access");
        assert_eq!(event_of_name("0xfee00300:W"), "MMIO Access");
        assert_eq!(event_of_name("HLT"), "VM-EXIT");
    }
}
