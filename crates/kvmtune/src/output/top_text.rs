//! `kvmtune top --once`: one plain-text snapshot of every VM, for scripts and tests; the same
//! columns as the full-screen view.

use std::fmt::Write;

use crate::host::HostFacts;
use crate::hostchange::{JournalKind, VmJournal};
use crate::live::VmView;
use crate::values::escape::terminal;

/// The host line: what decides how a VM's exits should look.
pub fn host_line(host: &HostFacts, journals: &[VmJournal]) -> String {
    let apic = match host.kvm.apic_virtualization.known() {
        Some(apic) => format!("{} {}", apic.kind, if apic.enabled { "on" } else { "OFF" }),
        None => "APICv/AVIC unknown".to_string(),
    };
    let isolated: Vec<std::borrow::Cow<'_, str>> = journals
        .iter()
        .filter(|j| j.kind == JournalKind::Host && j.complete && !j.from_another_boot)
        .map(|j| terminal(&j.vm))
        .collect();
    let isolation = match isolated.is_empty() {
        true => "no VM isolated by kvmtune host".to_string(),
        false => format!("isolated by kvmtune host: {}", isolated.join(", ")),
    };
    format!("host: {apic}; {isolation}")
}

fn rate(per_s: f64) -> String {
    match per_s {
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e4 => format!("{:.0}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// The diagnosis column: the top finding's rule and title, or why the VM could not be read.
pub fn diagnosis(view: &VmView) -> String {
    if let Some(error) = &view.error {
        return format!("cannot read: {}", terminal(error));
    }
    match view.findings.first() {
        Some(finding) => format!("{} {}: {}", finding.rule, finding.severity.label(), finding.title),
        None => "-".to_string(),
    }
}

pub fn busiest(view: &VmView) -> String {
    view.busiest().map_or("-".to_string(), |(kind, per_s)| format!("{kind} {}/s", rate(*per_s)))
}

pub fn halt_poll(view: &VmView) -> String {
    view.halt_poll_success.map_or("-".to_string(), |share| format!("{:.0}%", share * 100.0))
}

/// One table row per VM, busiest first.
pub fn render(views: &[VmView], host_line: &str, interval_s: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvmtune top: {} VM(s), rates over {interval_s:.1} s; {host_line}", views.len());
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>5} {:>9} {:<16} {:>9}  diagnosis",
        "VM", "PID", "vCPUs", "exits/s", "busiest", "halt-poll"
    );
    let mut order: Vec<&VmView> = views.iter().collect();
    order.sort_by(|a, b| b.exits_per_s.total_cmp(&a.exits_per_s).then(a.name.cmp(&b.name)));
    for view in order {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>5} {:>9} {:<16} {:>9}  {}",
            terminal(&view.name),
            view.pid,
            view.vcpus,
            rate(view.exits_per_s),
            busiest(view),
            halt_poll(view),
            diagnosis(view)
        );
    }
    if views.is_empty() {
        out.push_str("no QEMU/KVM VM runs on this host\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors_reach_the_terminal_escaped() {
        let view = VmView {
            name: "evil\u{1b}]0;owned\u{7}".to_string(),
            pid: 1,
            vcpus: 1,
            exits_per_s: 0.0,
            kinds: Vec::new(),
            per_vcpu: Vec::new(),
            halt_poll_success: None,
            findings: Vec::new(),
            error: Some("monitor said \u{1b}[2J".to_string()),
        };
        let text = render(&[view], "host: test", 1.0);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("evil\\x1b]0;owned\\x07"), "{text}");
    }
}
