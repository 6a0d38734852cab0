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
    let profiles = if has("Avg time") && has("Samples") {
        perf_classic(path, &lines)?
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

/// `Total Samples:70746, Total events handled time:1789115.74us.`
fn perf_footer(line: &str) -> Option<(u64, f64)> {
    let rest = line.trim().strip_prefix("Total Samples:")?;
    let (samples, time) = rest.split_once(',')?;
    let time =
        time.trim().strip_prefix("Total events handled time:")?.trim_end_matches('.').trim_end_matches("us");
    Some((samples.trim().parse().ok()?, time.parse().ok()?))
}

fn perf_classic(path: &str, lines: &[String]) -> Result<Vec<ExitProfile>, ExitParseError> {
    let mut profiles = Vec::new();
    let mut current: Option<ExitProfile> = None;
    let mut unknown_code: Option<(String, Isa)> = None;
    let mut wrapped_name: Option<String> = None;
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.contains("Samples") && trimmed.contains("Avg time") {
            if let Some(done) = current.take() {
                profiles.push(done);
            }
            let event = trimmed.split("Samples").next().unwrap_or("").trim().to_string();
            current = Some(ExitProfile {
                format: "perf kvm stat".into(),
                event: if event.is_empty() { "VM-EXIT".into() } else { event },
                isa: Isa::Unknown,
                rows: Vec::new(),
                declared_samples: None,
                declared_time_us: None,
                truncated: false,
                duration_s: None,
                notes: Vec::new(),
            });
            continue;
        }
        let Some(profile) = current.as_mut() else { continue };
        if let Some((samples, time)) = perf_footer(trimmed) {
            profile.declared_samples = Some(samples);
            profile.declared_time_us = Some(time);
            if let Some(done) = current.take() {
                profiles.push(done);
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with("Lost events") {
            continue;
        }
        if trimmed == "[..]" || trimmed == "..." {
            profile.truncated = true;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("unknown kvm exit code:") {
            let (code, isa) = rest.split_once(" on ").unwrap_or((rest, ""));
            let isa = match isa.trim() {
                "VMX" => Isa::Vmx,
                "SVM" => Isa::Svm,
                _ => Isa::Unknown,
            };
            unknown_code = Some((code.trim().to_string(), isa));
            continue;
        }
        // Strip the trailing `( +-  0.24% )` spread.
        let body = match trimmed.find("( +-") {
            Some(at) => trimmed[..at].trim_end(),
            None => trimmed,
        };
        let tokens: Vec<&str> = body.split_whitespace().collect();
        let starts_numeric =
            tokens.first().is_some_and(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()));
        if tokens.len() < 7 {
            // A name wrapped away from its numbers (mail clients do that), or the numbers.
            if tokens.len() == 1 && !starts_numeric {
                wrapped_name = Some(tokens[0].to_string());
                continue;
            }
            if !(starts_numeric && tokens.len() == 6 && wrapped_name.is_some()) {
                return Err(bad_row(path, index, line, trimmed, "a table row needs a name and six numbers"));
            }
        }
        let (name_tokens, values): (&[&str], &[&str]) =
            if tokens.len() == 6 { (&[], &tokens[..]) } else { tokens.split_at(tokens.len() - 6) };
        let mut name = if name_tokens.is_empty() {
            wrapped_name.take().unwrap_or_default()
        } else {
            name_tokens.join(" ")
        };
        wrapped_name = None;
        let count: u64 = number(values[0])
            .ok_or_else(|| bad_row(path, index, line, values[0], "sample count is not a number"))?;
        let us = |token: &str| -> Result<f64, ExitParseError> {
            if !token.ends_with("us") {
                return Err(bad_row(path, index, line, token, "time must be in us"));
            }
            number(token).ok_or_else(|| bad_row(path, index, line, token, "time is not a number"))
        };
        let (min, max, mean) = (us(values[3])?, us(values[4])?, us(values[5])?);
        if name == "UNKNOWN"
            && let Some((code, isa)) = unknown_code.take()
        {
            name = format!("UNKNOWN({code})");
            if profile.isa == Isa::Unknown {
                profile.isa = isa;
            }
        }
        profile.rows.push(ExitRow {
            name,
            count,
            time_us: Some(mean * count as f64),
            min_us: Some(min),
            max_us: Some(max),
            mean_us: Some(mean),
            line: index as u32 + 1,
            per_vcpu: Vec::new(),
        });
    }
    if let Some(done) = current.take() {
        profiles.push(done);
    }
    for profile in &mut profiles {
        if profile.isa == Isa::Unknown {
            let names: Vec<&str> = profile.rows.iter().map(|r| r.name.as_str()).collect();
            profile.isa = guess_isa(&names);
        }
    }
    Ok(profiles.into_iter().filter(|p| !p.rows.is_empty() || p.declared_samples.is_some()).collect())
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
