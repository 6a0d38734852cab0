//! `kvmtune host` and `kvmtune vfio` for people: the plans as dry runs print them, what was made,
//! and the journals `status` lists. Names and `comm`s from the host are printed through
//! [`crate::values::escape::terminal`], so that no escape sequence reaches a terminal.

use std::fmt::Write as _;

use crate::hostchange::VmJournal;
use crate::hostchange::prepare::{PrepareApplied, PreparePlan};
use crate::hostchange::vfio::{BindApplied, BindPlan};
use crate::values::escape::{shell_line, terminal};

/// A prepare plan, as `host prepare` without `--apply` prints it.
pub fn prepare_plan(plan: &PreparePlan) -> String {
    let mut text = format!(
        "VM {}: CPUs {}, host keeps {} (cgroups: {})\nWould change, in this order (nothing is written without --apply):\n",
        terminal(&plan.vm),
        plan.cpus,
        plan.housekeeping,
        plan.layout.label()
    );
    for action in &plan.actions {
        let _ = writeln!(
            text,
            "  {}\n      why: {}; undo: {}",
            terminal(&action.describe().replace(" -> ", " → ")),
            terminal(&action.why),
            action.undo_text()
        );
    }
    if plan.actions.is_empty() {
        text += "  nothing: the host already gives the VM what it asks\n";
    }
    for note in &plan.left_alone {
        let _ = writeln!(text, "note: {}", terminal(note));
    }
    text
}

/// What `host prepare --apply` made.
pub fn prepare_applied(applied: &PrepareApplied) -> String {
    let mut text = format!(
        "prepared {}: {} change(s) made on CPUs {} (host keeps {}); undo with `{}`\n",
        terminal(&applied.vm),
        applied.made,
        applied.taken,
        applied.housekeeping,
        terminal(&shell_line(&["kvmtune", "host", "release", &applied.vm]))
    );
    if !applied.refused.is_empty() {
        let _ = writeln!(
            text,
            "refused by the kernel, left as they were ({}; managed IRQs cannot move):",
            applied.refused.len()
        );
        for (path, reason) in &applied.refused {
            let _ = writeln!(text, "  {}: {}", terminal(path), terminal(reason));
        }
    }
    for note in &applied.left_alone {
        let _ = writeln!(text, "note: {}", terminal(note));
    }
    text
}

/// The journals, as `host status` prints them.
pub fn status(journals: &[VmJournal]) -> String {
    if journals.is_empty() {
        return "nothing is prepared\n".to_string();
    }
    let mut text = String::new();
    for j in journals {
        let state = match (j.from_another_boot, j.complete) {
            (true, _) => "from an earlier boot: its changes are gone; release sets it aside",
            (false, true) => "applied",
            (false, false) => "INTERRUPTED: a prepare did not finish; `release` undoes what it did",
        };
        let refused = j.changes.iter().filter(|c| c.refused.is_some()).count();
        let _ = writeln!(
            text,
            "{}: {state}\n  CPUs taken from the host: {}; {} change(s), {refused} refused by the kernel; prepared by pid {}",
            terminal(&j.kind.label(&j.vm)),
            j.cpus,
            j.changes.len() - refused,
            j.pid
        );
    }
    text
}

/// A bind plan, as `vfio bind` without `--apply` prints it.
pub fn bind_plan(plan: &BindPlan) -> String {
    let mut text = format!("devices for VM {}: IOMMU group(s) {:?}\n", terminal(&plan.vm), plan.groups);
    for member in &plan.members {
        let reset = match member.reset_methods.is_empty() {
            true => "none".to_string(),
            false => member.reset_methods.join(","),
        };
        let _ = writeln!(
            text,
            "  {} class {} on {} -> vfio-pci (reset: {})",
            member.address,
            terminal(&member.class),
            terminal(member.driver.as_deref().unwrap_or("(no driver)")),
            terminal(&reset)
        );
    }
    text += "Would do, in this order (nothing is written without --apply; release undoes it backwards):\n";
    for action in &plan.actions {
        let _ = writeln!(text, "  {}\n      why: {}", terminal(&action.shell()), terminal(&action.why));
    }
    text
}

/// What `vfio bind --apply` handed over.
pub fn bind_applied(applied: &BindApplied) -> String {
    let addresses: Vec<String> = applied.addresses.iter().map(ToString::to_string).collect();
    format!(
        "bound for VM {}: {} on vfio-pci, group(s) {:?}; undo with `{}`\n",
        terminal(&applied.vm),
        addresses.join(", "),
        applied.groups,
        terminal(&shell_line(&["kvmtune", "vfio", "release", &applied.vm]))
    )
}
