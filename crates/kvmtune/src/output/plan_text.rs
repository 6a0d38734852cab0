//! `kvmtune tune`'s plan as text: each decision with its reason and source, host-wide first,
//! then per VM.

use std::fmt::Write as _;

use crate::analysis::placement::host_cores;
use crate::analysis::planner::{Decision, Plan, VmPlan};
use crate::host::HostFacts;

pub fn render(plan: &Plan, host: &HostFacts, host_source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvmtune tune: {} {} on {host_source}", plan.windows, plan.workload.label());
    let _ = writeln!(out);
    let _ = writeln!(out, "host");
    for decision in &plan.decisions {
        render_decision(&mut out, decision);
    }
    render_shares(&mut out, plan, host);
    for vm in &plan.vms {
        let _ = writeln!(out);
        let _ = writeln!(out, "VM {}: {} vCPUs, {} MiB", vm.name, vm.vcpus, vm.memory_mib);
        for decision in &vm.decisions {
            render_decision(&mut out, decision);
        }
        render_host_side(&mut out, vm);
    }
    out
}

/// The `kvmtune host prepare` line that gives the host side of this VM's plan: its CPUs off
/// the host's tasks and IRQs, its hugepages, and the governor where the host runs a slow one.
fn render_host_side(out: &mut String, vm: &VmPlan) {
    let line = vm.host_side.prepare_command(&vm.name);
    let _ = writeln!(out, "  {:<14} {line}", "host side");
    let _ = writeln!(
        out,
        "  {:<14}   why: host tasks, kernel threads, IRQs and workqueues off the VM's CPUs while it runs; run it at VM start (or from the libvirt hook) and `{}` at stop; without --apply it prints every write",
        "",
        crate::values::escape::shell_line(&["kvmtune", "host", "release", vm.name.as_str()])
    );
}

fn render_decision(out: &mut String, decision: &Decision) {
    let _ = writeln!(out, "  {:<14} {}", decision.topic, decision.choice);
    let _ = writeln!(out, "  {:<14}   why: {}", "", decision.reason);
    let _ = writeln!(out, "  {:<14}   source: {}", "", decision.source);
}

/// The host's share and each VM's, side by side, by NUMA node and L3 group, in the probe's
/// picture of the topology: each core is its CPUs, marked with who has it.
fn render_shares(out: &mut String, plan: &Plan, host: &HostFacts) {
    let marks: Vec<(char, &str)> =
        (b'a'..=b'z').map(char::from).zip(plan.vms.iter().map(|vm| vm.name.as_str())).collect();
    let legend: Vec<String> = marks.iter().map(|(mark, name)| format!("{mark} = {name}")).collect();
    let _ = writeln!(
        out,
        "  {:<14} H = the host's share, {}, . = free (the host's too); [CPUs of one core]",
        "placement",
        legend.join(", ")
    );
    let owner = |cpu: u32| -> char {
        if plan.housekeeping.contains(cpu) {
            return 'H';
        }
        marks
            .iter()
            .zip(&plan.vms)
            .find(|(_, vm)| vm.placement.vcpu_cpus.contains(&cpu))
            .map_or('.', |((mark, _), _)| *mark)
    };
    let cores = host_cores(host);
    for node in &host.topology.numa_nodes {
        let _ = writeln!(out, "  {:<14}   node {}", "", node.node);
        let mut groups: Vec<Option<usize>> =
            cores.iter().filter(|c| c.node == node.node).map(|c| c.l3).collect();
        groups.dedup();
        groups.sort_unstable();
        groups.dedup();
        for group in groups {
            let label = group.map_or("no L3".to_string(), |g| format!("L3 #{g}"));
            let cells: Vec<String> = cores
                .iter()
                .filter(|c| c.node == node.node && c.l3 == group)
                .map(|c| {
                    let cpus: Vec<String> = c.cpus.iter().map(u32::to_string).collect();
                    format!("{}[{}]", owner(c.cpus[0]), cpus.join(" "))
                })
                .collect();
            let _ = writeln!(out, "  {:<14}     {label:<7} {}", "", cells.join(" "));
        }
    }
}
