//! Readers for exit statistics as users have them, told apart by their headers:
//!
//! - `perf kvm stat report` / `perf kvm stat live` (the classic layout, several tables per file,
//!   `--event=vmexit|ioport|mmio|msr`, `unknown kvm exit code` lines, rows elided as `[..]`,
//!   rows wrapped onto two lines by mail, `> ` quoting), layout per tools/perf/builtin-kvm.c;
//! - the newer perf layout (`Event name ... Mean Time (ns)`);
//! - `kvm_stat` screens and `-1` batch output, the current tracepoint table
//!   (`Event Total %Total CurAvg/s`) and the old `kvm statistics` listing, even with its
//!   whitespace collapsed; `-l` logs, whitespace or CSV;
//! - `virsh domstats --vcpu` and QMP `query-stats` JSON (KVM binary stats);
//! - kvmtune's own saved profiles (the JSON form of [`ExitProfile`]).
//!
//! Text that is none of them is an error at line 1; a row that is cut or garbled is an error at
//! its line and column.

use thiserror::Error;

use std::collections::BTreeMap;

use crate::exits::model::{ExitProfile, ExitRow, Isa, saturating_sum};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExitParseError {
    /// Not a format kvmtune reads.
    #[error("{path}:{line}:1: {message}")]
    Unrecognized { path: String, line: u32, message: String },
    /// A table row that cannot be read.
    #[error("{path}:{line}:{column}: {message}")]
    BadRow { path: String, line: u32, column: u32, message: String },
}

pub fn parse(path: &str, text: &str) -> Result<Vec<ExitProfile>, ExitParseError> {
    // Quoted mail (`> `) is unquoted first (columns in errors still count the quote); line
    // numbers stay those of the input.
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix('>') {
            Some(rest) => format!(" {}", rest).trim_end().to_string(),
            None => l.trim_end().to_string(),
        })
        .collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    let raw: Vec<&str> = text.lines().collect();
    let classic = perf_tokens(&raw).iter().any(|tokens| is_header_line(tokens));
    let profiles = if classic {
        perf_classic(path, &raw)?
    } else if has("Event name") && has("Mean Time (ns)") {
        perf_new(path, &lines)?
    } else if lines
        .iter()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Event", "Total", "%Total", "CurAvg/s"])
    {
        kvm_stat_table(path, &lines)?
    } else if has("kvm statistics") || has("kvm_exit(") {
        kvm_stat_listing(text)
    } else if text.trim_start().starts_with('{') || text.trim_start().starts_with('[') {
        // kvmtune's own saved profiles first (a profile, or a list of them), then QMP.
        if let Ok(profiles) = serde_json::from_str::<Vec<ExitProfile>>(text) {
            profiles
        } else if let Ok(profile) = serde_json::from_str::<ExitProfile>(text) {
            vec![profile]
        } else {
            qmp_query_stats(path, text)?
        }
    } else if lines.iter().any(|l| l.trim_start().starts_with("vcpu.") && l.contains('=')) {
        domstats(&lines)
    } else if let Some(profile) = kvm_stat_log(&lines) {
        vec![profile]
    } else {
        Vec::new()
    };
    if profiles.is_empty() {
        return Err(ExitParseError::Unrecognized {
            path: path.to_string(),
            line: 1,
            message: "not exit statistics kvmtune reads (perf kvm stat report/live, kvm_stat, virsh domstats --vcpu, QMP query-stats)".to_string(),
        });
    }
    Ok(profiles)
}

/// perf prints VMX names in capitals, SVM names in lower case; kvm_stat's own SVM table has
/// capitals too, but names that exist only on SVM give it away.
pub fn guess_isa(names: &[&str]) -> Isa {
    const VMX_ONLY: &[&str] = &[
        "EXTERNAL_INTERRUPT",
        "IO_INSTRUCTION",
        "EPT_VIOLATION",
        "EPT_MISCONFIG",
        "MSR_WRITE",
        "MSR_READ",
        "APIC_ACCESS",
        "APIC_WRITE",
        "EOI_INDUCED",
        "TPR_BELOW_THRESHOLD",
        "PREEMPTION_TIMER",
        "PAUSE_INSTRUCTION",
        "PENDING_INTERRUPT",
        "INTERRUPT_WINDOW",
        "EXCEPTION_NMI",
        "VMCALL",
        "CR_ACCESS",
    ];
    const SVM_ONLY: &[&str] = &[
        "npf",
        "io",
        "msr",
        "interrupt",
        "vintr",
        "hypercall",
        "avic_incomplete_ipi",
        "avic_unaccelerated_access",
        "NPF",
        "IOIO",
        "VMMCALL",
        "INTR",
        "VINTR",
        "CLGI",
        "STGI",
        "VMRUN",
        "INVLPGA",
        "CR0_SEL_WRITE",
        "EXCP_BASE",
        "FERR_FREEZE",
    ];
    const ARM64: &[&str] = &["DABT_LOW", "IABT_LOW", "WFx", "HVC64", "SYS64", "IRQ"];
    const RISCV: &[&str] =
        &["STORE_GUEST_PAGE_FAULT", "LOAD_GUEST_PAGE_FAULT", "VIRTUAL_INST_FAULT", "SUPERVISOR_SYSCALL"];
    let any = |set: &[&str]| names.iter().any(|n| set.contains(n));
    if any(VMX_ONLY) {
        Isa::Vmx
    } else if any(SVM_ONLY) {
        Isa::Svm
    } else if any(ARM64) {
        Isa::Arm64
    } else if any(RISCV) {
        Isa::RiscV
    } else {
        Isa::Unknown
    }
}

fn number<T: std::str::FromStr>(token: &str) -> Option<T> {
    token.trim_end_matches('%').trim_end_matches("us").parse().ok()
}

fn bad_row(path: &str, line_index: usize, line: &str, token: &str, what: &str) -> ExitParseError {
    let column = line.find(token).map_or(1, |i| line[..i].chars().count() + 1) as u32;
    ExitParseError::BadRow {
        path: path.to_string(),
        line: line_index as u32 + 1,
        column,
        message: format!("{what}: `{token}` in `{}`", line.trim()),
    }
}

/// One word of a perf table, where it stood in the input.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    /// 0-based line index.
    line: usize,
    /// 1-based column in the original line.
    column: u32,
}

/// The words of every line, with quote marks, code fences and shell prompts left out, `µs`
/// spelt `us`, and the deviation's parentheses split from what they are glued to
/// (`1.43us(+-0.18%)` reads as `1.43us ( +- 0.18% )`).
fn perf_tokens(raw: &[&str]) -> Vec<Vec<Token>> {
    raw.iter()
        .enumerate()
        .map(|(index, line)| {
            let (body, offset) = unquoted(line);
            let trimmed = body.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("$ ") || trimmed == "$" {
                return Vec::new();
            }
            let mut tokens = Vec::new();
            // Where the current word starts: its byte offset and its 1-based column.
            let mut start: Option<(usize, usize)> = None;
            let prefix_chars = line[..offset].chars().count();
            for (char_index, (byte, c)) in body.char_indices().enumerate() {
                if c.is_whitespace() {
                    if let Some((begin, column)) = start.take() {
                        push_split(&mut tokens, &body[begin..byte], index, column);
                    }
                } else if start.is_none() {
                    start = Some((byte, prefix_chars + char_index + 1));
                }
            }
            if let Some((begin, column)) = start {
                push_split(&mut tokens, &body[begin..], index, column);
            }
            tokens
        })
        .collect()
}

/// A line without its mail quoting (`> `, `> > `, `>>`), and where the rest starts.
fn unquoted(line: &str) -> (&str, usize) {
    let mut offset = 0;
    loop {
        let rest = &line[offset..];
        let spaces = rest.len() - rest.trim_start().len();
        if rest.trim_start().starts_with('>') {
            offset += spaces + 1;
        } else {
            return (rest, offset);
        }
    }
}

fn push_split(tokens: &mut Vec<Token>, word: &str, line: usize, column: usize) {
    let word = word.replace("µs", "us").replace("μs", "us");
    // `(+-0.18%)` and `1.43us(+-`: parentheses and `+-` become words of their own.
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

fn new_perf_profile(event: String) -> ExitProfile {
    ExitProfile {
        format: "perf kvm stat".into(),
        event,
        isa: Isa::Unknown,
        rows: Vec::new(),
        declared_samples: None,
        declared_time_us: None,
        truncated: false,
        duration_s: None,
        notes: Vec::new(),
    }
}

/// The classic `perf kvm stat report`/`live` tables, read by recognising each row's fields
/// (a name, a count, two percentages, three times with their unit, and a deviation in any
/// spacing) wherever the line breaks fall, rather than by columns counted from the line's end:
/// copies from slides, mail and forums change the spacing, wrap the lines, quote them and cut
/// the header short.
fn perf_classic(path: &str, raw: &[&str]) -> Result<Vec<ExitProfile>, ExitParseError> {
    let lines = perf_tokens(raw);
    let stream: Vec<&Token> = lines.iter().flatten().collect();
    let mut profiles: Vec<ExitProfile> = Vec::new();
    let mut current: Option<ExitProfile> = None;
    let mut unknown_code: Option<(String, Isa)> = None;
    let mut at = 0;
    let text_of = |i: usize| stream.get(i).map(|t| t.text.as_str());
    while at < stream.len() {
        let token = stream[at];
        let line_tokens = &lines[token.line];
        let starts_line = line_tokens.first().is_some_and(|first| std::ptr::eq(first, token));
        // A header opens a table (closing the one before).
        if starts_line && is_header_line(line_tokens) {
            if let Some(done) = current.take() {
                profiles.push(done);
            }
            let words: Vec<&str> = line_tokens.iter().map(|t| t.text.as_str()).collect();
            let before = words.iter().position(|w| *w == "Samples").unwrap_or(0);
            let mut event = words[..before].join(" ");
            at += line_tokens.len();
            // The rest of a wrapped header, and an event label on a line of its own.
            while let Some(next) = stream.get(at) {
                let next_line = &lines[next.line];
                let next_words: Vec<&str> = next_line.iter().map(|t| t.text.as_str()).collect();
                if next_words.iter().all(|w| is_header_word(w)) {
                    at += next_line.len();
                } else if event.is_empty() && is_event_label(&next_words) {
                    event = next_words.join(" ");
                    at += next_line.len();
                } else {
                    break;
                }
            }
            current = Some(new_perf_profile(if event.is_empty() { "VM-EXIT".into() } else { event }));
            continue;
        }
        let Some(profile) = current.as_mut() else {
            at += 1;
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
            let end = (at + 2..(at + 7).min(stream.len()))
                .find(|&i| text_of(i).is_some_and(|t| t.starts_with("time:")))
                .map_or(at + 2, |i| i + 1);
            at = end;
            if let Some(done) = current.take() {
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
        match perf_row(path, raw, &stream, at)? {
            Some((mut row, next)) => {
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
            None => {
                // Prose after a table that has rows (a reply below a quoted table) ends it.
                if let Some(done) = current.take() {
                    profiles.push(done);
                }
                at += lines[token.line].len().max(1);
            }
        }
    }
    if let Some(done) = current.take() {
        profiles.push(done);
    }
    for profile in &mut profiles {
        if profile.isa == Isa::Unknown {
            let names: Vec<&str> = profile.rows.iter().map(|r| r.name.as_str()).collect();
            profile.isa = guess_isa(&names);
        }
        check_totals(profile);
    }
    Ok(profiles.into_iter().filter(|p| !p.rows.is_empty() || p.declared_samples.is_some()).collect())
}

/// Rows against the totals line: a table whose rows do not add up says so, and a table cut
/// short says how many rows it kept.
fn check_totals(profile: &mut ExitProfile) {
    let counted = saturating_sum(profile.rows.iter().map(|r| r.count));
    match profile.declared_samples {
        Some(declared) if declared != counted && !profile.truncated => profile.notes.push(format!(
            "warning: the rows add up to {counted} samples, the totals line says {declared} (difference {}): rows may be missing or garbled",
            declared.abs_diff(counted)
        )),
        Some(declared) if profile.truncated => profile.notes.push(format!(
            "truncated table: {} rows read, {counted} of {declared} samples",
            profile.rows.len()
        )),
        None => profile.notes.push(format!(
            "no totals line: {} rows read, the table may be cut short",
            profile.rows.len()
        )),
        _ => {}
    }
}

/// One table row starting at `at`: `NAME COUNT PCT% PCT% MINus MAXus AVGus [( +- DEV% )]`.
/// `Ok(None)` where the words there are no row at all (prose), an error where they start like
/// one and go wrong.
fn perf_row(
    path: &str,
    raw: &[&str],
    stream: &[&Token],
    at: usize,
) -> Result<Option<(ExitRow, usize)>, ExitParseError> {
    let name = stream[at];
    let field = |offset: usize| stream.get(at + offset).copied();
    let fail = |token: &Token, what: &str| {
        let line = raw.get(token.line).copied().unwrap_or("");
        ExitParseError::BadRow {
            path: path.to_string(),
            line: token.line as u32 + 1,
            column: token.column,
            message: format!("{what}: `{}` in `{}`", token.text, line.trim()),
        }
    };
    let looks_numeric =
        |t: Option<&Token>| t.is_some_and(|t| t.text.chars().next().is_some_and(|c| c.is_ascii_digit()));
    // Prose: the word after the name is no number and no table field at all.
    let row_like = (1..=3).any(|o| field(o).is_some_and(|t| t.text.ends_with('%') || t.text.ends_with("us")));
    if !row_like {
        return Ok(None);
    }
    let Some(count_token) = field(1) else {
        return Err(fail(name, "a table row needs a name and six numbers"));
    };
    let count: u64 = match count_token.text.parse() {
        Ok(count) => count,
        Err(_) if !looks_numeric(Some(count_token)) && !count_token.text.ends_with('%') => {
            return Err(fail(count_token, "sample count is not a number"));
        }
        Err(_) => return Err(fail(count_token, "sample count is not a number")),
    };
    for offset in [2, 3] {
        let Some(token) = field(offset) else {
            return Err(fail(count_token, "a table row needs a name and six numbers"));
        };
        if !token.text.ends_with('%') || number::<f64>(&token.text).is_none() {
            return Err(fail(token, "a percentage is missing"));
        }
    }
    let mut times = [0.0f64; 3];
    for (slot, offset) in times.iter_mut().zip([4, 5, 6]) {
        let Some(token) = field(offset) else {
            return Err(fail(count_token, "a table row needs a name and six numbers"));
        };
        if !token.text.ends_with("us") {
            return Err(fail(token, "time must be in us"));
        }
        *slot = number(&token.text).ok_or_else(|| fail(token, "time is not a number"))?;
    }
    // The deviation: `( +- 0.24% )` in any spacing, its closing parenthesis possibly lost.
    let mut next = at + 7;
    if stream.get(next).is_some_and(|t| t.text == "(") {
        next += 1;
        while let Some(t) = stream.get(next) {
            if t.text == "+-" || (t.text.ends_with('%') && number::<f64>(&t.text).is_some()) {
                next += 1;
            } else {
                if t.text == ")" {
                    next += 1;
                }
                break;
            }
        }
    }
    let [min, max, mean] = times;
    Ok(Some((
        ExitRow {
            name: name.text.clone(),
            count,
            time_us: Some(mean * count as f64),
            min_us: Some(min),
            max_us: Some(max),
            mean_us: Some(mean),
            line: name.line as u32 + 1,
            per_vcpu: Vec::new(),
        },
        next,
    )))
}

fn perf_new(path: &str, lines: &[String]) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("Event name") {
            in_table = true;
            continue;
        }
        if !in_table || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = trimmed.split_whitespace().collect();
        // name samples sample% time_ns time% max_ns min_ns mean_ns
        if tokens.len() != 8 {
            return Err(bad_row(path, index, line, trimmed, "a row needs a name and seven numbers"));
        }
        let ns = |token: &str| -> Result<f64, ExitParseError> {
            number::<f64>(token)
                .map(|n| n / 1000.0)
                .ok_or_else(|| bad_row(path, index, line, token, "not a number"))
        };
        let count: u64 = number(tokens[1])
            .ok_or_else(|| bad_row(path, index, line, tokens[1], "sample count is not a number"))?;
        rows.push(ExitRow {
            name: tokens[0].to_string(),
            count,
            time_us: Some(ns(tokens[3])?),
            max_us: Some(ns(tokens[5])?),
            min_us: Some(ns(tokens[6])?),
            mean_us: Some(ns(tokens[7])?),
            line: index as u32 + 1,
            per_vcpu: Vec::new(),
        });
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let isa = guess_isa(&names);
    Ok(vec![ExitProfile {
        format: "perf kvm stat (new layout)".into(),
        event: "VM-EXIT".into(),
        isa,
        rows,
        declared_samples: None,
        declared_time_us: None,
        truncated: false,
        duration_s: None,
        notes: Vec::new(),
    }])
}

/// `kvm_exit(HLT)` -> `HLT`; other kvm_stat keys stay as they are.
fn kvm_stat_name(key: &str) -> String {
    key.strip_prefix("kvm_exit(")
        .and_then(|r| r.strip_suffix(')'))
        .map_or_else(|| key.to_string(), str::to_string)
}

fn kvm_stat_profile(rows: Vec<ExitRow>, declared: Option<u64>, truncated: bool) -> ExitProfile {
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let isa = guess_isa(&names);
    ExitProfile {
        format: "kvm_stat".into(),
        event: "kvm_stat events".into(),
        isa,
        rows,
        declared_samples: declared,
        declared_time_us: None,
        truncated,
        duration_s: None,
        notes: Vec::new(),
    }
}

fn kvm_stat_table(path: &str, lines: &[String]) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut rows = Vec::new();
    let mut declared = None;
    let mut in_table = false;
    for (index, line) in lines.iter().enumerate() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens == ["Event", "Total", "%Total", "CurAvg/s"] {
            in_table = true;
            continue;
        }
        if !in_table || tokens.is_empty() {
            continue;
        }
        if tokens[0] == "Total" {
            declared = tokens.get(1).and_then(|t| t.parse().ok());
            continue;
        }
        let count: u64 = tokens.get(1).and_then(|t| t.parse().ok()).ok_or_else(|| {
            bad_row(path, index, line, tokens.get(1).unwrap_or(&tokens[0]), "event total is not a number")
        })?;
        rows.push(ExitRow::count_only(kvm_stat_name(tokens[0]), count, index as u32 + 1));
    }
    Ok(vec![kvm_stat_profile(rows, declared, false)])
}

/// The old `kvm statistics` listing: `name total delta` triples, read token by token so that
/// copies whose whitespace was collapsed read the same; prose between rows is skipped.
fn kvm_stat_listing(text: &str) -> Vec<ExitProfile> {
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        tokens.extend(line.split_whitespace().map(|t| (line_index, t)));
    }
    let is_name = |t: &str| {
        t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '(' | ')'))
    };
    let mut rows = Vec::new();
    let mut index = 0;
    let mut truncated = false;
    while index < tokens.len() {
        let (line, token) = tokens[index];
        let total = tokens.get(index + 1).and_then(|(_, t)| t.parse::<u64>().ok());
        let delta = tokens.get(index + 2).and_then(|(_, t)| t.parse::<u64>().ok());
        match (is_name(token), total, delta) {
            (true, Some(total), Some(_)) => {
                rows.push(ExitRow::count_only(kvm_stat_name(token), total, line as u32 + 1));
                index += 3;
            }
            _ => {
                // A name at the very end with its numbers missing: the copy was cut off.
                if is_name(token) && index + 3 > tokens.len() && token.contains('(') {
                    truncated = true;
                }
                index += 1;
            }
        }
    }
    // The aggregate `kvm_exit` / debugfs `exits` row is the declared total, not a reason.
    let declared = rows.iter().find(|r| r.name == "kvm_exit" || r.name == "exits").map(|r| r.count);
    if rows.is_empty() {
        return Vec::new();
    }
    vec![kvm_stat_profile(rows, declared, truncated)]
}

/// `kvm_stat -l`: a banner of keys, then one line of deltas per interval (optionally prefixed
/// with a date and time), or the CSV variant. Each interval is one second.
fn kvm_stat_log(lines: &[String]) -> Option<ExitProfile> {
    let csv = lines.iter().find(|l| l.starts_with("timestamp,")).is_some();
    let mut keys: Vec<String> = Vec::new();
    let mut totals: Vec<u64> = Vec::new();
    let mut intervals = 0u64;
    for line in lines {
        let fields: Vec<&str> =
            if csv { line.split(',').collect() } else { line.split_whitespace().collect() };
        if fields.is_empty() {
            continue;
        }
        let is_banner = fields.iter().any(|f| f.starts_with("kvm_") || f.contains('('));
        if is_banner {
            keys = fields.iter().filter(|f| **f != "timestamp").map(|f| kvm_stat_name(f)).collect();
            totals.resize(keys.len(), 0);
            continue;
        }
        if keys.is_empty() {
            continue;
        }
        let numbers: Vec<u64> = fields.iter().filter_map(|f| f.parse().ok()).collect();
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
    let rows =
        keys.into_iter().zip(totals).map(|(name, count)| ExitRow::count_only(name, count, 0)).collect();
    let mut profile = kvm_stat_profile(rows, None, false);
    profile.format = "kvm_stat log".into();
    profile.duration_s = Some(intervals as f64);
    Some(profile)
}

/// `virsh domstats --vcpu`: `vcpu.<n>.<stat>.sum=<value>` lines, summed over vCPUs.
fn domstats(lines: &[String]) -> Vec<ExitProfile> {
    let mut totals: std::collections::BTreeMap<String, (u64, u32)> = std::collections::BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let Some((key, value)) = line.trim().split_once('=') else { continue };
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() == 4
            && parts[0] == "vcpu"
            && parts[3] == "sum"
            && let Ok(value) = value.parse::<u64>()
        {
            let entry = totals.entry(parts[2].to_string()).or_insert((0, index as u32 + 1));
            entry.0 = entry.0.saturating_add(value);
        }
    }
    if totals.is_empty() {
        return Vec::new();
    }
    let rows =
        totals.into_iter().map(|(name, (count, line))| ExitRow::count_only(name, count, line)).collect();
    let declared = None;
    let mut profile = kvm_stat_profile(rows, declared, false);
    profile.format = "virsh domstats".into();
    profile.event = "KVM vCPU stats".into();
    vec![profile]
}

/// QMP `query-stats` (`{"return": [{"provider": "kvm", "stats": [{"name", "value"}]}]}`):
/// cumulative counters summed over vCPUs; histograms are left out.
fn qmp_query_stats(path: &str, text: &str) -> Result<Vec<ExitProfile>, ExitParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ExitParseError::BadRow {
        path: path.to_string(),
        line: e.line() as u32,
        column: e.column() as u32,
        message: format!("not JSON: {e}"),
    })?;
    let entries = value.get("return").unwrap_or(&value);
    let stats = vcpu_stats(entries, &[]);
    if stats.is_empty() {
        return Ok(Vec::new());
    }
    let rows = stats
        .into_iter()
        .map(|(name, per_vcpu)| ExitRow {
            per_vcpu: per_vcpu.clone(),
            ..ExitRow::count_only(name, saturating_sum(per_vcpu.into_iter()), 0)
        })
        .collect();
    let mut profile = kvm_stat_profile(rows, None, false);
    profile.format = "QMP query-stats".into();
    profile.event = "KVM vCPU stats".into();
    Ok(vec![profile])
}

/// The integer statistics of a `query-stats` reply (`[{"provider", "qom-path", "stats": [{"name",
/// "value"}]}]`), per vCPU: in the order of `qom_paths` where given, else in order of
/// appearance. Histograms and flags are left out.
pub fn vcpu_stats(entries: &serde_json::Value, qom_paths: &[&str]) -> BTreeMap<String, Vec<u64>> {
    let mut order: Vec<String> = qom_paths.iter().map(|p| p.to_string()).collect();
    let mut stats: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in entries.as_array().into_iter().flatten() {
        let path = entry.get("qom-path").and_then(|p| p.as_str()).unwrap_or("").to_string();
        let index = match order.iter().position(|p| *p == path) {
            Some(index) => index,
            None => {
                order.push(path);
                order.len() - 1
            }
        };
        for stat in entry.get("stats").and_then(|s| s.as_array()).into_iter().flatten() {
            if let (Some(name), Some(value)) =
                (stat.get("name").and_then(|n| n.as_str()), stat.get("value").and_then(|v| v.as_u64()))
            {
                let per_vcpu = stats.entry(name.to_string()).or_default();
                if per_vcpu.len() <= index {
                    per_vcpu.resize(index + 1, 0);
                }
                per_vcpu[index] = per_vcpu[index].saturating_add(value);
            }
        }
    }
    for per_vcpu in stats.values_mut() {
        per_vcpu.resize(order.len(), 0);
    }
    stats
}
