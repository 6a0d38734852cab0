//! Runs the VM rules over a config and turns findings into located diagnostics.

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::Fix;
use crate::analysis::vm_rules::{RuleContext, VM_RULES, VmRule, Workload};
use crate::config::model::{SourceFormat, VmConfig, WindowsVersion};
use crate::config::span::{SourceText, Span};
use crate::host::HostFacts;

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

pub struct CheckOptions<'a> {
    pub host: Option<&'a HostFacts>,
    pub windows: Option<WindowsVersion>,
    pub workload: Workload,
    /// Only these rules (ids or names); empty = all.
    pub select: Vec<String>,
}

pub fn check(config: &VmConfig, source: &SourceText, options: &CheckOptions) -> CheckReport {
    let context = RuleContext {
        config,
        host: options.host,
        windows: options.windows.or_else(|| config.windows_version()),
        workload: options.workload,
    };
    let selected = |rule: &VmRule| {
        options.select.is_empty()
            || options.select.iter().any(|s| s.eq_ignore_ascii_case(rule.id) || *s == rule.name)
    };
    let mut diagnostics = Vec::new();
    let mut skipped_for_host = Vec::new();
    for rule in VM_RULES.iter().filter(|r| selected(r)) {
        if rule.needs_host && options.host.is_none() {
            skipped_for_host.push(rule.id);
            continue;
        }
        for finding in (rule.check)(&context) {
            let position = finding.span.map(|span| source.line_column(span.start));
            diagnostics.push(Diagnostic {
                rule: rule.id,
                name: rule.name,
                severity: finding.severity.unwrap_or(rule.severity),
                title: rule.title,
                message: finding.message,
                span: finding.span,
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
                fix: finding.fix,
            });
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
