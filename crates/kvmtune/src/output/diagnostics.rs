//! `kvmtune check` output: rustc-style text for people, JSON for tools, SARIF 2.1.0 for CI
//! systems that annotate code.

use std::fmt::Write;

use crate::analysis::Severity;
use crate::analysis::check::{CheckReport, Diagnostic};
use crate::analysis::fix::Applicability;
use crate::analysis::rule::Rule;
use crate::analysis::vm_rules::VM_RULES;
use crate::config::model::SourceFormat;
use crate::values::SourceText;
use crate::values::text::{agree, plural};

pub fn render_text(report: &CheckReport, source: &SourceText) -> String {
    let mut out = String::new();
    let fixable = report.format == SourceFormat::Libvirt;
    for diagnostic in &report.diagnostics {
        render_one(&mut out, diagnostic, source, fixable);
    }
    let _ = writeln!(out, "{}", summary(report));
    out
}

/// `path:line:column: severity[rule] message`, the compiler-style one-line form.
pub fn one_line(diagnostic: &Diagnostic, path: &str) -> String {
    format!(
        "{path}:{}:{}: {}[{}] {}",
        diagnostic.line.unwrap_or(0),
        diagnostic.column.unwrap_or(0),
        diagnostic.severity.label(),
        diagnostic.rule,
        diagnostic.message
    )
}

fn render_one(out: &mut String, diagnostic: &Diagnostic, source: &SourceText, fixable: bool) {
    let _ = writeln!(out, "{}[{}]: {}", diagnostic.severity.label(), diagnostic.rule, diagnostic.message);
    if let (Some(span), Some(line), Some(column)) = (diagnostic.span, diagnostic.line, diagnostic.column) {
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "{pad}--> {}:{line}:{column}", source.path);
        let _ = writeln!(out, "{pad} |");
        let text = source.line_text(line);
        let start = (column as usize).saturating_sub(1);
        let line_chars = text.chars().count();
        let span_chars = source
            .text
            .get(span.start..span.end)
            .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
        let width = span_chars.clamp(1, line_chars.saturating_sub(start).max(1));
        let (shown, start, width) = excerpt(text, start, width);
        let _ = writeln!(out, "{line} | {shown}");
        let _ = writeln!(out, "{pad} | {}{} {}", " ".repeat(start), "^".repeat(width), diagnostic.title);
        let _ = writeln!(out, "{pad} |");
    }
    let indent = " ".repeat(diagnostic.line.map_or(0, |l| l.to_string().len()));
    if let Some(fix) = &diagnostic.fix {
        let kind = match fix.applicability {
            Applicability::Safe if fixable => "fix (applied by --fix)",
            Applicability::Unsafe if fixable => "fix (review; not applied by --fix)",
            _ => "fix",
        };
        let _ = writeln!(out, "{indent} = {kind}: {}", fix.action.describe());
    }
    let _ = writeln!(out, "{indent} = note: `kvmtune explain {}` says why", diagnostic.rule);
    let _ = writeln!(out);
}

/// The most of a source line shown: a one-line document of megabytes would otherwise be
/// printed whole for each finding.
const EXCERPT_CHARS: usize = 120;
/// Of those, how many stand before the span.
const EXCERPT_LEAD: usize = 30;

/// What of `line` to show for a span of `width` characters at `start`: at most
/// [`EXCERPT_CHARS`] around it, cut ends marked `…`, control characters shown as `�` (they
/// would act on the terminal, and one character each keeps the caret under its place); with the
/// span's start and width in what is shown.
fn excerpt(line: &str, start: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| {
            if c == '\t' {
                ' '
            } else if c.is_control() {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if chars.len() <= EXCERPT_CHARS {
        return (chars.into_iter().collect(), start, width);
    }
    let from = start.saturating_sub(EXCERPT_LEAD).min(chars.len().saturating_sub(EXCERPT_CHARS));
    let to = (from + EXCERPT_CHARS).min(chars.len());
    let mut shown = String::new();
    let mut offset = 0;
    if from > 0 {
        shown.push('…');
        offset = 1;
    }
    shown.extend(&chars[from..to]);
    if to < chars.len() {
        shown.push('…');
    }
    let start_shown = start - from + offset;
    let width_shown = width.min(to.saturating_sub(start)).max(1);
    (shown, start_shown, width_shown)
}

pub fn summary(report: &CheckReport) -> String {
    // "info" is a mass noun: 0 info, 3 info.
    let count = |severity, word: &str| {
        let n = report.count(severity);
        if severity == Severity::Info { format!("{n} {word}") } else { plural(n, word) }
    };
    let fixable = report
        .diagnostics
        .iter()
        .filter(|d| d.fix.as_ref().is_some_and(|f| f.applicability == Applicability::Safe))
        .count();
    let fix_note = if report.format == SourceFormat::Libvirt {
        format!("{fixable} fixable with --fix")
    } else {
        "fixes are applied automatically to libvirt XML only; here they are steps to take by hand".to_string()
    };
    let mut line = format!(
        "{}: {}, {}, {}; {fix_note}",
        report.path,
        count(Severity::Error, "error"),
        count(Severity::Warning, "warning"),
        count(Severity::Info, "info"),
    );
    if !report.skipped_for_host.is_empty() {
        let _ = write!(
            line,
            "\n{} {} host facts and {} skipped ({}): give --host live, --host-root DIR or --host-json FILE",
            plural(report.skipped_for_host.len(), "rule"),
            agree(report.skipped_for_host.len(), "needs", "need"),
            agree(report.skipped_for_host.len(), "was", "were"),
            report.skipped_for_host.join(", ")
        );
    }
    if report.assumed_windows {
        line.push_str(
            "\nthe config names no guest OS; it was checked as a Windows guest (--windows to say which)",
        );
    }
    line
}

pub fn render_json(report: &CheckReport) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or(serde_json::Value::Null)
}

/// SARIF 2.1.0 (OASIS): one run, the rule registry as the driver's rules, one result per
/// diagnostic.
pub fn render_sarif(reports: &[CheckReport]) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = VM_RULES
        .iter()
        .map(|rule| {
            let meta = &rule.meta;
            serde_json::json!({
                "id": meta.id,
                "name": meta.name,
                "shortDescription": { "text": meta.title },
                "fullDescription": { "text": meta.explanation },
                "help": { "text": format!("{} (source: {})", meta.fix, meta.source) },
                "defaultConfiguration": { "level": sarif_level(meta.severity) },
                "properties": { "category": meta.category, "needsHost": rule.needs_host },
            })
        })
        .collect();
    // One artifact per file checked; each result points at its own by index.
    let artifacts: Vec<serde_json::Value> =
        reports.iter().map(|report| serde_json::json!({ "location": { "uri": report.path } })).collect();
    let results: Vec<serde_json::Value> = reports
        .iter()
        .enumerate()
        .flat_map(|(artifact, report)| {
            report.diagnostics.iter().map(move |d| {
                let mut result = serde_json::json!({
                    "ruleId": d.rule,
                    "level": sarif_level(d.severity),
                    "message": { "text": d.message },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": { "uri": report.path, "index": artifact },
                            "region": { "startLine": d.line.unwrap_or(1), "startColumn": d.column.unwrap_or(1) },
                        }
                    }],
                });
                if let Some(fix) = &d.fix {
                    result["properties"] = serde_json::json!({ "fix": fix.action.describe(), "applicability": fix.applicability });
                }
                result
            })
        })
        .collect();
    serde_json::json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": { "driver": { "name": "kvmtune", "version": env!("CARGO_PKG_VERSION"), "rules": rules } },
            "artifacts": artifacts,
            "results": results,
        }],
    })
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The table that ends a check over many configs: one row per VM, the totals, and the three
/// most frequent rules.
pub fn render_summary(summary: &crate::analysis::check::Summary) -> String {
    let width = summary.rows.iter().map(|r| r.vm.chars().count()).max().unwrap_or(2).max(2);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<8} {:>6} {:>8} {:>6} {:>8}",
        "VM", "format", "errors", "warnings", "infos", "fixable"
    );
    for row in &summary.rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:<8} {:>6} {:>8} {:>6} {:>8}",
            row.vm,
            format_label(row.format),
            row.errors,
            row.warnings,
            row.infos,
            row.fixable
        );
    }
    let _ = writeln!(
        out,
        "{:<width$}  {:<8} {:>6} {:>8} {:>6} {:>8}",
        format!("{} VMs", summary.rows.len()),
        "",
        summary.errors,
        summary.warnings,
        summary.infos,
        summary.fixable
    );
    if summary.unreadable > 0 {
        let _ = writeln!(out, "{} input(s) could not be read (above)", summary.unreadable);
    }
    if !summary.top_rules.is_empty() {
        let top: Vec<String> = summary.top_rules.iter().map(|(rule, n)| format!("{rule} ({n})")).collect();
        let _ = writeln!(out, "most frequent: {}", top.join(", "));
    }
    out
}

fn format_label(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Libvirt => "libvirt",
        SourceFormat::QemuArgv => "qemu",
        SourceFormat::Proxmox => "proxmox",
    }
}

/// `kvmtune explain ID`: one rule of any kind in full.
pub fn explain(rule: Rule) -> String {
    let meta = rule.meta();
    format!(
        "{id} {name} ({kind} rule, {category}, {severity}{host})\n\n{title}\n\n{explanation}\n\n\
         Example: {example}\nFix: {fix} ({safety})\nSource: {source}\nReported by: {command}\n",
        id = meta.id,
        name = meta.name,
        kind = rule.kind().label(),
        category = meta.category.label(),
        severity = meta.severity.label(),
        host = if rule.needs_host() { ", needs host facts" } else { "" },
        title = meta.title,
        explanation = wrap(meta.explanation, 96),
        example = meta.example,
        fix = meta.fix,
        safety = fix_safety_label(meta.fix_safety),
        source = meta.source,
        command = rule.kind().command(),
    )
}

fn fix_safety_label(safety: Applicability) -> &'static str {
    match safety {
        Applicability::Safe => "safe: `check --fix` applies it",
        Applicability::Unsafe => "changes what the guest sees: shown, never applied by --fix",
        Applicability::Manual => "a step for you to take",
    }
}

/// `kvmtune rules`: every rule of every kind, one line each.
pub fn rules_table() -> String {
    let mut out = String::new();
    for rule in crate::analysis::rule::all() {
        let meta = rule.meta();
        let _ = writeln!(
            out,
            "{:<8} {:<7} {:<8} {:<30} {}{}",
            meta.id,
            rule.kind().label(),
            meta.severity.label(),
            meta.name,
            meta.title,
            if rule.needs_host() { " [host]" } else { "" }
        );
    }
    out
}

fn wrap(text: &str, width: usize) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_clipped_around_the_span() {
        let line = format!("{}<hpet/>{}", "a".repeat(100_000), "b".repeat(100_000));
        let (shown, start, width) = excerpt(&line, 100_000, 7);
        assert_eq!(shown.chars().count(), EXCERPT_CHARS + 2);
        assert_eq!(shown.chars().skip(start).take(width).collect::<String>(), "<hpet/>");
        let (short, start, width) = excerpt("<a>\u{1b}[31m</a>", 0, 3);
        assert_eq!((short.as_str(), start, width), ("<a>\u{fffd}[31m</a>", 0, 3));
    }
}
