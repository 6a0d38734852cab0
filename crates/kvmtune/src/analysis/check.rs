//! Runs the VM rules over a config and turns findings into located diagnostics.

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::Workload;
use crate::analysis::fix::{Applicability, Fix};
use crate::analysis::vm_rules::{RuleContext, VM_RULES, VmRule};
pub(super) use crate::config::edit::ConfigEdit;
use crate::config::model::{SourceFormat, VmConfig, WindowsVersion};
use crate::host::HostFacts;
use crate::values::CpuSet;
use crate::values::{SourceText, Span};

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub rule: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub message: String,
    pub span: Option<Span>,
    /// 1-based, where `span` starts.
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub fix: Option<Fix>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub path: String,
    /// Fixes are applied automatically only to libvirt XML; for the other formats they are
    /// steps to take by hand.
    pub format: SourceFormat,
    pub diagnostics: Vec<Diagnostic>,
    /// Rules that need host facts and were not run because none were given.
    pub skipped_for_host: Vec<&'static str>,
    /// The config names no OS, so rules for Windows guests assumed one.
    pub assumed_windows: bool,
}

impl CheckReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == severity).count()
    }
}

/// What `check` runs with; the default is every rule, no host facts, a Windows guest whose
/// version and workload come from the config.
#[derive(Default)]
pub struct CheckOptions<'a> {
    pub host: Option<&'a HostFacts>,
    pub windows: Option<WindowsVersion>,
    /// What the VM is for; `None` takes it from the config ([`Workload::of_config`]).
    pub workload: Option<Workload>,
    /// The host's housekeeping CPUs, where the user states them (`--housekeeping`).
    pub housekeeping: Option<CpuSet>,
    /// Only these rules; empty = all. [`crate::analysis::rule::select_vm_rules`] makes the list
    /// from ids and names, and refuses unknown ones.
    pub select: Vec<&'static VmRule>,
}

pub fn check(config: &VmConfig, source: &SourceText, options: &CheckOptions) -> CheckReport {
    let context = RuleContext {
        config,
        host: options.host,
        windows: options.windows.or_else(|| config.windows_version()),
        workload: options.workload.unwrap_or_else(|| Workload::of_config(config)),
        housekeeping: options.housekeeping.as_ref(),
    };
    let selected =
        |rule: &VmRule| options.select.is_empty() || options.select.iter().any(|s| s.meta.id == rule.meta.id);
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut skipped_for_host = Vec::new();
    for rule in VM_RULES.iter().filter(|r| selected(r)) {
        let stand_in = rule.housekeeping_suffices && options.housekeeping.is_some();
        if rule.needs_host && options.host.is_none() && !stand_in {
            skipped_for_host.push(rule.meta.id);
            continue;
        }
        for finding in (rule.check)(&context) {
            let position = finding.span.map(|span| source.line_column(span.start));
            diagnostics.push(Diagnostic {
                rule: rule.meta.id,
                name: rule.meta.name,
                severity: finding.severity.unwrap_or(rule.meta.severity),
                title: rule.meta.title,
                message: finding.message,
                span: finding.span,
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
                fix: finding.fix,
            });
        }
    }
    // A `-cpu` in <qemu:commandline> replaces what libvirt generates from the XML: an edit of
    // the XML's CPU would change nothing, so it becomes a step after removing the override.
    if config.passthrough_args.iter().any(|arg| arg.option == "cpu") {
        for diagnostic in &mut diagnostics {
            if let Some(fix) = diagnostic.fix.as_mut().filter(|f| f.action.shapes_cpu_argument()) {
                *fix = Fix::manual(format!(
                    "{}, after removing the -cpu in <qemu:commandline> that overrides it (ARG001)",
                    fix.action.describe()
                ));
            }
        }
    }
    diagnostics.sort_by_key(|d| (d.span.map_or(usize::MAX, |s| s.start), d.rule));
    CheckReport {
        path: source.path.clone(),
        format: config.format,
        diagnostics,
        skipped_for_host,
        assumed_windows: options.windows.is_none() && config.os_id.is_none(),
    }
}

/// How often [`fix_until_stable`] re-checks and fixes again. A fix can make another rule
/// applicable (turning hv-stimer on makes the HPET pointless); the longest chain the rules have
/// today settles in three passes, so a fourth that still finds safe fixes means the fixes do
/// not converge, and that is reported rather than looped on.
pub const FIX_PASSES: usize = 4;

/// What `--fix` and `--diff` did to a libvirt XML file.
#[derive(Debug, Clone)]
pub struct FixOutcome {
    /// The file with every safe fix spliced in.
    pub text: String,
    /// How many fix actions were applied, over all passes.
    pub applied: usize,
    /// The check of the fixed text.
    pub report: CheckReport,
    /// False when safe fixes were still proposed after [`FIX_PASSES`] passes.
    pub converged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("{path}: --fix and --diff edit libvirt XML only; for this file the fixes are listed as steps")]
    NotLibvirt { path: String },
    #[error("applying the fixes")]
    Edit(#[from] crate::config::libvirt_edit::EditError),
    #[error("the fixed XML no longer reads; nothing was written")]
    Broken(#[source] crate::config::ConfigError),
}

/// Applies the safe fixes, checks again, and repeats until no safe fix is left or
/// [`FIX_PASSES`] passes have run. The result always reads back as libvirt XML: a fix that
/// broke the file is an error, never a result.
pub fn fix_until_stable(
    config: &VmConfig,
    source: &SourceText,
    options: &CheckOptions,
) -> Result<FixOutcome, FixError> {
    if config.format != SourceFormat::Libvirt {
        return Err(FixError::NotLibvirt { path: source.path.clone() });
    }
    let mut text = source.text.clone();
    let mut applied = 0;
    let mut report = check(config, source, options);
    for _ in 0..FIX_PASSES {
        let actions = safe_actions(&report);
        if actions.is_empty() {
            return Ok(FixOutcome { text, applied, report, converged: true });
        }
        text = crate::config::libvirt_edit::apply_actions(&text, &actions)?;
        applied += actions.len();
        let fixed = crate::config::libvirt::parse(&source.path, &text).map_err(FixError::Broken)?;
        report = check(&fixed, &SourceText::new(source.path.clone(), text.clone()), options);
    }
    let converged = safe_actions(&report).is_empty();
    Ok(FixOutcome { text, applied, report, converged })
}

/// The distinct safe fix actions of a report, in diagnostic order.
fn safe_actions(report: &CheckReport) -> Vec<ConfigEdit> {
    let mut actions: Vec<ConfigEdit> = Vec::new();
    for diagnostic in &report.diagnostics {
        if let Some(fix) = diagnostic.fix.as_ref().filter(|f| f.applicability == Applicability::Safe)
            && !actions.contains(&fix.action)
        {
            actions.push(fix.action.clone());
        }
    }
    actions
}

/// One config among many: its report, or why it could not be read.
#[derive(Debug)]
pub struct Checked {
    pub source: SourceText,
    pub result: Result<CheckReport, crate::config::ConfigError>,
}

/// Checks every `(name, text)` pair, in parallel on the machine's CPUs, and returns the
/// results in the order given, whatever order the threads finish in.
pub fn check_many(inputs: Vec<(String, String)>, options: &CheckOptions) -> Vec<Checked> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(inputs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<std::sync::Mutex<Option<Checked>>> = Vec::new();
    slots.resize_with(inputs.len(), || std::sync::Mutex::new(None));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, text)) = inputs.get(index) else { break };
                    let source = SourceText::new(name.clone(), text.clone());
                    let result =
                        crate::config::read(name, text).map(|config| check(&config, &source, options));
                    let checked = Checked { source, result };
                    if let Ok(mut slot) = slots[index].lock() {
                        *slot = Some(checked);
                    }
                }
            });
        }
    });
    slots.into_iter().filter_map(|slot| slot.into_inner().ok().flatten()).collect()
}

/// One line of the summary table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    pub vm: String,
    pub format: SourceFormat,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Findings whose fix `--fix` applies.
    pub fixable: usize,
}

/// What a check over many configs found, in numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub fixable: usize,
    /// Inputs that could not be read.
    pub unreadable: usize,
    /// The most frequent rules over the whole set, most frequent first: `(rule, count)`.
    pub top_rules: Vec<(&'static str, usize)>,
}

pub fn summarize(reports: &[&CheckReport], unreadable: usize) -> Summary {
    let rows: Vec<SummaryRow> = reports
        .iter()
        .map(|report| SummaryRow {
            vm: report.path.clone(),
            format: report.format,
            errors: report.count(Severity::Error),
            warnings: report.count(Severity::Warning),
            infos: report.count(Severity::Info),
            fixable: if report.format == SourceFormat::Libvirt {
                report
                    .diagnostics
                    .iter()
                    .filter(|d| d.fix.as_ref().is_some_and(|f| f.applicability == Applicability::Safe))
                    .count()
            } else {
                0
            },
        })
        .collect();
    let mut counts: std::collections::BTreeMap<&'static str, usize> = std::collections::BTreeMap::new();
    for diagnostic in reports.iter().flat_map(|r| &r.diagnostics) {
        *counts.entry(diagnostic.rule).or_default() += 1;
    }
    let mut top_rules: Vec<(&'static str, usize)> = counts.into_iter().collect();
    top_rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top_rules.truncate(3);
    Summary {
        errors: rows.iter().map(|r| r.errors).sum(),
        warnings: rows.iter().map(|r| r.warnings).sum(),
        infos: rows.iter().map(|r| r.infos).sum(),
        fixable: rows.iter().map(|r| r.fixable).sum(),
        unreadable,
        top_rules,
        rows,
    }
}
