//! `kvmtune probe` for people: a compact topology picture (NUMA node > L3 group > cores, only
//! what pinning needs), the facts, then what the host rules found.

use std::fmt::Write;

use crate::analysis::host_rules::HostFinding;
use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::host::kvm::HypervSupport;
use crate::host::topology::{CoreType, Topology};
use crate::values::CpuSet;
use crate::values::text::plural;

/// Module parameters worth a line of their own, per module (the JSON has them all).
const KEY_PARAMETERS: &[(&str, &[&str])] = &[
    ("kvm", &["halt_poll_ns", "ignore_msrs", "tdp_mmu", "nx_huge_pages", "enable_pmu"]),
    (
        "kvm_intel",
        &["enable_apicv", "enable_ipiv", "flexpriority", "ept", "nested", "ple_gap", "preemption_timer"],
    ),
    ("kvm_amd", &["avic", "force_avic", "npt", "nested", "pause_filter_count", "vls", "vgif"]),
];

const WIDTH: usize = 100;

pub fn render(facts: &HostFacts, findings: &[HostFinding]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvmtune probe: {}", facts.source);
    let _ = writeln!(out);
    cpu_section(&mut out, facts);
    topology_section(&mut out, facts);
    facts_section(&mut out, facts);
    findings_section(&mut out, findings);
    out
}

fn show<T>(fact: &Fact<T>, f: impl FnOnce(&T) -> String) -> String {
    match fact {
        Fact::Known(value) => f(value),
        Fact::Unknown(reason) => format!("unknown ({reason})"),
    }
}

fn gib(kib: u64) -> String {
    format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
}

fn cache_size(kib: Option<u64>) -> String {
    kib.map_or_else(|| "size unknown".to_string(), crate::values::size::human_kib)
}

fn cpu_section(out: &mut String, facts: &HostFacts) {
    let cpu = &facts.cpu;
    let topo = &facts.topology;
    let model = show(&cpu.model_name, String::clone);
    let ids = match (&cpu.vendor_id, &cpu.family, &cpu.model, &cpu.stepping) {
        (Fact::Known(vendor), Fact::Known(family), Fact::Known(model), Fact::Known(stepping)) => {
            format!("{vendor}, family {family} model {model} stepping {stepping}")
        }
        _ => "vendor/family/model unknown".to_string(),
    };
    let _ = writeln!(out, "CPU        {model} ({ids})");
    let online = show(&topo.online, |set| format!("{} online ({set})", set.len()));
    let offline = show(&topo.offline, |set| {
        if set.is_empty() { "none offline".to_string() } else { format!("{} offline ({set})", set.len()) }
    });
    let smt = format!(
        "SMT {}",
        show(&topo.smt, |smt| format!(
            "{}{}",
            smt.control,
            if smt.active { ", active" } else { ", inactive" }
        ))
    );
    let _ = writeln!(
        out,
        "           {}, {}, {}, {}; CPUs {online}, {offline}; {smt}",
        plural(topo.packages.len(), "package"),
        plural(topo.numa_nodes.len(), "NUMA node"),
        plural(topo.l3_groups.len(), "L3 group"),
        plural(topo.core_count(), "core"),
    );
    if let Fact::Known(Some(types)) = &topo.core_types {
        let _ = writeln!(
            out,
            "           hybrid: P-cores {} / E-cores {} (from {})",
            types.performance, types.efficiency, types.method
        );
    }
    let _ = writeln!(out);
}

fn core_label(topo: &Topology, siblings: &CpuSet) -> String {
    let kind = siblings.first().and_then(|cpu| topo.cpu(cpu)).and_then(|cpu| cpu.core_type);
    let prefix = match kind {
        Some(CoreType::Performance) => "P",
        Some(CoreType::Efficiency) => "E",
        None => "",
    };
    let members: Vec<String> = siblings.iter().map(|cpu| cpu.to_string()).collect();
    format!("{prefix}[{}]", members.join(" "))
}

fn topology_section(out: &mut String, facts: &HostFacts) {
    let topo = &facts.topology;
    let _ = writeln!(
        out,
        "Topology   NUMA node > L3 group > cores; [a b] = SMT siblings{}",
        if matches!(topo.core_types, Fact::Known(Some(_))) { ", P/E = core type" } else { "" }
    );
    let node_memory = |node: u32| -> String {
        let Fact::Known(nodes) = &facts.memory.nodes else { return String::new() };
        let Some(memory) = nodes.iter().find(|n| n.node == node) else { return String::new() };
        match (&memory.total_kib, &memory.free_kib) {
            (Fact::Known(total), Fact::Known(free)) => {
                format!("  memory {}, {} free", gib(*total), gib(*free))
            }
            _ => "  memory unknown".to_string(),
        }
    };
    let gpus = facts.gpus();
    for node in &topo.numa_nodes {
        let gpu_note: Vec<String> = gpus
            .iter()
            .filter(|gpu| gpu.numa_node == Some(node.node))
            .map(|gpu| format!("GPU {}", gpu.address))
            .collect();
        let gpu_note =
            if gpu_note.is_empty() { String::new() } else { format!("  [{}]", gpu_note.join(", ")) };
        let cpus = if node.cpus.is_empty() { "no CPUs".to_string() } else { format!("CPUs {}", node.cpus) };
        let _ = writeln!(out, "  node {}  {cpus}{}{gpu_note}", node.node, node_memory(node.node));
        let groups: Vec<_> = topo.l3_groups.iter().filter(|g| g.numa_nodes.contains(&node.node)).collect();
        let mut shown = CpuSet::new();
        for group in groups {
            let here = group.cpus.intersection(&node.cpus);
            let spans = if group.numa_nodes.len() > 1 {
                format!(
                    " (spans nodes {})",
                    group.numa_nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                )
            } else {
                String::new()
            };
            let vcache = if group.larger_than_others { "  larger L3 (V-Cache?)" } else { "" };
            let _ = writeln!(
                out,
                "    L3 #{}  {}  CPUs {here}{spans}{vcache}",
                group.index,
                cache_size(group.size_kib)
            );
            let cores = topo.smt_sibling_sets.iter().filter(|s| s.first().is_some_and(|c| here.contains(c)));
            wrap_cores(out, topo, cores, "      ");
            shown = shown.union(&here);
        }
        let rest = node.cpus.difference(&shown);
        if !rest.is_empty() {
            let _ = writeln!(out, "    (no L3 reported)  CPUs {rest}");
            let cores = topo.smt_sibling_sets.iter().filter(|s| s.first().is_some_and(|c| rest.contains(c)));
            wrap_cores(out, topo, cores, "      ");
        }
    }
    let _ = writeln!(out);
}

fn wrap_cores<'a>(out: &mut String, topo: &Topology, cores: impl Iterator<Item = &'a CpuSet>, indent: &str) {
    let mut line = String::from(indent);
    for core in cores {
        let label = core_label(topo, core);
        if line.len() + label.len() + 1 > WIDTH && !line.trim().is_empty() {
            let _ = writeln!(out, "{}", line.trim_end());
            line = String::from(indent);
        }
        line.push_str(&label);
        line.push(' ');
    }
    if !line.trim().is_empty() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// One labelled line of the facts section; an empty label continues the previous fact.
fn row(out: &mut String, label: &str, text: String) {
    let _ = writeln!(out, "{label:<11}{text}");
}

fn facts_section(out: &mut String, facts: &HostFacts) {
    row(
        out,
        "CPU flags",
        show(&facts.cpu.flags, |flags| {
            flags
                .iter()
                .map(|(flag, present)| format!("{}{flag}", if *present { "+" } else { "-" }))
                .collect::<Vec<_>>()
                .join(" ")
        }),
    );

    let memory = &facts.memory;
    row(
        out,
        "Memory",
        format!(
            "total {}, available {}; transparent hugepages {}",
            show(&memory.total_kib, |k| gib(*k)),
            show(&memory.available_kib, |k| gib(*k)),
            show(&memory.transparent_hugepages, String::clone),
        ),
    );
    row(
        out,
        "Hugepages",
        show(&memory.hugepages, |pools| {
            if pools.is_empty() {
                return "no hugepage sizes".to_string();
            }
            pools
                .iter()
                .map(|pool| {
                    let per_node: Vec<String> = memory
                        .nodes
                        .known()
                        .map(|nodes| {
                            nodes
                                .iter()
                                .filter_map(|n| {
                                    let p =
                                        n.hugepages.iter().find(|p| p.page_size_kib == pool.page_size_kib)?;
                                    Some(format!("node {}: {}", n.node, show(&p.total, u64::to_string)))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let nodes = if per_node.len() > 1 {
                        format!(" [{}]", per_node.join(", "))
                    } else {
                        String::new()
                    };
                    format!(
                        "{}: {} reserved, {} free{nodes}",
                        cache_size(Some(pool.page_size_kib)),
                        show(&pool.total, u64::to_string),
                        show(&pool.free, u64::to_string)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        }),
    );

    let time = &facts.time;
    row(
        out,
        "Time",
        format!(
            "clocksource {} (available: {})",
            show(&time.current_clocksource, String::clone),
            show(&time.available_clocksources, |list| list.join(" ")),
        ),
    );
    row(
        out,
        "",
        format!(
            "TSC {}",
            show(&time.tsc, |v| format!(
                "{}: {}",
                if v.trustworthy { "trustworthy" } else { "NOT trustworthy" },
                v.reasons.join("; ")
            )),
        ),
    );

    let kernel = &facts.kernel;
    row(out, "Kernel", show(&kernel.release, String::clone));
    row(
        out,
        "",
        format!(
            "QEMU {}; libvirt {}",
            show(&facts.software.qemu, ToString::to_string),
            show(&facts.software.libvirt, ToString::to_string)
        ),
    );
    if let Fact::Known(cmdline) = &kernel.cmdline {
        let set = |s: &Option<CpuSet>| s.as_ref().map_or("-".to_string(), CpuSet::to_string);
        let map = |m: &std::collections::BTreeMap<String, String>| {
            if m.is_empty() {
                "-".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let isol = cmdline.isolcpus.as_ref().map_or("-".to_string(), |i| {
            if i.flags.is_empty() {
                i.cpus.to_string()
            } else {
                format!("{} ({})", i.cpus, i.flags.join(","))
            }
        });
        let hugepages = if cmdline.hugepages.is_empty() {
            "-".to_string()
        } else {
            cmdline
                .hugepages
                .iter()
                .map(|h| format!("{}x{}", h.count, h.size.as_deref().unwrap_or("default")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        row(
            out,
            "",
            format!(
                "isolcpus {isol}; nohz_full {}; rcu_nocbs {}; irqaffinity {}; iommu {}; hugepages {hugepages}",
                set(&cmdline.nohz_full),
                set(&cmdline.rcu_nocbs),
                set(&cmdline.irqaffinity),
                map(&cmdline.iommu)
            ),
        );
        row(
            out,
            "",
            format!(
                "kvm options {}; vfio {}; other {}",
                map(&cmdline.kvm_module_options),
                map(&cmdline.vfio_options),
                map(&cmdline.other)
            ),
        );
        if !cmdline.malformed.is_empty() {
            row(out, "", format!("malformed: {}", cmdline.malformed.join("; ")));
        }
    } else {
        row(out, "", format!("command line {}", show(&kernel.cmdline, |_| String::new())));
    }

    kvm_rows(out, facts);

    row(
        out,
        "IOMMU",
        show(&facts.iommu.enabled, |on| {
            let vfio = show(&facts.iommu.vfio_pci, |state| {
                match state {
                    crate::host::pci::VfioPci::Loaded => "vfio-pci loaded",
                    crate::host::pci::VfioPci::Module => "vfio-pci not loaded (modprobe vfio-pci)",
                    crate::host::pci::VfioPci::Missing => "no vfio-pci in this kernel",
                }
                .to_string()
            });
            if *on {
                format!("on, {} groups; {vfio}", facts.iommu.groups.len())
            } else {
                format!("off (no IOMMU groups); {vfio}")
            }
        }),
    );
    row(
        out,
        "PCI",
        show(&facts.pci_devices, |devices| {
            let gpus: Vec<String> = devices
                .iter()
                .filter(|d| d.is_gpu)
                .map(|gpu| {
                    let mut notes = String::new();
                    if gpu.console {
                        notes += " console on it";
                    }
                    if let Some(card) = &gpu.drm_card {
                        notes += &format!(" drm {card}");
                    }
                    if !gpu.drm_clients.is_empty() {
                        notes += &format!(" held by {}", gpu.drm_clients.join(","));
                    }
                    notes += &match gpu.reset_methods.is_empty() {
                        true => " reset: none".to_string(),
                        false => format!(" reset: {}", gpu.reset_methods.join(",")),
                    };
                    if let Some(family) = &gpu.reset_bug {
                        notes += &format!(" (AMD {family}: reset bug, needs vendor-reset)");
                    }
                    format!(
                        "GPU {} {} driver {} group {} node {}{}{}{notes}",
                        gpu.address,
                        show(&gpu.id, String::clone),
                        gpu.driver.as_deref().unwrap_or("none"),
                        gpu.iommu_group.map_or("-".to_string(), |g| g.to_string()),
                        gpu.numa_node.map_or("-".to_string(), |n| n.to_string()),
                        if gpu.boot_vga { " boot_vga" } else { "" },
                        if gpu.group_mates.is_empty() {
                            String::new()
                        } else {
                            format!(" with {}", gpu.group_mates.join(", "))
                        },
                    )
                })
                .collect();
            format!(
                "{} devices; {}",
                devices.len(),
                if gpus.is_empty() { "no GPU".to_string() } else { gpus.join("; ") }
            )
        }),
    );

    let state = &facts.host_state;
    row(
        out,
        "Host state",
        format!(
            "cgroups {}; systemd {}; irqbalance {}; governor {}",
            show(&state.cgroups, |c| format!(
                "{} (cpuset {})",
                c.layout,
                match (&c.cpuset_mount, &c.cpuset_version) {
                    (Some(mount), Some(version)) => format!(
                        "{version} at {mount}, {}",
                        if c.cpuset_usable { "usable" } else { "NOT usable" }
                    ),
                    _ => "not available".to_string(),
                }
            )),
            show(&state.systemd, |s| if *s { "yes" } else { "no" }.to_string()),
            show(&state.irqbalance_running, |r| if *r { "running" } else { "not running" }.to_string()),
            show(&state.cpufreq_governors, |g| g
                .iter()
                .map(|(name, cpus)| format!("{name} ({cpus})"))
                .collect::<Vec<_>>()
                .join(", ")),
        ),
    );
    if !facts.topology.unknowns.is_empty() {
        let count = facts.topology.unknowns.len();
        let first = &facts.topology.unknowns[0];
        row(
            out,
            "Unreadable",
            format!("{}, first: {first} (all in --format json)", plural(count, "topology file")),
        );
    }
    let _ = writeln!(out);
}

fn kvm_rows(out: &mut String, facts: &HostFacts) {
    let kvm = &facts.kvm;
    let device = show(&kvm.device, |d| {
        if !d.present {
            "/dev/kvm missing".to_string()
        } else {
            match (&d.usable, &d.api_version) {
                (Fact::Known(true), Fact::Known(api)) => format!("/dev/kvm usable (API {api})"),
                (Fact::Unknown(reason), _) => format!("/dev/kvm present, not usable: {reason}"),
                _ => "/dev/kvm present, not usable".to_string(),
            }
        }
    });
    let vendor =
        show(&kvm.modules, |m| format!("vendor module {}", m.vendor_module.as_deref().unwrap_or("none")));
    let apic = show(&kvm.apic_virtualization, |a| {
        format!("{} {} ({})", a.kind, if a.enabled { "on" } else { "OFF" }, a.evidence)
    });
    row(out, "KVM", format!("{device}; {vendor}; APIC virtualization {apic}"));
    if let Fact::Known(modules) = &kvm.modules {
        let mut shown = Vec::new();
        for (module, names) in KEY_PARAMETERS {
            for name in *names {
                if let Some(value) = modules.parameter(module, name) {
                    shown.push(format!("{module}.{name}={value}"));
                }
            }
        }
        if !shown.is_empty() {
            row(out, "", shown.join(" "));
        }
    }
    if let Fact::Known(device) = &kvm.device {
        let hyperv = match &device.hyperv {
            HypervSupport::Supported { enlightenments, signature, .. } => format!(
                "Hyper-V: {} enlightenments ({}){}",
                enlightenments.len(),
                enlightenments.join(" "),
                signature.as_ref().map_or(String::new(), |s| format!(", signature \"{s}\""))
            ),
            HypervSupport::NotSupported { evidence } => {
                format!("Hyper-V: NOT supported by this kernel ({evidence})")
            }
            HypervSupport::Unknown { reason } => format!("Hyper-V: unknown ({reason})"),
        };
        row(out, "", hyperv);
        if let Some(arch) = device.arch_capabilities.known().filter(|a| a.refused()) {
            row(
                out,
                "",
                format!(
                    "IA32_ARCH_CAPABILITIES: KVM offers {} and refuses it on a vCPU: -cpu host aborts here (`tune` turns arch-capabilities off)",
                    arch.offered.as_deref().unwrap_or("-")
                ),
            );
        }
        let nonzero: Vec<String> = device
            .capabilities
            .iter()
            .filter(|c| c.value.known().is_some_and(|v| *v != 0))
            .map(|c| format!("{}={}", c.name.trim_start_matches("KVM_CAP_"), show(&c.value, i32::to_string)))
            .collect();
        row(
            out,
            "",
            format!(
                "capabilities: {}",
                if nonzero.is_empty() { "none".to_string() } else { nonzero.join(" ") }
            ),
        );
    }
}

fn findings_section(out: &mut String, findings: &[HostFinding]) {
    if findings.is_empty() {
        let _ = writeln!(out, "No host findings.");
        return;
    }
    let _ = writeln!(out, "Findings");
    for finding in findings {
        let rule = finding.rule;
        let level = rule.severity.label();
        let _ = writeln!(out, "{level}[{}] {}: {}", rule.id, rule.name, rule.title);
        let _ = writeln!(out, "  = found: {}", finding.message);
        let _ =
            writeln!(out, "  = why: {}", rule.explanation.split_whitespace().collect::<Vec<_>>().join(" "));
        let _ = writeln!(out, "  = source: {}", rule.source.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}
