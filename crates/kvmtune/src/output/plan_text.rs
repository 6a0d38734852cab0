//! `kvmtune tune`'s plan as text: each decision with its reason and source, host-wide first,
//! then per VM.

use std::fmt::Write as _;

use crate::analysis::planner::{Decision, Plan};

pub fn render(plan: &Plan, host_source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvmtune tune: {} {} on {host_source}", plan.windows, plan.workload.label());
    let _ = writeln!(out);
    let _ = writeln!(out, "host");
    for decision in &plan.decisions {
        render_decision(&mut out, decision);
    }
    for vm in &plan.vms {
        let _ = writeln!(out);
        let _ = writeln!(out, "VM {}: {} vCPUs, {} MiB", vm.name, vm.vcpus, vm.memory_mib);
        for decision in &vm.decisions {
            render_decision(&mut out, decision);
        }
    }
    out
}

fn render_decision(out: &mut String, decision: &Decision) {
    let _ = writeln!(out, "  {:<14} {}", decision.topic, decision.choice);
    let _ = writeln!(out, "  {:<14}   why: {}", "", decision.reason);
    let _ = writeln!(out, "  {:<14}   source: {}", "", decision.source);
}
