//! `kvm_stat` (Linux tools/kvm/kvm_stat/kvm_stat), in the three forms users paste:
//!
//! - **The screen** (`_refresh_body`): a headline (`kvm statistics - pid N (guest)`), the header
//!   `Event Total %Total CurAvg/s`, one row per event (`name total %total per-second`), child
//!   events (`kvm_exit(HLT)` under `kvm_exit`) two spaces deeper with their share of the parent,
//!   and a `Total` line that adds up every top-level event, exits or not.
//! - **The old screen** (`kvm statistics`, before the tracepoint header) and **`kvm_stat -1`**
//!   (`batch`): `name total per-second` triples, `-1` after a one-second sample. Copies of the
//!   old screen from documentation pages often have their whitespace collapsed, so it is read
//!   word by word.
//!
//! Each screen, listing or batch run in a paste is a profile of its own: a reply that quotes an
//! earlier snapshot and adds a new one holds two readings, which are never added up. Every row
//! keeps the per-second rate the poster looked at. Which rows are exits and which are events
//! (`kvm_entry`, `kvm_apic_accept_irq`, gauges) is the vocabulary's ([`crate::exits::reasons`]).

use crate::exits::model::{ExitProfile, ExitRow, RowKind};
use crate::exits::read::text::{Line, Pasted};
use crate::exits::read::{ExitParseError, Format, settle_isa};

pub const FORMAT: Format = Format { name: "kvm_stat", sniff, read };

const FORMAT_NAME: &str = "kvm_stat";
const EVENT: &str = "kvm_stat events";
/// The screen's column header (`'%-40s %10s%7s %8s' % ('Event', 'Total', '%Total', 'CurAvg/s')`).
const HEADER: [&str; 4] = ["Event", "Total", "%Total", "CurAvg/s"];

fn sniff(pasted: &Pasted) -> bool {
    pasted.has_line(&HEADER)
        || pasted.contains("kvm statistics")
        || pasted.contains("kvm_exit(")
        || batch_runs(pasted).next().is_some()
}

/// Screens, old listings and batch runs; a batch run inside a listing is the listing's, and
/// [`crate::exits::read::parse`] keeps the first table that claims a line.
fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut profiles = screens(pasted);
    profiles.extend(listings(pasted));
    profiles.extend(batch_runs(pasted));
    profiles.iter_mut().for_each(settle_isa);
    Ok(profiles)
}

fn new_profile(line: u32) -> ExitProfile {
    let mut profile = ExitProfile::new(FORMAT_NAME, EVENT);
    profile.line = line;
    profile
}

/// `kvm_exit(HLT)` is the `HLT` part of `kvm_exit`; other names stay as they are.
fn child_of_exit(name: &str) -> Option<&str> {
    name.strip_prefix("kvm_exit(").and_then(|r| r.strip_suffix(')'))
}

/// A row of `name` with its total and rate, its name and kind from the vocabulary. The
/// `kvm_exit(NAME)` children are the exits of reason NAME: `kvm_exit` split by reason, so they
/// are exit rows of their own (their parent is the total, not another reason).
pub(crate) fn event_row(name: &str, total: u64, rate: Option<f64>, line: u32) -> ExitRow {
    let mut row = match child_of_exit(name) {
        Some(reason) => {
            let mut row = ExitRow::count_only(reason.to_string(), total, line);
            row.kind = RowKind::Exit;
            row
        }
        None => ExitRow::count_only(name.to_string(), total, line),
    };
    row.rate_per_s = rate;
    row
}

/// A word that names an event: `kvm_exit`, `kvm_exit(HLT)`, `exit_instruction`, `halt_exits`.
fn is_event_name(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && word.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
}

/// A row that later, deeper-indented rows may belong to: its indentation, name and kind.
type Parent = (usize, String, RowKind);

/// The current screens: each header opens one, its `Total` line, a fence or the first line
/// that is not a row closes it. A screen whose every row so far was followed by an empty line
/// (a mail client that turned each line into a paragraph) goes on across the empty line to
/// its next row.
fn screens(pasted: &Pasted) -> Vec<ExitProfile> {
    let mut profiles = Vec::new();
    let mut current: Option<(ExitProfile, Vec<Parent>)> = None;
    // Whether each row of the current screen came with an empty line after it.
    let mut double_spaced = true;
    let mut previous_blank = false;
    let next_filled = next_filled_lines(&pasted.lines);
    for (index, line) in pasted.lines.iter().enumerate() {
        let words = line.words();
        let after_blank = std::mem::replace(&mut previous_blank, line.is_blank());
        if words == HEADER {
            profiles.extend(current.take().map(|(p, _)| p));
            current = Some((new_profile(line.number), Vec::new()));
            double_spaced = true;
            continue;
        }
        let Some((profile, parents)) = current.as_mut() else { continue };
        if line.is_blank() && profile.rows.is_empty() {
            continue;
        }
        if line.is_blank()
            && double_spaced
            && next_filled[index].is_some_and(|i| is_row_line(&pasted.lines[i]))
        {
            continue;
        }
        if line.fence || line.prompt || line.is_blank() {
            profiles.extend(current.take().map(|(p, _)| p));
            continue;
        }
        if !profile.rows.is_empty() && !after_blank {
            double_spaced = false;
        }
        if words.first() == Some(&"Total") {
            profile.declared_samples = words.get(1).and_then(|t| t.parse().ok());
            profiles.extend(current.take().map(|(p, _)| p));
            continue;
        }
        match screen_row(line, &words) {
            Ok(mut read) => {
                // A child is indented deeper than its parent.
                let indent = line.body.len() - line.body.trim_start().len();
                parents.retain(|(depth, _, _)| *depth < indent);
                // A part of another event; the parts of the total are events of their own.
                if let Some((_, parent, RowKind::Exit | RowKind::Event)) = parents.last() {
                    read.parent = Some(parent.clone());
                }
                parents.push((indent, read.name.clone(), read.kind));
                profile.rows.push(read);
            }
            Err(why) if is_garbled_row(&words) => profile.notes.push(pasted.skipped_row(line, why)),
            Err(_) => profiles.extend(current.take().map(|(p, _)| p)),
        }
    }
    profiles.extend(current.map(|(p, _)| p));
    profiles
}

/// A row with a stray word or a number missing: an event's name and numbers beside it. It
/// costs only itself, with a note.
fn is_garbled_row(words: &[&str]) -> bool {
    is_event_name(words[0]) && words.len() >= 3 && words[1..].iter().any(|w| w.parse::<f64>().is_ok())
}

/// For each line, the index of the first line at or after it that is not empty, found in one
/// pass from the end: a long run of empty lines is not scanned again from each of its lines.
fn next_filled_lines(lines: &[Line]) -> Vec<Option<usize>> {
    let mut next = vec![None; lines.len()];
    let mut filled = None;
    for (index, line) in lines.iter().enumerate().rev() {
        if !line.is_blank() {
            filled = Some(index);
        }
        next[index] = filled;
    }
    next
}

/// Whether `line` is a row of a screen (a garbled one too) or its `Total`.
fn is_row_line(line: &Line) -> bool {
    let words = line.words();
    !line.fence
        && !line.prompt
        && (words.first() == Some(&"Total") || screen_row(line, &words).is_ok() || is_garbled_row(&words))
}

/// `name total %total per-second`; the rate may be missing where no delta was seen yet.
fn screen_row(line: &Line, words: &[&str]) -> Result<ExitRow, &'static str> {
    let (name, numbers) = words.split_first().ok_or("an empty row")?;
    if !is_event_name(name) {
        return Err("no event name");
    }
    if !(2..=3).contains(&numbers.len()) {
        return Err("a row is a name, its total, its share and its rate per second");
    }
    let total: u64 = numbers[0].parse().map_err(|_| "the total is not a count")?;
    numbers[1].parse::<f64>().map_err(|_| "the share is not a number")?;
    let rate = match numbers.get(2) {
        Some(rate) => Some(rate.parse::<f64>().map_err(|_| "the rate is not a number")?),
        None => None,
    };
    Ok(event_row(name, total, rate, line.number))
}

/// The old `kvm statistics` screen: `name total per-second` triples read word by word, one
/// listing per `kvm statistics` heading, ended by the next heading or a fence. Prose between
/// the triples (the screen's own hint line) is passed over.
fn listings(pasted: &Pasted) -> Vec<ExitProfile> {
    let has_screen_header = pasted.has_line(&HEADER);
    let mut profiles = Vec::new();
    let mut words: Vec<(u32, &str)> = Vec::new();
    let mut start: Option<u32> = None;
    let flush = |start: Option<u32>, words: &mut Vec<(u32, &str)>, profiles: &mut Vec<ExitProfile>| {
        if let Some(start) = start {
            profiles.extend(triples(start, words));
        }
        words.clear();
    };
    for line in &pasted.lines {
        if line.fence {
            flush(start.take(), &mut words, &mut profiles);
            continue;
        }
        let mut line_words = line.body.split_whitespace().peekable();
        while let Some(word) = line_words.next() {
            if word == "kvm" && line_words.peek() == Some(&"statistics") {
                line_words.next();
                flush(start.take(), &mut words, &mut profiles);
                // The current screen has a headline too; its rows are read as a screen.
                if !has_screen_header {
                    start = Some(line.number);
                }
                continue;
            }
            if start.is_some() {
                words.push((line.number, word));
            }
        }
    }
    flush(start, &mut words, &mut profiles);
    profiles
}

/// The `name total rate` triples among `words`.
fn triples(start: u32, words: &[(u32, &str)]) -> Option<ExitProfile> {
    let mut profile = new_profile(start);
    let mut index = 0;
    while index < words.len() {
        let (line, word) = words[index];
        let total = words.get(index + 1).and_then(|(_, t)| t.parse::<u64>().ok());
        let rate = words.get(index + 2).and_then(|(_, t)| t.parse::<u64>().ok());
        match (is_event_name(word), total, rate) {
            (true, Some(total), Some(rate)) => {
                profile.rows.push(event_row(word, total, Some(rate as f64), line));
                index += 3;
            }
            _ => {
                // A name at the very end with its numbers missing: the copy was cut off.
                if is_event_name(word) && index + 3 > words.len() && word.contains('(') {
                    profile.truncated = true;
                }
                index += 1;
            }
        }
    }
    (!profile.rows.is_empty()).then_some(profile)
}

/// `kvm_stat -1` output: runs of `name total per-second` lines (at least two), each run a
/// profile, ended by any other line.
fn batch_runs<'p>(pasted: &'p Pasted) -> impl Iterator<Item = ExitProfile> + 'p {
    let mut runs: Vec<ExitProfile> = Vec::new();
    let mut current: Option<ExitProfile> = None;
    for line in &pasted.lines {
        let words = line.words();
        let parsed = match words.as_slice() {
            [name, total, rate] if is_event_name(name) => match (total.parse::<u64>(), rate.parse::<u64>()) {
                (Ok(total), Ok(rate)) => Some(event_row(name, total, Some(rate as f64), line.number)),
                _ => None,
            },
            _ => None,
        };
        match parsed {
            Some(read) => current.get_or_insert_with(|| new_profile(line.number)).rows.push(read),
            None => runs.extend(current.take()),
        }
    }
    runs.extend(current);
    // At least two lines, and a name of KVM's own among them: not any `word 1 2` list.
    runs.into_iter().filter(|run| {
        run.rows.len() >= 2 && run.rows.iter().any(|r| r.kind != RowKind::Exit || r.name.starts_with("kvm_"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Vec<ExitProfile> {
        read(&Pasted::new("t", text)).unwrap()
    }

    #[test]
    fn a_screen_ends_at_its_total_and_keeps_its_rates() {
        let text = "kvm statistics - pid 1 (vm)\n\n Event   Total %Total CurAvg/s\n kvm_entry  1133 20.5 80\n kvm_exit 1133 20.5 80\n kvm_msr 816 14.7 58\n Total 3082 218\n```\nAs you can see, 80 exits per second is nothing.\n";
        let profiles = read_text(text);
        assert_eq!(profiles.len(), 1);
        let profile = &profiles[0];
        assert_eq!(profile.rows.len(), 3);
        assert_eq!(profile.declared_samples, Some(3082));
        assert_eq!(profile.row("kvm_msr").unwrap().rate_per_s, Some(58.0));
        assert_eq!(profile.row("kvm_entry").unwrap().kind, RowKind::Event);
        assert_eq!(profile.row("kvm_exit").unwrap().kind, RowKind::Total);
    }

    #[test]
    fn a_stray_token_costs_one_row_with_its_line() {
        let text = " Event Total %Total CurAvg/s\n kvm_exit 100 50.0 10\n kvm_msr  G  2369\n kvm_pio 100 50.0 10\n Total 200 20\n";
        let profile = &read_text(text)[0];
        assert_eq!(profile.rows.len(), 2);
        assert!(profile.notes.iter().any(|n| n.contains("t:3")), "{:?}", profile.notes);
    }

    /// A screen as a mail client sent it, an empty line after every line (qemu-devel,
    /// 2020-03-27, "PCI device perf limitation", Message-ID
    /// <CAF_W8bf=+2fx0tsB8fYdDa-e2YjCRzMdodsKE9+hXx2qJCNQ0Q@mail.gmail.com>); the prose after
    /// the rows still ends it. The near miss: rows with no empty line between them end at the
    /// first empty line, and a row-shaped line after it is not theirs.
    #[test]
    fn double_spaced_rows_are_one_screen() {
        let text = "kvm statistics - summary\n\n\n\n Event                                         Total %Total CurAvg/s\n\n kvm_fpu                                    52166411   46.8  2773738\n\n kvm_userspace_exit                         26083186   23.4  1386869\n\n kvm_vcpu_wakeup                            25415616   22.8  1386869\n\n\n\nI tried to trace the kvm exit reason, but I get:\n\n kvm_pio 1 0.0 1\n";
        let profiles = read_text(text);
        assert_eq!(profiles.len(), 1);
        let names: Vec<&str> = profiles[0].rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["kvm_fpu", "kvm_userspace_exit", "kvm_vcpu_wakeup"]);
        assert_eq!(profiles[0].row("kvm_vcpu_wakeup").unwrap().rate_per_s, Some(1386869.0));
        // A garbled row between empty lines costs only itself.
        let garbled = text.replace(" kvm_userspace_exit  ", " kvm_userspace_exit G");
        let profile = &read_text(&garbled)[0];
        assert_eq!(profile.rows.len(), 2, "{:?}", profile.rows);
        assert_eq!(profile.notes.len(), 1, "{:?}", profile.notes);

        let single =
            " Event Total %Total CurAvg/s\n kvm_exit 100 50.0 10\n kvm_msr 100 50.0 10\n\n kvm_pio 7 1.0 1\n";
        let names: Vec<String> = read_text(single)[0].rows.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, ["kvm_exit", "kvm_msr"]);
    }

    #[test]
    fn two_snapshots_are_two_profiles() {
        let text = "> Event Total %Total CurAvg/s\n> kvm_exit 100 100.0 10\n> Total 100 10\n\nNow:\n\n Event Total %Total CurAvg/s\n kvm_exit 900 100.0 90\n Total 900 90\n";
        let profiles = read_text(text);
        assert_eq!(profiles.iter().map(|p| p.rows[0].count).collect::<Vec<_>>(), [100, 900]);
    }

    #[test]
    fn children_are_parts_of_their_parent_and_reasons_of_the_total() {
        let text = "   Event  Total %Total CurAvg/s\n   exit_instruction  276  100.0  12\n     instruction_diag_44  256  92.8  11\n   kvm_exit  300  100.0  12\n     kvm_exit(HLT)  256  85.3  11\n   Total  576  24\n";
        let profile = &read_text(text)[0];
        let diag = profile.row("instruction_diag_44").unwrap();
        assert_eq!(diag.parent.as_deref(), Some("exit_instruction"));
        assert!(!diag.is_exit());
        let hlt = profile.row("HLT").unwrap();
        assert_eq!((hlt.parent.as_deref(), hlt.kind), (None, RowKind::Exit));
    }

    #[test]
    fn batch_output_reads_with_rates() {
        let text = "$ kvm_stat -1\nkvm_entry                                     2000       200\nkvm_exit                                      2000       200\nkvm_exit(HLT)                                 1500       150\nkvm_pio                                        500        50\n";
        let profile = &read_text(text)[0];
        assert_eq!(profile.rows.len(), 4);
        assert_eq!(profile.row("HLT").unwrap().rate_per_s, Some(150.0));
    }
}
