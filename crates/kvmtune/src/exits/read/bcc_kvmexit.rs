//! bcc's `kvmexit` (tools/kvmexit.py in iovisor/bcc; `kvmexit-bpfcc` in Debian's bpfcc-tools):
//! a line `Display kvm exit reasons and statistics for CONTEXT` that ends ` after sleeping N
//! secs.` or `... Hit Ctrl-C to end.`, a column header of the thread columns it prints (`PID`
//! and `TID`, `TID`, `TIDS`, or none where it adds the threads up) before `KVM_EXIT_REASON` and
//! `COUNT`, then one row per thread and reason that occurred. Its first version, as its pull
//! request shows it, named the count column `STAT` and the reasons with the kernel's
//! `EXIT_REASON_` prefix. It runs on Intel only, so the reasons are VMX's; it counts every
//! `kvm_exit` of the threads it follows, so a table holds every reason they had.
//!
//! One profile per QEMU process (the `PID` column, where it prints one), each of its threads a
//! vCPU (only vCPU threads enter the guest); with a duration, counts per second too.

use std::collections::BTreeMap;

use crate::exits::model::{ExitProfile, ExitRow, Isa, saturating_sum};
use crate::exits::read::text::{Line, Pasted};
use crate::exits::read::{ExitParseError, Format};

pub const FORMAT: Format = Format { name: "bcc kvmexit", sniff, read };

/// The sentence kvmexit starts its output with (then ` for CONTEXT`, except in its first
/// version).
const BANNER: &str = "Display kvm exit reasons and statistics";

/// The columns a header line names before the reason: how many thread ids each row starts
/// with, and whether the first is the process (`PID TID`). `None` for any other line.
fn header(line: &Line) -> Option<(usize, bool)> {
    let words = line.words();
    let (last, rest) = words.split_last()?;
    let (reason, ids) = rest.split_last()?;
    if *reason != "KVM_EXIT_REASON" || !matches!(*last, "COUNT" | "STAT") {
        return None;
    }
    match ids {
        [] => Some((0, false)),
        ["TID"] | ["TIDS"] => Some((1, false)),
        ["PID", "TID"] | ["TGID", "PID"] => Some((2, true)),
        _ => None,
    }
}

fn sniff(pasted: &Pasted) -> bool {
    pasted.lines.iter().any(|l| header(l).is_some())
}

/// One row as kvmexit prints it: the thread ids, the reason, the count. The first row may carry
/// the `^C` a terminal echoed when the user stopped the count.
fn row(line: &Line, ids: usize) -> Result<(Vec<u64>, String, u64), &'static str> {
    let body = line.body.trim_start();
    let body = body.strip_prefix("^C").unwrap_or(body);
    let words: Vec<&str> = body.split_whitespace().collect();
    if words.len() != ids + 2 {
        return Err("not a thread, reason and count");
    }
    let threads: Option<Vec<u64>> = words[..ids].iter().map(|w| w.parse().ok()).collect();
    let threads = threads.ok_or("a thread id that is not a number")?;
    let count = words[ids + 1].parse().map_err(|_| "a count that is not a number")?;
    let reason = words[ids];
    let reason = reason.strip_prefix("EXIT_REASON_").unwrap_or(reason);
    Ok((threads, reason.to_string(), count))
}

/// Whether a line that is not a row still looks like one that went wrong (a thread id or a
/// reason in capitals first), rather than the prose after the table.
fn looks_like_row(line: &Line) -> bool {
    let words = line.words();
    let first = words.first().map_or("", |w| w.trim_start_matches("^C"));
    let reason_like = first.len() > 1
        && first.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '/');
    first.parse::<u64>().is_ok() || reason_like
}

/// The seconds of ` after sleeping N secs.` in the banner before line `before`, and the
/// banner's context (`all threads`, `PID 1273795`); Ctrl-C gives no duration.
fn banner(pasted: &Pasted, before: usize) -> (Option<f64>, Option<String>) {
    // Its words, however the paste spaced them.
    let Some(text) =
        pasted.lines[..before].iter().rev().take(3).map(|l| l.words().join(" ")).find(|t| t.contains(BANNER))
    else {
        return (None, None);
    };
    let after = &text[text.find(BANNER).unwrap_or(0) + BANNER.len()..];
    let after = after.strip_prefix(" for ").unwrap_or(after);
    if let Some((context, rest)) = after.split_once(" after sleeping ") {
        let seconds = rest.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()).filter(|s| *s > 0.0);
        return (seconds, Some(context.to_string()));
    }
    let context = after.split("...").next().unwrap_or(after).trim();
    (None, (!context.is_empty()).then(|| context.to_string()))
}

/// Counts of one process: by reason (with the line it first stands on), by thread in the order
/// threads first appear.
#[derive(Default)]
struct Process {
    threads: Vec<u64>,
    counts: BTreeMap<String, (u32, BTreeMap<usize, u64>)>,
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut profiles = Vec::new();
    let mut index = 0;
    while index < pasted.lines.len() {
        let Some((ids, by_process)) = header(&pasted.lines[index]) else {
            index += 1;
            continue;
        };
        let header_line = &pasted.lines[index];
        let (seconds, context) = banner(pasted, index);
        // In the order the processes first appear.
        let mut processes: Vec<(u64, Process)> = Vec::new();
        let mut warnings = Vec::new();
        index += 1;
        while let Some(line) = pasted.lines.get(index) {
            if !line.has_content() || header(line).is_some() {
                break;
            }
            match row(line, ids) {
                Ok((threads, reason, count)) => {
                    let (process, thread) = match (by_process, threads.as_slice()) {
                        (true, [process, thread]) => (*process, Some(*thread)),
                        (false, [thread]) => (0, Some(*thread)),
                        _ => (0, None),
                    };
                    let at = processes.iter().position(|(p, _)| *p == process).unwrap_or_else(|| {
                        processes.push((process, Process::default()));
                        processes.len() - 1
                    });
                    let entry = &mut processes[at].1;
                    let slot = thread.map_or(0, |thread| {
                        entry.threads.iter().position(|t| *t == thread).unwrap_or_else(|| {
                            entry.threads.push(thread);
                            entry.threads.len() - 1
                        })
                    });
                    let (_, per_thread) =
                        entry.counts.entry(reason).or_insert_with(|| (line.number, BTreeMap::new()));
                    let sum = per_thread.entry(slot).or_default();
                    *sum = sum.saturating_add(count);
                }
                Err(why) if looks_like_row(line) => warnings.push(pasted.skipped_row(line, why)),
                Err(_) => break,
            }
            index += 1;
        }
        for (process, counts) in &processes {
            let mut profile = ExitProfile::new("bcc kvmexit", "VM-EXIT");
            profile.isa = Isa::Vmx;
            profile.line = header_line.number;
            profile.duration_s = seconds;
            if by_process {
                let threads = counts.threads.len();
                let noun = if threads == 1 { "thread" } else { "threads" };
                profile.notes.push(format!("QEMU process {process}, {threads} vCPU {noun}"));
            } else if let Some(context) = &context {
                profile.notes.push(format!("kvmexit for {context}"));
            }
            // `-p PID` adds up the VM's threads; `-t TID` and `-p PID -v N` print one thread.
            let one_thread =
                context.as_deref().is_some_and(|c| c.starts_with("TID ") || c.contains(" VCPU "));
            if ids == 0 && !one_thread {
                profile
                    .notes
                    .push("the threads are added up: rates per vCPU are of the whole VM".to_string());
            }
            if seconds.is_none() {
                profile.notes.push(
                    "stopped with Ctrl-C: the seconds counted are not printed, so no rates".to_string(),
                );
            }
            profile.notes.extend(warnings.iter().cloned());
            let threads = counts.threads.len();
            profile.rows = counts
                .counts
                .iter()
                .map(|(reason, (line, by_thread))| {
                    let mut row = if threads > 0 {
                        let per_vcpu: Vec<u64> =
                            (0..threads).map(|t| by_thread.get(&t).copied().unwrap_or(0)).collect();
                        ExitRow::per_vcpu(reason.clone(), per_vcpu)
                    } else {
                        ExitRow::count_only(reason.clone(), saturating_sum(by_thread.values().copied()), 0)
                    };
                    row.line = *line;
                    row
                })
                .collect();
            profile.rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
            profiles.push(profile);
        }
    }
    Ok(profiles)
}

/// The texts below are written here in the layouts tools/kvmexit.py prints (its `print`
/// formats), not recorded: no kvmexit output is in the corpus, and kvm_exit does not fire on
/// this nested host, so kvmexit cannot be run here.
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<ExitProfile> {
        read(&Pasted::new("kvmexit.txt", text)).unwrap()
    }

    #[test]
    fn each_process_is_a_vm_and_each_thread_a_vcpu() {
        let text = "# kvmexit-bpfcc 10\n\
Display kvm exit reasons and statistics for all threads after sleeping 10 secs.\n\
PID      TID      KVM_EXIT_REASON                     COUNT\n\
4100     4120     HLT                                 900     \n\
4100     4120     MSR_WRITE                           3000    \n\
4100     4121     MSR_WRITE                           1000    \n\
5200     5230     EPT_MISCONFIG                       77      \n\
\n\
so the first VM writes MSRs\n";
        let profiles = parse(text);
        assert_eq!(profiles.len(), 2);
        let first = &profiles[0];
        assert_eq!((first.event.as_str(), first.isa, first.duration_s), ("VM-EXIT", Isa::Vmx, Some(10.0)));
        assert_eq!(first.rows[0].name, "MSR_WRITE");
        assert_eq!(first.rows[0].per_vcpu, [3000, 1000]);
        assert_eq!(first.rows[1].per_vcpu, [900, 0]);
        assert!(first.notes[0].contains("QEMU process 4100, 2 vCPU threads"), "{:?}", first.notes);
        assert_eq!(profiles[1].rows[0].count, 77);
        // Through the dispatcher too: the two VMs of one table are two profiles.
        let parsed = crate::exits::parse("kvmexit.txt", text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].notes[0], "QEMU process 5200, 1 vCPU thread");
    }

    /// Quoted in a mail reply, with tabs for spaces, CRLF line ends and in a code fence, as
    /// printed: the same profile.
    #[test]
    fn a_pasted_copy_reads_as_the_original() {
        let original = "Display kvm exit reasons and statistics for PID 77 and its all threads after sleeping 2 secs.\n\
TID      KVM_EXIT_REASON                     COUNT\n\
78       EPT_MISCONFIG                       9000    \n\
79       EPT_MISCONFIG                       8000    \n\
79       HLT                                 20      \n";
        let pasted: String = std::iter::once("```\r\n".to_string())
            .chain(
                original
                    .lines()
                    .map(|l| format!("> {}\r\n", l.split_whitespace().collect::<Vec<_>>().join("\t"))),
            )
            .chain(std::iter::once("```\r\nthat is all\r\n".to_string()))
            .collect();
        let rows = |text: &str| -> Vec<(String, u64, Vec<u64>, Option<f64>)> {
            parse(text)
                .iter()
                .flat_map(|p| {
                    p.rows.iter().map(|r| (r.name.clone(), r.count, r.per_vcpu.clone(), p.duration_s))
                })
                .collect()
        };
        assert_eq!(rows(&pasted), rows(original));
        assert_eq!(rows(original)[0], ("EPT_MISCONFIG".to_string(), 17000, vec![9000, 8000], Some(2.0)));
    }

    #[test]
    fn the_first_version_and_ctrl_c_read_too() {
        let text = "Display kvm exit reasons and statistics... Hit Ctrl-C to end.\n\
TGID     PID      KVM_EXIT_REASON                     STAT\n\
^C700  701  EXIT_REASON_IO_INSTRUCTION          19642   \n\
700  701  EXIT_REASON_HLT                     1447    \n";
        let profiles = parse(text);
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].rows[0].name, "IO_INSTRUCTION");
        assert_eq!(profiles[0].rows[0].count, 19642);
        assert_eq!(profiles[0].duration_s, None);
        assert!(profiles[0].notes.iter().any(|n| n.contains("no rates")));
    }

    #[test]
    fn added_up_threads_and_a_bad_row() {
        let text = "Display kvm exit reasons and statistics for PID 9 after sleeping 5 secs.\n\
KVM_EXIT_REASON                     COUNT\n\
MSR_WRITE                           13467\n\
HLT                                 5x60\n\
EPT_MISCONFIG                       264\n";
        let profiles = parse(text);
        let profile = &profiles[0];
        assert_eq!(profile.rows.iter().map(|r| r.count).collect::<Vec<_>>(), [13467, 264]);
        assert!(profile.rows[0].per_vcpu.is_empty());
        assert!(profile.notes.iter().any(|n| n.contains("kvmexit for PID 9")));
        assert!(profile.notes.iter().any(|n| n.contains("rates per vCPU are of the whole VM")));
        assert!(profile.notes.iter().any(|n| n.contains(":4: row left out")), "{:?}", profile.notes);
        // One vCPU of the VM: its own rates.
        let one = parse(
            "Display kvm exit reasons and statistics for PID 9 VCPU 0 after sleeping 4 secs.\nKVM_EXIT_REASON   COUNT\nHLT   1827\n",
        );
        assert_eq!(one[0].notes, ["kvmexit for PID 9 VCPU 0"]);
    }
}
